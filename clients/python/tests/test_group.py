"""send_push_to_group: every member's browsers, nobody else's."""

import uuid


def test_send_push_to_group_reaches_every_member(shim, push_service):
    tag = uuid.uuid4().hex[:8]
    alice, bob, eve = (f"{n}-{tag}" for n in ("alice", "bob", "eve"))
    group = f"ops-{tag}"
    browsers = {name: push_service.browser(name) for name in (alice, bob, eve)}
    for name, browser in browsers.items():
        assert shim.subscribe(name, "crm", browser.subscription())
    assert shim.set_group_members(group, [alice, bob], package="crm") is True

    assert shim.send_push_to_group(group, "Deploy at 5", "all hands", url="/deploys", package="crm") is True
    for name in (alice, bob):
        [push] = push_service.wait_for(browsers[name])
        assert push.payload["title"] == "Deploy at 5"
        assert push.payload["url"] == "/deploys"

    # `@group` is accepted too, and membership changes apply.
    assert shim.remove_group_members(group, [bob], package="crm") is True
    assert shim.add_group_members(group, [eve], package="crm") is True
    assert shim.send_push_to_group(f"@{group}", "Second", "", package="crm") is True
    push_service.wait_for(browsers[alice], 2)
    push_service.wait_for(browsers[eve], 1)
    assert len(push_service.received(browsers[bob])) == 1, "bob left the group"


def test_a_group_send_reports_the_members_reached(daemon, push_service):
    from axion_push_client import AxionPush

    tag = uuid.uuid4().hex[:8]
    with AxionPush(config=str(daemon.config_path), timeout=15) as client:
        client.members(f"@g-{tag}", "crm", set=[f"u1-{tag}", f"u2-{tag}"])
        report = client.send(f"@g-{tag}", {"title": "T"}, "crm")
    assert report["ok"] is True
    assert report["members"] == 2
    assert report["subscriptions"] == 0
