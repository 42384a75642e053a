"""When the daemon is not there: a clear error within the timeout, no hang."""

import logging
import time

import pytest

from axion_push_client import AxionPushUnavailable, BrokerSettings, objnotifypush


def test_a_stopped_daemon_is_reported_at_once(own_daemon, push_service, user, caplog_client):
    objnotifypush.configure(config=str(own_daemon.config_path), timeout=5)
    try:
        browser = push_service.browser("b")
        assert objnotifypush.subscribe(user, "crm", browser.subscription()) is True
        own_daemon.stop()  # its embedded broker goes with it

        start = time.monotonic()
        assert objnotifypush.send_push(user, "T", "B", package="crm") is False
        assert objnotifypush.send_push_to_group("ops", "T", "B", package="crm") is False
        assert objnotifypush.subscribe(user, "crm", browser.subscription()) is False
        assert objnotifypush.unsubscribe(user, "crm", browser.endpoint) is False
        with pytest.raises(AxionPushUnavailable, match="cannot reach the MQTT broker"):
            objnotifypush.get_subscriptions(user, "crm")
        assert time.monotonic() - start < 5, "each call must fail fast, not wait"
        errors = [r.getMessage() for r in caplog_client.records if r.levelno == logging.ERROR]
        assert len(errors) == 4
        assert all("cannot reach the MQTT broker at 127.0.0.1:" in e for e in errors), errors
        assert "axion-push serve" in errors[0]
    finally:
        objnotifypush.client().close()


def test_a_broker_without_the_daemon_times_out_with_a_clear_error(daemon, user, caplog_client):
    # The broker is up, but no daemon serves this topic prefix.
    settings = BrokerSettings(port=daemon.port, topic_prefix="nobody-serves-this/")
    objnotifypush.configure(settings=settings, timeout=1.5)
    try:
        start = time.monotonic()
        assert objnotifypush.send_push(user, "T", "B") is False
        elapsed = time.monotonic() - start
        assert 1.4 < elapsed < 4, elapsed
        assert "no answer to send from axion-push within 1.5 s" in caplog_client.text
        with pytest.raises(AxionPushUnavailable, match="no answer to list"):
            objnotifypush.get_subscriptions(user, "crm")
    finally:
        objnotifypush.client().close()


def test_nothing_listening_on_the_port_is_a_clear_error():
    from daemon import free_port

    port = free_port()
    objnotifypush.configure(settings=BrokerSettings(port=port), timeout=5)
    try:
        start = time.monotonic()
        with pytest.raises(AxionPushUnavailable, match=f"127.0.0.1:{port}"):
            objnotifypush.client().send("alice", {"title": "T"})
        assert time.monotonic() - start < 5
    finally:
        objnotifypush.client().close()
