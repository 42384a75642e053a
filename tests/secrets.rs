//! Secrets at rest and in errors: the files holding them are private or
//! named in a warning, and no config error repeats one.

mod harness;

use axion_push::config::Config;

/// The problems `yaml` has, as `check-config` would print them.
fn config_error(yaml: &str) -> String {
    match Config::from_yaml(yaml, "config.yaml") {
        Ok(_) => panic!("accepted: {yaml}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn config_errors_never_repeat_a_password_or_key() {
    let secret = "hunter2x";
    let cases = [
        // A URL with credentials that does not parse, in both URL keys.
        (
            format!("axion_push:\n  mqtt: {{url: 'mqtt://svc:{secret}@broker host:1883'}}\n"),
            "axion_push.mqtt.url",
        ),
        (
            format!("axion_push:\n  mqtt: {{url: 'mqtts://svc:{secret}@/x@broker host'}}\n"),
            "'mqtts://***@broker host' is not a URL",
        ),
        (
            format!("axion_push:\n  mqtt: {{url: 'svc:{secret}@broker'}}\n"),
            "axion_push.mqtt.url",
        ),
        (
            format!("axion_push:\n  mqtt: {{url: 'mqtt:svc:{secret}@broker'}}\n"),
            "has no host",
        ),
        (
            format!("axion_push:\n  database: {{url: 'mongodb://svc:{secret}@db/axion'}}\n"),
            "axion_push.database.url",
        ),
        // Secrets of the wrong type: serde would quote the value.
        (
            "axion_push:\n  mqtt: {password: 98765432}\n".to_owned(),
            "axion_push.mqtt.password",
        ),
        (
            "axion_push:\n  broker: {users: {svc: 98765432}}\n".to_owned(),
            "axion_push.broker.users",
        ),
        (
            format!("axion_push:\n  broker: {{users: 'svc:{secret}'}}\n"),
            "axion_push.broker.users",
        ),
        (
            "axion_push:\n  subscribe_token_secret: 98765432\n".to_owned(),
            "axion_push.subscribe_token_secret",
        ),
        (
            "base:\n  push: {vapid_private_key: 98765432}\n".to_owned(),
            "base.push.vapid_private_key",
        ),
        (
            "crm:\n  push: {vapid_private_key: [98765432]}\n".to_owned(),
            "crm.push.vapid_private_key",
        ),
        // YAML that does not parse, around a secret.
        (
            format!("axion_push:\n  mqtt:\n    password: {secret}: x\n"),
            "line 3 column",
        ),
        (
            format!(
                "axion_push:\n  mqtt:\n    url: mqtt://svc:{secret}@h\n    url: mqtt://svc:{secret}@h\n"
            ),
            "line 4 column",
        ),
    ];
    for (yaml, expected) in cases {
        let error = config_error(&yaml);
        assert!(error.contains(expected), "{yaml}: {error}");
        assert!(
            !error.contains(secret) && !error.contains("98765432"),
            "the error repeats the secret: {error}"
        );
    }
}

/// The database holds endpoints (capabilities) and browsers' auth secrets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_database_and_its_journal_are_readable_by_the_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let h = harness::Harness::start().await;
    // A write, so that the write-ahead log holds something.
    h.subscribe("crm", "alice", &h.browser("b")).await;
    for name in ["axion-push.db", "axion-push.db-wal", "axion-push.db-shm"] {
        let path = h.path(name);
        let mode = std::fs::metadata(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{name} is {mode:o}");
    }
    h.stop().await;
}
