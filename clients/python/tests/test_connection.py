"""One shared connection: concurrent callers, a daemon that restarts, an
external broker under a topic prefix."""

import os
import socket
import threading
import uuid

import pytest

from axion_push_client import objnotifypush
from daemon import Daemon


def test_concurrent_callers_share_one_connection(shim, push_service):
    users = [f"conc-{uuid.uuid4().hex[:8]}" for _ in range(8)]
    browsers = {u: push_service.browser(u) for u in users}
    for u, b in browsers.items():
        assert shim.subscribe(u, "crm", b.subscription())
    connection = shim.client()._client
    results = {}

    def call(u):
        results[u] = shim.send_push(u, f"for {u}", "", package="crm")

    threads = [threading.Thread(target=call, args=(u,)) for u in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == {u: True for u in users}
    for u, b in browsers.items():
        [push] = push_service.wait_for(b)
        assert push.payload["title"] == f"for {u}", "each caller got its own answer"
    assert shim.client()._client is connection


def test_calls_work_again_after_the_daemon_restarts(own_daemon, push_service, user):
    objnotifypush.configure(config=str(own_daemon.config_path), timeout=10)
    try:
        browser = push_service.browser("restart")
        assert objnotifypush.subscribe(user, "crm", browser.subscription()) is True
        own_daemon.stop()
        own_daemon.start()  # same port, same database
        assert objnotifypush.send_push(user, "After the restart", "", package="crm") is True
        [push] = push_service.wait_for(browser)
        assert push.payload["title"] == "After the restart"
    finally:
        objnotifypush.client().close()


def _mosquitto_port():
    url = os.environ.get("AXION_PUSH_TEST_BROKER", "mqtt://127.0.0.1:1883")
    port = int(url.rsplit(":", 1)[1])
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return None
    return port


def test_an_external_broker_and_topic_prefix_from_config_yaml(tmp_path, push_service, user):
    port = _mosquitto_port()
    if port is None:
        pytest.skip("no MQTT broker on 127.0.0.1:1883 (.ci/run starts Mosquitto)")
    d = Daemon(tmp_path, push_service.ca_path, broker_port=port, prefix=f"axion-push-pytest/{uuid.uuid4()}/", push_port=push_service.port).start()
    objnotifypush.configure(config=str(d.config_path), timeout=10)
    try:
        assert objnotifypush.client().settings.topic_prefix == d.prefix
        browser = push_service.browser("external")
        assert objnotifypush.subscribe(user, "crm", browser.subscription()) is True
        assert [r["Endpoint"] for r in objnotifypush.get_subscriptions(user, "crm")] == [browser.endpoint]
        assert objnotifypush.send_push(user, "Via Mosquitto", "", package="crm") is True
        [push] = push_service.wait_for(browser)
        assert push.payload["title"] == "Via Mosquitto"
    finally:
        objnotifypush.client().close()
        d.stop()
