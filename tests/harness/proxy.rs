//! A TCP proxy between the daemon and its broker that can hold back what the
//! daemon sends — its events, results and acks — while the broker's
//! messages still reach it: the moment just after the daemon recorded a
//! command and before the broker heard back, made to last.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub struct Proxy {
    pub addr: SocketAddr,
    /// One flag per connection made so far: hold what its client sends.
    holds: Arc<Mutex<Vec<Arc<AtomicBool>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let holds: Arc<Mutex<Vec<Arc<AtomicBool>>>> = Arc::default();
        let registry = holds.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(broker) = TcpStream::connect(upstream).await else {
                    continue;
                };
                let hold = Arc::new(AtomicBool::new(false));
                registry.lock().unwrap().push(hold.clone());
                tokio::spawn(relay(client, broker, hold));
            }
        });
        Proxy { addr, holds, task }
    }

    /// From now on, what the clients connected so far send is kept here and
    /// never reaches the broker. Later connections are not held.
    pub fn hold_what_clients_send(&self) {
        for hold in self.holds.lock().unwrap().iter() {
            hold.store(true, Ordering::SeqCst);
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay(client: TcpStream, broker: TcpStream, hold: Arc<AtomicBool>) {
    let (mut client_rx, mut client_tx) = client.into_split();
    let (mut broker_rx, mut broker_tx) = broker.into_split();
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
