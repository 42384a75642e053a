"""The old command line: the module's file, where Axion kept it, run as a
script the way operators type it —

    python factory.core/ObjNotifyPush.py test-push admin --title "Alert" --body "Server check"
    python factory.core/ObjNotifyPush.py generate-vapid

— from Axion's directory, whose config.yaml it reads."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from py_vapid import Vapid
from py_vapid.utils import b64urlencode
from cryptography.hazmat.primitives import serialization

from daemon import daemon_binary, free_port

MODULE_FILE = Path(__file__).resolve().parents[1] / "src" / "ObjNotifyPush.py"


@pytest.fixture
def axion(tmp_path):
    """An Axion directory: factory.core/ObjNotifyPush.py is this package's
    file (the package itself is installed); config.yaml is written by the
    test."""
    (tmp_path / "factory.core").mkdir()
    shutil.copy(MODULE_FILE, tmp_path / "factory.core" / "ObjNotifyPush.py")
    return tmp_path


def old_cli(axion, *args, prelude=None, path=None):
    """`python factory.core/ObjNotifyPush.py ARGS` in `axion`; `prelude` runs
    first in the same interpreter (to hide a module, say)."""
    env = {k: v for k, v in os.environ.items() if k != "AXION_PUSH_CONFIG"}
    if path is not None:
        env["PATH"] = path
    script = "factory.core/ObjNotifyPush.py"
    if prelude is None:
        command = [sys.executable, script, *args]
    else:
        command = [
            sys.executable, "-c",
            f"{prelude}\nimport runpy, sys\nsys.argv = {[script, *args]!r}\n"
            f"runpy.run_path({script!r}, run_name='__main__')",
        ]
    return subprocess.run(command, cwd=axion, env=env, capture_output=True, text=True, timeout=60)


@pytest.fixture
def with_daemon(axion, daemon):
    shutil.copy(daemon.config_path, axion / "config.yaml")
    return axion


def test_test_push_delivers_and_exits_0(with_daemon, shim, push_service, user):
    browser = push_service.browser("old-cli")
    assert shim.subscribe(user, "base", browser.subscription())
    run = old_cli(with_daemon, "test-push", user, "--title", "Alert", "--body", "Server check")
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert (report["ok"], report["delivered"]) == (True, 1)
    [push] = push_service.wait_for(browser)
    assert (push.payload["title"], push.payload["body"]) == ("Alert", "Server check")


def test_test_push_to_a_user_without_browsers_exits_1(with_daemon, user):
    run = old_cli(with_daemon, "test-push", user, "--title", "Alert", "--body", "Server check")
    assert run.returncode == 1
    assert json.loads(run.stdout)["subscriptions"] == 0
    assert f"{user} has no active subscription in package base" in run.stderr


def test_test_push_whose_push_is_refused_exits_1(with_daemon, shim, push_service, user):
    browser = push_service.browser("refusing", answers=[403])
    assert shim.subscribe(user, "base", browser.subscription())
    run = old_cli(with_daemon, "test-push", user, "--title", "Alert")
    assert run.returncode == 1
    assert json.loads(run.stdout)["failures"] == {"403": 1}
    assert "1 push failed: the push service answered 403: the VAPID key pair" in run.stderr


def test_test_push_with_a_push_queued_for_retry_exits_1_and_says_why(with_daemon, shim, push_service, user):
    """As `axion-push test-push`: one push delivered beside one waiting for a
    retry is not a success yet."""
    ok = push_service.browser("old-cli-ok")
    busy = push_service.browser("old-cli-busy", answers=[503])
    assert shim.subscribe(user, "base", ok.subscription())
    assert shim.subscribe(user, "base", busy.subscription())
    run = old_cli(with_daemon, "test-push", user, "--title", "Alert")
    report = json.loads(run.stdout)
    assert (report["delivered"], report["queued"], report["retries"]) == (1, 1, {"503": 1})
    assert run.returncode == 1, run.stderr
    assert "1 push delivered" in run.stderr
    assert "1 push queued for retry: the push service answered 503: an error on its side." in run.stderr
    assert "failed" not in run.stderr


def test_test_push_without_a_daemon_exits_1(axion):
    (axion / "config.yaml").write_text(f"axion_push:\n  broker:\n    listen: 127.0.0.1:{free_port()}\n")
    run = old_cli(axion, "test-push", "admin", "--title", "Alert", "--timeout", "3")
    assert run.returncode == 1
    assert run.stderr.startswith("ObjNotifyPush.py: cannot reach the MQTT broker at 127.0.0.1:")


def test_a_usage_error_exits_2(axion):
    run = old_cli(axion, "test-push", "admin", "--colour", "red")
    assert run.returncode == 2
    assert "usage: ObjNotifyPush.py" in run.stderr
    assert "--colour" in run.stderr


def check_generated_block(axion, stdout):
    """The block is YAML for config.yaml; its private key is a PKCS#8 PEM
    py_vapid loads, matching the public key; the daemon accepts both."""
    push = yaml.safe_load(stdout)["base"]["push"]
    pem = push["vapid_private_key"]
    assert pem.startswith("-----BEGIN PRIVATE KEY-----\n") and pem.endswith("-----END PRIVATE KEY-----\n")
    public = b64urlencode(
        Vapid.from_pem(pem.encode()).public_key.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
    )
    assert public == push["vapid_public_key"]
    config = axion / "config.yaml"
    config.write_text(stdout + f"axion_push:\n  vapid_key_file: {axion / 'unused.pem'}\n")
    check = subprocess.run(
        [str(daemon_binary()), "check-config", "--config", str(config)], capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stderr
    assert f"VAPID public key: {public}" in check.stdout
    assert not (axion / "unused.pem").exists(), "the daemon used the configured key"
    return push


def test_generate_vapid_prints_a_base_push_block_as_py_vapid_users_know_it(axion):
    run = old_cli(axion, "generate-vapid")
    assert run.returncode == 0, run.stderr
    push = check_generated_block(axion, run.stdout)
    assert push["vapid_email"] == "mailto:admin@example.com"


def test_generate_vapid_without_cryptography_asks_the_daemon_for_the_key(axion):
    hide = "import sys; sys.modules['cryptography'] = None"
    bin_dir = axion / "bin"
    bin_dir.mkdir()
    (bin_dir / "axion-push").symlink_to(daemon_binary())
    path = f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"
    run = old_cli(axion, "generate-vapid", "--email", "ops@example.com", prelude=hide, path=path)
    assert run.returncode == 0, run.stderr
    assert check_generated_block(axion, run.stdout)["vapid_email"] == "mailto:ops@example.com"

    nowhere = old_cli(axion, "generate-vapid", prelude=hide, path="/nonexistent")
    assert nowhere.returncode == 1
    assert "needs `cryptography`" in nowhere.stderr
