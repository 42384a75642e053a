//! VAPID keys: every form py_vapid writes is read (fixtures made by py_vapid
//! itself, see tests/fixtures/vapid/README.md), packages may sign with keys
//! of their own, and the public keys are published for browsers.

mod harness;

use std::path::PathBuf;

use axion_push::config::Config;
use harness::{Harness, WAIT};
use serde_json::json;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/vapid")
        .join(name)
}

fn read(name: &str) -> String {
    std::fs::read_to_string(fixture(name)).unwrap()
}

/// A config whose `base.push.vapid_private_key` is `key` (JSON is YAML).
fn config_with_key(key: &str) -> Config {
    let text =
        json!({"base": {"push": {"vapid_private_key": key, "vapid_email": "ops@example.com"}}})
            .to_string();
    Config::from_yaml(&text, "test").unwrap_or_else(|e| panic!("{e}"))
}

fn public_key_of(config: &Config) -> String {
    config
        .push
        .private_key
        .as_ref()
        .unwrap()
        .public_key()
        .to_owned()
}

#[test]
fn every_form_py_vapid_writes_gives_the_same_key() {
    let expected = read("public.b64url").trim().to_owned();
    for form in [
        "pkcs8.pem",
        "sec1.pem",
        "der_pkcs8.b64url",
        "der_pkcs8.b64",
        "der_sec1.b64url",
        "der_sec1.b64",
        "raw.b64url",
    ] {
        let config = config_with_key(&read(form));
        assert_eq!(public_key_of(&config), expected, "{form}");
    }
}

#[test]
fn a_key_file_path_is_read_like_pywebpush_did() {
    let expected = read("public.b64url").trim().to_owned();
    let path = fixture("pkcs8.pem");
    let config = config_with_key(path.to_str().unwrap());
    assert_eq!(public_key_of(&config), expected);
}

#[test]
fn the_vapid_cli_output_is_read_with_its_application_server_key() {
    let config = config_with_key(&read("cli_private_key.pem"));
    assert_eq!(
        public_key_of(&config),
        read("cli_application_server_key.txt").trim()
    );
}

#[test]
fn a_key_wrapped_over_lines_in_yaml_is_still_read() {
    let der = read("der_pkcs8.b64url");
    let wrapped: Vec<String> = der
        .as_bytes()
        .chunks(40)
        .map(|c| String::from_utf8(c.to_vec()).unwrap())
        .collect();
    let config = config_with_key(&wrapped.join("\n"));
    assert_eq!(public_key_of(&config), read("public.b64url").trim());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_are_signed_with_the_configured_key_and_package_overrides() {
    let base_key = read("raw.b64url");
    let hr_key = read("cli_private_key.pem");
    let h = Harness::start_with(|c| {
        let with_keys = Config::from_yaml(
            &json!({
                "base": {"push": {"vapid_private_key": base_key, "vapid_email": "ops@example.com"}},
                "hr": {"push": {"vapid_private_key": hr_key, "vapid_email": "hr@example.com"}},
            })
            .to_string(),
            "test",
        )
        .unwrap();
        c.push = with_keys.push;
        c.packages = with_keys.packages;
    })
    .await;
    let base_public = read("public.b64url").trim().to_owned();
    let hr_public = read("cli_application_server_key.txt").trim().to_owned();

    let crm = h.browser("crm");
    let hr = h.browser("hr");
    h.subscribe("crm", "alice", &crm).await;
    h.subscribe("hr", "alice", &hr).await;
    h.send("crm", "alice", json!({"title": "crm"})).await;
    h.send("hr", "alice", json!({"title": "hr"})).await;
    h.push.wait_for(2, WAIT).await;
    let crm_vapid = h.push.received_by(&crm)[0].vapid.clone().unwrap();
    assert_eq!(crm_vapid.key, base_public);
    assert_eq!(crm_vapid.sub, "mailto:ops@example.com");
    let hr_vapid = h.push.received_by(&hr)[0].vapid.clone().unwrap();
    assert_eq!(hr_vapid.key, hr_public);
    assert_eq!(hr_vapid.sub, "mailto:hr@example.com");

    // Browsers find the key to subscribe with on retained topics.
    let retained = |topic: &'static str| {
        let mqtt = h.mqtt.clone();
        async move {
            mqtt.wait_for(0, topic, WAIT, |m| m.topic == topic)
                .await
                .json()
        }
    };
    assert_eq!(
        retained("axion/push/vapid").await["public_key"],
        base_public
    );
    assert_eq!(
        retained("axion/hr/push/vapid").await["public_key"],
        hr_public
    );
    assert!(
        !h.mqtt
            .messages()
            .iter()
            .any(|m| m.topic == "axion/crm/push/vapid"),
        "crm has no key of its own"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_run_key_is_written_privately_and_reused() {
    let h = Harness::start().await;
    let path = h.config.settings.vapid_key_file.clone();
    let first = h.daemon().vapid().default.key.public_key().to_owned();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the key file is private");
    }
    let config = h.config.clone();
    let _files = h.stop().await;
    let again = axion_push::daemon::resolve_vapid(&config).unwrap();
    assert_eq!(
        again.default.key.public_key(),
        first,
        "the same key after a restart"
    );
}

#[test]
fn a_missing_contact_stops_the_daemon_at_start_with_the_key_path() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.settings.vapid_key_file = dir.path().join("vapid.pem");
    let err = axion_push::daemon::resolve_vapid(&config)
        .unwrap_err()
        .to_string();
    assert!(err.contains("base.push.vapid_email"), "{err}");
}
