//! One shared HTTP client sending encrypted, signed pushes.
//!
//! reqwest over rustls keeps a pool of connections per push service and
//! multiplexes requests over HTTP/2 where the service offers it (all the big
//! ones do), so thousands of pushes to FCM share a handful of connections.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::SystemTime;

use reqwest::header::{AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, HeaderValue};

use crate::config::DeliverySettings;
use crate::model::{Endpoint, SubscriptionKeys};
use crate::notification::Urgency;

use super::ece::{self, EceError};
use super::policy::{EndpointPolicy, PolicyError};
use super::status::{self, Outcome, RetryCause};
use super::vapid::VapidSigner;

/// Failures on our side of a push: nothing was (or could be) sent.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("{0}")]
    Policy(#[from] PolicyError),
    #[error("{0}")]
    Encrypt(#[from] EceError),
    #[error("cannot read extra root certificates from {path}: {reason}")]
    RootCa { path: String, reason: String },
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

impl PushError {
    /// The key a result report counts this failure under.
    pub fn failure_key(&self) -> &'static str {
        match self {
            PushError::Policy(_) => "policy",
            PushError::Encrypt(EceError::TooLarge { .. }) => "413",
            PushError::Encrypt(_) => "keys",
            PushError::RootCa { .. } | PushError::Client(_) => "client",
        }
    }
}

/// The message part of a push: the same for every subscription of a command.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    pub payload: &'a [u8],
    pub ttl: u32,
    pub urgency: Urgency,
    pub topic: Option<&'a str>,
}

pub struct PushClient {
    http: reqwest::Client,
    policy: EndpointPolicy,
    /// Origins that answered 403 already, so the VAPID hint is logged once
    /// per push service instead of once per push.
    forbidden_origins: Mutex<HashSet<String>>,
}

impl PushClient {
    pub fn new(settings: &DeliverySettings, policy: EndpointPolicy) -> Result<Self, PushError> {
        let mut builder = reqwest::Client::builder()
            .timeout(settings.request_timeout)
            .connect_timeout(settings.request_timeout)
            .pool_max_idle_per_host(64)
            .http2_adaptive_window(true)
            .user_agent(concat!("axion-push/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy();
        if let Some(resolver) = policy.resolver() {
            builder = builder.dns_resolver(std::sync::Arc::new(resolver));
        }
        if let Some(path) = &settings.extra_root_ca {
            let root_ca_error = |reason: String| PushError::RootCa {
                path: path.display().to_string(),
                reason,
            };
            let pem = std::fs::read(path).map_err(|e| root_ca_error(e.to_string()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| root_ca_error(e.to_string()))?;
            if certs.is_empty() {
                return Err(root_ca_error("no certificate in the file".into()));
            }
            builder = builder.tls_certs_merge(certs);
        }
        let http = builder
            .build()
            .map_err(|e| PushError::Client(error_chain(&e)))?;
        Ok(Self {
            http,
            policy,
            forbidden_origins: Mutex::new(HashSet::new()),
        })
    }

    pub fn policy(&self) -> &EndpointPolicy {
        &self.policy
    }

    /// Encrypts, signs and POSTs one push. Our own failures are `Err`; every
    /// answer of the push service, and every network failure, is an `Outcome`.
    pub async fn send(
        &self,
        endpoint: &Endpoint,
        keys: &SubscriptionKeys,
        message: Message<'_>,
        vapid: &VapidSigner,
    ) -> Result<Outcome, PushError> {
        self.policy.check(endpoint)?;
        let body = ece::encrypt(message.payload, keys)?;
        let origin = endpoint.origin();
        let authorization = vapid.authorization(&origin, SystemTime::now());
        let mut request = self
            .http
            .post(endpoint.url().clone())
            .header("TTL", message.ttl)
            .header("Urgency", message.urgency.as_header())
            .header(CONTENT_ENCODING, HeaderValue::from_static("aes128gcm"))
            .header(
                CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            )
            .header(AUTHORIZATION, &*authorization)
            .body(body);
        if let Some(topic) = message.topic {
            request = request.header("Topic", topic);
        }
        let response = match request.send().await {
            Ok(response) => response,
            // reqwest names the request's URL in its errors: the endpoint, a
            // capability, which must reach no log, report or metric.
            Err(e) => return self.network_failure(&origin, &e.without_url()),
        };
        // A push service in trouble is the breakers' to log (see
        // `delivery::Breakers`), once per run of failures.
        let outcome = status::classify(response.status(), response.headers(), SystemTime::now());
        if outcome != Outcome::Delivered {
            let reason = reason_of(response).await;
            self.log_refusal(&origin, outcome, &reason);
        }
        Ok(outcome)
    }

    fn network_failure(&self, origin: &str, e: &reqwest::Error) -> Result<Outcome, PushError> {
        if let Some(policy) = find_source::<PolicyError>(e) {
            return Err(PushError::Policy(policy.clone()));
        }
        let cause = if e.is_timeout() {
            RetryCause::Timeout
        } else {
            RetryCause::Connection
        };
        tracing::debug!(origin, error = error_chain(e), "push request failed");
        Ok(Outcome::Retry { cause, after: None })
    }

    fn log_refusal(&self, origin: &str, outcome: Outcome, reason: &str) {
        match outcome {
            Outcome::Rejected(403) => {
                let first = self
                    .forbidden_origins
                    .lock()
                    .expect("the 403 log lock is never poisoned")
                    .insert(origin.to_owned());
                if first {
                    tracing::error!(
                        origin,
                        status = 403,
                        reason,
                        "push service refused our VAPID authorization: the VAPID key pair or \
                         vapid_email is probably wrong (or the subscription was made with another \
                         key); subscriptions are kept"
                    );
                }
            }
            Outcome::Rejected(status) => {
                tracing::warn!(origin, status, reason, "push refused");
            }
            Outcome::TooLarge => {
                tracing::warn!(origin, status = 413, reason, "push refused as too large");
            }
            _ => tracing::debug!(origin, ?outcome, reason, "push not delivered"),
        }
    }
}

/// The start of a refusal's body, for the log: push services explain
/// themselves there (FCM: `"the key in the authorization header does not
/// correspond…"`). Read only that far, whatever the service sends.
async fn reason_of(mut response: reqwest::Response) -> String {
    const MAX: usize = 300;
    let mut bytes = Vec::new();
    while bytes.len() < MAX {
        match response.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            _ => break,
        }
    }
    bytes.truncate(MAX);
    String::from_utf8_lossy(&bytes).trim().to_owned()
}

fn find_source<'a, T: std::error::Error + 'static>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = current {
        if let Some(found) = err.downcast_ref::<T>() {
            return Some(found);
        }
        current = err.source();
    }
    None
}

/// An error and its causes on one line, for logs.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut current = e.source();
    while let Some(err) = current {
        text.push_str(": ");
        text.push_str(&err.to_string());
        current = err.source();
    }
    text
}
