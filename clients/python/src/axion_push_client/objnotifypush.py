"""The functions of Axion's ObjNotifyPush, answered by the axion-push daemon.

Same names, arguments, defaults and return values as the old module, so its
callers run unchanged; the work happens in the daemon, reached over MQTT with
the broker settings of the same config.yaml. The top-level module
``ObjNotifyPush`` re-exports everything here.

Errors, as callers of the old module expect them:

- ``send_push`` and ``send_push_to_group`` return ``True`` only when a
  browser was reached: at least one push delivered or waiting for a retry.
  ``False`` when there was no active subscription, every push failed or
  was refused, the daemon refused the notification or did not answer — a
  caller falls back (to ObjSms, say) on ``False``.
- ``subscribe``, ``unsubscribe`` and the group helpers return ``True`` when
  the daemon accepted the command and ``False`` otherwise.
  ``subscribe_result`` is ``subscribe`` answering with the daemon's result
  report instead, for a relay that passes a refusal's ``code`` on to the
  page (``endpoint-taken``: the browser makes a new subscription).
- Every ``False`` has its reason on the ``axion_push_client`` logger: the
  daemon's ``error`` when it refused the command, what became of the
  pushes, or "cannot reach the MQTT broker…" / "no answer … within N s"
  when the daemon is not running. No call hangs longer than the timeout.
- ``get_subscriptions`` returns a list; if the daemon does not answer it
  raises :class:`AxionPushUnavailable` — an empty list would wrongly say the
  user has no browser (the old function raised on a database error too).

``configure(raise_errors=True)`` makes every function raise instead
(:class:`AxionPushUnavailable`, :class:`AxionPushRejected`); a send that
reached no browser still returns ``False``, as nothing went wrong with it.
"""

from __future__ import annotations

import datetime
import json
import logging
import threading
from typing import Any, Callable, Dict, Iterable, List, Optional, Union

from .client import DEFAULT_PACKAGE, DEFAULT_TIMEOUT, AxionPush, group_level
from .config import BrokerSettings
from .errors import AxionPushError, AxionPushRejected, AxionPushUnavailable

__all__ = [
    "send_push",
    "send_push_to_group",
    "subscribe",
    "subscribe_result",
    "unsubscribe",
    "get_subscriptions",
    "set_group_members",
    "add_group_members",
    "remove_group_members",
    "configure",
    "client",
    "AxionPushError",
    "AxionPushRejected",
    "AxionPushUnavailable",
    "DEFAULT_PACKAGE",
]

log = logging.getLogger("axion_push_client")

_lock = threading.Lock()
_client: Optional[AxionPush] = None
_raise_errors = False

# Spellings of notification options that callers may have used with the old
# module (JavaScript's Notification names), mapped to the daemon's fields.
_ALIASES = {
    "requireInteraction": "require_interaction",
    "TTL": "ttl",
    "time_to_live": "ttl",
}


def configure(
    config: Optional[str] = None,
    *,
    settings: Optional[BrokerSettings] = None,
    timeout: float = DEFAULT_TIMEOUT,
    connect_timeout: Optional[float] = None,
    raise_errors: bool = False,
) -> AxionPush:
    """Chooses the config file (or explicit ``settings``), the timeout in
    seconds, and whether failures raise. Optional: without it the first call
    reads config.yaml as ``axion-push`` does ($AXION_PUSH_CONFIG, then
    ./config.local.yaml if it exists, then ./config.yaml) and waits up to 30 s for each answer."""
    global _client, _raise_errors
    kwargs: Dict[str, Any] = {"config": config, "timeout": timeout}
    if connect_timeout is not None:
        kwargs["connect_timeout"] = connect_timeout
    with _lock:
        if _client is not None:
            _client.close()
        _client = AxionPush(settings, **kwargs)
        _raise_errors = raise_errors
        return _client


def client() -> AxionPush:
    """The module's shared :class:`AxionPush` (created on first use)."""
    global _client
    with _lock:
        if _client is None:
            _client = AxionPush()
        return _client


