"""The relay handler of an Axion page that uses axion.push.js.

The page's `axion_push_subscribe()` / `axion_push_unsubscribe()` POST JSON
to the URL in the script tag's `data-relay`, with the page's cookies:

    {"action": "subscribe", "package", "user", "subscription",
     "user_agent", "module", "token"}
    {"action": "unsubscribe", "package", "user", "endpoint"}
    {"action": "receipt", "package", "user", "receipts": [{"token",
     "receipt", "action", "reason"}]}   (from the service worker)

The handler takes the user from the session, never from the body (a page
could name anyone), and hands the rest to ObjNotifyPush. `token` needs no
handling: with `subscribe_token_secret` set, ObjNotifyPush makes its own.
Answer with the status and JSON body this returns. A refusal carries the
daemon's `code` when it has one: `endpoint-taken` (with subscribe tokens
on, the browser's subscription is still another user's, on a computer
they shared) makes the page drop that subscription, make a new one and
post it again. Any other error status makes the page's promise reject
with `relay-failed`.
"""

import ObjNotifyPush
from axion_push_client import AxionPushUnavailable


def push_subscription(body, signed_in_user):
    """(HTTP status, JSON body or None) for the page."""
    if body.get("action") == "subscribe":
        result = ObjNotifyPush.subscribe_result(
            signed_in_user,
            body["package"],
            body["subscription"],
            user_agent=body.get("user_agent"),
            module=body.get("module"),
        )
        if result.get("ok"):
            return 204, None
        return 409 if result.get("code") else 422, {"error": result.get("error"), "code": result.get("code")}
    if body.get("action") == "unsubscribe":
        if ObjNotifyPush.unsubscribe(signed_in_user, body["package"], body["endpoint"]):
            return 204, None
        return 422, {"error": "axion-push did not accept the unsubscribe"}
    if body.get("action") == "receipt":
        # What the service worker reports about notifications. A receipt the
        # daemon refuses (a replay, a token of another user) would be
        # refused again: it is answered 204 like the rest, so the worker
        # does not keep it. A daemon that cannot be reached is a 503: the
        # worker keeps them all and tries again later.
        try:
            for receipt in body.get("receipts") or []:
                ObjNotifyPush.client().receipt(signed_in_user, receipt, body["package"])
        except AxionPushUnavailable as e:
            return 503, {"error": str(e)}
        return 204, None
    return 400, {"error": f"unknown action {body.get('action')!r}"}
