"""axion-push-py: the old command line, through the daemon."""

import base64
import json
import os
import subprocess
import sys
import time

import yaml
from cryptography.hazmat.primitives import serialization

from axion_push_client import AxionPush


def cli(*args, timeout=60, **kwargs):
    return subprocess.run(
        [sys.executable, "-m", "axion_push_client", *args],
        capture_output=True, text=True, timeout=timeout, **kwargs,
    )


def test_test_push_delivers_and_prints_the_report(daemon, push_service, user):
    browser = push_service.browser("cli")
    with AxionPush(config=str(daemon.config_path), timeout=15) as client:
        assert client.subscribe(user, browser.subscription())["ok"]
    run = cli("--config", str(daemon.config_path), "test-push", user, "--title", "Hello", "--body", "from the CLI")
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["ok"] is True and report["delivered"] == 1
    [push] = push_service.wait_for(browser)
    assert (push.payload["title"], push.payload["body"]) == ("Hello", "from the CLI")


def test_test_push_reads_the_config_from_the_environment(daemon, user):
    env = {**os.environ, "AXION_PUSH_CONFIG": str(daemon.config_path)}
    run = cli("test-push", user, "--title", "T", "--body", "B", "--package", "crm", env=env)
    assert run.returncode == 1, "a user without browsers: nothing pushed"
    assert json.loads(run.stdout)["subscriptions"] == 0
    assert "has no active subscription in package crm" in run.stderr


def test_test_push_without_a_daemon_fails_clearly(tmp_path):
    from daemon import free_port

    config = tmp_path / "config.yaml"
    config.write_text(f"axion_push:\n  broker:\n    listen: 127.0.0.1:{free_port()}\n")
    start = time.monotonic()
    run = cli("test-push", "alice", "--config", str(config), "--timeout", "3")
    assert run.returncode == 1
    assert "cannot reach the MQTT broker" in run.stderr
    assert time.monotonic() - start < 10


def test_generate_vapid_prints_a_matching_key_pair():
    run = cli("generate-vapid", "--email", "ops@example.com")
    assert run.returncode == 0, run.stderr
    push = yaml.safe_load(run.stdout)["base"]["push"]
    assert push["vapid_email"] == "mailto:ops@example.com"
    key = serialization.load_pem_private_key(push["vapid_private_key"].encode(), password=None)
    public = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    assert base64.urlsafe_b64decode(push["vapid_public_key"] + "=") == public
