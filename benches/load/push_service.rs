//! The push service, in a process of its own so that its CPU is not the
//! daemon's: HTTPS on loopback with HTTP/2 (and HTTP/1.1, which pywebpush
//! and node's `web-push` speak), a self-signed certificate, and 201 for
//! every request without decrypting it. It records when each request
//! arrived (its body read), which subscription it was for (the endpoint is
//! `https://127.0.0.1:PORT/push/{index}`) and its `Topic` header, which the
//! load generator sets to name the send: that is how a push is matched to
//! its publish for latency, across processes, on the machine's clock.
//!
//! The benchmark starts its own executable again with `--push-service DIR`
//! ([`serve`]) and drives it over stdin/stdout, one line per request:
//! `reset` → `ok`; `wait COUNT MILLIS` → `count N last_ns` once COUNT
//! requests arrived or MILLIS passed; `dump` → `index topic ns` per request,
//! then `end`. The process ends when its stdin closes.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// The argument that makes the benchmark's executable the push service.
pub const FLAG: &str = "--push-service";

/// One request as it arrived.
#[derive(Debug, Clone)]
pub struct Arrival {
    /// The subscription's index in the endpoint path.
    pub subscription: u32,
    pub topic: String,
    /// Nanoseconds since the Unix epoch (see [`now_ns`]).
    pub at_ns: u64,
}

/// The machine's clock in nanoseconds since the Unix epoch: the one clock
/// the load generator and the push service, two processes, share.
pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_nanos() as u64
}

