//! A TCP proxy between the daemon and a server (its broker, its database)
//! that can hold back what the daemon sends — its events, results and acks —
//! while the server's messages still reach it (the moment just after the
//! daemon recorded a command and before the broker heard back, made to
//! last), or cut every connection and refuse new ones for a while (an
//! outage, the server still running for everyone else).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub struct Proxy {
    pub addr: SocketAddr,
    /// One flag per connection made so far: hold what its client sends.
    holds: Arc<Mutex<Vec<Arc<AtomicBool>>>>,
    /// While set, connections are cut and new ones closed at once.
    cut: Arc<AtomicBool>,
    relays: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let holds: Arc<Mutex<Vec<Arc<AtomicBool>>>> = Arc::default();
        let cut = Arc::new(AtomicBool::new(false));
        let relays: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let (registry, is_cut, running) = (holds.clone(), cut.clone(), relays.clone());
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    continue;
                };
                // Checked under the lock `cut` drains the relays with, after
                // raising the flag: a connection is either refused here or
                // registered before the drain, never missed by it.
                let mut relays = running.lock().unwrap();
                if is_cut.load(Ordering::SeqCst) {
                    continue;
                }
                let hold = Arc::new(AtomicBool::new(false));
                registry.lock().unwrap().push(hold.clone());
                relays.push(tokio::spawn(relay(client, server, hold)).abort_handle());
            }
        });
        Proxy {
            addr,
            holds,
            cut,
            relays,
            task,
        }
    }

    /// Closes every connection and refuses new ones until [`Proxy::restore`].
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for relay in self.relays.lock().unwrap().drain(..) {
            relay.abort();
        }
    }

    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }

    /// A handle that ends a cut, kept apart from the proxy.
    pub fn restorer(&self) -> Restorer {
        Restorer(self.cut.clone())
    }

    /// From now on, what the clients connected so far send is kept here and
    /// never reaches the broker. Later connections are not held.
    pub fn hold_what_clients_send(&self) {
        for hold in self.holds.lock().unwrap().iter() {
            hold.store(true, Ordering::SeqCst);
        }
    }
}

pub struct Restorer(Arc<AtomicBool>);

impl Restorer {
    pub fn restore(&self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        for relay in self.relays.lock().unwrap().drain(..) {
            relay.abort();
        }
    }
}

async fn relay(client: TcpStream, server: TcpStream, hold: Arc<AtomicBool>) {
    let (mut client_rx, mut client_tx) = client.into_split();
    let (mut broker_rx, mut broker_tx) = server.into_split();
    let upstream = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match client_rx.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) if !hold.load(Ordering::SeqCst) => {
                    if broker_tx.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
                Ok(_) => {} // held: dropped with the connection
            }
        }
    };
    let downstream = tokio::io::copy(&mut broker_rx, &mut client_tx);
    // Either side gone: both connections close.
    tokio::select! {
        () = upstream => {}
        _ = downstream => {}
    }
}
