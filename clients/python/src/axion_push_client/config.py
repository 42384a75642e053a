"""Broker settings, read from the daemon's own config.yaml.

The file is found the way `axion-push` finds it: an explicit path, else
``$AXION_PUSH_CONFIG``, else ``./config.local.yaml`` if it exists (this
machine's settings, kept beside a checkout's ``config.yaml``), else
``./config.yaml``; without any, the daemon's defaults apply (its embedded
broker on 127.0.0.1:1883, no topic prefix).
Only ``axion_push.mqtt``, ``axion_push.broker.listen`` and
``axion_push.subscribe_token_secret`` are read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Union
from urllib.parse import unquote, urlsplit

from .errors import AxionPushConfigError

ENV_VAR = "AXION_PUSH_CONFIG"
DEFAULT_FILE = "config.yaml"
#: Read in place of DEFAULT_FILE when it exists, as the daemon does.
LOCAL_FILE = "config.local.yaml"
DEFAULT_LISTEN = "127.0.0.1:1883"


@dataclass(frozen=True)
class BrokerSettings:
    """Where and how to reach the broker the daemon listens on."""

    host: str = "127.0.0.1"
    port: int = 1883
    tls: bool = False
    ca_file: Optional[str] = None
    username: Optional[str] = None
    password: Optional[str] = None
    topic_prefix: str = ""
    keep_alive: int = 30
    #: ``axion_push.subscribe_token_secret``: when set, subscribe and
    #: unsubscribe carry a token made with it (see :mod:`.token`).
    subscribe_token_secret: Optional[str] = None
    #: The file the settings came from, None for the defaults.
    source: Optional[str] = None

    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def __repr__(self) -> str:  # never show the password or the token secret
        password = "***" if self.password is not None else None
        token_secret = "***" if self.subscribe_token_secret is not None else None
        return (
            f"BrokerSettings(host={self.host!r}, port={self.port}, tls={self.tls}, "
            f"username={self.username!r}, password={password!r}, "
            f"topic_prefix={self.topic_prefix!r}, subscribe_token_secret={token_secret!r}, "
            f"source={self.source!r})"
        )


def locate(path: Union[str, os.PathLike, None] = None) -> Optional[Path]:
    """The config file to read: `path`, $AXION_PUSH_CONFIG,
    ./config.local.yaml if it exists, ./config.yaml."""
    if path is not None:
        return Path(path)
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env)
    local = Path(LOCAL_FILE)
    # Present at all, even as a broken link: reading it then says why not.
    if os.path.lexists(local):
        return local
    default = Path(DEFAULT_FILE)
    return default if default.exists() else None


def load(path: Union[str, os.PathLike, None] = None) -> BrokerSettings:
    """Reads the broker settings from config.yaml (see module docs)."""
    file = locate(path)
    if file is None:
        return BrokerSettings()
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as e:
        raise AxionPushConfigError(f"cannot read {file}: {e}") from e
    try:
        import yaml  # PyYAML: Axion's own dependency
    except ImportError as e:
        raise AxionPushConfigError(
            f"reading {file} needs PyYAML: pip install 'axion-push-client[yaml]' "
            "(or pass the broker settings to configure())"
        ) from e
    try:
        document = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise AxionPushConfigError(f"{file} is not valid YAML: {e}") from e
    if not isinstance(document, Mapping):
        raise AxionPushConfigError(f"{file}: the document must be a mapping")
    return from_mapping(document, source=str(file))


def _section(value: Any, path: str, source: str) -> Mapping:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise AxionPushConfigError(f"{source}: {path} must be a mapping")
    return value


def _duration_seconds(value: Any, path: str, source: str) -> int:
    """`30s`, `1500ms`, `2m` or a number of seconds, as the daemon reads it."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return max(1, int(value))
    if isinstance(value, str):
        text = value.strip()
        for suffix, factor in (("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600)):
            if text.endswith(suffix):
                number = text[: -len(suffix)].strip()
                try:
                    return max(1, int(float(number) * factor))
                except ValueError:
                    break
        else:
            try:
                return max(1, int(float(text)))
            except ValueError:
                pass
    raise AxionPushConfigError(f"{source}: {path} must be a duration like 30s")


def from_mapping(document: Mapping, source: str = "<mapping>") -> BrokerSettings:
    """Settings from an already parsed config.yaml document."""
    ours = _section(document.get("axion_push"), "axion_push", source)
    mqtt = _section(ours.get("mqtt"), "axion_push.mqtt", source)
    broker = _section(ours.get("broker"), "axion_push.broker", source)
    prefix = mqtt.get("topic_prefix") or ""
    if not isinstance(prefix, str):
        raise AxionPushConfigError(f"{source}: axion_push.mqtt.topic_prefix must be a string")
    keep_alive = _duration_seconds(mqtt.get("keep_alive", 30), "axion_push.mqtt.keep_alive", source)
    token_secret = ours.get("subscribe_token_secret")
    if token_secret is not None and (not isinstance(token_secret, str) or not token_secret):
        raise AxionPushConfigError(f"{source}: axion_push.subscribe_token_secret must be a string")
    username = mqtt.get("username")
    password = mqtt.get("password")
    url = mqtt.get("url")
    if url:
        parts = urlsplit(str(url))
        if parts.scheme not in ("mqtt", "tcp", "mqtts", "ssl"):
            raise AxionPushConfigError(
                f"{source}: axion_push.mqtt.url must be mqtt://host:port or mqtts://host:port, not {url}"
            )
        if not parts.hostname:
            raise AxionPushConfigError(f"{source}: axion_push.mqtt.url {url} has no host")
        tls = parts.scheme in ("mqtts", "ssl")
        host = parts.hostname
        port = parts.port or (8883 if tls else 1883)
        # Credentials in the URL, as some deployments write them.
        if parts.username and username is None:
            username = unquote(parts.username)
        if parts.password and password is None:
            password = unquote(parts.password)
    else:
        tls = False
        listen = str(broker.get("listen") or DEFAULT_LISTEN)
        host, sep, port_text = listen.rpartition(":")
        if not sep or not port_text.isdigit():
            raise AxionPushConfigError(
                f"{source}: axion_push.broker.listen must be host:port, not {listen}"
            )
        host = host.strip("[]")
        port = int(port_text)
        # A broker listening on every interface is reached on loopback.
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
    return BrokerSettings(
        host=host,
        port=port,
        tls=tls,
        ca_file=mqtt.get("ca_file"),
        username=None if username is None else str(username),
        password=None if password is None else str(password),
        topic_prefix=prefix,
        keep_alive=keep_alive,
        subscribe_token_secret=token_secret,
        source=source,
    )
