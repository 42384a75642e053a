"""An MQTT client for the axion-push daemon: publish a command, wait for
its result report.

One :class:`AxionPush` keeps one MQTT connection (opened on first use,
reopened when lost) and may be shared between threads. Each request
subscribes to the command's ``…/result`` topic, publishes the command with
QoS 1 and a fresh ``id``, and waits for the report carrying that ``id``.
If the broker cannot be reached, or no report arrives within the timeout,
:class:`AxionPushUnavailable` is raised — a request never hangs.
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
import time
import unicodedata
import uuid
from typing import Any, Dict, Iterable, List, Optional

import paho.mqtt.client as mqtt

from . import config as _config
from . import paho_compat
from .config import BrokerSettings
from .errors import AxionPushRejected, AxionPushUnavailable
from .token import fresh_token

log = logging.getLogger("axion_push_client")

#: The package commands go to when none is given (the daemon's CLI default).
DEFAULT_PACKAGE = "base"
#: Seconds to wait for a result report. A send's report comes after its
#: pushes were made, so this must cover the push services' answers
#: (``axion_push.delivery.request_timeout``, 10 s by default).
DEFAULT_TIMEOUT = 30.0
#: Seconds to wait for the broker to accept the connection.
CONNECT_TIMEOUT = 5.0


def check_level(kind: str, name: Any) -> str:
    """A topic level: non-empty text without `/`, `+`, `#` (DESIGN §2) or
    control characters (the daemon refuses them: they forge log lines)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"{kind} must be a non-empty string, not {name!r}")
    bad = [c for c in "/+#" if c in name]
    if bad:
        raise ValueError(f"{kind} {name!r} must not contain {' '.join(bad)}")
    if any(unicodedata.category(c) == "Cc" for c in name):
        raise ValueError(f"{kind} {name!r} must not contain control characters")
    return name


class _ConnectionLost(Exception):
    """The connection dropped before the command was published."""


class _Waiter:
    __slots__ = ("topic", "event", "report")

    def __init__(self, topic: str):
        self.topic = topic
        self.event = threading.Event()
        self.report: Optional[dict] = None


