"""What send_push and send_push_to_group return: True only when a browser
was reached (a push delivered, or queued for a retry), so a caller can fall
back to another channel (ObjSms) on False. Each case against the daemon,
with the push service answering as the case needs."""

import logging
import uuid


def warnings(caplog):
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_a_delivered_push_returns_true(shim, push_service, user):
    browser = push_service.browser("ok")
    assert shim.subscribe(user, "crm", browser.subscription())
    assert shim.send_push(user, "Delivered", "", package="crm") is True
    assert push_service.wait_for(browser)[0].status == 201


def test_a_user_without_an_active_subscription_returns_false(shim, push_service, user, caplog_client):
    assert shim.send_push(user, "Nobody listens", "", package="crm") is False
    assert "no active subscription, nothing was pushed" in caplog_client.text

    browser = push_service.browser("gone-before")
    assert shim.subscribe(user, "crm", browser.subscription())
    assert shim.unsubscribe(user, "crm", browser.endpoint)
    assert shim.send_push(user, "Still nobody", "", package="crm") is False
    assert push_service.received(browser) == []


def test_pushes_the_push_service_refuses_return_false(shim, push_service, user, caplog_client):
    forbidden = push_service.browser("forbidden", answers=[403])
    too_large = push_service.browser("too-large", answers=[413])
    for browser in (forbidden, too_large):
        assert shim.subscribe(user, "crm", browser.subscription())
    assert shim.send_push(user, "Refused", "", package="crm") is False
    assert push_service.wait_for(forbidden)[0].status == 403
    assert push_service.wait_for(too_large)[0].status == 413
    [warning] = warnings(caplog_client)
    assert "2 of 2 pushes reached no browser" in warning
    assert "'403': 1" in warning and "'413': 1" in warning


def test_a_subscription_the_push_service_calls_gone_returns_false(shim, push_service, user, caplog_client):
    browser = push_service.browser("gone", answers=[410])
    assert shim.subscribe(user, "crm", browser.subscription())
    assert shim.send_push(user, "Gone", "", package="crm") is False
    assert "deactivated as gone: 1" in warnings(caplog_client)[0]
    assert shim.get_subscriptions(user, "crm") == []


def test_a_push_queued_for_a_retry_returns_true(shim, push_service, user, caplog_client):
    browser = push_service.browser("busy", answers=[503])
    assert shim.subscribe(user, "crm", browser.subscription())
    assert shim.send_push(user, "Later", "", package="crm") is True
    assert warnings(caplog_client) == []
    first, retried = push_service.wait_for(browser, 2)
    assert (first.status, retried.status) == (503, 201)


def test_one_delivered_push_among_failed_ones_returns_true(shim, push_service, user, caplog_client):
    ok = push_service.browser("ok", answers=[201])
    refused = push_service.browser("refused", answers=[403])
    for browser in (ok, refused):
        assert shim.subscribe(user, "crm", browser.subscription())
    assert shim.send_push(user, "Partly", "", package="crm") is True
    assert "1 of 2 pushes reached no browser" in warnings(caplog_client)[0]


def test_a_group_send_returns_true_only_when_a_member_was_reached(shim, push_service, caplog_client):
    tag = uuid.uuid4().hex[:8]
    alice, bob, group = f"alice-{tag}", f"bob-{tag}", f"team-{tag}"
    assert shim.set_group_members(group, [alice, bob], package="crm")
    assert shim.send_push_to_group(group, "No browsers", "", package="crm") is False
    assert "no active subscription" in caplog_client.text

    refused = push_service.browser("bob", answers=[403])
    assert shim.subscribe(bob, "crm", refused.subscription())
    assert shim.send_push_to_group(group, "Refused", "", package="crm") is False

    reached = push_service.browser("alice")
    assert shim.subscribe(alice, "crm", reached.subscription())
    assert shim.send_push_to_group(group, "Reached", "", package="crm") is True
    assert push_service.wait_for(reached)[0].payload["title"] == "Reached"
