"""The real `axion-push` daemon for the tests: a temporary directory, its
SQLite database (or a database the test names), the embedded broker on a
free loopback port, and the loopback push service allowed explicitly (its
CA, private addresses)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Optional

from axion_push_client.paho_compat import new_client

REPO = Path(__file__).resolve().parents[3]
START_TIMEOUT = 30.0


def daemon_binary() -> Path:
    explicit = os.environ.get("AXION_PUSH_BIN")
    if explicit:
        return Path(explicit)
    target = Path(os.environ.get("CARGO_TARGET_DIR") or REPO / "target")
    return target / "debug" / "axion-push"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(
    directory: Path,
    port: int,
    ca_path: Path,
    client_id: str,
    broker_url: Optional[str] = None,
    prefix: str = "",
    extra: str = "",
    push_port: int = 443,
    database_url: Optional[str] = None,
    base_push: str = "",
) -> Path:
    """A config.yaml in the daemon's layout; the client reads the same file.
    `extra`: more keys of the `axion_push` section, as YAML lines;
    `base_push`: more keys of `base.push` (an installation's VAPID key);
    `database_url`: the daemon's database instead of SQLite in `directory`."""
    path = directory / "config.yaml"
    extra = "".join(f"  {line}\n" for line in extra.splitlines())
    base_push = "".join(f"    {line}\n" for line in base_push.splitlines())
    path.write_text(
        f"""\
base:
  push:
{base_push}    vapid_email: mailto:tests@example.com
axion_push:
  mqtt:
    url: {broker_url or "null"}
    client_id: {client_id}
    topic_prefix: "{prefix}"
  broker:
    listen: 127.0.0.1:{port}
  database:
    url: {database_url or f"sqlite://{directory / 'axion-push.db'}"}
  vapid_key_file: {directory / "vapid.pem"}
  delivery:
    request_timeout: 5s
    shutdown_grace: 2s
    retry_initial: 1s
    extra_root_ca: {ca_path}
  endpoints:
    allow_hosts: ["127.0.0.1"]
    allow_ports: [443, {push_port}]
    allow_private_addresses: true
  log:
    level: warn
{extra}""",
        encoding="utf-8",
    )
    return path


class Daemon:
    """`broker_port` set: the daemon uses that external broker (e.g. the
    machine's Mosquitto) under `prefix`; otherwise its embedded broker.
    `extra`: more `axion_push` keys for its config.yaml; `push_port`: the
    loopback push service's port, which the endpoint policy must allow;
    `database_url`, `base_push`: see `write_config`."""

    def __init__(
        self,
        directory: Path,
        ca_path: Path,
        broker_port: Optional[int] = None,
        prefix: str = "",
        extra: str = "",
        push_port: int = 443,
        database_url: Optional[str] = None,
        base_push: str = "",
    ):
        self.directory = directory
        self.external = broker_port is not None
        self.port = broker_port if broker_port is not None else free_port()
        self.prefix = prefix
        self.client_id = f"axion-push-{uuid.uuid4()}"
        url = f"mqtt://127.0.0.1:{broker_port}" if self.external else None
        self.config_path = write_config(
            directory, self.port, ca_path, self.client_id, url, prefix, extra, push_port, database_url, base_push
        )
        self.log_path = directory / "daemon.log"
        self.process: Optional[subprocess.Popen] = None

    def start(self) -> "Daemon":
        binary = daemon_binary()
        if not binary.exists():
            raise RuntimeError(f"no axion-push binary at {binary}: run `cargo build --bin axion-push` or set AXION_PUSH_BIN")
        self._log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [str(binary), "serve", "--config", str(self.config_path)],
            cwd=self.directory,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self._wait_online()
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def _wait_online(self) -> None:
        """Waits for the daemon's retained status `online` on its broker."""
        deadline = time.monotonic() + START_TIMEOUT
        online = threading.Event()

        def on_message(client, userdata, message):
            try:
                if json.loads(message.payload).get("state") == "online":
                    online.set()
            except ValueError:
                pass

        watcher = new_client(f"watch-{uuid.uuid4()}")
        watcher.on_message = on_message
        watcher.on_connect = lambda c, *a: c.subscribe(f"{self.prefix}axion/push/daemon/status", qos=1)
        # The port opens once the daemon has started its broker.
        delay = 0.02
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"axion-push exited with {self.process.returncode}:\n{self.log()}")
            try:
                watcher.connect("127.0.0.1", self.port)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"axion-push's broker did not open port {self.port}:\n{self.log()}")
                time.sleep(delay)
                delay = min(delay * 2, 0.25)
        watcher.loop_start()
        try:
            if not online.wait(max(0.0, deadline - time.monotonic())):
                raise RuntimeError(f"axion-push did not say online within {START_TIMEOUT} s:\n{self.log()}")
        finally:
            watcher.disconnect()
            watcher.loop_stop()

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        self._log.close()
        if self.external:
            self._leave_no_trace()

    def _leave_no_trace(self) -> None:
        """On a shared broker: end the daemon's persistent session and clear
        its retained messages."""
        done = threading.Event()
        forget = new_client(self.client_id, clean_session=True)
        forget.on_connect = lambda *a: done.set()
        forget.connect("127.0.0.1", self.port)
        forget.loop_start()
        done.wait(10)
        for topic in ("axion/push/daemon/status", "axion/push/vapid"):
            forget.publish(f"{self.prefix}{topic}", b"", qos=1, retain=True).wait_for_publish(10)
        forget.disconnect()
        forget.loop_stop()
