//! Secrets at rest and in errors: the files holding them are private or
//! named in a warning, and no config error repeats one.

mod harness;
#[path = "harness/process.rs"]
mod process;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use axion_push::config::{BrokerSettings, Config};
use process::{Serve, write_config};

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
            "line 3",
        ),
        (
            format!(
                "axion_push:\n  mqtt:\n    url: mqtt://svc:{secret}@h\n    url: mqtt://svc:{secret}@h\n"
            ),
            "line 4",
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
    // An SQLite file of its own, whatever backend the other tests run on.
    let h = harness::Harness::start_with(|c| {
        let dir = c.settings.vapid_key_file.parent().unwrap().to_owned();
        c.settings.database.url = format!("sqlite://{}", dir.join("axion-push.db").display());
    })
    .await;
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

/// Lets group and world read `path`.
fn readable_by_all(path: &Path) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
}

/// Starts `serve` on `config` and returns the files it warns about, once
/// it runs.
fn files_warned_about(config: &Path) -> Vec<String> {
    let mut serve = Serve::start(config);
    serve.wait_for("axion-push is running");
    serve.signal("-TERM");
    let log = serve.log.all();
    assert!(serve.wait().success(), "{log:#?}");
    log.iter()
        .filter(|l| l.contains("readable by other users"))
        .map(|l| {
            let file = l.split("file=").nth(1).unwrap_or_else(|| panic!("{l}"));
            file.split_whitespace()
                .next()
                .unwrap()
                .trim_matches('"')
                .to_owned()
        })
        .collect()
}

/// What a case is about, the config edits (`from`, `to`) that make it, and
/// the files warned about.
type Case = (
    &'static str,
    &'static [(&'static str, &'static str)],
    &'static [&'static str],
);

/// Every file holding a secret that others may read is named at start: the
/// config file for any secret in it, a VAPID key file it names, and the
/// database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_warns_about_every_file_holding_a_secret_that_others_may_read() {
    let push = harness::PushService::start().await;
    let key = std::fs::canonicalize("tests/fixtures/vapid/pkcs8.pem").unwrap();
    let cases: [Case; 3] = [
        (
            "the subscribe token secret, and the database",
            &[(
                "axion_push:\n",
                "axion_push:\n  subscribe_token_secret: 0123456789abcdef0123456789abcdef\n",
            )],
            &["config.yaml", "axion-push.db"],
        ),
        (
            "a VAPID key in a file the config names, not the config",
            &[(
                "    vapid_email:",
                "    vapid_private_key: KEY\n    vapid_email:",
            )],
            &["key.pem"],
        ),
        (
            "broker accounts",
            &[
                ("  broker:\n", "  broker:\n    users: {svc: svc-password}\n"),
                (
                    "  mqtt:\n",
                    "  mqtt:\n    username: axion\n    password: daemon-password\n",
                ),
            ],
            &["config.yaml"],
        ),
    ];
    for (what, edits, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        let (config, _) = write_config(dir.path(), &push, "");
        let key_file = dir.path().join("key.pem");
        std::fs::copy(&key, &key_file).unwrap();
        let mut yaml = std::fs::read_to_string(&config).unwrap();
        for (from, to) in edits {
            assert!(yaml.contains(from), "{what}: no {from:?} in {yaml}");
            yaml = yaml.replace(from, &to.replace("KEY", &key_file.display().to_string()));
        }
        std::fs::write(&config, yaml).unwrap();
        let database = dir.path().join("axion-push.db");
        if expected.contains(&"axion-push.db") {
            std::fs::File::create(&database).unwrap();
            readable_by_all(&database);
        }
        readable_by_all(&config);
        readable_by_all(&key_file);
        let mut warned = files_warned_about(&config);
        warned.sort();
        let mut expected: Vec<String> = expected
            .iter()
            .map(|name| dir.path().join(name).display().to_string())
            .collect();
        expected.sort();
        assert_eq!(warned, expected, "{what}");
    }
}

/// Runs `program args…` in `dir` with core dumps allowed (no size limit),
/// as a shell started by an operator might; not under systemd.
fn with_core_dumps(dir: &Path, program: &str, args: &[&str]) -> std::process::Child {
    std::process::Command::new("sh")
        .arg("-c")
        .arg(r#"ulimit -c unlimited && exec "$0" "$@""#)
        .arg(program)
        .args(args)
        .current_dir(dir)
        .env_remove("INVOCATION_ID")
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

fn quit(child: &std::process::Child) {
    let status = std::process::Command::new("kill")
        .args(["-QUIT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// A core dump would hold the VAPID private key (and the database's
/// secrets in SQLite's cache): outside systemd, whose unit sets
/// LimitCORE=0, the daemon makes itself non-dumpable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_killed_by_a_dumping_signal_leaves_no_core_dump() {
    use std::os::unix::process::ExitStatusExt;
    // This machine writes core dumps: a shell that may dump does, once it
    // quits itself.
    let control_dir = tempfile::tempdir().unwrap();
    let mut control = with_core_dumps(control_dir.path(), "sh", &["-c", "kill -QUIT $$"]);
    let status = control.wait().unwrap();
    assert!(
        status.core_dumped(),
        "this machine wrote no core dump for a plain process ({status}; /proc/sys/kernel/core_pattern is {:?}): the test cannot tell",
        std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap_or_default()
    );

    let dir = tempfile::tempdir().unwrap();
    let push = harness::PushService::start().await;
    let (config, _) = write_config(dir.path(), &push, "");
    let mut serve = with_core_dumps(
        dir.path(),
        process::bin(),
        &["serve", "--config", config.to_str().unwrap()],
    );
    let mut log = process::Lines::of(serve.stderr.take().unwrap());
    log.wait_for("axion-push is running");
    quit(&serve);
    let status = serve.wait().unwrap();
    assert_eq!(status.signal(), Some(3), "{status}");
    assert!(!status.core_dumped(), "the daemon dumped core");
    let cores: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("core"))
        .map(|e| e.file_name())
        .collect();
    assert!(cores.is_empty(), "core files: {cores:?}");
}

/// The values of `key` in the shipped systemd unit's `[Service]` section.
fn unit_service_values(key: &str) -> Vec<String> {
    let unit = std::fs::read_to_string("deploy/axion-push.service").unwrap();
    let service = unit
        .split("\n[")
        .find(|section| section.starts_with("Service]"))
        .expect("a [Service] section");
    service
        .lines()
        .filter_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
        .map(str::to_owned)
        .collect()
}

/// Under systemd the daemon stays dumpable (the test above runs it without
/// systemd): the unit itself forbids core dumps.
#[test]
fn the_systemd_unit_forbids_core_dumps() {
    assert_eq!(unit_service_values("LimitCORE"), ["0"]);
}

/// The unit's open-files limit covers the embedded broker at its default
/// connection cap: below it the daemon warns at start, and connections
/// wait once descriptors run out.
#[test]
fn the_systemd_unit_allows_the_open_files_the_embedded_broker_needs() {
    let needed = axion_push::broker::descriptors_needed(&BrokerSettings::default());
    let limits = unit_service_values("LimitNOFILE");
    let [limit] = &limits[..] else {
        panic!("one LimitNOFILE= in [Service], not {limits:?}");
    };
    // `soft:hard` or one value for both; the soft limit is the one met.
    let soft = limit.split(':').next().unwrap();
    assert!(
        soft == "infinity" || soft.parse::<u64>().expect("a number") >= needed,
        "LimitNOFILE={limit}, below the {needed} the embedded broker's defaults need"
    );
}
