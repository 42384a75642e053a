//! The `axion-push` binary as a separate process: a config file written
//! for it, its log lines awaited, signals (SIGTERM, SIGKILL) sent to it.
//! Included by the integration tests that run the binary (as
//! `#[path = "harness/process.rs"] mod process;`), not by the harness:
//! benchmarks share the harness and have no binary to run.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

use crate::harness::{PushService, WAIT};

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_axion-push")
}

/// A config file for the binary: a free broker port, files in `dir`, the
/// loopback push service trusted.
pub fn write_config(dir: &Path, push: &PushService, extra: &str) -> (PathBuf, u16) {
    write_config_with(dir, push, extra, "")
}

/// Like [`write_config`]; `mqtt` and `delivery` are lines added to those
/// sections (four spaces in).
pub fn write_config_with(
    dir: &Path,
    push: &PushService,
    extra: &str,
    delivery: &str,
) -> (PathBuf, u16) {
    write_config_sections(dir, push, extra, delivery, "")
}

/// Like [`write_config_with`]; `database` lines are added to that section
/// (four spaces in) — lines two spaces in open sections of their own.
pub fn write_config_sections(
    dir: &Path,
    push: &PushService,
    extra: &str,
    delivery: &str,
    database: &str,
) -> (PathBuf, u16) {
    let url = format!("sqlite://{}", dir.join("axion-push.db").display());
    write_config_on(&url, dir, push, extra, delivery, database)
}

/// Like [`write_config_sections`], on the database at `database_url`.
pub fn write_config_on(
    database_url: &str,
    dir: &Path,
    push: &PushService,
    extra: &str,
    delivery: &str,
    database: &str,
) -> (PathBuf, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, &push.ca_pem).unwrap();
    let yaml = format!(
        r#"base:
  push:
    vapid_email: mailto:tests@example.com
axion_push:
  mqtt:
    client_id: cli-test-{port}
{extra}
  broker:
    listen: 127.0.0.1:{port}
  database:
    url: {database_url}
{database}
  vapid_key_file: {key}
  delivery:
    extra_root_ca: {ca}
{delivery}
  endpoints:
    allow_hosts: [127.0.0.1]
    allow_ports: [443, {push_port}]
    allow_private_addresses: true
"#,
        push_port = push.addr.port(),
        key = dir.join("vapid.pem").display(),
        ca = ca.display(),
    );
    let path = dir.join("config.yaml");
    std::fs::write(&path, yaml).unwrap();
    (path, port)
}

/// Lines of a child's output, read on a thread so they can be awaited with
/// a deadline.
pub struct Lines {
    rx: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Lines {
    pub fn of(reader: impl std::io::Read + Send + 'static) -> Lines {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(reader).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Lines {
            rx,
            seen: Vec::new(),
        }
    }

    /// Every line still to come, until the writer closes its end (the
    /// process has exited), plus those already seen.
    pub fn all(&mut self) -> Vec<String> {
        while let Ok(line) = self.rx.recv_timeout(WAIT) {
            self.seen.push(line);
        }
        self.seen.clone()
    }

    /// Waits for a line containing `needle`.
    pub fn wait_for(&mut self, needle: &str) -> String {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!("no line with {needle:?}; seen: {:#?}", self.seen),
            }
        }
    }
}

/// The daemon's systemd notifications (`READY=1`, `STOPPING=1`), read from
/// a socket of the test's own: events to await rather than log lines.
pub struct Notifications {
    rx: mpsc::Receiver<String>,
    closed: std::sync::Arc<std::sync::atomic::AtomicBool>,
    _dir: tempfile::TempDir,
}

impl Notifications {
    fn bind() -> (Notifications, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let socket = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        // Woken now and then to notice that the test is done with it.
        socket
            .set_read_timeout(Some(std::time::Duration::from_millis(500)))
            .unwrap();
        let closed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let done = closed.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(n) = socket.recv(&mut buf)
                    && tx
                        .send(String::from_utf8_lossy(&buf[..n]).into_owned())
                        .is_err()
                {
                    return;
                }
            }
        });
        let notifications = Notifications {
            rx,
            closed,
            _dir: dir,
        };
        (notifications, path)
    }

    /// Waits for a notification holding the line `what` (`READY=1`).
    pub fn wait_for(&self, what: &str) -> String {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(message) if message.lines().any(|l| l == what) => return message,
                Ok(_) => {}
                Err(_) => panic!("no {what} from the daemon within {WAIT:?}"),
            }
        }
    }
}

impl Drop for Notifications {
    fn drop(&mut self) {
        self.closed
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A running `axion-push serve` whose log lines and systemd notifications
/// can be awaited.
pub struct Serve {
    pub child: Child,
    pub log: Lines,
    pub notifications: Notifications,
}

impl Serve {
    pub fn start(config: &Path) -> Serve {
        Self::start_with_env(config, &[])
    }

    /// Like [`Serve::start`], with extra environment variables.
    pub fn start_with_env(config: &Path, env: &[(&str, &str)]) -> Serve {
        let mut command = Command::new(bin());
        command
            .args(["serve", "--config", config.to_str().unwrap()])
            .env("RUST_LOG", "info")
            .envs(env.iter().copied());
        Self::spawn(command)
    }

    /// Runs `command` (one that runs `serve`) with its log and systemd
    /// notifications to await.
    pub fn spawn(mut command: Command) -> Serve {
        let (notifications, socket) = Notifications::bind();
        if command.get_envs().all(|(k, _)| k != "NOTIFY_SOCKET") {
            command.env("NOTIFY_SOCKET", &socket);
        }
        let mut child = command
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let log = Lines::of(child.stderr.take().unwrap());
        Serve {
            child,
            log,
            notifications,
        }
    }

    /// Waits until the daemon is running: subscribed to its commands, as
    /// it tells systemd (`READY=1`).
    pub fn wait_ready(&self) {
        self.notifications.wait_for("READY=1");
    }

    pub fn wait_for(&mut self, needle: &str) -> String {
        self.log.wait_for(needle)
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    pub fn wait(mut self) -> std::process::ExitStatus {
        self.child.wait().unwrap()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
