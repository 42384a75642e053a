//! The systems measured, each a process of its own on the same broker, push
//! service and subscriptions: axion-push (`axion-push serve`, the binary
//! cargo built with this benchmark) and the two baselines of the design it
//! replaces (`benches/baselines/`).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::Setup;
use crate::harness::database::TestDatabase;
use crate::population::Group;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum System {
    /// The Python module's design: paho-mqtt and pywebpush, one push at a
    /// time, a new HTTPS connection per push (pywebpush's `webpush()`).
    Python,
    /// node's `web-push` with 64 requests in flight over kept-alive
    /// connections.
    Node,
    AxionPush,
}

impl System {
    pub fn name(self) -> &'static str {
        match self {
            System::Python => "Python module (pywebpush, one at a time)",
            System::Node => "node web-push (64 in flight)",
            System::AxionPush => "axion-push",
        }
    }

    pub fn is_baseline(self) -> bool {
        self != System::AxionPush
    }
}

/// How long a system may take to start.
const START: Duration = Duration::from_secs(60);
/// How long a stopping system may take before it is killed.
const STOP: Duration = Duration::from_secs(30);

/// The VAPID key every system signs with.
pub struct Vapid {
    pub private_raw: String,
    pub public: String,
    pub email: &'static str,
}

impl Vapid {
    pub fn generate() -> Vapid {
        let key = axion_push::config::VapidPrivateKey::generate();
        Vapid {
            private_raw: key.to_raw_base64url(),
            public: key.public_key().to_owned(),
            email: "mailto:bench@example.com",
        }
    }
}

/// A running system.
pub struct Running {
    pub system: System,
    /// The process whose CPU and memory are the system's.
    pub pid: u32,
    child: Child,
    log: PathBuf,
    /// The daemon's MQTT client id: its broker session is ended after it.
    client_id: Option<String>,
    /// Dropped (a server database: deleted) after the daemon stops.
    database: Option<TestDatabase>,
}

impl Running {
    /// The last lines of the system's log, for an error message.
    pub fn log_tail(&self) -> String {
        tail(&self.log)
    }
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(15);
    format!(
        "{} ({}):\n{}",
        log.display(),
        lines.len(),
        lines[from..].join("\n")
    )
}

/// Starts `system` with `group`'s subscriptions; axion-push on the
/// database server `database` (SQLite when `None`).
pub fn start(
    setup: &Setup,
    system: System,
    group: &Group,
    database: Option<&str>,
) -> Result<Running, String> {
    let n = setup.next_start();
    match system {
        System::AxionPush => start_daemon(setup, group, database, n),
        System::Python | System::Node => start_baseline(setup, system, group, n),
    }
}

fn start_daemon(
    setup: &Setup,
    group: &Group,
    database: Option<&str>,
    n: usize,
) -> Result<Running, String> {
    let database = setup.rt.block_on(TestDatabase::create_on(database));
    let dir = setup.dir.path();
    let client_id = format!("axion-push-bench-{n}");
    let config = dir.join(format!("axion-push-{n}.yaml"));
    std::fs::write(
        &config,
        daemon_config(setup, &client_id, &database.direct_url, n),
    )
    .unwrap();
    // It holds the VAPID key: the daemon warns about a file others can read.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let log = dir.join(format!("axion-push-{n}.log"));
    let child = Command::new(env!("CARGO_BIN_EXE_axion-push"))
        .args(["serve", "--config"])
        .arg(&config)
        .current_dir(dir)
        // The config's log level, on stderr, whatever the caller's
        // environment says.
        .env_remove("RUST_LOG")
        .env_remove("JOURNAL_STREAM")
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .map_err(|e| format!("{} does not start: {e}", env!("CARGO_BIN_EXE_axion-push")))?;
    let mut running = Running {
        system: System::AxionPush,
        pid: child.id(),
        child,
        log,
        client_id: Some(client_id.clone()),
        database: None,
    };
    // Online, or exited (a config or database it cannot use), or neither in
    // time.
    let deadline = Instant::now() + START;
    let (online, exited) = loop {
        let announced = setup.rt.block_on(setup.generator.wait_for_state(
            &client_id,
            "online",
            Duration::from_millis(200),
        ));
        let exited = running.child.try_wait().ok().flatten();
        if announced || exited.is_some() || Instant::now() > deadline {
            break (announced, exited);
        }
    };
    if !online {
        let why = format!(
            "axion-push {} {}",
            exited.map_or(
                format!("did not announce itself online within {START:?};"),
                |status| { format!("exited ({status}) before it was online;") }
            ),
            running.log_tail()
        );
        stop(setup, running);
        return Err(why);
    }
    // Written as Axion (or the Python module) left them, into the table the
    // daemon has just created.
    setup.rt.block_on(database.insert_rows(&group.rows()));
    // With the statistics a table in use has (autovacuum's, or an
    // administrator's ANALYZE): on a table filled a moment ago PostgreSQL's
    // planner reads a user's subscriptions through the (Package, Endpoint)
    // index, every subscription of the package, instead of the primary key.
    setup.rt.block_on(database.execute(match database.backend {
        axion_push::store::Backend::MySql => "ANALYZE TABLE def_notify_push_subscription",
        _ => "ANALYZE def_notify_push_subscription",
    }));
    running.database = Some(database);
    Ok(running)
}

