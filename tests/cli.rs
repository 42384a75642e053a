//! The `axion-push` binary as an operator uses it: every verb, against a
//! daemon started with `serve`.

mod harness;
#[path = "harness/process.rs"]
mod process;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use axion_push::config::Config;
use harness::mosquitto::Mosquitto;
use harness::{PushService, Reply, TestClient, WAIT};
use process::{Lines, Serve, write_config, write_config_with};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_axion-push");

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("AXION_PUSH_CONFIG")
        .output()
        .expect("the binary runs")
}

/// Runs the binary in `dir`, where it looks for its config files.
fn run_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .env_remove("AXION_PUSH_CONFIG")
        .output()
        .expect("the binary runs")
}

/// A config whose broker address nothing listens on.
fn config_without_a_broker(dir: &Path) -> std::path::PathBuf {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let path = dir.join("config.yaml");
    std::fs::write(
        &path,
        format!("axion_push:\n  broker: {{listen: '127.0.0.1:{port}'}}\n"),
    )
    .unwrap();
    path
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `axion-push serve` running on a fresh config, with its push service.
struct Served {
    _dir: tempfile::TempDir,
    push: PushService,
    /// The config file's path.
    cfg: String,
    /// The embedded broker's port.
    port: u16,
    serve: Serve,
}

impl Served {
    async fn start() -> Served {
        Self::start_with_delivery("").await
    }

    /// Like [`Served::start`], with lines for `axion_push.delivery`.
    async fn start_with_delivery(delivery: &str) -> Served {
        let dir = tempfile::tempdir().unwrap();
        let push = PushService::start().await;
        let (config, port) = write_config_with(dir.path(), &push, "", delivery);
        let mut serve = Serve::start(&config);
        serve.wait_for("axion-push is running");
        Served {
            cfg: config.to_str().unwrap().to_owned(),
            _dir: dir,
            push,
            port,
            serve,
        }
    }
}

#[test]
fn every_verb_has_help() {
    for verb in [
        "serve",
        "generate-vapid",
        "test-push",
        "subscriptions",
        "listen",
        "status",
        "migrate",
        "check-config",
    ] {
        let out = run(&[verb, "--help"]);
        assert!(out.status.success(), "{verb} --help failed");
        assert!(text(&out.stdout).contains("Usage: axion-push"), "{verb}");
    }
    let out = run(&["--help"]);
    let help = text(&out.stdout);
    assert!(help.contains("test-push"));
    // Where the config comes from, in the order the verbs look.
    assert!(
        help.contains(
            "$AXION_PUSH_CONFIG, else ./config.local.yaml if it exists, else ./config.yaml"
        ),
        "{help}"
    );
}

#[test]
fn check_config_accepts_the_shipped_config() {
    let dir = tempfile::tempdir().unwrap();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.yaml");
    let copy = dir.path().join("config.yaml");
    std::fs::copy(shipped, &copy).unwrap();
    let out = Command::new(BIN)
        .args(["check-config", "--config", copy.to_str().unwrap()])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("OK"));
    assert!(
        !text(&out.stderr).contains("warning"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        !dir.path().join("vapid.pem").exists(),
        "checking must not create the key file"
    );
}

#[test]
fn check_config_lists_every_problem_with_its_key_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "base:\n  push:\n    vapid_email: root@localhost\naxion_push:\n  delivery: {concurrency: 0}\n  mqtt: {url: 'http://x', colour: red}\n",
    )
    .unwrap();
    let out = run(&["check-config", "--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    for key in [
        "base.push.vapid_email",
        "axion_push.delivery.concurrency",
        "axion_push.mqtt.url",
        "axion_push.mqtt.colour",
    ] {
        assert!(err.contains(key), "{key} missing from:\n{err}");
    }
}