def _answer(what: str, run) -> dict:
    """Runs a request; its result report, or one with ``ok`` false and the
    reason in ``error`` when it could not be made. A refusal is logged."""
    try:
        report = run()
    except AxionPushError as e:
        if _raise_errors:
            raise
        log.error("%s failed: %s", what, e)
        return {"ok": False, "error": str(e)}
    except ValueError as e:  # a name that cannot be a topic level
        if _raise_errors:
            raise
        log.error("%s refused: %s", what, e)
        return {"ok": False, "error": str(e)}
    if not report.get("ok"):
        if _raise_errors:
            raise AxionPushRejected(f"{what} refused: {report.get('error')}", report)
        code = report.get("code")
        log.warning("%s refused by axion-push: %s%s", what, report.get("error"), f" ({code})" if code else "")
    return report


def _accepted(what: str, run, reached: Callable[[str, dict], bool] = lambda what, report: True) -> bool:
    """Runs a request; True if the daemon accepted it and ``reached`` says
    so of its report, else False and a log."""
    report = _answer(what, run)
    return bool(report.get("ok")) and reached(what, report)


def _notification(title: Any, body: Any, url: Any, options: Dict[str, Any]) -> dict:
    notification: Dict[str, Any] = {"title": title, "body": "" if body is None else body}
    if url is not None:
        notification["url"] = url
    for key, value in options.items():
        notification[_ALIASES.get(key, key)] = value
    return notification


def _reached_a_browser(what: str, report: dict) -> bool:
    """Whether a send reached a browser: at least one push delivered, or
    waiting in the daemon's queue for a retry (the first report comes once
    every push was tried once). Logs what became of the others."""
    subscriptions = report.get("subscriptions", 0)
    delivered = report.get("delivered", 0)
    queued = report.get("queued", 0)
    if subscriptions == 0:
        log.info("%s: no active subscription, nothing was pushed", what)
        return False
    lost = subscriptions - delivered - queued
    if lost:
        log.warning(
            "%s: %s of %s pushes reached no browser (failed: %s %s; deactivated as gone: %s; expired: %s)",
            what,
            lost,
            subscriptions,
            report.get("failed", 0),
            report.get("failures", {}),
            report.get("deactivated", 0),
            report.get("expired", 0),
        )
    return delivered + queued > 0


def send_push(user: str, title: str, body: str, url: str = "/", package: str = DEFAULT_PACKAGE, **options) -> bool:
    """Notifies ``user``: the real-time event on ``axion/{package}/push/{user}``
    and a Web Push to each of the user's active browsers.

    ``options`` are the notification's other fields: ``icon``, ``badge``,
    ``image``, ``tag``, ``renotify``, ``require_interaction``, ``silent``,
    ``lang``, ``dir``, ``actions``, ``data``, ``ttl``, ``urgency``,
    ``topic``, ``id``. True when at least one of the user's browsers was
    reached (a push delivered, or queued for a retry); False when the user
    has no active subscription, every push failed or was refused, or the
    notification was refused — the reason is logged.
    """
    what = f"send_push to {user!r} in {package!r}"
    notification = _notification(title, body, url, options)
    return _accepted(what, lambda: client().send(user, notification, package), _reached_a_browser)


def send_push_to_group(group: str, title: str, body: str, url: str = "/", package: str = DEFAULT_PACKAGE, **options) -> bool:
    """Like :func:`send_push` for every member of ``group`` (``ops`` or
    ``@ops``); membership is kept by the daemon (see :func:`set_group_members`).
    True when at least one member's browser was reached."""
    what = f"send_push_to_group to {group!r} in {package!r}"
    notification = _notification(title, body, url, options)
    return _accepted(what, lambda: client().send(group_level(group), notification, package), _reached_a_browser)


def subscribe(
    user: str,
    package: str,
    subscription_json: Union[str, bytes, dict],
    user_agent: Optional[str] = None,
    module: Optional[str] = None,
) -> bool:
    """Records a browser's ``PushSubscription`` (its JSON text or the dict)
    for ``user`` with Active = 'Y'. False (and a log) when it is refused:
    not JSON, no endpoint, bad keys, an endpoint outside the daemon's policy,
    or, with subscribe tokens on, an endpoint active for another user (see
    :func:`subscribe_result`)."""
    return bool(subscribe_result(user, package, subscription_json, user_agent, module).get("ok"))