/// The daemon's `config.yaml`: the shipped defaults but for the broker, the
/// database, the key every system shares, and the loopback push service
/// allowed explicitly.
fn daemon_config(setup: &Setup, client_id: &str, database_url: &str, n: usize) -> String {
    format!(
        r#"base:
  push:
    vapid_private_key: {private}
    vapid_public_key: {public}
    vapid_email: {email}
axion_push:
  mqtt:
    url: mqtt://{broker}
    client_id: {client_id}
  database:
    url: {database_url}
  vapid_key_file: {dir}/vapid-{n}.pem
  delivery:
    extra_root_ca: {ca}
  endpoints:
    allow_hosts: [127.0.0.1]
    allow_ports: [{push_port}]
    allow_private_addresses: true
  log:
    level: info
"#,
        private = setup.vapid.private_raw,
        public = setup.vapid.public,
        email = setup.vapid.email,
        broker = setup.broker.addr,
        dir = setup.dir.path().display(),
        ca = setup.push.ca_pem.display(),
        push_port = setup.push.addr.port(),
    )
}

fn start_baseline(
    setup: &Setup,
    system: System,
    group: &Group,
    n: usize,
) -> Result<Running, String> {
    let baselines = setup
        .baselines
        .as_ref()
        .ok_or("the baselines are not installed")?;
    let mut command = match system {
        System::Python => {
            let mut c = Command::new(&baselines.python);
            c.arg(baselines.scripts.join("pywebpush_module.py"))
                // requests reads its roots from here, and goes through no
                // proxy to the push service.
                .env("REQUESTS_CA_BUNDLE", &setup.push.ca_pem)
                .env("NO_PROXY", "127.0.0.1,localhost");
            c
        }
        _ => {
            let mut c = Command::new("node");
            c.arg(baselines.scripts.join("web_push.js"))
                .env("NODE_PATH", &baselines.node_modules)
                .env("NODE_EXTRA_CA_CERTS", &setup.push.ca_pem)
                .arg("--in-flight=64");
            c
        }
    };
    let log = setup.dir.path().join(format!("baseline-{n}.log"));
    // `--name=value`: a base64url key may start with `-`.
    let mut child = command
        .arg(format!("--broker={}", setup.broker.addr))
        .arg(format!("--subscriptions={}", group.file().display()))
        .arg(format!("--vapid-private-key={}", setup.vapid.private_raw))
        .arg(format!("--vapid-public-key={}", setup.vapid.public))
        .arg(format!("--vapid-email={}", setup.vapid.email))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .map_err(|e| format!("{} does not start: {e}", system.name()))?;
    // The script says `ready` once subscribed; later lines are drained.
    let (ready_tx, ready) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.trim() == "ready" {
                let _ = ready_tx.send(());
            }
        }
    });
    let running = Running {
        system,
        pid: child.id(),
        child,
        log,
        client_id: None,
        database: None,
    };
    if let Err(e) = ready.recv_timeout(START) {
        let why = format!(
            "{} {}; {}",
            system.name(),
            match e {
                mpsc::RecvTimeoutError::Timeout => format!("was not ready within {START:?}"),
                mpsc::RecvTimeoutError::Disconnected => "exited before it was ready".into(),
            },
            running.log_tail()
        );
        stop(setup, running);
        return Err(why);
    }
    Ok(running)
}

/// Stops a system: SIGTERM, then SIGKILL if it has not exited in time.
pub fn stop(setup: &Setup, mut running: Running) {
    if let Some(pid) = rustix::process::Pid::from_raw(running.pid as i32) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
    let deadline = Instant::now() + STOP;
    while running.child.try_wait().ok().flatten().is_none() {
        if Instant::now() > deadline {
            eprintln!(
                "{} did not stop within {STOP:?}: killed",
                running.system.name()
            );
            let _ = running.child.kill();
            let _ = running.child.wait();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if let Some(client_id) = &running.client_id {
        setup
            .rt
            .block_on(crate::mqtt::forget_session(setup.broker.addr, client_id));
    }
    drop(running.database.take());
}