/// The embedded WebSocket listener speaks plain `ws`: off loopback it
/// needs tokens (an error without) and a TLS proxy in front (a note).
#[test]
fn check_config_says_a_public_websocket_listener_needs_tokens_and_tls() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    let base = "base:\n  push:\n    vapid_email: mailto:a@example.com\naxion_push:\n  vapid_key_file: v.pem\n  broker:\n    websocket_listen: 0.0.0.0:8083\n    websocket_origins: [https://app.example.com]\n";
    std::fs::write(&path, base).unwrap();
    let out = run(&["check-config", "--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("axion_push.broker.websocket_listen"), "{err}");
    assert!(err.contains("subscribe_token_secret"), "{err}");

    let secret = "  subscribe_token_secret: 0123456789abcdef0123456789abcdef\n";
    std::fs::write(&path, format!("{base}{secret}")).unwrap();
    let out = run(&["check-config", "--config", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    assert!(
        said.contains("note: axion_push.broker.websocket_listen"),
        "{said}"
    );
    assert!(said.contains("TLS reverse proxy"), "{said}");
}

#[test]
fn check_config_warns_about_a_section_spelt_almost_like_axion_push() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(
        &path,
        "base:\n  push: {vapid_email: 'mailto:ops@example.com'}\naxion-push:\n  broker: {listen: '127.0.0.1:1884'}\n",
    )
    .unwrap();
    let out = run(&["check-config", "--config", path.to_str().unwrap()]);
    assert!(out.status.success(), "a warning is no problem");
    let err = text(&out.stderr);
    assert!(
        err.contains("warning: axion-push: is not read: the daemon's own section is `axion_push`"),
        "{err}"
    );
}

#[test]
fn check_config_shows_a_misspelt_key_beside_the_problem_it_causes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(
        &path,
        "base:\n  push: {vapid_emial: 'mailto:ops@example.com'}\n",
    )
    .unwrap();
    let out = run(&["check-config", "--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("base.push.vapid_email: missing"), "{err}");
    assert!(
        err.contains(
            "warning: base.push.vapid_emial: not read by axion-push (did you mean `vapid_email`?"
        ),
        "{err}"
    );
}

/// What a reader who pastes a block from the documentation under the
/// shipped file gets: the two lines, in words they can act on.
#[test]
fn check_config_explains_a_section_written_twice_by_its_lines() {
    let dir = tempfile::tempdir().unwrap();
    let shipped =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config.yaml")).unwrap();
    let first = 1 + shipped.lines().position(|l| l == "axion_push:").unwrap();
    let pasted =
        format!("{shipped}\naxion_push:\n  broker:\n    websocket_listen: 127.0.0.1:8083\n");
    let second = pasted.lines().count() - 2;
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, pasted).unwrap();
    let out = run(&["check-config", "--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "is not valid YAML, line {second}: `axion_push` is written a second time (first on line {first})"
        )),
        "{err}"
    );
    assert!(err.contains("change the existing `axion_push`"), "{err}");
    assert!(!err.contains("DuplicateKeyPolicy"), "library advice: {err}");
}

#[test]
fn a_missing_config_file_that_was_asked_for_is_an_error() {
    let out = run(&["check-config", "--config", "/nonexistent/axion.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("/nonexistent/axion.yaml"));
}

#[test]
fn generate_vapid_prints_a_config_block_that_loads() {
    let out = run(&["generate-vapid", "--email", "ops@example.com"]);
    assert!(out.status.success());
    let block = text(&out.stdout);
    let config = Config::from_yaml(&block, "generate-vapid output").unwrap();
    let registry = config.vapid_registry(None).unwrap();
    assert!(block.contains(registry.default.key.public_key()));
    assert_eq!(registry.default.subject, "mailto:ops@example.com");
}

#[test]
fn migrate_creates_the_schema() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("fresh.db");
    let path = dir.path().join("config.yaml");
    std::fs::write(
        &path,
        format!(
            "axion_push:\n  database: {{url: 'sqlite://{}'}}\n",
            db.display()
        ),
    )
    .unwrap();
    let out = run(&["migrate", "--config", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("up to date"));
    let out = run(&[
        "subscriptions",
        "nobody",
        "--config",
        path.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "the table exists: {}",
        text(&out.stderr)
    );
    assert!(text(&out.stderr).contains("nobody has no subscriptions"));
}

/// check-config connects to the database the config names — on the
/// backend the tests run on — and says what the daemon will find there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_reports_the_database_engine_and_axions_table() {
    let db = harness::database::TestDatabase::create().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(
        &path,
        format!(
            "base:\n  push: {{vapid_email: 'mailto:ops@example.com'}}\naxion_push:\n  database: {{url: '{}'}}\n",
            db.url
        ),
    )
    .unwrap();
    let before = run(&["check-config", "--config", path.to_str().unwrap()]);
    let stdout = text(&before.stdout);
    assert!(
        before.status.success(),
        "{}{}",
        stdout,
        text(&before.stderr)
    );
    if db.backend != axion_push::store::Backend::Sqlite {
        assert!(stdout.contains(db.backend.name()), "{stdout}");
        assert!(stdout.contains("not there yet"), "{stdout}");
    }
    let out = run(&["migrate", "--config", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let after = run(&["check-config", "--config", path.to_str().unwrap()]);
    let stdout = text(&after.stdout);
    assert!(stdout.contains(db.backend.name()), "{stdout}");
    assert!(stdout.contains("present, with every column"), "{stdout}");
    assert!(stdout.contains("several daemons may share"), "{stdout}");
}

/// An unreachable database is a problem naming its key, and its password
/// is not shown.
#[test]
fn check_config_names_a_database_it_cannot_reach() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let path = dir.path().join("config.yaml");
    std::fs::write(
        &path,
        format!(
            "base:\n  push: {{vapid_email: 'mailto:ops@example.com'}}\naxion_push:\n  database: {{url: 'postgres://axion:hunter2@127.0.0.1:{port}/axion'}}\n"
        ),
    )
    .unwrap();
    let out = run(&["check-config", "--config", path.to_str().unwrap()]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("axion_push.database.url"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
}

/// `migrate` on a database it cannot reach fails naming the database,
/// without its password.
#[test]
fn migrate_names_a_database_it_cannot_reach_without_its_password() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let path = dir.path().join("config.yaml");
    std::fs::write(
        &path,
        format!(
            "axion_push:\n  database: {{url: 'mysql://axion:hunter2@127.0.0.1:{port}/axion'}}\n"
        ),
    )
    .unwrap();
    let out = run(&["migrate", "--config", path.to_str().unwrap()]);
    assert!(!out.status.success());
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(said.contains(&format!("127.0.0.1:{port}")), "{said}");
    assert!(!said.contains("hunter2"), "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_and_test_push_deliver_and_report() {
    let Served {
        _dir,
        push,
        cfg,
        port,
        mut serve,
    } = Served::start().await;

    // Nobody subscribed yet: the report says so and the exit code is 1.
    let out = run(&["test-push", "alice", "--package", "crm", "--config", &cfg]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["subscriptions"], 0);
    assert!(text(&out.stderr).contains("no active subscription"));

    let browser = push.browser("b");
    let mqtt = TestClient::connect("127.0.0.1", port, &["axion/#".into()]).await;
    mqtt.publish(
        "axion/crm/push/alice/subscribe",
        browser.subscription().to_string(),
    )
    .await;
    mqtt.wait_for(0, "subscribe result", WAIT, |m| {
        m.topic == "axion/crm/push/alice/result" && m.json()["ok"] == true
    })
    .await;

    let out = run(&[
        "test-push",
        "alice",
        "--package",
        "crm",
        "--title",
        "Hi from the CLI",
        "--body",
        "b",
        "--config",
        &cfg,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["delivered"], 1);
    let received = push.wait_for(1, WAIT).await;
    assert_eq!(
        received[0].payload.as_ref().unwrap()["notification"]["title"],
        "Hi from the CLI"
    );

    let out = run(&["subscriptions", "alice", "--config", &cfg]);
    assert!(out.status.success());
    let listing = text(&out.stdout);
    assert!(listing.contains("crm\tactive"), "{listing}");
    assert!(
        !listing.contains(&browser.endpoint),
        "endpoints are capabilities: origin only"
    );
    // Its health in words, last on the line: the push just delivered.
    let health = listing.trim_end().rsplit('\t').next().unwrap();
    assert!(
        health.starts_with("delivered ") && health.ends_with(" ago"),
        "{listing}"
    );
    let out = run(&["subscriptions", "alice", "--json", "--config", &cfg]);
    let row: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(row["endpoint"], browser.endpoint.as_str());
    assert_eq!(row["active"], true);
    let words = row["health"]["words"].as_str().unwrap_or_default();
    assert!(words.starts_with("delivered "), "{row}");
    assert!(row["health"]["delivered_at"].is_u64(), "{row}");

    serve.signal("-TERM");
    serve.wait_for("stopped");
    assert!(serve.wait().success(), "serve exits 0 on SIGTERM");
}

/// `test-push --wait-receipts` prints, after the report, each receipt the
/// browser sends about that push.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_push_waits_for_and_prints_the_receipts_of_its_push() {
    let Served {
        _dir,
        push,
        cfg,
        port,
        serve,
    } = Served::start().await;
    let browser = push.browser("b");
    subscribe(port, "alice", &browser).await;

    let child = Command::new(BIN)
        .args([
            "test-push",
            "alice",
            "--package",
            "crm",
            "--wait-receipts",
            "10s",
            "--config",
            &cfg,
        ])
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // What the service worker does once the notification is shown.
    let received = push.wait_for(1, WAIT).await;
    let token = received[0].payload.as_ref().unwrap()["receipt"]["token"]
        .as_str()
        .expect("the push carries a receipt token")
        .to_owned();
    let browser_side =
        TestClient::connect("127.0.0.1", port, &["axion/crm/push/alice/result".into()]).await;
    browser_side
        .publish(
            "axion/crm/push/alice/receipt",
            json!({"id": "r-1", "token": token, "receipt": "shown"}).to_string(),
        )
        .await;
    let taken = browser_side
        .wait_for(0, "the receipt's report", WAIT, |m| m.json()["id"] == "r-1")
        .await
        .json();
    assert_eq!(taken["ok"], true, "{taken}");

    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let receipt: serde_json::Value = stdout
        .lines()
        .find(|line| line.starts_with('{') && line.contains(r#""command":"receipt""#))
        .map(|line| serde_json::from_str(line).unwrap())
        .unwrap_or_else(|| panic!("no receipt line in {stdout}{}", text(&out.stderr)));
    assert_eq!(receipt["command"], "receipt", "{stdout}");
    assert_eq!(receipt["receipt"], "shown");
    assert!(
        text(&out.stderr).contains("shown by subscription"),
        "{}",
        text(&out.stderr)
    );
    serve.signal("-TERM");
    assert!(serve.wait().success());
}

/// A push the push service could not take yet (503) waits for a retry:
/// the first report says `queued: 1, failed: 0` and what the attempt met,
/// and so must the words.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_push_says_a_push_waiting_for_a_retry_is_queued_not_failed() {
    // No retry within the test: the first report is the one printed.
    let Served {
        _dir,
        push,
        cfg,
        port,
        serve: _serve,
    } = Served::start_with_delivery("    retry_initial: 1h\n    retry_max: 1h").await;
    let browser = push.browser("b");
    push.script(&browser, [Reply::status(503)]);
    subscribe(port, "alice", &browser).await;

    let out = run(&["test-push", "alice", "--package", "crm", "--config", &cfg]);
    assert_eq!(out.status.code(), Some(1), "not delivered yet");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (report["queued"].as_u64(), report["failed"].as_u64()),
        (Some(1), Some(0))
    );
    assert_eq!(report["retries"], serde_json::json!({"503": 1}), "and why");
    let err = text(&out.stderr);
    assert!(
        err.starts_with(
            "1 push queued for retry: the push service answered 503: an error on its side."
        ),
        "{err}"
    );
    assert!(!err.contains("failed"), "nothing failed: {err}");
}

/// A push the push service refused is counted in `failures` by status, and
/// the words say what that status usually means.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_push_explains_a_refused_push_by_its_status() {
    let Served {
        _dir,
        push,
        cfg,
        port,
        serve: _serve,
    } = Served::start().await;
    let browser = push.browser("b");
    push.script(&browser, [Reply::status(403)]);
    subscribe(port, "alice", &browser).await;

    let out = run(&["test-push", "alice", "--package", "crm", "--config", &cfg]);
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["failures"], json!({"403": 1}));
    let err = text(&out.stderr);
    assert!(
        err.starts_with("1 push failed: the push service answered 403: the VAPID key pair or vapid_email is wrong"),
        "{err}"
    );
}

/// Subscribes `browser` for `user` in package crm through the broker at
/// `port`, and waits for the daemon's answer.
async fn subscribe(port: u16, user: &str, browser: &harness::Browser) {
    let mqtt = TestClient::connect("127.0.0.1", port, &["axion/#".into()]).await;
    mqtt.publish(
        &format!("axion/crm/push/{user}/subscribe"),
        browser.subscription().to_string(),
    )
    .await;
    mqtt.wait_for(0, "subscribe result", WAIT, |m| {
        m.topic == format!("axion/crm/push/{user}/result") && m.json()["ok"] == true
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_prints_each_event_as_a_json_line() {
    let Served {
        _dir,
        push: _push,
        cfg,
        port,
        serve,
    } = Served::start().await;

    let mut listen = Command::new(BIN)
        .args(["listen", "--package", "crm", "alice", "--config", &cfg])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut output = Lines::of(listen.stdout.take().unwrap());
    // `listen` says so on stderr once the broker confirmed its subscription.
    Lines::of(listen.stderr.take().unwrap()).wait_for("listening on axion/crm/push/alice");
    let mqtt = TestClient::connect("127.0.0.1", port, &["axion/#".into()]).await;
    mqtt.publish(
        "axion/crm/push/alice/send",
        json!({"title": "live"}).to_string(),
    )
    .await;
    let line = output.wait_for("axion/crm/push/alice");
    let printed: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(printed["topic"], "axion/crm/push/alice");
    assert_eq!(printed["event"]["title"], "live");
    let _ = listen.kill();
    let _ = listen.wait();
    drop(serve);
}

/// `status` against `serve` on the embedded broker: the retained status
/// (online, database ok) and the metrics endpoint's figures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_a_running_daemon_and_its_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let push = PushService::start().await;
    let (config, _) = write_config(dir.path(), &push, "");
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut yaml = std::fs::read_to_string(&config).unwrap();
    yaml.push_str(&format!(
        "  metrics:\n    listen: 127.0.0.1:{metrics_port}\n"
    ));
    std::fs::write(&config, yaml).unwrap();
    let mut serve = Serve::start(&config);
    serve.wait_for("axion-push is running");

    let out = run(&["status", "--config", config.to_str().unwrap()]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains(": online; database ok"), "{stdout}");
    assert!(stdout.contains("instance cli-test-"), "{stdout}");
    assert!(stdout.contains("commands: 0 (0 rejected)"), "{stdout}");
    assert!(
        stdout.contains("queue depth 0; broker connected 1; database available 1"),
        "{stdout}"
    );
    serve.signal("-TERM");
    assert!(serve.wait().success());
}

#[test]
fn status_without_a_daemon_exits_1_with_a_sentence() {
    let dir = tempfile::tempdir().unwrap();
    let path = config_without_a_broker(dir.path());
    let out = run(&["status", "--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("cannot reach the MQTT broker") && err.contains("axion-push serve"),
        "{err}"
    );
    assert_eq!(
        err.matches("Connection refused").count(),
        1,
        "the cause once: {err}"
    );
}

#[test]
fn status_with_an_external_broker_down_asks_whether_that_broker_runs() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let path = dir.path().join("config.yaml");
    std::fs::write(
        &path,
        format!("axion_push:\n  mqtt: {{url: 'mqtt://127.0.0.1:{port}'}}\n"),
    )
    .unwrap();
    let out = run(&["status", "--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "cannot reach the MQTT broker at mqtt://127.0.0.1:{port} (axion_push.mqtt.url in"
        )),
        "{err}"
    );
    assert!(err.contains("Is that broker running"), "{err}");
    assert!(
        !err.contains("axion-push serve"),
        "the daemon is not what is missing: {err}"
    );
    assert_eq!(
        err.matches("Connection refused").count(),
        1,
        "the cause once: {err}"
    );
}

/// The password in `axion_push.mqtt.url` is a secret: every verb that
/// cannot reach that broker names its host, never the password.
#[test]
fn a_broker_that_cannot_be_reached_is_named_without_the_password_in_its_url() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let path = dir.path().join("config.yaml");
    std::fs::write(
        &path,
        format!("axion_push:\n  mqtt: {{url: 'mqtt://svc:hunter2x@127.0.0.1:{port}'}}\n"),
    )
    .unwrap();
    let config = path.to_str().unwrap();
    let host = format!("127.0.0.1:{port}");
    for verb in [
        &["status", "--config", config][..],
        &["test-push", "alice", "--timeout", "5", "--config", config],
    ] {
        let out = run(verb);
        assert_eq!(out.status.code(), Some(1), "{verb:?}");
        let err = text(&out.stderr);
        assert!(err.contains("cannot reach the MQTT broker"), "{err}");
        assert!(err.contains(&host), "{verb:?} names the broker: {err}");
        assert!(
            !err.contains("hunter2x"),
            "{verb:?} shows the password: {err}"
        );
    }
    // `listen` keeps retrying (and is killed when dropped); its first
    // report of the broker is enough.
    let mut command = Command::new(BIN);
    command
        .args(["listen", "--config", config])
        .env_remove("RUST_LOG");
    let said = Serve::spawn(command).wait_for("retrying");
    assert!(said.contains(&host), "listen names the broker: {said}");
    assert!(
        !said.contains("hunter2x"),
        "listen shows the password: {said}"
    );
}

#[test]
fn test_push_without_a_daemon_fails_fast_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let path = config_without_a_broker(dir.path());
    let started = std::time::Instant::now();
    let out = run(&[
        "test-push",
        "alice",
        "--timeout",
        "20",
        "--config",
        path.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("cannot reach the MQTT broker"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "no hang until the timeout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_on_a_taken_port_exits_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let push = PushService::start().await;
    let (config, port) = write_config(dir.path(), &push, "");
    let _taken = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let out = run(&["serve", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("axion_push.broker.listen"), "{err}");
    assert!(err.contains("already in use"), "{err}");
}

/// A developer whose Mosquitto holds the port is told to keep the
/// checkout's config.yaml as shipped and how to make a local file instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_on_a_taken_port_says_how_to_make_a_local_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let push = PushService::start().await;
    let (_, port) = write_config(dir.path(), &push, "");
    let _taken = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let out = run_in(dir.path(), &["serve"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("Keep config.yaml as shipped"),
        "the shipped file is the documented defaults: {err}"
    );
    let next = port + 1;
    assert!(
        err.contains(&format!(
            "sed 's/127.0.0.1:{port}/127.0.0.1:{next}/' config.yaml > config.local.yaml"
        )),
        "{err}"
    );
}

#[test]
fn every_verb_reads_config_local_yaml_instead_of_config_yaml() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.yaml"),
        "axion_push:\n  delivery: {concurrency: 0}\n",
    )
    .unwrap();
    let out = run_in(dir.path(), &["check-config"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "config.yaml is read while alone"
    );
    std::fs::write(
        dir.path().join("config.local.yaml"),
        "base:\n  push: {vapid_email: 'mailto:ops@example.com'}\n",
    )
    .unwrap();
    let out = run_in(dir.path(), &["check-config"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("config.local.yaml: OK"),
        "{}",
        text(&out.stdout)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_will_reports_offline_when_the_daemon_is_killed() {
    let broker = Mosquitto::start(false).await;
    let dir = tempfile::tempdir().unwrap();
    let push = PushService::start().await;
    let (config, _) = write_config(dir.path(), &push, &format!("    url: {}", broker.url()));
    let mqtt = TestClient::connect(
        "127.0.0.1",
        broker.addr.port(),
        &["axion/push/daemon/status".into()],
    )
    .await;
    let mut serve = Serve::start(&config);
    serve.wait_for("axion-push is running");
    mqtt.wait_for(0, "online", WAIT, |m| m.json()["state"] == "online")
        .await;
    let from = mqtt.count();
    serve.signal("-KILL");
    let offline = mqtt
        .wait_for(from, "the Last Will", WAIT, |m| {
            m.json()["state"] == "offline"
        })
        .await;
    assert!(
        offline.json()["instance"]
            .as_str()
            .unwrap()
            .starts_with("cli-test-")
    );
}

/// `Type=notify`: READY=1 once serving (with a STATUS= line), WATCHDOG=1
/// at half the watchdog interval, STOPPING=1 on SIGTERM — read from a
/// notify socket of the test's own, as systemd would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_speaks_systemds_notify_protocol() {
    let dir = tempfile::tempdir().unwrap();
    let push = PushService::start().await;
    let (config, _) = write_config(dir.path(), &push, "");
    let socket_path = dir.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = socket.recv(&mut buf) {
            if tx
                .send(String::from_utf8_lossy(&buf[..n]).into_owned())
                .is_err()
            {
                return;
            }
        }
    });
    let next = |what: &str| -> String {
        loop {
            let message = rx
                .recv_timeout(WAIT)
                .unwrap_or_else(|_| panic!("no {what} on the notify socket"));
            if message.lines().any(|l| l == what) {
                return message;
            }
        }
    };
    let mut serve = Serve::start_with_env(
        &config,
        &[
            ("NOTIFY_SOCKET", socket_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "400000"),
        ],
    );
    let ready = next("READY=1");
    assert!(ready.contains("STATUS=0 commands"), "{ready}");
    serve.wait_for("axion-push is running");
    let ping = next("WATCHDOG=1");
    assert!(ping.contains("database ok; broker connected"), "{ping}");
    next("WATCHDOG=1");
    serve.signal("-TERM");
    next("STOPPING=1");
    assert!(serve.wait().success());
}

/// Writes a key pair from `generate-vapid` into the config's `base.push`
/// (as written by `write_config`); returns the private key.
fn put_private_key(config: &Path) -> String {
    let generated = run(&["generate-vapid", "--email", "mailto:tests@example.com"]);
    assert!(generated.status.success());
    let private_key = text(&generated.stdout)
        .lines()
        .find_map(|l| l.trim().strip_prefix("vapid_private_key: "))
        .expect("generate-vapid prints vapid_private_key")
        .to_owned();
    let yaml = std::fs::read_to_string(config).unwrap().replace(
        "    vapid_email: mailto:tests@example.com\n",
        &format!(
            "    vapid_private_key: {private_key}\n    vapid_email: mailto:tests@example.com\n"
        ),
    );
    std::fs::write(config, yaml).unwrap();
    private_key
}

/// A config file holding the VAPID private key that others may read is
/// named in a warning at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_warns_when_the_file_with_the_private_key_is_readable_by_others() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let push = PushService::start().await;
    let (config, _) = write_config(dir.path(), &push, "");
    put_private_key(&config);
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut serve = Serve::start(&config);
    let warning = serve.wait_for("readable by other users");
    assert!(warning.contains("config.yaml"), "{warning}");
    serve.wait_for("axion-push is running");
}

/// At the most verbose level, over subscribes, a send to browsers whose
/// pushes meet every kind of failure (a refusal, a 5xx, a gone
/// subscription, a broken connection, an unreachable push service, keys that
/// cannot be used) and a stop, the log holds neither the VAPID private key,
/// the MQTT password, a browser's auth secret, nor an endpoint's path (an
/// endpoint is a capability: whoever has it can push).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_the_log_at_any_level() {
    let dir = tempfile::tempdir().unwrap();
    let push = PushService::start().await;
    let password = "mqtt-password-4c1d";
    let (config, port) = write_config(
        dir.path(),
        &push,
        &format!("    username: axion\n    password: {password}"),
    );
    // A push service that refuses every connection.
    let unreachable_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let yaml = std::fs::read_to_string(&config).unwrap();
    let yaml = yaml.replace(
        &format!("allow_ports: [443, {}]", push.addr.port()),
        &format!(
            "allow_ports: [443, {}, {unreachable_port}]",
            push.addr.port()
        ),
    );
    std::fs::write(&config, yaml).unwrap();
    let private_key = put_private_key(&config);

    // Every target, the embedded broker and sqlx included.
    let mut serve =
        Serve::start_with_env(&config, &[("RUST_LOG", "trace,rumqttd=trace,sqlx=trace")]);
    serve.wait_for("axion-push is running");
    let browser = push.browser("b");
    let failing: Vec<(harness::Browser, Option<harness::Reply>)> = vec![
        (
            push.browser("refused-3f2a"),
            Some(harness::Reply::status(403)),
        ),
        (
            push.browser("failing-9c1e"),
            Some(harness::Reply::status(503)),
        ),
        (push.browser("gone-41d7"), Some(harness::Reply::status(410))),
        (
            push.browser("dropped-77b0"),
            Some(harness::Reply::dropped()),
        ),
    ];
    let mut unreachable = push.browser("unreachable-5e8d");
    unreachable.endpoint = format!("https://127.0.0.1:{unreachable_port}/push/unreachable-5e8d");
    // The daemon's login is the embedded broker's only account.
    let mqtt =
        TestClient::connect_as("127.0.0.1", port, ("axion", password), &["axion/#".into()]).await;
    let mut everyone = vec![browser.clone(), unreachable.clone()];
    for (b, reply) in &failing {
        push.script(b, reply.clone());
        everyone.push(b.clone());
    }
    for (i, b) in everyone.iter().enumerate() {
        let from = mqtt.count();
        mqtt.publish(
            "axion/crm/push/alice/subscribe",
            json!({"id": format!("sub-{i}"), "endpoint": b.endpoint,
                   "keys": {"p256dh": b.p256dh, "auth": b.auth}})
            .to_string(),
        )
        .await;
        let r = mqtt
            .wait_for(from, "the subscribe's result", WAIT, |m| {
                m.topic == "axion/crm/push/alice/result"
                    && m.json()["id"] == format!("sub-{i}").as_str()
            })
            .await
            .json();
        assert_eq!(r["ok"], true, "{r}");
    }
    // A row another program wrote, with keys that cannot be used.
    let unusable = "https://127.0.0.1:1/push/unusable-0b6c";
    {
        use sqlx::Connection;
        let url = format!("sqlite://{}", dir.path().join("axion-push.db").display());
        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::query(
            "INSERT INTO def_notify_push_subscription (User, Package, Endpoint, KeysP256dh, KeysAuth, Active) \
             VALUES ('alice', 'crm', ?, 'not-a-key', 'x', 'Y')",
        )
        .bind(unusable)
        .execute(&mut conn)
        .await
        .unwrap();
    }
    mqtt.publish(
        "axion/crm/push/alice/send",
        json!({"id": "logged", "title": "T"}).to_string(),
    )
    .await;
    let first = mqtt
        .wait_for(0, "the send's first result", WAIT, |m| {
            m.topic == "axion/crm/push/alice/result" && m.json()["id"] == "logged"
        })
        .await
        .json();
    assert_eq!(first["delivered"], 1, "{first}");
    assert_eq!(first["failures"]["keys"], 1, "{first}");
    serve.signal("-TERM");
    let log = serve.log.all();
    assert!(serve.wait().success());

    assert!(
        log.len() > 50,
        "trace level logs plenty: {} lines",
        log.len()
    );
    for (what, secret) in [
        ("the VAPID private key", private_key.as_str()),
        ("the MQTT password", password),
        ("the browser's auth secret", browser.auth.as_str()),
    ] {
        if let Some(line) = log.iter().find(|l| l.contains(secret)) {
            panic!("{what} is in the log: {line}");
        }
    }
    let unusable_path = unusable.rsplit_once(':').unwrap().1.trim_start_matches("1");
    for path in everyone
        .iter()
        .map(|b| {
            b.endpoint
                .rsplit_once(':')
                .unwrap()
                .1
                .split_once('/')
                .unwrap()
                .1
                .to_owned()
        })
        .chain([unusable_path.trim_start_matches('/').to_owned()])
    {
        if let Some(line) = log.iter().find(|l| l.contains(&path)) {
            panic!("an endpoint ({path}) is in the log: {line}");
        }
    }
}

#[test]
fn subscribe_token_prints_a_token_the_daemon_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "another long secret of the host application";
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!("axion_push:\n  subscribe_token_secret: {secret}\n"),
    )
    .unwrap();
    let cfg = config.to_str().unwrap();
    let out = run(&[
        "subscribe-token",
        "alice",
        "--package",
        "crm",
        "--valid",
        "1h",
        "--config",
        cfg,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let token = text(&out.stdout).trim().to_owned();
    let now = axion_push::clock::now_ms() / 1000;
    let key = axion_push::token::TokenKey::new(secret);
    let (crm, alice) = (
        axion_push::model::Package::parse("crm").unwrap(),
        axion_push::model::User::parse("alice").unwrap(),
    );
    let expires = key.verify(Some(&token), &crm, &alice, now).unwrap();
    assert!((now + 3599..=now + 3601).contains(&expires), "{expires}");
    assert!(
        key.verify(Some(&token), &crm, &alice, now + 3601).is_err(),
        "valid one hour"
    );

    std::fs::write(&config, "axion_push: {}\n").unwrap();
    let out = run(&["subscribe-token", "alice", "--config", cfg]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("subscribe_token_secret is not set"));
}

#[test]
fn subscribe_token_takes_a_plain_number_of_seconds_as_config_durations_do() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "another long secret of the host application";
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!("axion_push:\n  subscribe_token_secret: {secret}\n"),
    )
    .unwrap();
    let before = axion_push::clock::now_ms() / 1000;
    let out = run(&[
        "subscribe-token",
        "alice",
        "--valid",
        "15",
        "--config",
        config.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let token = text(&out.stdout).trim().to_owned();
    let expires: u64 = token.split('.').nth(1).unwrap().parse().unwrap();
    let after = axion_push::clock::now_ms() / 1000;
    assert!(
        (before + 15..=after + 15).contains(&expires),
        "15 seconds: {expires} not in {}..={}",
        before + 15,
        after + 15
    );
}

#[test]
fn subscribe_token_without_a_secret_says_how_to_make_one() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, "axion_push: {}\n").unwrap();
    let out = run(&[
        "subscribe-token",
        "alice",
        "--config",
        config.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("openssl rand -base64 32"), "{err}");
    assert!(
        err.contains(config.to_str().unwrap()),
        "names the file to edit: {err}"
    );
}

/// Under systemd, stderr is the journal (`JOURNAL_STREAM` names it): `serve`
/// then writes native journal entries whose fields can be queried. The
/// journal here is a socket of the test's own at journald's path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_writes_structured_journal_entries_when_stderr_is_the_journal() {
    use std::os::fd::AsFd as _;
    use std::os::unix::fs::MetadataExt as _;

    const JOURNAL: &str = "/run/systemd/journal/socket";
    assert!(
        !Path::new(JOURNAL).exists(),
        "{JOURNAL} exists: a journald runs here, and this test needs its path for a journal of its own"
    );
    std::fs::create_dir_all("/run/systemd/journal").unwrap();
    let journal = std::os::unix::net::UnixDatagram::bind(JOURNAL).unwrap();
    struct Remove;
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(JOURNAL);
        }
    }
    let _remove = Remove;
    let (entries_tx, entries) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        while let Ok(n) = journal.recv(&mut buf) {
            if entries_tx.send(journal_fields(&buf[..n])).is_err() {
                return;
            }
        }
    });
    let next = |field: &str, value: &str| -> std::collections::HashMap<String, String> {
        loop {
            let entry = entries
                .recv_timeout(WAIT)
                .unwrap_or_else(|_| panic!("no journal entry with {field}={value}"));
            if entry.get(field).is_some_and(|v| v == value) {
                return entry;
            }
        }
    };

    let dir = tempfile::tempdir().unwrap();
    let push = PushService::start().await;
    let (config, port) = write_config(dir.path(), &push, "");
    let (_stderr, stderr_writer) = std::io::pipe().unwrap();
    let stream = std::fs::File::from(stderr_writer.as_fd().try_clone_to_owned().unwrap())
        .metadata()
        .unwrap();
    let mut child = Command::new(process::bin())
        .args(["serve", "--config", config.to_str().unwrap()])
        .env("RUST_LOG", "info")
        .env(
            "JOURNAL_STREAM",
            format!("{}:{}", stream.dev(), stream.ino()),
        )
        .stdout(Stdio::null())
        .stderr(stderr_writer)
        .spawn()
        .unwrap();

    let running = next("MESSAGE", "axion-push is running");
    assert_eq!(running["SYSLOG_IDENTIFIER"], "axion-push", "{running:?}");
    assert_eq!(running["TARGET"], "axion_push::daemon", "{running:?}");
    let mqtt = TestClient::connect("127.0.0.1", port, &["axion/#".into()]).await;
    mqtt.publish(
        "axion/crm/push/alice/send",
        json!({"id": "journal-1", "title": "T"}).to_string(),
    )
    .await;
    let accepted = next("COMMAND_ID", "journal-1");
    assert_eq!(accepted["PACKAGE"], "crm", "{accepted:?}");
    assert_eq!(accepted["MESSAGE"], "send accepted", "{accepted:?}");
    let _ = child.kill();
    let _ = child.wait();
}

/// Reads one datagram of journald's native protocol: `NAME=value` lines, or
/// `NAME`, a newline, a little-endian u64 length, the value and a newline.
fn journal_fields(mut bytes: &[u8]) -> std::collections::HashMap<String, String> {
    let mut fields = std::collections::HashMap::new();
    while let Some(end) = bytes.iter().position(|&b| b == b'\n' || b == b'=') {
        let name = String::from_utf8_lossy(&bytes[..end]).into_owned();
        if bytes[end] == b'=' {
            let rest = &bytes[end + 1..];
            let line = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
            fields.insert(name, String::from_utf8_lossy(&rest[..line]).into_owned());
            bytes = rest.get(line + 1..).unwrap_or_default();
        } else {
            let rest = &bytes[end + 1..];
            let len = u64::from_le_bytes(rest[..8].try_into().unwrap()) as usize;
            let value = &rest[8..8 + len];
            fields.insert(name, String::from_utf8_lossy(value).into_owned());
            bytes = rest.get(8 + len + 1..).unwrap_or_default();
        }
    }
    fields
}
