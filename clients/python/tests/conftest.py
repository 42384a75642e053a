import logging
import sys
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from daemon import Daemon  # noqa: E402
from pushservice import PushService  # noqa: E402

from axion_push_client import objnotifypush  # noqa: E402
from axion_push_client.paho_compat import new_client  # noqa: E402


def pytest_report_header(config):
    from importlib.metadata import version

    return f"paho-mqtt {version('paho-mqtt')}"


@pytest.fixture(scope="session")
def push_service(tmp_path_factory):
    service = PushService(tmp_path_factory.mktemp("push-service"))
    yield service
    service.stop()


@pytest.fixture(scope="session")
def daemon(tmp_path_factory, push_service):
    """One daemon for the session; each test uses users of its own."""
    d = Daemon(tmp_path_factory.mktemp("daemon"), push_service.ca_path, push_port=push_service.port).start()
    yield d
    d.stop()


@pytest.fixture
def own_daemon(tmp_path, push_service):
    """A daemon of the test's own, for tests that stop it."""
    d = Daemon(tmp_path, push_service.ca_path, push_port=push_service.port).start()
    yield d
    d.stop()


@pytest.fixture
def shim(daemon):
    """The ObjNotifyPush functions, reading the daemon's config.yaml."""
    objnotifypush.configure(config=str(daemon.config_path), timeout=15)
    yield objnotifypush
    objnotifypush.configure(config=str(daemon.config_path))
    objnotifypush.client().close()


@pytest.fixture
def user():
    return f"user-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def caplog_client(caplog):
    caplog.set_level(logging.INFO, logger="axion_push_client")
    return caplog


class Listener:
    """An MQTT client recording what the daemon publishes on a filter."""

    def __init__(self, port: int, topic_filter: str):
        import threading

        self.messages = []
        self._changed = threading.Condition()
        subscribed = threading.Event()
        self.client = new_client(f"listen-{uuid.uuid4()}")
        self.client.on_connect = lambda c, *a: c.subscribe(topic_filter, qos=1)
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert subscribed.wait(10), "the listener could not subscribe"

    def _on_message(self, client, userdata, message):
        with self._changed:
            self.messages.append((message.topic, message.payload))
            self._changed.notify_all()

    def wait_for(self, predicate, timeout=15.0):
        import time

        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for m in self.messages:
                    if predicate(*m):
                        return m
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no matching message within {timeout} s: {self.messages}")
                self._changed.wait(left)

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def listener(daemon):
    made = []

    def listen(topic_filter):
        l = Listener(daemon.port, topic_filter)
        made.append(l)
        return l

    yield listen
    for l in made:
        l.close()
