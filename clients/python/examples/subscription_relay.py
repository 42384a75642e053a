"""The relay handler of an Axion page that uses axion.push.js.

The page's `axion_push_subscribe()` / `axion_push_unsubscribe()` POST JSON
to the URL in the script tag's `data-relay`, with the page's cookies:

    {"action": "subscribe", "package", "user", "subscription",
     "user_agent", "module", "token"}
    {"action": "unsubscribe", "package", "user", "endpoint"}

The handler takes the user from the session, never from the body (a page
could name anyone), and hands the rest to ObjNotifyPush. `token` needs no
handling: with `subscribe_token_secret` set, ObjNotifyPush makes its own.
Answer 204 when this returns True, an error status otherwise (the page's
promise then rejects with `relay-failed`).
"""

import ObjNotifyPush


def push_subscription(body, signed_in_user):
    """True when axion-push recorded the change."""
    if body.get("action") == "subscribe":
        return ObjNotifyPush.subscribe(
            signed_in_user,
            body["package"],
            body["subscription"],
            user_agent=body.get("user_agent"),
            module=body.get("module"),
        )
    if body.get("action") == "unsubscribe":
        return ObjNotifyPush.unsubscribe(signed_in_user, body["package"], body["endpoint"])
    return False