class AxionPush:
    """Commands to the axion-push daemon over MQTT.

    ``settings`` default to config.yaml (``config`` path, else
    ``$AXION_PUSH_CONFIG``, else ``./config.local.yaml`` if it exists, else
    ``./config.yaml``), read when first needed.
    """

    def __init__(
        self,
        settings: Optional[BrokerSettings] = None,
        *,
        config: Optional[str] = None,
        timeout: float = DEFAULT_TIMEOUT,
        connect_timeout: float = CONNECT_TIMEOUT,
    ):
        self._settings = settings
        self._config_path = config
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self._client: Optional[mqtt.Client] = None
        #: The client whose callbacks count (a dropped one's are ignored).
        self._current: Optional[mqtt.Client] = None
        self._connected = threading.Event()
        self._connect_lock = threading.Lock()
        self._sub_lock = threading.Lock()
        self._refs: Dict[str, int] = {}
        self._acks: Dict[int, threading.Event] = {}
        self._waiters: Dict[str, _Waiter] = {}
        self._connack: Optional[str] = None
        #: Counts lost connections, so a wait can tell it was cut short.
        self._generation = 0
        #: The daemon's last retained status ({"state": …}), for error texts.
        self.daemon_status: Optional[dict] = None

    # -- settings and topics -------------------------------------------

    @property
    def settings(self) -> BrokerSettings:
        if self._settings is None:
            self._settings = _config.load(self._config_path)
        return self._settings

    def topic(self, package: str, target: str, verb: Optional[str] = None) -> str:
        check_level("package", package)
        check_level("user or group", target)
        base = f"{self.settings.topic_prefix}axion/{package}/push/{target}"
        return f"{base}/{verb}" if verb else base

    def _with_token(self, payload: dict, package: str, user: str) -> dict:
        """Adds a subscribe token when the daemon requires one (a token the
        caller put in the payload is left as it is)."""
        secret = self.settings.subscribe_token_secret
        if secret is not None and "token" not in payload:
            payload["token"] = fresh_token(secret, package, user)
        return payload

    def status_topic(self) -> str:
        return f"{self.settings.topic_prefix}axion/push/daemon/status"

    # -- connection ----------------------------------------------------

    # The callbacks take what paho-mqtt 1.6 and 2.x both pass (see `paho_compat`).

    def _on_connect(self, client, userdata, flags, reason_code, properties=None):
        if client is not self._current:
            return
        refusal = paho_compat.connect_refusal(reason_code)
        if refusal is not None:
            self._connack = refusal
            return
        self._connack = None
        # A clean session forgets subscriptions: take them again.
        with self._sub_lock:
            topics = list(self._refs)
        for topic in topics:
            client.subscribe(topic, qos=1)
        client.subscribe(self.status_topic(), qos=0)
        self._connected.set()

    def _on_disconnect(self, client, *args):
        if client is not self._current:
            return
        self._connected.clear()
        self._generation += 1
        # Wake whoever waits for a SUBACK that will not come.
        for acked in list(self._acks.values()):
            acked.set()

    def _on_subscribe(self, client, userdata, mid, *args):
        self._acks.setdefault(mid, threading.Event()).set()

    def _on_message(self, client, userdata, message):
        try:
            payload = json.loads(message.payload)
        except ValueError:
            return
        if not isinstance(payload, dict):
            return
        if message.topic == self.status_topic():
            self.daemon_status = payload
            return
        waiter = self._waiters.get(str(payload.get("id")))
        if waiter is not None and waiter.topic == message.topic:
            waiter.report = payload
            waiter.event.set()

    def _new_client(self) -> mqtt.Client:
        s = self.settings
        client = paho_compat.new_client(f"axion-push-py-{uuid.uuid4()}")
        if s.username is not None:
            client.username_pw_set(s.username, s.password)
        if s.tls:
            client.tls_set(ca_certs=s.ca_file, cert_reqs=ssl.CERT_REQUIRED)
        paho_compat.set_connect_timeout(client, self.connect_timeout)
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        return client

    def _ensure_connected(self) -> mqtt.Client:
        with self._connect_lock:
            if self._client is not None and self._connected.is_set():
                return self._client
            # Never connected, or the connection was lost: start afresh, so
            # a broker that is gone is reported now instead of after the
            # background reconnects give up.
            self._drop_client()
            s = self.settings
            client = self._new_client()
            self._current = client
            try:
                client.connect(s.host, s.port, keepalive=max(5, s.keep_alive))
            except (OSError, ssl.SSLError) as e:
                raise AxionPushUnavailable(
                    f"cannot reach the MQTT broker at {s.address()}: {e} "
                    "(is `axion-push serve` running? broker settings come from "
                    f"{s.source or 'the built-in defaults'})"
                ) from e
            client.loop_start()
            if not self._connected.wait(self.connect_timeout) or self._connack:
                reason = self._connack or f"no CONNACK within {self.connect_timeout:g} s"
                client.loop_stop()
                client.disconnect()
                raise AxionPushUnavailable(
                    f"the MQTT broker at {s.address()} refused the connection: {reason}"
                )
            self._client = client
            return client

    def _drop_client(self) -> None:
        client, self._client = self._client, None
        self._current = None
        self._connected.clear()
        if client is not None:
            client.disconnect()
            client.loop_stop()
            with self._sub_lock:
                self._refs.clear()

    def close(self) -> None:
        """Disconnects; the next request connects again."""
        with self._connect_lock:
            self._drop_client()

    def __enter__(self) -> "AxionPush":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- result topics -------------------------------------------------

    def _take_topic(self, client: mqtt.Client, topic: str, deadline: float) -> None:
        with self._sub_lock:
            if self._refs.get(topic, 0) == 0:
                generation = self._generation
                if not self._connected.is_set():
                    raise _ConnectionLost()
                rc, mid = client.subscribe(topic, qos=1)
                if rc != mqtt.MQTT_ERR_SUCCESS:
                    raise AxionPushUnavailable(
                        f"cannot subscribe to {topic}: {mqtt.error_string(rc)}"
                    )
                acked = self._acks.setdefault(mid, threading.Event())
                try:
                    acked.wait(max(0.0, deadline - time.monotonic()))
                    if self._generation != generation:
                        raise _ConnectionLost()
                    if not acked.is_set():
                        raise AxionPushUnavailable(
                            f"the broker at {self.settings.address()} did not confirm "
                            f"the subscription to {topic} in time"
                        )
                finally:
                    self._acks.pop(mid, None)
            self._refs[topic] = self._refs.get(topic, 0) + 1

    def _release_topic(self, client: mqtt.Client, topic: str) -> None:
        with self._sub_lock:
            left = self._refs.get(topic, 0) - 1
            if left > 0:
                self._refs[topic] = left
                return
            self._refs.pop(topic, None)
        if self._connected.is_set():
            client.unsubscribe(topic)

    # -- requests ------------------------------------------------------

    def request(
        self,
        package: str,
        target: str,
        verb: str,
        payload: Optional[dict] = None,
        timeout: Optional[float] = None,
    ) -> dict:
        """Publishes a command and returns its result report (a dict).

        Raises :class:`AxionPushUnavailable` when the broker cannot be
        reached or no report arrives within ``timeout`` seconds. A refused
        command is returned, not raised: its report has ``ok`` false.
        """
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        command = dict(payload or {})
        command_id = str(command.setdefault("id", str(uuid.uuid4())))
        command_topic = self.topic(package, target, verb)
        result_topic = self.topic(package, target, "result")
        waiter = _Waiter(result_topic)
        self._waiters[command_id] = waiter
        try:
            # A connection found dead before the command went out (the
            # broker restarted, say) is replaced once; after publishing, the
            # answer is waited for until the deadline, never sent twice.
            for attempt in (1, 2):
                client = self._ensure_connected()
                try:
                    self._take_topic(client, result_topic, deadline)
                    break
                except _ConnectionLost:
                    if attempt == 2:
                        raise AxionPushUnavailable(
                            f"the connection to the MQTT broker at {self.settings.address()} "
                            f"was lost twice before {verb} could be published"
                        ) from None
            try:
                info = client.publish(command_topic, json.dumps(command), qos=1)
                if info.rc != mqtt.MQTT_ERR_SUCCESS:
                    raise AxionPushUnavailable(
                        f"cannot publish to {command_topic}: {mqtt.error_string(info.rc)}"
                    )
                if not waiter.event.wait(max(0.0, deadline - time.monotonic())):
                    raise AxionPushUnavailable(self._no_answer(verb, result_topic, timeout))
            finally:
                self._release_topic(client, result_topic)
        finally:
            self._waiters.pop(command_id, None)
        assert waiter.report is not None
        return waiter.report

    def _no_answer(self, verb: str, result_topic: str, timeout: float) -> str:
        status = self.daemon_status or {}
        if status.get("state") == "offline":
            hint = "the daemon's status says offline"
        elif status:
            hint = f"the daemon's last status is {status.get('state')!r}"
        else:
            hint = "no daemon has published a status on this broker"
        return (
            f"no answer to {verb} from axion-push within {timeout:g} s on {result_topic} "
            f"({hint}): is `axion-push serve` running and connected to the broker at "
            f"{self.settings.address()}?"
        )

    def checked(self, package: str, target: str, verb: str, payload=None, timeout=None) -> dict:
        """Like :meth:`request`; a refused command raises :class:`AxionPushRejected`."""
        report = self.request(package, target, verb, payload, timeout)
        if not report.get("ok"):
            raise AxionPushRejected(
                f"axion-push refused {verb} for {target} in {package}: {report.get('error')}",
                report,
            )
        return report

    # -- the verbs -----------------------------------------------------

    def send(self, target: str, notification: dict, package: str = DEFAULT_PACKAGE, timeout=None) -> dict:
        """`send` to a user, or to a group as ``@group``; returns the report."""
        return self.request(package, target, "send", notification, timeout)

    def subscribe(
        self,
        user: str,
        subscription: dict,
        package: str = DEFAULT_PACKAGE,
        user_agent: Optional[str] = None,
        module: Optional[str] = None,
        timeout=None,
    ) -> dict:
        payload = dict(subscription)
        if user_agent is not None:
            payload["user_agent"] = user_agent
        if module is not None:
            payload["module"] = module
        self._with_token(payload, package, user)
        return self.request(package, user, "subscribe", payload, timeout)

    def unsubscribe(self, user: str, endpoint: str, package: str = DEFAULT_PACKAGE, timeout=None) -> dict:
        payload = self._with_token({"endpoint": endpoint}, package, user)
        return self.request(package, user, "unsubscribe", payload, timeout)

    def receipt(self, user: str, receipt: dict, package: str = DEFAULT_PACKAGE, timeout=None) -> dict:
        """`receipt`: what a browser did with a push — ``{"token",
        "receipt", "action"?, "reason"?}`` as the service worker sent it to
        the relay. The token is its own authorisation (no subscribe token).
        The report carries ``send_id``, ``receipt`` and ``subscription``."""
        fields = ("token", "receipt", "action", "reason")
        payload = {k: receipt[k] for k in fields if receipt.get(k) is not None}
        return self.request(package, user, "receipt", payload, timeout)

    def list(
        self, user: str, package: str = DEFAULT_PACKAGE, all: bool = False, endpoints: bool = True, timeout=None
    ) -> dict:
        """`list`: the report's ``items`` are the subscriptions, without keys:
        ``subscription`` (a stable id ``unsubscribe`` also takes),
        ``origin``, ``module``, ``user_agent``, ``created_at``, ``active``,
        and ``endpoint`` with ``endpoints`` (a service may ask for them,
        a browser may not)."""
        payload: Dict[str, Any] = {}
        if all:
            payload["all"] = True
        if endpoints:
            payload["endpoints"] = True
        self._with_token(payload, package, user)
        return self.request(package, user, "list", payload, timeout)

    def members(
        self,
        group: str,
        package: str = DEFAULT_PACKAGE,
        *,
        add: Optional[Iterable[str]] = None,
        remove: Optional[Iterable[str]] = None,
        set: Optional[Iterable[str]] = None,
        timeout=None,
    ) -> dict:
        """`members`: change a group (``set`` replaces it)."""
        payload: Dict[str, List[str]] = {}
        for key, users in (("add", add), ("remove", remove), ("set", set)):
            if users is not None:
                payload[key] = list(users)
        return self.request(package, group_level(group), "members", payload, timeout)


def group_level(group: str) -> str:
    """``ops`` or ``@ops`` → ``@ops``."""
    if not isinstance(group, str) or not group.lstrip("@"):
        raise ValueError(f"group must be a non-empty string, not {group!r}")
    return group if group.startswith("@") else f"@{group}"
