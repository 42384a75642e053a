"""The relay handler example records what axion.push.js POSTs, for the
signed-in user, through ObjNotifyPush."""

import importlib.util
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "subscription_relay.py"


def load_example():
    spec = importlib.util.spec_from_file_location("subscription_relay", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_relay_records_the_pages_subscription_for_the_signed_in_user(shim, push_service, user):
    relay = load_example()
    browser = push_service.browser("page")
    # What axion-push.js POSTs (its #relay), for a page naming another user.
    subscribe = {
        "action": "subscribe", "package": "crm", "user": "someone-else",
        "subscription": browser.subscription(), "user_agent": "Mozilla/5.0 Firefox/153",
        "module": "tickets", "token": "from-the-template",
    }
    assert relay.push_subscription(subscribe, user) == (204, None)
    [row] = shim.get_subscriptions(user, "crm")
    assert (row["Endpoint"], row["UserAgent"], row["Module"]) == (browser.endpoint, "Mozilla/5.0 Firefox/153", "tickets")
    assert shim.get_subscriptions("someone-else", "crm") == []
    assert shim.send_push(user, "Through the relay", "", package="crm") is True
    push_service.wait_for(browser)

    unsubscribe = {"action": "unsubscribe", "package": "crm", "user": user, "endpoint": browser.endpoint}
    assert relay.push_subscription(unsubscribe, user) == (204, None)
    assert shim.get_subscriptions(user, "crm") == []
    assert relay.push_subscription({"action": "resubscribe"}, user)[0] == 400


def test_a_refused_subscription_is_answered_with_the_daemons_reason(shim, push_service, user):
    relay = load_example()
    subscription = push_service.browser("page").subscription()
    del subscription["keys"]
    status, answer = relay.push_subscription({"action": "subscribe", "package": "crm", "subscription": subscription}, user)
    assert (status, answer["code"]) == (422, None)
    assert "keys is missing" in answer["error"]


def test_the_relay_hands_the_service_workers_receipts_to_the_daemon(shim, push_service, user):
    relay = load_example()
    browser = push_service.browser("page")
    assert shim.subscribe(user, "crm", browser.subscription()) is True
    assert shim.send_push(user, "Seen?", "", package="crm") is True
    [pushed] = push_service.wait_for(browser)
    token = pushed.payload["receipt"]["token"]

    # What the service worker POSTs once the notification is shown.
    body = {"action": "receipt", "package": "crm", "user": user, "receipts": [{"token": token, "receipt": "shown"}]}
    assert relay.push_subscription(body, user) == (204, None)
    # The same receipt again is refused by the daemon; the relay still
    # answers 204, so the worker does not keep it for another try.
    assert relay.push_subscription(body, user) == (204, None)
    again = shim.client().receipt(user, {"token": token, "receipt": "shown"}, "crm")
    assert again["ok"] is False and "already taken" in again["error"]
