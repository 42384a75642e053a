"""The ObjNotify channel hook example routes NotifyPushSend = 'Y' records to
send_push() and nothing else."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "objnotify_hook.py"


def load_example():
    spec = importlib.util.spec_from_file_location("objnotify_hook", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_deliver_pushes_only_the_records_marked_for_push(shim, push_service, user):
    hook = load_example()
    browser = push_service.browser("hook")
    assert shim.subscribe(user, "crm", browser.subscription())
    records = [
        {"NotifyID": 10, "NotifyUser": user, "NotifyPackage": "crm", "NotifyTitle": "Push me",
         "NotifyText": "yes", "NotifyUrl": "/n/10", "NotifyPushSend": "Y"},
        {"NotifyID": 11, "NotifyUser": user, "NotifyPackage": "crm", "NotifyTitle": "Mail only",
         "NotifyText": "no", "NotifyPushSend": "N"},
    ]
    assert hook.deliver(records) == {10: True}
    [push] = push_service.wait_for(browser)
    assert (push.payload["title"], push.payload["body"], push.payload["url"]) == ("Push me", "yes", "/n/10")
    assert len(push_service.received(browser)) == 1


def test_the_example_runs_from_the_command_line(daemon, push_service, user, tmp_path):
    browser = push_service.browser("hook-cli")
    from axion_push_client import AxionPush

    with AxionPush(config=str(daemon.config_path), timeout=15) as client:
        assert client.subscribe(user, browser.subscription())["ok"]
    run = subprocess.run(
        [sys.executable, str(EXAMPLE), "--config", str(daemon.config_path), user],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, env=dict(os.environ),
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == ["def_notify 1: sent"]
    [push] = push_service.wait_for(browser)
    assert push.payload["title"] == "Ticket #7 updated"
