"""subscribe, get_subscriptions, unsubscribe: a round trip through the
daemon's table, and no key ever on the bus."""

import datetime
import json

import pytest

from axion_push_client import AxionPushRejected

COLUMNS = {"User", "Package", "Module", "Endpoint", "UserAgent", "CreatedAt", "Active"}


def test_subscribe_list_unsubscribe_round_trip(shim, push_service, user):
    laptop = push_service.browser("laptop")
    phone = push_service.browser("phone")
    assert shim.get_subscriptions(user, "crm") == []
    assert shim.subscribe(user, "crm", json.dumps(laptop.subscription()), user_agent="Firefox/140") is True
    assert shim.subscribe(user, "crm", phone.subscription(), user_agent="Safari/18", module="tickets") is True

    rows = shim.get_subscriptions(user, "crm")
    assert len(rows) == 2
    by_endpoint = {r["Endpoint"]: r for r in rows}
    assert set(by_endpoint) == {laptop.endpoint, phone.endpoint}
    for row in rows:
        assert set(row) == COLUMNS
        assert row["User"] == user and row["Package"] == "crm" and row["Active"] == "Y"
        assert isinstance(row["CreatedAt"], datetime.datetime)
        assert abs(row["CreatedAt"] - datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)) < datetime.timedelta(minutes=5)
    assert by_endpoint[laptop.endpoint]["UserAgent"] == "Firefox/140"
    assert by_endpoint[phone.endpoint]["Module"] == "tickets"

    assert shim.unsubscribe(user, "crm", phone.endpoint) is True
    assert [r["Endpoint"] for r in shim.get_subscriptions(user, "crm")] == [laptop.endpoint]
    everything = shim.get_subscriptions(user, "crm", include_inactive=True)
    assert {r["Endpoint"]: r["Active"] for r in everything} == {laptop.endpoint: "Y", phone.endpoint: "N"}

    # The unsubscribed browser gets nothing any more.
    assert shim.send_push(user, "After", "", package="crm")
    push_service.wait_for(laptop)
    assert push_service.received(phone) == []


def test_subscriptions_are_per_package(shim, push_service, user):
    crm = push_service.browser("crm")
    hr = push_service.browser("hr")
    assert shim.subscribe(user, "crm", crm.subscription())
    assert shim.subscribe(user, "hr", hr.subscription())
    assert [r["Endpoint"] for r in shim.get_subscriptions(user, "hr")] == [hr.endpoint]


def test_the_listing_on_the_bus_carries_no_keys(shim, push_service, listener, user):
    browser = push_service.browser("secret")
    assert shim.subscribe(user, "crm", browser.subscription())
    results = listener(f"axion/crm/push/{user}/result")
    rows = shim.get_subscriptions(user, "crm", include_inactive=True)
    assert rows
    _, payload = results.wait_for(lambda t, p: json.loads(p).get("command") == "list")
    text = payload.decode()
    assert browser.endpoint in text
    assert browser.auth_text not in text
    assert browser.p256dh not in text
    assert browser.auth_text not in repr(rows) and browser.p256dh not in repr(rows)


def test_unsubscribing_an_unknown_endpoint_is_accepted(shim, user):
    assert shim.unsubscribe(user, "crm", "https://127.0.0.1:9/push/never") is True


@pytest.mark.parametrize(
    "mangle, reason",
    [
        (lambda s: {**s, "keys": {**s["keys"], "auth": "AAAA"}}, "keys.auth must be 16 bytes"),
        (lambda s: {"keys": s["keys"]}, "endpoint is missing"),
        (lambda s: {**s, "endpoint": "https://push.evil.example/x"}, "is not allowed"),
    ],
)
def test_a_bad_subscription_returns_false_with_the_reason_logged(shim, push_service, user, caplog_client, mangle, reason):
    browser = push_service.browser("bad")
    assert shim.subscribe(user, "crm", mangle(browser.subscription())) is False
    assert reason in caplog_client.text
    assert shim.get_subscriptions(user, "crm") == []


def test_subscription_text_that_is_not_json_returns_false(shim, user, caplog_client):
    assert shim.subscribe(user, "crm", "{not json") is False
    assert "not JSON" in caplog_client.text


def test_raise_errors_turns_refusals_into_exceptions(shim, daemon, push_service, user):
    shim.configure(config=str(daemon.config_path), timeout=15, raise_errors=True)
    browser = push_service.browser("strict")
    bad = {**browser.subscription(), "keys": {"p256dh": "BAAA", "auth": browser.auth_text}}
    with pytest.raises(AxionPushRejected) as refused:
        shim.subscribe(user, "crm", bad)
    assert "p256dh" in refused.value.error
    assert refused.value.report["ok"] is False
    with pytest.raises(AxionPushRejected):
        shim.get_subscriptions(f"@{user}", "crm")