/// The benchmark's handle on the running push service.
pub struct PushService {
    pub addr: SocketAddr,
    /// The certificate, PEM, for `delivery.extra_root_ca`, pywebpush's
    /// `REQUESTS_CA_BUNDLE` and node's `NODE_EXTRA_CA_CERTS`.
    pub ca_pem: PathBuf,
    pub pid: u32,
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl PushService {
    /// Starts the push service with a new certificate written into `dir`.
    pub fn start(dir: &Path) -> PushService {
        let certified =
            rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
                .expect("a certificate");
        std::fs::write(dir.join("cert.der"), certified.cert.der()).unwrap();
        std::fs::write(dir.join("key.der"), certified.signing_key.serialize_der()).unwrap();
        let ca_pem = dir.join("push-service.pem");
        std::fs::write(&ca_pem, certified.cert.pem()).unwrap();
        let mut child = Command::new(std::env::current_exe().expect("the benchmark's executable"))
            .arg(FLAG)
            .arg(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("the push service starts");
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening ")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("the push service did not start: {line:?}"));
        PushService {
            addr,
            ca_pem,
            pid: child.id(),
            child,
            stdin,
            stdout,
        }
    }

    /// The endpoint of subscription `index`.
    pub fn endpoint(&self, index: usize) -> String {
        format!("https://{}/push/{index}", self.addr)
    }

    fn ask(&mut self, request: &str) -> String {
        writeln!(self.stdin, "{request}").unwrap();
        self.stdin.flush().unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        assert!(!line.is_empty(), "the push service exited");
        line.trim_end().to_owned()
    }

    /// Forgets every request so far.
    pub fn reset(&mut self) {
        assert_eq!(self.ask("reset"), "ok");
    }

    /// Waits until `count` requests arrived in all, at most `timeout`;
    /// returns how many did and when the last one arrived.
    pub fn wait(&mut self, count: usize, timeout: Duration) -> (usize, u64) {
        let answer = self.ask(&format!("wait {count} {}", timeout.as_millis()));
        let mut fields = answer.split_whitespace().skip(1);
        let mut next = || fields.next().and_then(|f| f.parse().ok()).unwrap_or(0);
        (next() as usize, next())
    }

    /// Every request since the last reset.
    pub fn arrivals(&mut self) -> Vec<Arrival> {
        writeln!(self.stdin, "dump").unwrap();
        self.stdin.flush().unwrap();
        let mut arrivals = Vec::new();
        loop {
            let mut line = String::new();
            assert!(
                self.stdout.read_line(&mut line).unwrap() > 0,
                "the push service exited"
            );
            let mut fields = line.split_whitespace();
            match (fields.next(), fields.next(), fields.next()) {
                (Some("end"), None, None) => return arrivals,
                (Some(index), Some(topic), Some(at)) => arrivals.push(Arrival {
                    subscription: index.parse().unwrap_or(u32::MAX),
                    topic: topic.to_owned(),
                    at_ns: at.parse().unwrap_or(0),
                }),
                _ => panic!("the push service answered {line:?}"),
            }
        }
    }
}

impl Drop for PushService {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Requests so far, and a way to wait for more.
#[derive(Default)]
struct Recorder {
    state: Mutex<Recorded>,
    /// Told once the count a waiter waits for is reached (not on every
    /// request: waking the control thread per push would cost CPU here).
    reached: Condvar,
}

struct Recorded {
    arrivals: Vec<Arrival>,
    /// The count the control thread waits for.
    awaited: usize,
}

impl Default for Recorded {
    fn default() -> Self {
        Recorded {
            arrivals: Vec::new(),
            awaited: usize::MAX,
        }
    }
}

/// The push service's process: serves on a free loopback port with the
/// certificate in `dir`, answers the benchmark on stdin/stdout.
pub fn serve(dir: &Path) -> ! {
    let certificate = std::fs::read(dir.join("cert.der")).expect("cert.der");
    let key = std::fs::read(dir.join("key.der")).expect("key.der");
    let mut tls = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(certificate)],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key)),
        )
        .expect("a TLS server config");
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let recorder = Arc::new(Recorder::default());
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    println!("listening {}", listener.local_addr().unwrap());
    let accepting = recorder.clone();
    runtime.spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let acceptor = acceptor.clone();
            let recorder = accepting.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let service = hyper::service::service_fn(move |req| {
                    let recorder = recorder.clone();
                    async move { accept(&recorder, req).await }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    control(&recorder);
    std::process::exit(0)
}

/// 201 for every request once its body has arrived.
async fn accept(
    recorder: &Recorder,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let subscription = req
        .uri()
        .path()
        .strip_prefix("/push/")
        .and_then(|i| i.parse().ok())
        .unwrap_or(u32::MAX);
    let topic = req
        .headers()
        .get("topic")
        .and_then(|t| t.to_str().ok())
        .unwrap_or("-")
        .to_owned();
    req.into_body().collect().await?;
    let at_ns = now_ns();
    let mut state = recorder.state.lock().unwrap();
    state.arrivals.push(Arrival {
        subscription,
        topic,
        at_ns,
    });
    if state.arrivals.len() >= state.awaited {
        recorder.reached.notify_all();
    }
    drop(state);
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::CREATED;
    Ok(response)
}

/// Answers the benchmark's requests until stdin closes.
fn control(recorder: &Recorder) {
    let stdout = std::io::stdout();
    for line in std::io::stdin().lock().lines().map_while(Result::ok) {
        let mut out = stdout.lock();
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["reset"] => {
                recorder.state.lock().unwrap().arrivals.clear();
                writeln!(out, "ok").unwrap();
            }
            ["wait", count, millis] => {
                let count: usize = count.parse().unwrap_or(0);
                let deadline = Instant::now() + Duration::from_millis(millis.parse().unwrap_or(0));
                let mut state = recorder.state.lock().unwrap();
                state.awaited = count;
                while state.arrivals.len() < count {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    state = recorder.reached.wait_timeout(state, left).unwrap().0;
                }
                state.awaited = usize::MAX;
                let last = state.arrivals.iter().map(|a| a.at_ns).max().unwrap_or(0);
                writeln!(out, "count {} {last}", state.arrivals.len()).unwrap();
            }
            ["dump"] => {
                let arrivals = recorder.state.lock().unwrap().arrivals.clone();
                let mut text = String::with_capacity(arrivals.len() * 40);
                for a in &arrivals {
                    text.push_str(&format!("{} {} {}\n", a.subscription, a.topic, a.at_ns));
                }
                text.push_str("end\n");
                out.write_all(text.as_bytes()).unwrap();
            }
            _ => writeln!(out, "unknown request {line:?}").unwrap(),
        }
        out.flush().unwrap();
    }
}
