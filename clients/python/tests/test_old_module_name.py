"""An Axion caller written against the old module runs unchanged."""

import datetime
import json
import os
import subprocess
import sys
from pathlib import Path

LEGACY = Path(__file__).parent / "legacy" / "axion_caller.py"


def test_a_caller_of_the_old_module_runs_unchanged(daemon, push_service, user, tmp_path):
    browser = push_service.browser("legacy")
    env = {**os.environ, "AXION_PUSH_CONFIG": str(daemon.config_path)}
    run = subprocess.run(
        [sys.executable, str(LEGACY), user, json.dumps(browser.subscription())],
        cwd=tmp_path,  # no config.yaml here: the file comes from $AXION_PUSH_CONFIG
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    results = json.loads(run.stdout)
    assert results["subscribe"] is True
    assert [(s["User"], s["Endpoint"], s["UserAgent"], s["Active"]) for s in results["subscriptions"]] == [
        (user, browser.endpoint, "Mozilla/5.0 (X11)", "Y")
    ]
    [since] = results["since"]  # CreatedAt was a datetime the caller formatted
    today = datetime.datetime.now(datetime.timezone.utc).date()
    assert abs(datetime.date.fromisoformat(since) - today) <= datetime.timedelta(days=1)
    assert results["send_push"] is True
    assert results["class_send_push"] is True
    assert results["unsubscribe"] is True
    assert results["after"] == []
    first, second = push_service.wait_for(browser, 2)
    assert (first.payload["title"], first.payload["body"], first.payload["url"]) == (
        "Ticket #7 updated", "Status: closed", "/tickets/7",
    )
    assert second.payload["notification"]["tag"] == "t7"


def test_the_old_name_exposes_the_old_functions():
    import inspect

    import ObjNotifyPush

    for name in ("send_push", "send_push_to_group", "subscribe", "unsubscribe", "get_subscriptions"):
        assert callable(getattr(ObjNotifyPush, name))
        assert getattr(ObjNotifyPush.ObjNotifyPush, name) is getattr(ObjNotifyPush, name)
    params = inspect.signature(ObjNotifyPush.send_push).parameters
    assert list(params)[:5] == ["user", "title", "body", "url", "package"]
    assert params["url"].default == "/"
    assert list(inspect.signature(ObjNotifyPush.subscribe).parameters)[:4] == [
        "user", "package", "subscription_json", "user_agent",
    ]
    assert list(inspect.signature(ObjNotifyPush.unsubscribe).parameters) == ["user", "package", "endpoint"]
    assert list(inspect.signature(ObjNotifyPush.get_subscriptions).parameters)[:2] == ["user", "package"]
