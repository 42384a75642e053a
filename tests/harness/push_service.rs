//! A push service on loopback: HTTPS (HTTP/2 and HTTP/1.1), a certificate
//! of its own, and for every request the checks a real push service and
//! browser make — the VAPID JWT must verify and the body must decrypt with
//! the subscriber's private key (RustCrypto's P-256 and `web-push-native`,
//! an implementation independent of the daemon's). Answers are scripted
//! per browser: a status sequence, `Retry-After`, a delay.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use p256::ecdsa::signature::Verifier;
use tokio::sync::Notify;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// How the push service answers one request.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub retry_after: Option<String>,
    pub delay: Option<Duration>,
    /// Break the connection (HTTP/2: reset the stream) instead of answering.
    pub drop: bool,
}

impl Reply {
    pub fn status(status: u16) -> Self {
        Self {
            status,
            retry_after: None,
            delay: None,
            drop: false,
        }
    }

    /// `status` with a `Retry-After` header.
    pub fn retry_after(status: u16, after: impl Into<String>) -> Self {
        Self {
            retry_after: Some(after.into()),
            ..Self::status(status)
        }
    }

    /// Answers `status` after `delay`.
    pub fn slow(status: u16, delay: Duration) -> Self {
        Self {
            delay: Some(delay),
            ..Self::status(status)
        }
    }

    /// Breaks the connection instead of answering.
    pub fn dropped() -> Self {
        Self {
            drop: true,
            ..Self::status(0)
        }
    }
}

/// The verified claims of a VAPID token.
#[derive(Debug, Clone)]
pub struct Vapid {
    pub aud: String,
    pub exp: u64,
    pub sub: String,
    /// The `k=` public key.
    pub key: String,
}

/// One request as the push service saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub browser: String,
    /// When the request arrived (before any scripted delay).
    pub arrived_at: std::time::Instant,
    pub http_version: hyper::Version,
    pub ttl: Option<String>,
    pub urgency: Option<String>,
    pub topic: Option<String>,
    pub content_encoding: Option<String>,
    /// The decrypted payload, or why it did not decrypt.
    pub payload: Result<serde_json::Value, String>,
    /// The verified VAPID claims, or why they did not verify.
    pub vapid: Result<Vapid, String>,
    pub answered: u16,
}

struct Subscriber {
    secret: p256::SecretKey,
    auth: [u8; 16],
    script: VecDeque<Reply>,
}

struct State {
    subscribers: HashMap<String, Subscriber>,
    received: Vec<Received>,
    /// Decrypt and verify every request (off only in benchmarks, where the
    /// push service must not eat the CPU the daemon is measured on).
    checks: bool,
    /// Added to every answer, as a network round trip would.
    latency: Option<Duration>,
}

impl Default for State {
    fn default() -> Self {
        Self {
            subscribers: HashMap::new(),
            received: Vec::new(),
            checks: true,
            latency: None,
        }
    }
}

#[derive(Clone)]
pub struct PushService {
    pub addr: SocketAddr,
    /// The PEM of the service's self-signed certificate, for
    /// `delivery.extra_root_ca`.
    pub ca_pem: String,
    state: Arc<Mutex<State>>,
    arrived: Arc<Notify>,
}

/// A simulated browser: its P-256 key pair and auth secret, made here.
#[derive(Clone)]
pub struct Browser {
    pub name: String,
    pub endpoint: String,
    pub p256dh: String,
    pub auth: String,
}

impl Browser {
    /// `PushSubscription.toJSON()` as a browser gives it.
    pub fn subscription(&self) -> serde_json::Value {
        serde_json::json!({
            "endpoint": self.endpoint,
            "expirationTime": null,
            "keys": {"p256dh": self.p256dh, "auth": self.auth},
        })
    }
}

