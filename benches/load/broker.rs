//! The external broker every system of a run talks to: a Mosquitto process
//! of the benchmark's own on a free loopback port.
//!
//! Settings beyond Mosquitto's defaults, each because the benchmark needs
//! it (printed with the results):
//! - `max_inflight_messages` (default 20): QoS 1 messages the broker sends
//!   a client before it waits for their acknowledgements. A daemon that
//!   acknowledges a command once it is recorded has at most this many
//!   commands waiting to be recorded, so it bounds how many a daemon can
//!   record together. `--broker-inflight` changes it.
//! - `max_queued_messages` (default 1000): QoS 1 messages held per client
//!   beyond those in flight. A burst of 20,000 sends waits in the broker for
//!   the daemon, and above this limit Mosquitto drops them; raised so that
//!   nothing published is lost.
//! - `set_tcp_nodelay`: no Nagle delay on small publishes (the daemon and
//!   the load generator set it on their side too).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What Mosquitto ships with; the benchmark's default is larger.
pub const MOSQUITTO_DEFAULT_INFLIGHT: u16 = 20;
pub const DEFAULT_INFLIGHT: u16 = 100;
const MAX_QUEUED: u32 = 1_000_000;

pub struct Broker {
    pub addr: SocketAddr,
    pub pid: u32,
    /// The settings above, as the configuration file holds them.
    pub settings: String,
    child: Child,
    _dir: tempfile::TempDir,
}

/// Where Debian installs it; `$MOSQUITTO` overrides.
fn binary() -> PathBuf {
    let path =
        std::env::var_os("MOSQUITTO").map_or_else(|| "/usr/sbin/mosquitto".into(), PathBuf::from);
    assert!(
        path.exists(),
        "mosquitto is not installed at {} (Debian package `mosquitto`; .ci/run installs it)",
        path.display()
    );
    path
}

/// Mosquitto's version, as `mosquitto -h` prints it.
pub fn version() -> String {
    Command::new(binary())
        .arg("-h")
        .output()
        .ok()
        .and_then(|o| {
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            text.lines().next().map(|l| l.trim().to_owned())
        })
        .unwrap_or_else(|| "mosquitto".into())
}

impl Broker {
    pub fn start(inflight: u16) -> Broker {
        let dir = tempfile::tempdir().unwrap();
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let settings = format!(
            "max_inflight_messages {inflight}\nmax_queued_messages {MAX_QUEUED}\nset_tcp_nodelay true\n"
        );
        let config = format!(
            "persistence false\nlog_dest none\n{settings}listener {} 127.0.0.1\nallow_anonymous true\n",
            addr.port()
        );
        let path = dir.path().join("mosquitto.conf");
        std::fs::write(&path, config).unwrap();
        let child = Command::new(binary())
            .arg("-c")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto starts");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "mosquitto did not listen on {addr} within 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Broker {
            addr,
            pid: child.id(),
            settings,
            child,
            _dir: dir,
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