def subscribe_result(
    user: str,
    package: str,
    subscription_json: Union[str, bytes, dict],
    user_agent: Optional[str] = None,
    module: Optional[str] = None,
) -> dict:
    """Like :func:`subscribe`, answering with the daemon's result report:
    ``ok``, and for a refusal ``error`` and, when the browser can act on
    it, ``code``. ``endpoint-taken``: with subscribe tokens on, the
    endpoint is active for another user of the package (a shared browser
    changing hands); the browser makes a new subscription and subscribes
    that, as ``axion-push.js`` does when its relay answers with this
    ``code``. A subscription refused before it reaches the daemon, or a
    daemon that does not answer, gives ``ok`` false and ``error``."""
    what = f"subscribe for {user!r} in {package!r}"
    if isinstance(subscription_json, (str, bytes, bytearray)):
        try:
            subscription = json.loads(subscription_json)
        except ValueError as e:
            if _raise_errors:
                raise ValueError(f"{what}: subscription_json is not JSON: {e}") from e
            log.warning("%s refused: subscription_json is not JSON: %s", what, e)
            return {"ok": False, "error": f"subscription_json is not JSON: {e}"}
    else:
        subscription = subscription_json
    if not isinstance(subscription, dict):
        if _raise_errors:
            raise ValueError(f"{what}: subscription_json must be a JSON object")
        log.warning("%s refused: subscription_json must be a JSON object", what)
        return {"ok": False, "error": "subscription_json must be a JSON object"}
    return _answer(
        what,
        lambda: client().subscribe(user, subscription, package, user_agent=user_agent, module=module),
    )


def unsubscribe(user: str, package: str, endpoint: str) -> bool:
    """Sets Active = 'N' for one of ``user``'s endpoints. True when the
    daemon accepted it, also if the endpoint was not active."""
    return _accepted(
        f"unsubscribe for {user!r} in {package!r}",
        lambda: client().unsubscribe(user, endpoint, package),
    )


def _created_at(text: Any) -> Any:
    """`CreatedAt` as a naive datetime, as a MySQL driver returned the
    `datetime` column to the old module; text the daemon cannot have
    written is passed through."""
    if not isinstance(text, str):
        return text
    try:
        return datetime.datetime.fromisoformat(text)
    except ValueError:
        return text


def get_subscriptions(user: str, package: str, include_inactive: bool = False) -> List[Dict[str, Any]]:
    """``user``'s subscriptions in ``package`` as rows of
    ``def_notify_push_subscription`` — ``User``, ``Package``, ``Module``,
    ``Endpoint``, ``UserAgent``, ``CreatedAt`` (a ``datetime``), ``Active``
    ('Y'/'N') — without
    ``KeysP256dh`` and ``KeysAuth``, which the daemon never puts on the bus.
    Active ones only unless ``include_inactive``. Raises
    :class:`AxionPushUnavailable` when the daemon does not answer."""
    what = f"get_subscriptions for {user!r} in {package!r}"
    try:
        report = client().list(user, package, all=include_inactive)
    except ValueError as e:
        if _raise_errors:
            raise
        log.warning("%s refused: %s", what, e)
        return []
    if not report.get("ok"):
        if _raise_errors:
            raise AxionPushRejected(f"{what} refused: {report.get('error')}", report)
        log.warning("%s refused by axion-push: %s", what, report.get("error"))
        return []
    return [
        {
            "User": user,
            "Package": package,
            "Module": item.get("module"),
            "Endpoint": item.get("endpoint"),
            "UserAgent": item.get("user_agent"),
            "CreatedAt": _created_at(item.get("created_at")),
            "Active": "Y" if item.get("active") else "N",
        }
        for item in report.get("items") or []
    ]


def set_group_members(group: str, users: Iterable[str], package: str = DEFAULT_PACKAGE) -> bool:
    """Makes ``users`` the members of ``group`` (the daemon keeps groups)."""
    return _accepted(f"set_group_members of {group!r}", lambda: client().members(group, package, set=users))


def add_group_members(group: str, users: Iterable[str], package: str = DEFAULT_PACKAGE) -> bool:
    return _accepted(f"add_group_members to {group!r}", lambda: client().members(group, package, add=users))


def remove_group_members(group: str, users: Iterable[str], package: str = DEFAULT_PACKAGE) -> bool:
    return _accepted(
        f"remove_group_members from {group!r}", lambda: client().members(group, package, remove=users)
    )
