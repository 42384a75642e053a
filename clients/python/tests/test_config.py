"""Broker settings come from the daemon's config.yaml, found as it finds it."""

import pytest

from axion_push_client import AxionPushConfigError
from axion_push_client import config


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_without_a_file_the_daemons_defaults_apply(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AXION_PUSH_CONFIG", raising=False)
    s = config.load()
    assert (s.host, s.port, s.tls, s.topic_prefix, s.source) == ("127.0.0.1", 1883, False, "", None)


def test_the_file_is_found_like_the_daemon_finds_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AXION_PUSH_CONFIG", raising=False)
    write(tmp_path / "config.yaml", "axion_push:\n  broker:\n    listen: 0.0.0.0:1999\n")
    assert config.load().address() == "127.0.0.1:1999", "./config.yaml; every interface means loopback"
    env_file = write(tmp_path / "env.yaml", "axion_push:\n  broker:\n    listen: 127.0.0.1:2001\n")
    monkeypatch.setenv("AXION_PUSH_CONFIG", str(env_file))
    assert config.load().port == 2001, "$AXION_PUSH_CONFIG wins over ./config.yaml"
    explicit = write(tmp_path / "explicit.yaml", "axion_push:\n  broker:\n    listen: 127.0.0.1:2002\n")
    assert config.load(explicit).port == 2002, "an explicit path wins over both"


def test_an_external_broker_with_credentials_and_a_prefix(tmp_path):
    s = config.load(write(tmp_path / "c.yaml", """\
base:
  push: {vapid_email: mailto:a@example.com}
other_axion_section: {ignored: true}
axion_push:
  mqtt:
    url: mqtts://broker.example.com
    username: axion
    password: s3cret
    topic_prefix: staging/
    keep_alive: 1m
    ca_file: /etc/ssl/ca.pem
"""))
    assert (s.host, s.port, s.tls, s.ca_file) == ("broker.example.com", 8883, True, "/etc/ssl/ca.pem")
    assert (s.username, s.password, s.topic_prefix, s.keep_alive) == ("axion", "s3cret", "staging/", 60)
    assert "s3cret" not in repr(s)


def test_a_broken_setting_names_its_key(tmp_path):
    with pytest.raises(AxionPushConfigError, match="axion_push.mqtt.url"):
        config.load(write(tmp_path / "c.yaml", "axion_push:\n  mqtt:\n    url: http://x\n"))
    with pytest.raises(AxionPushConfigError, match="axion_push.broker.listen"):
        config.load(write(tmp_path / "d.yaml", "axion_push:\n  broker:\n    listen: nowhere\n"))
    with pytest.raises(AxionPushConfigError, match="cannot read"):
        config.load(tmp_path / "missing.yaml")


def test_config_local_yaml_is_read_in_place_of_config_yaml(tmp_path, monkeypatch):
    # As the daemon's verbs do: this machine's settings beside the checkout's.
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AXION_PUSH_CONFIG", raising=False)
    write(tmp_path / "config.yaml", "axion_push:\n  broker:\n    listen: 127.0.0.1:1999\n")
    local = write(tmp_path / "config.local.yaml", "axion_push:\n  broker:\n    listen: 127.0.0.1:2003\n")
    s = config.load()
    assert (s.port, s.source) == (2003, "config.local.yaml")
    env_file = write(tmp_path / "env.yaml", "axion_push:\n  broker:\n    listen: 127.0.0.1:2001\n")
    monkeypatch.setenv("AXION_PUSH_CONFIG", str(env_file))
    assert config.load().port == 2001, "$AXION_PUSH_CONFIG wins over ./config.local.yaml"
    monkeypatch.delenv("AXION_PUSH_CONFIG")
    # Present, even as a broken link, it is the one read: the error says why not.
    local.unlink()
    local.symlink_to(tmp_path / "nowhere.yaml")
    with pytest.raises(AxionPushConfigError, match="cannot read config.local.yaml"):
        config.load()
    local.unlink()
    assert config.load().port == 1999, "without it, ./config.yaml"
