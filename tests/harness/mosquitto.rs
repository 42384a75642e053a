//! A Mosquitto broker of the test's own, on a free loopback port, that the
//! test can stop and restart — the external-broker case with real parts.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Mosquitto {
    pub addr: SocketAddr,
    pub tls_addr: Option<SocketAddr>,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

/// Where Debian installs it; `$MOSQUITTO` overrides.
fn binary() -> PathBuf {
    let path = std::env::var_os("MOSQUITTO")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/sbin/mosquitto"));
    assert!(
        path.exists(),
        "mosquitto is not installed at {} (Debian package `mosquitto`; .ci/run installs it)",
        path.display()
    );
    path
}

/// A second listener for the daemon: TLS with the given certificate, and
/// only `user`/`password` may connect.
pub struct Secured {
    pub cert_pem: String,
    pub key_pem: String,
    pub user: String,
    pub password: String,
}

fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

impl Mosquitto {
    /// Starts a broker; with `persistence` it keeps sessions across restarts.
    pub async fn start(persistence: bool) -> Mosquitto {
        Self::start_with(persistence, None).await
    }

    /// Starts a broker with an anonymous plain listener (`addr`, for the
    /// test's client) and, when `secured` is given, a TLS listener with
    /// password authentication (`tls_addr`).
    pub async fn start_with(persistence: bool, secured: Option<Secured>) -> Mosquitto {
        let dir = tempfile::tempdir().unwrap();
        // Started as root, Mosquitto drops to its own user: that user must
        // be able to write its persistence file here.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        }
        let addr = free_port();
        let mut config = format!(
            "per_listener_settings true\npersistence {}\npersistence_location {}/\nautosave_interval 1\nmax_inflight_messages 20\nlistener {} 127.0.0.1\nallow_anonymous true\n",
            persistence,
            dir.path().display(),
            addr.port(),
        );
        let mut tls_addr = None;
        if let Some(s) = secured {
            let tls = free_port();
            let path = |name: &str| dir.path().join(name);
            std::fs::write(path("cert.pem"), &s.cert_pem).unwrap();
            std::fs::write(path("key.pem"), &s.key_pem).unwrap();
            std::fs::write(path("passwd"), "").unwrap();
            let status = Command::new("mosquitto_passwd")
                .args(["-b"])
                .arg(path("passwd"))
                .args([&s.user, &s.password])
                .status()
                .expect("mosquitto_passwd (Debian package mosquitto) runs");
            assert!(status.success(), "mosquitto_passwd failed");
            config.push_str(&format!(
                "listener {} 127.0.0.1\ncertfile {}\nkeyfile {}\nallow_anonymous false\npassword_file {}\n",
                tls.port(),
                path("cert.pem").display(),
                path("key.pem").display(),
                path("passwd").display(),
            ));
            tls_addr = Some(tls);
        }
        std::fs::write(dir.path().join("mosquitto.conf"), config).unwrap();
        let mut broker = Mosquitto {
            addr,
            tls_addr,
            dir,
            child: None,
        };
        broker.spawn().await;
        broker
    }

    /// Starts a broker with `config` (written to `dir/mosquitto.conf`) that
    /// listens on `addr`: a test's own settings, such as the shipped ones.
    pub async fn start_configured(
        dir: tempfile::TempDir,
        config: &str,
        addr: SocketAddr,
    ) -> Mosquitto {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        }
        std::fs::write(dir.path().join("mosquitto.conf"), config).unwrap();
        let mut broker = Mosquitto {
            addr,
            tls_addr: None,
            dir,
            child: None,
        };
        broker.spawn().await;
        broker
    }

    /// A free loopback address for a broker to listen on.
    pub fn free_addr() -> SocketAddr {
        free_port()
    }

    /// Writes a password file with `accounts` (`mosquitto_passwd -b`).
    pub fn password_file(path: &std::path::Path, accounts: &[(&str, &str)]) {
        std::fs::write(path, "").unwrap();
        for (user, password) in accounts {
            let status = Command::new("mosquitto_passwd")
                .arg("-b")
                .arg(path)
                .args([user, password])
                .status()
                .expect("mosquitto_passwd (Debian package mosquitto) runs");
            assert!(status.success(), "mosquitto_passwd failed");
        }
    }

    async fn spawn(&mut self) {
        let child = Command::new(binary())
            .arg("-c")
            .arg(self.dir.path().join("mosquitto.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto starts");
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let listening = |addr: Option<SocketAddr>| async move {
            match addr {
                Some(addr) => tokio::net::TcpStream::connect(addr).await.is_ok(),
                None => true,
            }
        };
        while !(listening(Some(self.addr)).await && listening(self.tls_addr).await) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "mosquitto did not listen on {} within 10 s",
                self.addr
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn url(&self) -> String {
        format!("mqtt://{}", self.addr)
    }

    /// Stops the broker (SIGTERM, so it saves its state) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let _ = child.wait();
        }
    }

    /// Starts a stopped broker again on the same port and files.
    pub async fn resume(&mut self) {
        self.spawn().await;
    }

    pub async fn restart(&mut self) {
        self.stop();
        self.spawn().await;
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
