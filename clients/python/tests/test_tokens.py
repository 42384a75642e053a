"""Subscribe tokens: with `subscribe_token_secret` in config.yaml, the
daemon accepts subscribe and unsubscribe only with a token made with that
secret; the client reads the same file and mints the token itself."""

import dataclasses
import re
import subprocess

import pytest

from axion_push_client import config, objnotifypush
from axion_push_client.token import subscribe_token
from daemon import Daemon, daemon_binary

SECRET = "a-shared-secret-of-at-least-32-characters"


@pytest.fixture(scope="module")
def token_daemon(tmp_path_factory, push_service):
    d = Daemon(
        tmp_path_factory.mktemp("token-daemon"), push_service.ca_path, extra=f"subscribe_token_secret: {SECRET}", push_port=push_service.port
    ).start()
    yield d
    d.stop()


@pytest.fixture
def token_shim(token_daemon):
    objnotifypush.configure(config=str(token_daemon.config_path), timeout=15)
    yield objnotifypush
    objnotifypush.client().close()


def test_a_token_minted_here_is_the_one_the_daemon_issues(token_daemon):
    # `axion-push subscribe-token` is the daemon's own TokenKey::issue.
    run = subprocess.run(
        [str(daemon_binary()), "subscribe-token", "alice", "--package", "crm", "--valid", "1h",
         "--config", str(token_daemon.config_path)],
        capture_output=True, text=True, timeout=60,
    )
    assert run.returncode == 0, run.stderr
    issued = run.stdout.strip()
    expires = int(re.fullmatch(r"v2\.(\d+)\.[A-Za-z0-9_-]+", issued).group(1))
    assert subscribe_token(SECRET, "crm", "alice", expires) == issued
    assert subscribe_token(SECRET, "crm", "bob", expires) != issued


def test_the_signed_bytes_are_the_daemons_byte_for_byte():
    # The same vector as `the_signed_bytes_are_length_prefixed_fields` in
    # src/token.rs.
    assert subscribe_token(SECRET, "crm", "alice", 1000) == "v2.1000.a7w_Vk9K72lPm07Dcm1H5wJ-htvPDQlEs_r_rngYWrQ"
    # Length prefixes: the split between package and user is signed too.
    assert subscribe_token(SECRET, "a", "bc", 1000) != subscribe_token(SECRET, "ab", "c", 1000)


@pytest.mark.parametrize("package, user", [("crm", "a\nb"), ("crm\na", "b"), ("crm", "tab\t")])
def test_names_with_control_characters_get_no_token(package, user):
    with pytest.raises(ValueError, match="control character"):
        subscribe_token(SECRET, package, user, 1000)


def test_the_old_functions_work_with_the_secret_set(token_shim, push_service, user, caplog_client):
    browser = push_service.browser("token")
    assert token_shim.client().settings.subscribe_token_secret == SECRET
    assert token_shim.subscribe(user, "crm", browser.subscription(), user_agent="Firefox/140") is True
    assert [r["Endpoint"] for r in token_shim.get_subscriptions(user, "crm")] == [browser.endpoint]
    assert token_shim.send_push(user, "With a token", "", package="crm") is True
    assert push_service.wait_for(browser)[0].payload["title"] == "With a token"
    assert token_shim.unsubscribe(user, "crm", browser.endpoint) is True
    assert token_shim.get_subscriptions(user, "crm") == []
    assert "token" not in caplog_client.text


@pytest.mark.parametrize(
    "secret, refusal",
    [
        ("another-secret-of-at-least-32-characters", "token is not valid for this user and package"),
        (None, "token is missing"),
    ],
)
def test_without_the_daemons_secret_subscribe_is_refused(token_daemon, push_service, user, caplog_client, secret, refusal):
    settings = dataclasses.replace(config.load(token_daemon.config_path), subscribe_token_secret=secret)
    objnotifypush.configure(settings=settings, timeout=15)
    try:
        browser = push_service.browser("wrong-secret")
        assert objnotifypush.subscribe(user, "crm", browser.subscription()) is False
        assert refusal in caplog_client.text
        assert objnotifypush.unsubscribe(user, "crm", browser.endpoint) is False
        assert objnotifypush.get_subscriptions(user, "crm") == []
    finally:
        objnotifypush.client().close()


def test_another_users_browser_is_refused_with_the_daemons_code(token_daemon, token_shim, push_service, user, caplog_client):
    alice, bob = f"{user}-alice", f"{user}-bob"
    shared = push_service.browser("shared")
    assert token_shim.subscribe(alice, "crm", shared.subscription()) is True

    # bob's own token does not move alice's browser to him.
    assert token_shim.subscribe(bob, "crm", shared.subscription()) is False
    assert "active for another user of the package" in caplog_client.text
    assert "(endpoint-taken)" in caplog_client.text
    result = token_shim.subscribe_result(bob, "crm", shared.subscription())
    assert (result["ok"], result["code"]) == (False, "endpoint-taken")
    from test_subscription_relay import load_example

    status, answer = load_example().push_subscription(
        {"action": "subscribe", "package": "crm", "subscription": shared.subscription()}, bob
    )
    assert (status, answer["code"]) == (409, "endpoint-taken")
    token_shim.configure(config=str(token_daemon.config_path), timeout=15, raise_errors=True)
    try:
        with pytest.raises(objnotifypush.AxionPushRejected) as refused:
            token_shim.subscribe(bob, "crm", shared.subscription())
        assert refused.value.code == "endpoint-taken"
    finally:
        token_shim.configure(config=str(token_daemon.config_path), timeout=15)
    assert [r["Endpoint"] for r in token_shim.get_subscriptions(alice, "crm")] == [shared.endpoint]
    assert token_shim.get_subscriptions(bob, "crm") == []

    # The page makes a new subscription for bob.
    fresh = push_service.browser("shared-again")
    assert token_shim.subscribe_result(bob, "crm", fresh.subscription())["ok"] is True
    assert token_shim.send_push(bob, "For bob", "", package="crm") is True
    assert push_service.wait_for(fresh)[0].payload["title"] == "For bob"
    assert token_shim.send_push(alice, "For alice", "", package="crm") is True
    assert push_service.wait_for(shared)[0].payload["title"] == "For alice"


def test_the_secret_never_shows_in_the_settings(token_daemon):
    settings = config.load(token_daemon.config_path)
    assert settings.subscribe_token_secret == SECRET
    assert SECRET not in repr(settings)