impl PushService {
    pub async fn start() -> PushService {
        let certified =
            rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
                .expect("a test certificate");
        let mut tls = ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(certified.cert.der().to_vec())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
                    certified.signing_key.serialize_der(),
                )),
            )
            .expect("a TLS server config");
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(tls));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let service = PushService {
            addr: listener.local_addr().unwrap(),
            ca_pem: certified.cert.pem(),
            state: Arc::default(),
            arrived: Arc::default(),
        };
        let server = service.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let server = server.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |req| {
                        let server = server.clone();
                        async move { server.handle(req).await }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        service
    }

    /// A new simulated browser subscribed at this push service.
    pub fn browser(&self, name: &str) -> Browser {
        let secret = loop {
            let mut bytes = [0u8; 32];
            aws_lc_rs::rand::fill(&mut bytes).unwrap();
            if let Ok(secret) = p256::SecretKey::from_slice(&bytes) {
                break secret;
            }
        };
        let mut auth = [0u8; 16];
        aws_lc_rs::rand::fill(&mut auth).unwrap();
        let public = secret.public_key().to_sec1_bytes();
        let browser = Browser {
            name: name.to_owned(),
            endpoint: format!("https://{}/push/{name}", self.addr),
            p256dh: URL_SAFE_NO_PAD.encode(&public),
            auth: URL_SAFE_NO_PAD.encode(auth),
        };
        self.state.lock().unwrap().subscribers.insert(
            name.to_owned(),
            Subscriber {
                secret,
                auth,
                script: VecDeque::new(),
            },
        );
        browser
    }

    /// The next answers for `browser`; afterwards it answers 201.
    pub fn script(&self, browser: &Browser, replies: impl IntoIterator<Item = Reply>) {
        let mut state = self.state.lock().unwrap();
        let subscriber = state
            .subscribers
            .get_mut(&browser.name)
            .expect("a known browser");
        subscriber.script.extend(replies);
    }

    /// Benchmarks only: accept every request unchecked, after `latency`.
    pub fn accept_unchecked(&self, latency: Option<Duration>) {
        let mut state = self.state.lock().unwrap();
        state.checks = false;
        state.latency = latency;
    }

    pub fn received_count(&self) -> usize {
        self.state.lock().unwrap().received.len()
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap().received.clone()
    }

    pub fn received_by(&self, browser: &Browser) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.browser == browser.name)
            .collect()
    }

    /// Waits until `count` requests have arrived in all; fails with what
    /// arrived if they do not within `timeout`.
    pub async fn wait_for(&self, count: usize, timeout: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.arrived.notified();
            // Counting is cheap; copying thousands of requests is not.
            if self.received_count() >= count {
                return self.received();
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let received = self.received();
                panic!(
                    "expected {count} push requests within {timeout:?}, got {}: {:#?}",
                    received.len(),
                    received.iter().rev().take(20).collect::<Vec<_>>()
                );
            }
        }
    }

    /// `Err` breaks the connection (hyper resets the stream or closes it).
    async fn handle(
        &self,
        req: Request<Incoming>,
    ) -> Result<Response<Full<Bytes>>, std::io::Error> {
        let arrived_at = std::time::Instant::now();
        let version = req.version();
        let header = |name: &str| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let (ttl, urgency, topic, encoding, authorization) = (
            header("ttl"),
            header("urgency"),
            header("topic"),
            header("content-encoding"),
            header("authorization"),
        );
        let browser = req
            .uri()
            .path()
            .strip_prefix("/push/")
            .unwrap_or_default()
            .to_owned();
        // A request cut off mid-body (its sender died) never arrived.
        let body = req
            .into_body()
            .collect()
            .await
            .map_err(std::io::Error::other)?
            .to_bytes();

        let (payload, vapid, reply) = {
            let mut state = self.state.lock().unwrap();
            if !state.checks {
                let reply = Reply {
                    delay: state.latency,
                    ..Reply::status(201)
                };
                (
                    Ok(serde_json::Value::Null),
                    Err("not checked".to_owned()),
                    reply,
                )
            } else {
                let payload = match state.subscribers.get_mut(&browser) {
                    None => Err(format!("no browser named {browser:?}")),
                    Some(subscriber) => decrypt(&body, subscriber),
                };
                let reply = match (&payload, state.subscribers.get_mut(&browser)) {
                    (_, None) => Reply::status(404),
                    (Err(_), _) => Reply::status(400),
                    (Ok(_), Some(subscriber)) => {
                        subscriber.script.pop_front().unwrap_or(Reply::status(201))
                    }
                };
                let vapid =
                    verify_vapid(authorization.as_deref(), &format!("https://{}", self.addr));
                (payload, vapid, reply)
            }
        };
        if let Some(delay) = reply.delay {
            tokio::time::sleep(delay).await;
        }
        self.state.lock().unwrap().received.push(Received {
            browser,
            arrived_at,
            http_version: version,
            ttl,
            urgency,
            topic,
            content_encoding: encoding,
            payload,
            vapid,
            answered: reply.status,
        });
        self.arrived.notify_waiters();
        if reply.drop {
            return Err(std::io::Error::other("the script drops this request"));
        }
        let mut response = Response::new(Full::new(Bytes::new()));
        *response.status_mut() = hyper::StatusCode::from_u16(reply.status).unwrap();
        if let Some(after) = reply.retry_after {
            response
                .headers_mut()
                .insert("retry-after", after.parse().unwrap());
        }
        Ok(response)
    }
}

