"""send_push: the daemon delivers, the browser decrypts what was sent."""

import json
import logging
import time


def test_send_push_delivers_and_returns_true(shim, push_service, user):
    browser = push_service.browser("laptop")
    assert shim.subscribe(user, "crm", json.dumps(browser.subscription()), user_agent="Firefox/140") is True
    assert shim.send_push(user, "Disk full", "db1 at 95%", url="/disks/db1", package="crm") is True
    [push] = push_service.wait_for(browser)
    assert push.error is None
    assert push.status == 201
    assert push.payload["title"] == "Disk full"
    assert push.payload["body"] == "db1 at 95%"
    assert push.payload["url"] == "/disks/db1"
    assert push.payload["notification"]["navigate"].endswith("/disks/db1")
    assert push.vapid["sub"] == "mailto:tests@example.com"


def test_send_push_defaults_hold(shim, push_service, user):
    browser = push_service.browser("defaults")
    assert shim.subscribe(user, "base", browser.subscription())
    assert shim.send_push(user, "Only a title", None) is True
    [push] = push_service.wait_for(browser)
    assert push.payload["title"] == "Only a title"
    assert push.payload["body"] == ""
    assert push.payload["url"] == "/"
    assert push.headers["ttl"] == "86400"


def test_send_push_options_reach_the_push(shim, push_service, user):
    browser = push_service.browser("options")
    assert shim.subscribe(user, "crm", browser.subscription())
    sent = shim.send_push(
        user, "Deploy", "at 17:00", package="crm",
        icon="/icon.png", tag="deploy", ttl=600, urgency="high",
        data={"ticket": 7}, requireInteraction=True,
    )
    assert sent is True
    [push] = push_service.wait_for(browser)
    n = push.payload["notification"]
    assert n["icon"].endswith("/icon.png")
    assert n["tag"] == "deploy"
    assert n["requireInteraction"] is True
    assert n["data"] == {"ticket": 7}
    assert push.headers["ttl"] == "600"
    assert push.headers["urgency"] == "high"


def test_send_push_publishes_the_realtime_event_listeners_use(shim, push_service, listener, user):
    events = listener(f"axion/crm/push/{user}")
    # No browser to push to (False), but live listeners get the event.
    assert shim.send_push(user, "Live", "for the dashboard", package="crm") is False
    topic, payload = events.wait_for(lambda t, p: True)
    event = json.loads(payload)
    assert event["title"] == "Live"
    assert event["body"] == "for the dashboard"
    assert "ts" in event and "id" in event


def test_a_refused_notification_returns_false_with_the_reason_logged(shim, user, caplog_client):
    assert shim.send_push(user, "T", "B", package="crm", colour="red") is False
    record = [r for r in caplog_client.records if r.levelno == logging.WARNING][-1]
    assert "refused by axion-push" in record.getMessage()
    assert "colour" in record.getMessage()


def test_a_name_that_cannot_be_a_topic_level_returns_false(shim, caplog_client):
    start = time.monotonic()
    assert shim.send_push("a/b", "T", "B") is False
    assert time.monotonic() - start < 1
    assert "must not contain /" in caplog_client.text