fn decrypt(body: &[u8], subscriber: &Subscriber) -> Result<serde_json::Value, String> {
    let auth = web_push_native::Auth::clone_from_slice(&subscriber.auth);
    let plaintext = web_push_native::decrypt(body.to_vec(), &subscriber.secret, &auth)
        .map_err(|e| format!("does not decrypt: {e:?}"))?;
    serde_json::from_slice(&plaintext).map_err(|e| format!("decrypts, but not to JSON: {e}"))
}

/// Checks `vapid t=<jwt>, k=<key>` as RFC 8292 §2–3 asks a push service to.
fn verify_vapid(header: Option<&str>, expected_aud: &str) -> Result<Vapid, String> {
    let header = header.ok_or("no Authorization header")?;
    let rest = header
        .strip_prefix("vapid ")
        .ok_or("not the vapid scheme")?;
    let mut token = None;
    let mut key = None;
    for part in rest.split(',') {
        let part = part.trim();
        if let Some(t) = part.strip_prefix("t=") {
            token = Some(t);
        } else if let Some(k) = part.strip_prefix("k=") {
            key = Some(k);
        }
    }
    let (token, key) = (token.ok_or("no t=")?, key.ok_or("no k=")?);
    let (signing_input, signature) = token.rsplit_once('.').ok_or("token has no signature")?;
    let (head, claims) = signing_input.split_once('.').ok_or("token has no claims")?;
    let decode = |s: &str| {
        URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|e| format!("bad base64url: {e}"))
    };
    let head: serde_json::Value =
        serde_json::from_slice(&decode(head)?).map_err(|e| e.to_string())?;
    if head["alg"] != "ES256" {
        return Err(format!("alg is {}", head["alg"]));
    }
    let verifying_key = p256::ecdsa::VerifyingKey::from_sec1_bytes(&decode(key)?)
        .map_err(|e| format!("k= is not a P-256 key: {e}"))?;
    let signature = p256::ecdsa::Signature::from_slice(&decode(signature)?)
        .map_err(|e| format!("signature is not 64 bytes r||s: {e}"))?;
    verifying_key
        .verify(signing_input.as_bytes(), &signature)
        .map_err(|_| "signature does not verify".to_owned())?;
    let claims: serde_json::Value =
        serde_json::from_slice(&decode(claims)?).map_err(|e| e.to_string())?;
    let vapid = Vapid {
        aud: claims["aud"].as_str().ok_or("no aud")?.to_owned(),
        exp: claims["exp"].as_u64().ok_or("no exp")?,
        sub: claims["sub"].as_str().ok_or("no sub")?.to_owned(),
        key: key.to_owned(),
    };
    if vapid.aud != expected_aud {
        return Err(format!(
            "aud {} is not the endpoint origin {expected_aud}",
            vapid.aud
        ));
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    if vapid.exp <= now || vapid.exp > now + 24 * 3600 {
        return Err(format!(
            "exp {} is not within 24 h of now ({now})",
            vapid.exp
        ));
    }
    Ok(vapid)
}
