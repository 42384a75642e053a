//! `config.yaml`: Axion's shared file, of which the daemon reads `base.push`,
//! every `{package}.push` override and its own `axion_push` section.
//!
//! Each setting is a typed field whose doc comment gives its meaning, unit and
//! default; each default is written once, in a `Default` impl. Loading collects
//! every problem with its key path so `check-config` can list them all. Other
//! Axion sections are ignored (the file is shared), and so are keys of Axion's
//! own `base.push` that the daemon does not use; an unknown key under
//! `axion_push` is an error.

pub mod keys;
mod reader;
mod vapid;
mod yaml;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use crate::model::Package;
use reader::{Findings, Section, Unknown};
pub use vapid::{VapidPrivateKey, normalize_subject};
pub use yaml::SyntaxError;

/// The environment variable naming the config file when `--config` is absent.
pub const CONFIG_ENV: &str = "AXION_PUSH_CONFIG";
/// The file used when neither `--config` nor `$AXION_PUSH_CONFIG` names one
/// and there is no [`LOCAL_CONFIG_FILE`].
pub const DEFAULT_CONFIG_FILE: &str = "config.yaml";
/// Read instead of [`DEFAULT_CONFIG_FILE`] when it exists: this machine's
/// settings (a broker port that is free here, say), git-ignored, so that a
/// checkout's `config.yaml` stays the documented defaults.
pub const LOCAL_CONFIG_FILE: &str = "config.local.yaml";

/// One thing wrong with the config, at one key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl Problem {
    pub(crate) fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}", yaml_error(path, error))]
    Yaml {
        path: String,
        error: yaml::SyntaxError,
    },
    #[error("config {origin} has {} problem(s):\n{}{}", problems.len(), list(problems), warning_list(warnings))]
    Invalid {
        origin: String,
        problems: Vec<Problem>,
        /// Found alongside; a misspelt key often explains a problem (a
        /// `vapid_emial` beside a missing `vapid_email`).
        warnings: Vec<Problem>,
    },
}

fn warning_list(warnings: &[Problem]) -> String {
    warnings
        .iter()
        .map(|w| format!("\n  warning: {w}"))
        .collect()
}

fn yaml_error(path: &str, error: &yaml::SyntaxError) -> String {
    let mut text = format!("{path} is not valid YAML");
    if error.line > 0 {
        text.push_str(&format!(", line {}", error.line));
    }
    if error.column > 0 {
        text.push_str(&format!(", column {}", error.column));
    }
    text.push_str(&format!(": {}", error.message));
    if let Some(excerpt) = &error.excerpt {
        text.push_str(&format!("\n  {:>4} | {excerpt}", error.line));
    }
    text
}

fn list(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  - {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A value that must not reach logs: `Debug` and `Display` show `***`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// The VAPID part of a `push` section (`base.push` or `{package}.push`).
#[derive(Debug, Clone, Default)]
pub struct PushKeys {
    /// `vapid_private_key`: PEM, a PEM file path, base64(url) DER, or the
    /// base64url raw scalar — every form py_vapid writes.
    pub private_key: Option<VapidPrivateKey>,
    /// `vapid_public_key`: base64url uncompressed point. Optional; when given
    /// it must match the private key (a mismatch makes every push fail with 403).
    pub public_key: Option<String>,
    /// `vapid_email`: the VAPID `sub` contact, `mailto:` or `https:`.
    pub email: Option<String>,
}

/// The resolved VAPID identity a package signs with.
#[derive(Debug, Clone)]
pub struct VapidIdentity {
    pub key: VapidPrivateKey,
    pub subject: String,
}

/// Which VAPID identity each package uses.
#[derive(Debug, Clone)]
pub struct VapidRegistry {
    pub default: VapidIdentity,
    /// Packages whose `push` section overrides anything of `base.push`.
    pub packages: BTreeMap<Package, VapidIdentity>,
}

impl VapidRegistry {
    pub fn for_package(&self, package: &Package) -> &VapidIdentity {
        self.packages.get(package).unwrap_or(&self.default)
    }

    /// Packages whose key differs from the default: each gets a retained
    /// `axion/{package}/push/vapid` topic of its own.
    pub fn packages_with_own_key(&self) -> impl Iterator<Item = (&Package, &VapidIdentity)> {
        self.packages
            .iter()
            .filter(|(_, id)| id.key.public_key() != self.default.key.public_key())
    }
}

/// `axion_push.mqtt`: the broker connection.
#[derive(Debug, Clone)]
pub struct MqttSettings {
    /// `url`: an external broker, `mqtt://host:1883` or `mqtts://host:8883`.
    pub url: Option<Url>,
    /// `client_id`: the daemon's MQTT client id, and its `instance` name in the
    /// status topic. Must be unique per instance.
    pub client_id: String,
    /// `username`, `password`: broker credentials.
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// `shared_group`: subscribe through `$share/{group}/…` so several
    /// instances split the commands.
    pub shared_group: Option<String>,
    /// `topic_prefix`: prepended to every topic, e.g. `staging/`.
    pub topic_prefix: String,
    /// `keep_alive`: MQTT keep-alive interval.
    pub keep_alive: Duration,
    /// `ca_file`: PEM roots for an `mqtts://` broker with a private CA.
    pub ca_file: Option<PathBuf>,
}

impl Default for MqttSettings {
    fn default() -> Self {
        Settings::default().mqtt
    }
}

/// `axion_push.broker`: the embedded broker, used when `mqtt.url` is null.
///
/// Both listeners are the daemon's own gateway in front of rumqttd (see
/// `broker`): `listen` takes service logins, `websocket_listen` browser
/// logins confined to their own user.
#[derive(Debug, Clone)]
pub struct BrokerSettings {
    /// `listen`: MQTT over TCP, for services and the command line. Another
    /// address needs an account in `users` (or `mqtt.username`).
    pub listen: SocketAddr,
    /// `websocket_listen`: MQTT over WebSocket for browsers, e.g.
    /// `127.0.0.1:8083`. A browser logs in as `{package}/{user}` with its
    /// subscribe token as the password. Another address than loopback needs
    /// `subscribe_token_secret`, and a TLS reverse proxy in front (the listener
    /// speaks plain `ws`).
    pub websocket_listen: Option<SocketAddr>,
    /// `websocket_origins`: the web origins (`https://app.example.com`) whose
    /// pages may open the WebSocket listener; a browser's handshake from any
    /// other origin is refused with 403. A client sending no `Origin` (not a
    /// browser) is let through to log in.
    pub websocket_origins: Vec<String>,
    /// `max_payload_bytes`: the largest message the broker accepts; a client
    /// publishing more is disconnected by the broker.
    pub max_payload_bytes: usize,
    /// `users`: service accounts (`name: password`) the broker accepts on
    /// `listen`. With none and no `mqtt.username`, anyone who reaches that
    /// listener may connect (it is loopback by default). With any, or with
    /// `mqtt.username` set, every service must log in; the daemon's own `mqtt`
    /// account is accepted too. Passwords may not be empty.
    pub users: BTreeMap<String, Secret>,
    /// `max_connections`: open connections on both listeners together; beyond,
    /// new ones wait until one closes.
    pub max_connections: usize,
    /// `websocket_max_per_address`: open WebSocket connections from one IP
    /// address; beyond, new ones are closed at once. Behind a reverse proxy
    /// every browser comes from the proxy's address: raise it there, and cap
    /// per client in the proxy.
    pub websocket_max_per_address: usize,
    /// `connect_timeout`: how long a new connection may take to log in (the
    /// WebSocket handshake included) before it is closed.
    pub connect_timeout: Duration,
}

impl Default for BrokerSettings {
    fn default() -> Self {
        Settings::default().broker
    }
}

/// `axion_push.database`.
#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    /// `url`: `sqlite://axion-push.db` (relative to the working directory),
    /// `sqlite:///var/lib/axion-push/axion-push.db`.
    pub url: String,
    /// `busy_timeout`: how long a statement waits for a locked database before
    /// it fails.
    pub busy_timeout: Duration,
    /// `max_connections`: pool size on a server database (SQLite always uses
    /// one: its writes share one lock).
    pub max_connections: u32,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Settings::default().database
    }
}

/// `axion_push.delivery`: how Web Push requests are sent.
#[derive(Debug, Clone)]
pub struct DeliverySettings {
    /// `concurrency`: push requests in flight at once, over all push services.
    pub concurrency: usize,
    /// `default_ttl`: seconds a push service keeps an undelivered message, when
    /// the command has no `ttl`.
    pub default_ttl: u32,
    /// `request_timeout`: the whole request, connect included.
    pub request_timeout: Duration,
    /// `shutdown_grace`: on SIGTERM, how long pushes in flight may take to
    /// finish.
    pub shutdown_grace: Duration,
    /// `extra_root_ca`: a PEM file of roots trusted besides the system's
    /// (private push services, tests, benchmarks).
    pub extra_root_ca: Option<PathBuf>,
    /// `retry_initial`: the first delay before retrying a push that met a 429,
    /// a 5xx, a timeout or a broken connection; it doubles per attempt (with
    /// jitter) and is never shorter than the service's `Retry-After`.
    pub retry_initial: Duration,
    /// `retry_max`: the longest delay between two attempts, unless the push
    /// service asks for longer.
    pub retry_max: Duration,
    /// `pause_max`: the longest a push service that keeps failing is paused
    /// (its circuit breaker), even when its `Retry-After` asks for more; a
    /// single delivery still waits what `Retry-After` says.
    pub pause_max: Duration,
    /// `dedup_window`: how long a send's `id` is remembered; the same id again
    /// within it is answered `duplicate` and not delivered.
    pub dedup_window: Duration,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        Settings::default().delivery
    }
}

/// `axion_push.endpoints`: which subscription endpoints may be pushed to
/// (the SSRF policy of DESIGN §3).
#[derive(Debug, Clone)]
pub struct EndpointSettings {
    /// `allow_hosts`: push-service hosts; `*.domain` matches any subdomain.
    pub allow_hosts: Vec<String>,
    /// `allow_ports`: the ports an endpoint may name. A private push service
    /// (or a test) adds its own; `http` endpoints need 80.
    pub allow_ports: Vec<u16>,
    /// `allow_http`: accept `http://` endpoints.
    pub allow_http: bool,
    /// `allow_private_addresses`: accept endpoints resolving to loopback,
    /// private, link-local or unique-local addresses.
    pub allow_private_addresses: bool,
}

impl Default for EndpointSettings {
    fn default() -> Self {
        Settings::default().endpoints
    }
}

/// `axion_push.limits`: bounds on input the daemon does not control.
#[derive(Debug, Clone)]
pub struct Limits {
    /// `max_command_bytes`: the largest command payload accepted; larger ones
    /// are answered with an error.
    pub max_command_bytes: usize,
    /// `max_subscriptions_per_user`: active subscriptions one user may have in
    /// a package; subscribing one more deactivates the oldest, so a user (or a
    /// script posing as one) cannot grow the table without bound.
    pub max_subscriptions_per_user: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Settings::default().limits
    }
}

/// `axion_push.metrics`: the Prometheus endpoint.
#[derive(Debug, Clone)]
pub struct MetricsSettings {
    /// `listen`: where `GET /metrics` is served, e.g. `127.0.0.1:9464`. A
    /// non-loopback address needs `allow_remote`.
    pub listen: Option<SocketAddr>,
    /// `allow_remote`: accept a `listen` address other than loopback. The
    /// endpoint has no authentication; it shows push-service hosts, command
    /// counts and the queue's depth.
    pub allow_remote: bool,
}

impl Default for MetricsSettings {
    fn default() -> Self {
        Settings::default().metrics
    }
}

/// `axion_push.receipts`: what browsers report back about each push (see
/// `receipt`).
#[derive(Debug, Clone)]
pub struct ReceiptSettings {
    /// `enabled`: each push carries a receipt token, and the shipped service
    /// worker reports whether the notification was shown or the browser refused
    /// it. Receipts track people: turn them off where that is not wanted.
    pub enabled: bool,
    /// `clicks`: the worker also reports clicks (with the action) and
    /// dismissals — what a person did, not only what the browser did.
    pub clicks: bool,
}

impl Default for ReceiptSettings {
    fn default() -> Self {
        Settings::default().receipts
    }
}

/// `axion_push.subscriptions`: the life of a subscription.
#[derive(Debug, Clone)]
pub struct SubscriptionSettings {
    /// `expire_after`: a subscription whose pushes its push service has refused
    /// this long, for it alone (while taking others' pushes), is deactivated as
    /// `stale`. Outages, 429/5xx, timeouts, a wrong VAPID key (refused for
    /// everyone) and our own endpoint policy never count; a subscription that
    /// simply received nothing is never expired.
    pub expire_after: Duration,
}

impl Default for SubscriptionSettings {
    fn default() -> Self {
        Settings::default().subscriptions
    }
}

/// `axion_push.log`.
#[derive(Debug, Clone)]
pub struct LogSettings {
    /// `level`: `error`, `warn`, `info`, `debug`, `trace`, or a full tracing
    /// filter. `RUST_LOG` overrides it.
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Settings::default().log
    }
}

/// The daemon's own section, `axion_push`. Each key's default and meaning
/// are declared once, in [`keys::KEYS`]; the fields' comments say what the
/// daemon does with them.
#[derive(Debug, Clone)]
pub struct Settings {
    pub mqtt: MqttSettings,
    pub broker: BrokerSettings,
    pub database: DatabaseSettings,
    /// `vapid_key_file`: where the first-run VAPID key is written (mode 0600)
    /// and read back, when `base.push` has none.
    pub vapid_key_file: PathBuf,
    pub delivery: DeliverySettings,
    pub endpoints: EndpointSettings,
    pub limits: Limits,
    pub metrics: MetricsSettings,
    pub receipts: ReceiptSettings,
    pub subscriptions: SubscriptionSettings,
    pub log: LogSettings,
    /// `subscribe_token_secret`: when set, browsers log in to the embedded
    /// broker's WebSocket listener with a token the host application issued for
    /// their user and package with this secret (see `token`), and `subscribe`,
    /// `unsubscribe` and `list` must carry one. At least 32 characters.
    pub subscribe_token_secret: Option<Secret>,
}

impl Default for Settings {
    /// The declared defaults (`keys::KEYS`), read as a file that sets no
    /// key would be.
    fn default() -> Self {
        let mut findings = Findings::default();
        let mut own = Section::new("axion_push", None, Unknown::Refuse, &mut findings);
        let settings = read_settings(&mut own);
        own.finish();
        assert!(
            findings.problems.is_empty(),
            "the declared defaults do not read: {:?}",
            findings.problems
        );
        settings
    }
}

/// The whole configuration.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// The file it came from, if any.
    pub source: Option<PathBuf>,
    /// `base.push`.
    pub push: PushKeys,
    /// `{package}.push` for every package that has one.
    pub packages: BTreeMap<Package, PushKeys>,
    /// `axion_push`.
    pub settings: Settings,
    /// What is not wrong enough to stop the daemon but likely a mistake: a
    /// key axion-push does not read in `base.push` or `{package}.push`, a
    /// top-level section spelt like `axion_push` but not quite.
    pub warnings: Vec<Problem>,
}

/// Where the config comes from: `--config`, then `$AXION_PUSH_CONFIG`, then
/// `./config.local.yaml` if it exists, then `./config.yaml`. Only the last
/// may be absent (the built-in defaults apply); the flag is whether the file
/// must exist.
pub fn locate(explicit: Option<&Path>) -> (PathBuf, bool) {
    locate_in(Path::new(""), explicit, std::env::var_os(CONFIG_ENV))
}

fn locate_in(
    dir: &Path,
    explicit: Option<&Path>,
    env: Option<std::ffi::OsString>,
) -> (PathBuf, bool) {
    if let Some(path) = explicit {
        return (path.to_owned(), true);
    }
    if let Some(path) = env.filter(|p| !p.is_empty()) {
        return (PathBuf::from(path), true);
    }
    let local = dir.join(LOCAL_CONFIG_FILE);
    // Present at all, even as a broken link: reading it then says why not.
    if std::fs::symlink_metadata(&local).is_ok() {
        return (local, true);
    }
    (dir.join(DEFAULT_CONFIG_FILE), false)
}

impl Config {
    /// Loads the file `locate` picks. A missing `./config.yaml` gives the
    /// defaults; a missing file that was asked for is an error.
    pub fn load(explicit: Option<&Path>) -> Result<Config, ConfigError> {
        let (path, required) = locate(explicit);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let mut config = Self::from_yaml(&text, &path.display().to_string())?;
                config.source = Some(path);
                Ok(config)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                Ok(Config::default())
            }
            Err(source) => Err(ConfigError::Read { path, source }),
        }
    }

    /// Parses config text; `origin` names it in errors.
    pub fn from_yaml(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let root: serde_json::Value = if text.trim().is_empty() {
            serde_json::Value::Null
        } else {
            yaml::parse(text).map_err(|error| ConfigError::Yaml {
                path: origin.to_owned(),
                error,
            })?
        };
        let mut findings = Findings::default();
        let mut config = read_root(&root, &mut findings);
        if findings.problems.is_empty() {
            config.warnings = findings.warnings;
            Ok(config)
        } else {
            Err(ConfigError::Invalid {
                origin: origin.to_owned(),
                problems: findings.problems,
                warnings: findings.warnings,
            })
        }
    }

    /// Resolves each package's VAPID identity. `fallback` is the key from
    /// `vapid_key_file`, used when `base.push` has none.
    pub fn vapid_registry(
        &self,
        fallback: Option<VapidPrivateKey>,
    ) -> Result<VapidRegistry, ConfigError> {
        let mut problems = Vec::new();
        let default = resolve_identity("base.push", &self.push, None, fallback, &mut problems);
        let mut packages = BTreeMap::new();
        if let Some(default) = &default {
            for (package, keys) in &self.packages {
                let path = format!("{package}.push");
                if let Some(id) = resolve_identity(&path, keys, Some(default), None, &mut problems)
                {
                    packages.insert(package.clone(), id);
                }
            }
        }
        match default {
            Some(default) if problems.is_empty() => Ok(VapidRegistry { default, packages }),
            _ => Err(ConfigError::Invalid {
                origin: self.origin(),
                problems,
                warnings: self.warnings.clone(),
            }),
        }
    }

    /// Advice that is not an error: what `check-config` prints below "OK"
    /// and the daemon logs as a warning at start.
    pub fn notes(&self) -> Vec<Problem> {
        let s = &self.settings;
        let mut notes = Vec::new();
        let Some(ws) = s.broker.websocket_listen.filter(|_| s.mqtt.url.is_none()) else {
            return notes;
        };
        let path = "axion_push.broker.websocket_listen";
        if !ws.ip().is_loopback() {
            notes.push(Problem::new(
                path,
                format!(
                    "{ws} is reachable from other hosts, and the listener speaks plain ws: put it behind a TLS reverse proxy \
                     and give browsers its wss:// address"
                ),
            ));
        }
        if s.subscribe_token_secret.is_none() {
            notes.push(Problem::new(
                path,
                "without axion_push.subscribe_token_secret a browser may log in as any {package}/{user} (each is still \
                 confined to that user's topics): fine for a demo on this machine, not for real users",
            ));
        }
        if s.broker.websocket_origins.is_empty() {
            notes.push(Problem::new(
                "axion_push.broker.websocket_origins",
                "is empty: no web page may open the WebSocket listener; list the origin of your site, e.g. https://app.example.com",
            ));
        }
        notes
    }

    fn origin(&self) -> String {
        self.source
            .as_ref()
            .map_or_else(|| "(built-in defaults)".into(), |p| p.display().to_string())
    }
}

fn resolve_identity(
    path: &str,
    keys: &PushKeys,
    base: Option<&VapidIdentity>,
    fallback: Option<VapidPrivateKey>,
    problems: &mut Vec<Problem>,
) -> Option<VapidIdentity> {
    let key = keys
        .private_key
        .clone()
        .or_else(|| base.map(|b| b.key.clone()))
        .or(fallback);
    let Some(key) = key else {
        problems.push(Problem::new(
            format!("{path}.vapid_private_key"),
            "missing, and no key file to fall back on",
        ));
        return None;
    };
    if let Some(public) = &keys.public_key {
        if keys.private_key.is_none() && base.is_some() {
            problems.push(Problem::new(
                format!("{path}.vapid_public_key"),
                "is set without vapid_private_key; a package overriding its key needs both",
            ));
        } else if public.trim().trim_end_matches('=') != key.public_key() {
            problems.push(Problem::new(
                format!("{path}.vapid_public_key"),
                format!(
                    "does not match vapid_private_key (whose public key is {}); push services would answer 403",
                    key.public_key()
                ),
            ));
        }
    }
    let subject = keys
        .email
        .clone()
        .or_else(|| base.map(|b| b.subject.clone()));
    let Some(subject) = subject else {
        problems.push(Problem::new(
            format!("{path}.vapid_email"),
            "missing: push services (Apple in particular) refuse VAPID tokens without a contact",
        ));
        return None;
    };
    Some(VapidIdentity { key, subject })
}

/// Shortest `subscribe_token_secret`: guessing it would let anyone issue
/// tokens.
const MIN_TOKEN_SECRET: usize = 32;

/// A duration as `10s`, `1500ms`, `2m`, or a bare number of seconds.
#[derive(Deserialize)]
#[serde(untagged)]
enum DurationText {
    Seconds(u64),
    Text(String),
}

fn duration(raw: DurationText) -> Result<Duration, String> {
    match raw {
        DurationText::Seconds(s) => Ok(Duration::from_secs(s)),
        DurationText::Text(t) => parse_duration(&t),
    }
}

/// Reads a duration the way config values are written — `10s`, `1500ms`,
/// `2m`, `1h 30m`, or a bare number of seconds — so the command line takes
/// the same forms as the file.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Ok(Duration::from_secs(seconds));
    }
    humantime::parse_duration(text).map_err(|e| {
        format!("'{text}' is not a duration like 15m, 10s or 500ms, or a number of seconds ({e})")
    })
}

/// A web origin as browsers send it in `Origin`: `scheme://host[:port]`,
/// lower case, without a default port or a path.
fn web_origin(text: &str) -> Result<String, String> {
    let url = Url::parse(text.trim())
        .map_err(|e| format!("'{text}' is not an origin like https://app.example.com ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(format!(
            "'{text}' is not an http(s) origin like https://app.example.com"
        ));
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "'{text}' has a path: an origin is only scheme://host[:port]"
        ));
    }
    Ok(url.origin().ascii_serialization())
}

fn positive(n: usize) -> Result<usize, String> {
    if n == 0 {
        Err("must be at least 1".into())
    } else {
        Ok(n)
    }
}

/// `url` with any user name and password in it replaced by `***`, for
/// messages about a URL that may carry credentials. It works on text that
/// is not a valid URL too (that is when it is shown): everything between
/// the scheme's `://` (or the start) and the last `@` goes.
fn masked_url(url: &str) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    match url[start..].rfind('@') {
        Some(at) => format!("{}***{}", &url[..start], &url[start + at..]),
        None => url.to_owned(),
    }
}

/// A secret's text. The value itself is never repeated in a problem
/// (serde's own message would quote a number or a string); a password YAML
/// read as a number must be quoted, since `0123` would silently lose its 0.
fn secret_text(raw: serde_json::Value) -> Result<Option<String>, String> {
    match raw {
        serde_json::Value::Null => Ok(None),
        serde_json::Value::String(text) => Ok(Some(text)),
        other => Err(format!(
            "must be a string, not {} (quote it; the value is not repeated here)",
            reader::kind_of(&other)
        )),
    }
}

fn read_push_keys(section: &mut Section<'_, '_>) -> PushKeys {
    let mut keys = PushKeys::default();
    section.field_with(
        "vapid_private_key",
        &mut keys.private_key,
        |raw: serde_json::Value| {
            secret_text(raw)?
                .map(|text| VapidPrivateKey::decode(&text))
                .transpose()
        },
    );
    section.field("vapid_public_key", &mut keys.public_key);
    section.field_with("vapid_email", &mut keys.email, |raw: Option<String>| {
        raw.map(|s| normalize_subject(&s)).transpose()
    });
    keys
}

fn read_root(root: &serde_json::Value, findings: &mut Findings) -> Config {
    let mut config = Config::default();
    {
        let mut top = Section::new("", Some(root), Unknown::Ignore, findings);
        {
            let mut base = top.section("base");
            let mut push = base.section_as("push", Unknown::Warn);
            config.push = read_push_keys(&mut push);
            push.finish();
        }
        {
            let mut own = top.section_as("axion_push", Unknown::Refuse);
            config.settings = read_settings(&mut own);
            own.finish();
        }
    }
    if let serde_json::Value::Object(map) = root {
        for (name, value) in map {
            if name == "base" || name == "axion_push" {
                continue;
            }
            if reader::closest(name, &["axion_push"]).is_some() {
                findings.warnings.push(Problem::new(
                    name.clone(),
                    "is not read: the daemon's own section is `axion_push` (an underscore, all lower case); \
                     its settings here are ignored until it is renamed",
                ));
                continue;
            }
            let Some(push) = value.get("push") else {
                continue;
            };
            let mut section =
                Section::new(format!("{name}.push"), Some(push), Unknown::Warn, findings);
            let keys = read_push_keys(&mut section);
            section.finish();
            match Package::parse(name) {
                Ok(package) => {
                    config.packages.insert(package, keys);
                }
                Err(e) => findings
                    .problems
                    .push(Problem::new(name.clone(), e.to_string())),
            }
        }
    }
    config
}

/// The daemon's own section, key by key; each key's default comes from
/// `keys::KEYS` (see [`Section::value`]).
fn read_settings(own: &mut Section<'_, '_>) -> Settings {
    let mqtt = {
        let mut section = own.section("mqtt");
        let url = section.value("url", |raw: Option<String>| {
            raw.map(|u| {
                let url = Url::parse(&u)
                    .map_err(|e| format!("'{}' is not a URL ({e})", masked_url(&u)))?;
                match url.scheme() {
                    "mqtt" | "tcp" | "mqtts" | "ssl"
                        if url.host_str().is_none_or(str::is_empty) =>
                    {
                        Err(format!("'{}' has no host", masked_url(&u)))
                    }
                    "mqtt" | "tcp" | "mqtts" | "ssl" => Ok(url),
                    other => Err(format!(
                        "scheme '{other}' is not supported (use mqtt:// or mqtts://)"
                    )),
                }
            })
            .transpose()
        });
        let client_id = section.value("client_id", |id: String| {
            if id.is_empty() || id.len() > 128 {
                Err("must be 1 to 128 characters".into())
            } else {
                Ok(id)
            }
        });
        let username = section.value("username", |u: Option<String>| match u {
            Some(u) if u.is_empty() => Err("must not be empty (null: no login)".to_owned()),
            u => Ok(u),
        });
        let password = section.value("password", |raw: serde_json::Value| {
            Ok(secret_text(raw)?.map(Secret::new))
        });
        match (&username, &password) {
            (Some(_), None) => section.problem(
                "password",
                "is missing: a username without a password would let anyone log in with that name",
            ),
            (_, Some(p)) if p.expose().is_empty() => {
                section.problem("password", "must not be empty");
            }
            _ => {}
        }
        let shared_group = section.value("shared_group", |g: Option<String>| match g {
            Some(g) if g.is_empty() || g.contains(['/', '+', '#']) => {
                Err("must be a single non-empty topic level".into())
            }
            g => Ok(g),
        });
        let topic_prefix = section.value("topic_prefix", |p: String| {
            if p.contains(['+', '#']) || p.starts_with('$') {
                Err("must not contain wildcards or start with '$'".into())
            } else {
                Ok(p)
            }
        });
        let keep_alive = section.value("keep_alive", duration);
        let ca_file = section.value("ca_file", Ok);
        section.finish();
        MqttSettings {
            url,
            client_id,
            username,
            password,
            shared_group,
            topic_prefix,
            keep_alive,
            ca_file,
        }
    };
    // Read before `broker`, whose WebSocket listener depends on it.
    let subscribe_token_secret = own.value("subscribe_token_secret", |raw: serde_json::Value| {
        match secret_text(raw)? {
            Some(secret) if secret.chars().count() < MIN_TOKEN_SECRET => Err(format!(
                "must be at least {MIN_TOKEN_SECRET} characters (e.g. `openssl rand -base64 32`)"
            )),
            secret => Ok(secret.map(Secret::new)),
        }
    });
    let broker = {
        let mut section = own.section("broker");
        let listen: SocketAddr = section.value("listen", Ok);
        let websocket_listen: Option<SocketAddr> = section.value("websocket_listen", Ok);
        let websocket_origins = section.value("websocket_origins", |origins: Vec<String>| {
            origins.iter().map(|o| web_origin(o)).collect()
        });
        let max_payload_bytes = section.value("max_payload_bytes", positive);
        let users = section.value("users", |raw: serde_json::Value| {
            let users = match raw {
                serde_json::Value::Null => return Ok(BTreeMap::new()),
                serde_json::Value::Object(users) => users,
                other => {
                    return Err(format!(
                        "must be a mapping of user name: password, not {} (the value is not repeated here)",
                        reader::kind_of(&other)
                    ));
                }
            };
            if users.keys().any(String::is_empty) {
                return Err("a user name is empty".into());
            }
            if let Some(user) = users.keys().find(|u| u.contains('/')) {
                return Err(format!(
                    "'{user}' contains '/': names with '/' are browser logins ({{package}}/{{user}})"
                ));
            }
            if let Some((user, _)) = users.iter().find(|(_, p)| p.as_str() == Some("")) {
                return Err(format!("the password of '{user}' is empty"));
            }
            users
                .into_iter()
                .map(|(user, password)| match secret_text(password) {
                    Ok(Some(password)) => Ok((user, Secret::new(password))),
                    Ok(None) => Err(format!("the password of {user} is missing")),
                    Err(e) => Err(format!("the password of {user} {e}")),
                })
                .collect()
        });
        let max_connections = section.value("max_connections", positive);
        let websocket_max_per_address = section.value("websocket_max_per_address", positive);
        let connect_timeout = section.value("connect_timeout", positive_duration);
        let embedded = mqtt.url.is_none();
        if embedded && !users.is_empty() && mqtt.username.is_none() {
            section.problem(
                "users",
                "the embedded broker then requires a login: set axion_push.mqtt.username and password (for the daemon and the command line)",
            );
        }
        if embedded && !listen.ip().is_loopback() && users.is_empty() && mqtt.username.is_none() {
            section.problem(
                "listen",
                format!(
                    "{listen} is not a loopback address, and the broker has no accounts: anyone who reaches it could publish commands. \
                     Add service accounts in axion_push.broker.users (and axion_push.mqtt.username and password for the daemon), \
                     or listen on 127.0.0.1"
                ),
            );
        }
        if embedded
            && let Some(ws) = websocket_listen
            && !ws.ip().is_loopback()
            && subscribe_token_secret.is_none()
        {
            section.problem(
                "websocket_listen",
                format!(
                    "{ws} is not a loopback address: browsers there must prove who they are, so set axion_push.subscribe_token_secret \
                     (and put the listener behind a TLS reverse proxy: it speaks plain ws)"
                ),
            );
        }
        section.finish();
        BrokerSettings {
            listen,
            websocket_listen,
            websocket_origins,
            max_payload_bytes,
            users,
            max_connections,
            websocket_max_per_address,
            connect_timeout,
        }
    };
    let database = {
        let mut section = own.section("database");
        let url = section.value("url", |url: String| {
            let Some(backend) = crate::store::Backend::of_url(&url) else {
                return Err(format!(
                    "'{}' is not a database URL: sqlite://PATH, mysql://USER@HOST/DB \
                     (or mariadb://), postgres://USER@HOST/DB (or postgresql://)",
                    masked_url(&url)
                ));
            };
            if backend != crate::store::Backend::Sqlite && url::Url::parse(&url).is_err() {
                return Err(format!("'{}' is not a URL", masked_url(&url)));
            }
            Ok(url)
        });
        let busy_timeout = section.value("busy_timeout", duration);
        // SQLite's own: a server database has its own lock timeouts, and a
        // setting that silently does nothing would mislead.
        if crate::store::Backend::of_url(&url).is_some_and(|b| b != crate::store::Backend::Sqlite)
            && busy_timeout != section.default_of("busy_timeout", duration)
        {
            section.problem(
                "busy_timeout",
                "applies to SQLite only; remove it for a MariaDB/MySQL or PostgreSQL database",
            );
        }
        let max_connections = section.value("max_connections", |n: u32| {
            if n == 0 {
                Err("must be at least 1".into())
            } else {
                Ok(n)
            }
        });
        section.finish();
        DatabaseSettings {
            url,
            busy_timeout,
            max_connections,
        }
    };
    let vapid_key_file = own.value("vapid_key_file", Ok);
    let delivery = {
        let mut section = own.section("delivery");
        let concurrency = section.value("concurrency", positive);
        let default_ttl = section.value("default_ttl", |ttl: u32| {
            if ttl > crate::model::MAX_TTL {
                Err(format!(
                    "must be at most {} seconds (4 weeks)",
                    crate::model::MAX_TTL
                ))
            } else {
                Ok(ttl)
            }
        });
        let request_timeout = section.value("request_timeout", duration);
        let shutdown_grace = section.value("shutdown_grace", duration);
        let extra_root_ca: Option<PathBuf> = section.value("extra_root_ca", Ok);
        let retry_initial = section.value("retry_initial", positive_duration);
        let retry_max = section.value("retry_max", positive_duration);
        let pause_max = section.value("pause_max", positive_duration);
        let dedup_window = section.value("dedup_window", duration);
        if retry_max < retry_initial {
            section.problem("retry_max", "must not be shorter than retry_initial");
        }
        if let Some(path) = &extra_root_ca
            && !path.is_file()
        {
            section.problem(
                "extra_root_ca",
                format!("{} is not a readable file", path.display()),
            );
        }
        section.finish();
        DeliverySettings {
            concurrency,
            default_ttl,
            request_timeout,
            shutdown_grace,
            extra_root_ca,
            retry_initial,
            retry_max,
            pause_max,
            dedup_window,
        }
    };
    let endpoints = {
        let mut section = own.section("endpoints");
        let allow_hosts = section.value("allow_hosts", |hosts: Vec<String>| {
            for host in &hosts {
                crate::model::HostPattern::parse(host)?;
            }
            Ok(hosts)
        });
        let allow_ports = section.value("allow_ports", |ports: Vec<u16>| {
            if ports.is_empty() || ports.contains(&0) {
                Err("must list at least one port, each 1 to 65535 (the default is [443])".into())
            } else {
                Ok(ports)
            }
        });
        let allow_http = section.value("allow_http", Ok);
        let allow_private_addresses = section.value("allow_private_addresses", Ok);
        section.finish();
        EndpointSettings {
            allow_hosts,
            allow_ports,
            allow_http,
            allow_private_addresses,
        }
    };
    let limits = {
        let mut section = own.section("limits");
        let max_command_bytes = section.value("max_command_bytes", positive);
        let max_subscriptions_per_user = section.value("max_subscriptions_per_user", positive);
        section.finish();
        Limits {
            max_command_bytes,
            max_subscriptions_per_user,
        }
    };
    let metrics = {
        let mut section = own.section("metrics");
        let listen: Option<SocketAddr> = section.value("listen", Ok);
        let allow_remote: bool = section.value("allow_remote", Ok);
        if let Some(listen) = listen
            && !listen.ip().is_loopback()
            && !allow_remote
        {
            section.problem(
                "listen",
                format!(
                    "{listen} is not a loopback address: the endpoint has no authentication; \
                     use 127.0.0.1 (scraping through a tunnel or a local agent), \
                     or set axion_push.metrics.allow_remote: true"
                ),
            );
        }
        section.finish();
        MetricsSettings {
            listen,
            allow_remote,
        }
    };
    let receipts = {
        let mut section = own.section("receipts");
        let enabled: bool = section.value("enabled", Ok);
        let clicks: bool = section.value("clicks", Ok);
        if clicks && !enabled {
            section.problem(
                "clicks",
                "needs receipts.enabled: click receipts travel with the others",
            );
        }
        section.finish();
        ReceiptSettings { enabled, clicks }
    };
    let subscriptions = {
        let mut section = own.section("subscriptions");
        let expire_after = section.value("expire_after", duration);
        section.finish();
        SubscriptionSettings { expire_after }
    };
    let log = {
        let mut section = own.section("log");
        let level = section.value("level", |level: String| {
            tracing_subscriber::EnvFilter::try_new(&level)
                .map(|_| level.clone())
                .map_err(|e| format!("'{level}' is not a log level or filter ({e})"))
        });
        section.finish();
        LogSettings { level }
    };
    Settings {
        mqtt,
        broker,
        database,
        vapid_key_file,
        delivery,
        endpoints,
        limits,
        metrics,
        receipts,
        subscriptions,
        log,
        subscribe_token_secret,
    }
}

fn positive_duration(text: DurationText) -> Result<Duration, String> {
    let d = duration(text)?;
    if d.is_zero() {
        Err("must be longer than 0s".to_owned())
    } else {
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(yaml: &str) -> Vec<Problem> {
        match Config::from_yaml(yaml, "test") {
            Ok(_) => Vec::new(),
            Err(ConfigError::Invalid { problems, .. }) => problems,
            Err(e) => panic!("unexpected error: {e}"),
        }
    }

    fn paths(yaml: &str) -> Vec<String> {
        problems(yaml).into_iter().map(|p| p.path).collect()
    }

    #[test]
    fn an_empty_file_gives_the_defaults() {
        let c = Config::from_yaml("", "test").unwrap();
        assert_eq!(c.settings.broker.listen, "127.0.0.1:1883".parse().unwrap());
        assert_eq!(c.settings.delivery.concurrency, 256);
        assert!(c.settings.mqtt.url.is_none());
    }

    #[test]
    fn the_shipped_config_parses_to_the_defaults() {
        let text = include_str!("../../config.yaml");
        let c = Config::from_yaml(text, "config.yaml").unwrap();
        // Every key is there, set to its declared default; read with no
        // problem, so every key the file has is one the daemon reads.
        let tree = yaml::parse(text).unwrap();
        for key in keys::KEYS {
            let value = key
                .path
                .split('.')
                .try_fold(&tree, |node, part| node.get(part));
            assert_eq!(
                value,
                Some(&keys::default_value(key)),
                "config.yaml: {} is not {}",
                key.path,
                key.default
            );
        }
        assert_eq!(
            format!("{:?}", c.settings),
            format!("{:?}", Settings::default())
        );
        assert!(
            c.push.private_key.is_none(),
            "keys are generated on first run"
        );
        assert_eq!(c.push.email.as_deref(), Some("mailto:admin@example.com"));
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }

    #[test]
    fn the_readme_table_shows_every_key_with_its_declared_default_and_meaning() {
        let readme = include_str!("../../README.md");
        let mut shown = BTreeMap::new();
        for row in readme.lines().filter(|l| l.starts_with("| `axion_push.")) {
            let cells: Vec<&str> = row.trim_matches('|').split(" | ").map(str::trim).collect();
            let [path, default, meaning] = cells[..] else {
                panic!("README: a row of the configuration table without three cells: {row}");
            };
            let path = path.trim_matches('`');
            assert!(
                shown.insert(path, (default, meaning)).is_none(),
                "README: {path} has two rows"
            );
        }
        for key in keys::KEYS {
            let Some((default, meaning)) = shown.remove(key.path) else {
                panic!(
                    "README: the configuration table has no row for {}",
                    key.path
                );
            };
            assert_eq!(
                default,
                format!("`{}`", key.default),
                "README: the default of {}",
                key.path
            );
            assert_eq!(meaning, key.meaning, "README: the meaning of {}", key.path);
        }
        assert!(
            shown.is_empty(),
            "README: rows for keys the daemon does not declare: {:?}",
            shown.keys()
        );
    }

    #[test]
    fn click_receipts_need_receipts_and_expiry_reads_days() {
        assert_eq!(
            paths("axion_push:\n  receipts: {enabled: false, clicks: true}\n"),
            ["axion_push.receipts.clicks"]
        );
        let c = Config::from_yaml(
            "axion_push:\n  subscriptions: {expire_after: 90d}\n",
            "test",
        )
        .unwrap();
        assert_eq!(
            c.settings.subscriptions.expire_after,
            Duration::from_secs(90 * 24 * 3600)
        );
    }

    #[test]
    fn values_are_read_into_real_types() {
        let c = Config::from_yaml(
            "axion_push:\n  mqtt: {url: 'mqtts://broker:8883', shared_group: axion-push}\n  delivery: {request_timeout: 1500ms, concurrency: 8}\n  broker: {websocket_listen: '127.0.0.1:8083'}\n",
            "test",
        )
        .unwrap();
        let s = c.settings;
        assert_eq!(s.mqtt.url.unwrap().scheme(), "mqtts");
        assert_eq!(s.mqtt.shared_group.as_deref(), Some("axion-push"));
        assert_eq!(s.delivery.request_timeout, Duration::from_millis(1500));
        assert_eq!(s.delivery.concurrency, 8);
        assert_eq!(
            s.broker.websocket_listen,
            Some("127.0.0.1:8083".parse().unwrap())
        );
    }

    #[test]
    fn every_problem_is_reported_with_its_key_path() {
        let found = paths(
            "axion_push:\n  mqtt: {url: 'http://x', colour: red}\n  delivery: {concurrency: 0, request_timeout: soon}\n  broker: {listen: 'not an address'}\n  bogus: 1\n",
        );
        for expected in [
            "axion_push.mqtt.url",
            "axion_push.mqtt.colour",
            "axion_push.delivery.concurrency",
            "axion_push.delivery.request_timeout",
            "axion_push.broker.listen",
            "axion_push.bogus",
        ] {
            assert!(
                found.iter().any(|p| p == expected),
                "{expected} missing from {found:?}"
            );
        }
        assert_eq!(found.len(), 6, "{found:?}");
    }

    #[test]
    fn other_axion_sections_and_base_push_extras_are_ignored() {
        let c = Config::from_yaml(
            "base:\n  db: {host: x}\n  push: {enabled: true, vapid_email: 'mailto:a@example.com'}\ncrm:\n  title: CRM\n",
            "test",
        )
        .unwrap();
        assert!(c.packages.is_empty());
        let warned: Vec<_> = c.warnings.iter().map(|w| w.path.as_str()).collect();
        assert_eq!(warned, ["base.push.enabled"], "{:?}", c.warnings);
    }

    #[test]
    fn a_misspelt_push_key_is_a_warning_naming_the_key_it_resembles() {
        let c = Config::from_yaml(
            "base:\n  push: {vapid_emial: 'mailto:a@example.com'}\ncrm:\n  push: {vapid_pubic_key: x}\n",
            "test",
        )
        .unwrap();
        let [base, crm] = &c.warnings[..] else {
            panic!("two warnings expected: {:?}", c.warnings)
        };
        assert_eq!(base.path, "base.push.vapid_emial");
        assert!(
            base.message.contains("did you mean `vapid_email`?"),
            "{base}"
        );
        assert_eq!(crm.path, "crm.push.vapid_pubic_key");
        assert!(
            crm.message.contains("did you mean `vapid_public_key`?"),
            "{crm}"
        );
    }

    #[test]
    fn a_top_level_section_spelt_almost_like_axion_push_is_a_warning() {
        for name in ["axion-push", "Axion_Push", "axionpush", "axion_psuh"] {
            let c = Config::from_yaml(
                &format!("{name}:\n  broker: {{listen: '127.0.0.1:1884'}}\n"),
                "test",
            )
            .unwrap();
            let paths: Vec<_> = c.warnings.iter().map(|w| w.path.as_str()).collect();
            assert_eq!(paths, [name], "{name}");
            assert!(c.warnings[0].message.contains("`axion_push`"));
            assert_eq!(
                c.settings.broker.listen,
                Settings::default().broker.listen,
                "its settings are not read"
            );
        }
        let c = Config::from_yaml("axion:\n  title: x\npush: {}\n", "test").unwrap();
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }

    #[test]
    fn an_unknown_key_of_our_own_names_the_key_it_resembles() {
        let p = problems("axion_push:\n  broker: {lisen: '127.0.0.1:1884'}\n");
        assert_eq!(p[0].path, "axion_push.broker.lisen");
        assert!(
            p[0].message.contains("did you mean `listen`?"),
            "{}",
            p[0].message
        );
    }

    #[test]
    fn a_yaml_error_names_the_file_and_line_in_our_words() {
        let err = Config::from_yaml(
            "axion_push:\n  broker: {}\naxion_push:\n  broker:\n    websocket_listen: 127.0.0.1:8083\n",
            "config.yaml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("config.yaml is not valid YAML, line 3: `axion_push` is written a second time (first on line 1)"),
            "{err}"
        );
        assert!(err.ends_with("\n     3 | axion_push:"), "{err}");
    }

    #[test]
    fn durations_are_read_with_or_without_a_unit() {
        assert_eq!(parse_duration("15"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration(" 1500ms "), Ok(Duration::from_millis(1500)));
        assert!(
            parse_duration("soon")
                .unwrap_err()
                .contains("number of seconds")
        );
        let c =
            Config::from_yaml("axion_push:\n  delivery: {request_timeout: '7'}\n", "t").unwrap();
        assert_eq!(c.settings.delivery.request_timeout, Duration::from_secs(7));
    }

    #[test]
    fn a_local_config_file_is_read_instead_of_config_yaml() {
        let dir = tempfile::tempdir().unwrap();
        let shipped = dir.path().join(DEFAULT_CONFIG_FILE);
        std::fs::write(&shipped, "").unwrap();
        assert_eq!(locate_in(dir.path(), None, None), (shipped, false));
        let local = dir.path().join(LOCAL_CONFIG_FILE);
        std::fs::write(&local, "").unwrap();
        assert_eq!(locate_in(dir.path(), None, None), (local, true));
    }

    #[test]
    fn a_file_named_by_flag_or_environment_wins_over_the_local_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(LOCAL_CONFIG_FILE), "").unwrap();
        let flag = Path::new("/etc/axion-push/config.yaml");
        assert_eq!(
            locate_in(dir.path(), Some(flag), Some("/elsewhere.yaml".into())),
            (flag.to_owned(), true)
        );
        assert_eq!(
            locate_in(dir.path(), None, Some("/elsewhere.yaml".into())),
            (PathBuf::from("/elsewhere.yaml"), true)
        );
    }

    #[test]
    fn a_bad_vapid_key_is_reported_at_load() {
        assert_eq!(
            paths("base:\n  push: {vapid_private_key: 'nope!'}\n"),
            ["base.push.vapid_private_key"]
        );
        assert_eq!(
            paths("crm:\n  push: {vapid_private_key: 'nope!'}\n"),
            ["crm.push.vapid_private_key"]
        );
    }

    #[test]
    fn the_vapid_contact_must_be_reachable() {
        assert_eq!(
            paths("base:\n  push: {vapid_email: 'mailto:root@localhost'}\n"),
            ["base.push.vapid_email"]
        );
    }

    #[test]
    fn every_backend_is_chosen_by_its_url_and_others_are_refused() {
        for url in [
            "sqlite://axion-push.db",
            "mysql://root@localhost/axion",
            "mariadb://root@localhost/axion",
            "postgres://axion@db.example/axion",
            "postgresql://axion@db.example/axion",
        ] {
            assert!(
                problems(&format!("axion_push:\n  database: {{url: '{url}'}}\n")).is_empty(),
                "{url}"
            );
        }
        let p = problems("axion_push:\n  database: {url: 'redis://u:hunter2@h/0'}\n");
        assert_eq!(p[0].path, "axion_push.database.url");
        assert!(!p[0].message.contains("hunter2"), "{}", p[0].message);
    }

    #[test]
    fn sqlites_busy_timeout_is_refused_on_a_server_database() {
        let p = problems("axion_push:\n  database: {url: 'postgres://a@h/db', busy_timeout: 1s}\n");
        assert_eq!(p[0].path, "axion_push.database.busy_timeout");
        assert!(
            problems("axion_push:\n  database: {url: 'sqlite://x.db', busy_timeout: 1s}\n")
                .is_empty()
        );
    }

    #[test]
    fn metrics_listen_on_loopback_unless_remote_is_allowed() {
        let c =
            Config::from_yaml("axion_push:\n  metrics: {listen: '127.0.0.1:9464'}\n", "t").unwrap();
        assert_eq!(
            c.settings.metrics.listen,
            Some("127.0.0.1:9464".parse().unwrap())
        );
        assert!(Config::from_yaml("axion_push:\n  metrics: {listen: '[::1]:9464'}\n", "t").is_ok());
        assert_eq!(
            paths("axion_push:\n  metrics: {listen: '0.0.0.0:9464'}\n"),
            ["axion_push.metrics.listen"]
        );
        let c = Config::from_yaml(
            "axion_push:\n  metrics: {listen: '0.0.0.0:9464', allow_remote: true}\n",
            "t",
        )
        .unwrap();
        assert!(c.settings.metrics.allow_remote);
    }

    #[test]
    fn no_login_may_have_an_empty_password() {
        assert_eq!(
            paths("axion_push:\n  mqtt: {username: svc}\n"),
            ["axion_push.mqtt.password"]
        );
        assert_eq!(
            paths("axion_push:\n  mqtt: {username: svc, password: ''}\n"),
            ["axion_push.mqtt.password"]
        );
        assert_eq!(
            paths("axion_push:\n  mqtt: {username: '', password: x}\n"),
            ["axion_push.mqtt.username"]
        );
        let problems = problems(
            "axion_push:\n  mqtt: {username: me, password: pw}\n  broker:\n    users: {bob: ''}\n",
        );
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].path, "axion_push.broker.users");
        assert!(
            problems[0].message.contains("'bob' is empty"),
            "{problems:?}"
        );
        assert_eq!(
            paths(
                "axion_push:\n  mqtt: {username: me, password: pw}\n  broker:\n    users: {crm/alice: pw}\n"
            ),
            ["axion_push.broker.users"]
        );
    }

    #[test]
    fn a_listener_off_loopback_needs_accounts_and_a_browser_listener_tokens() {
        assert_eq!(
            paths("axion_push:\n  broker: {listen: '0.0.0.0:1883'}\n"),
            ["axion_push.broker.listen"]
        );
        assert!(
            Config::from_yaml(
                "axion_push:\n  mqtt: {username: me, password: pw}\n  broker: {listen: '0.0.0.0:1883', users: {svc: pw}}\n",
                "t"
            )
            .is_ok()
        );
        // An external broker: the embedded one's settings do not matter.
        assert!(
            Config::from_yaml(
                "axion_push:\n  mqtt: {url: 'mqtt://b:1883'}\n  broker: {listen: '0.0.0.0:1883'}\n",
                "t"
            )
            .is_ok()
        );
        assert_eq!(
            paths("axion_push:\n  broker: {websocket_listen: '0.0.0.0:8083'}\n"),
            ["axion_push.broker.websocket_listen"]
        );
        let c = Config::from_yaml(
            "axion_push:\n  subscribe_token_secret: 0123456789abcdef0123456789abcdef\n  broker: {websocket_listen: '0.0.0.0:8083', websocket_origins: ['https://app.example.com']}\n",
            "t",
        )
        .unwrap();
        let notes = c.notes();
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].message.contains("TLS reverse proxy"), "{notes:?}");
    }

    #[test]
    fn websocket_origins_are_origins() {
        let c = Config::from_yaml(
            "axion_push:\n  broker: {websocket_origins: ['HTTPS://App.Example.com:443', 'http://localhost:8080']}\n",
            "t",
        )
        .unwrap();
        assert_eq!(
            c.settings.broker.websocket_origins,
            ["https://app.example.com", "http://localhost:8080"]
        );
        for bad in [
            "app.example.com",
            "https://app.example.com/page",
            "ftp://x",
            "*",
        ] {
            assert_eq!(
                paths(&format!(
                    "axion_push:\n  broker: {{websocket_origins: ['{bad}']}}\n"
                )),
                ["axion_push.broker.websocket_origins"],
                "{bad}"
            );
        }
        let demo = Config::from_yaml(
            "axion_push:\n  broker: {websocket_listen: '127.0.0.1:8083'}\n",
            "t",
        )
        .unwrap();
        let notes: Vec<_> = demo.notes().into_iter().map(|n| n.path).collect();
        assert_eq!(
            notes,
            [
                "axion_push.broker.websocket_listen",
                "axion_push.broker.websocket_origins"
            ]
        );
    }

    #[test]
    fn broker_limits_have_modest_defaults() {
        let b = BrokerSettings::default();
        assert_eq!(b.max_connections, 1000);
        assert_eq!(b.websocket_max_per_address, 32);
        assert_eq!(b.connect_timeout, Duration::from_secs(5));
        let c = Config::from_yaml(
            "axion_push:\n  broker: {max_connections: 50, websocket_max_per_address: 4, connect_timeout: 2s}\n",
            "t",
        )
        .unwrap();
        assert_eq!(c.settings.broker.max_connections, 50);
        assert_eq!(c.settings.broker.connect_timeout, Duration::from_secs(2));
        assert_eq!(
            paths("axion_push:\n  broker: {max_connections: 0, connect_timeout: 0s}\n"),
            [
                "axion_push.broker.max_connections",
                "axion_push.broker.connect_timeout"
            ]
        );
    }

    #[test]
    fn secrets_do_not_show_in_debug_output() {
        let c = Config::from_yaml(
            "axion_push:\n  mqtt: {username: svc, password: hunter2}\n",
            "test",
        )
        .unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn packages_inherit_base_and_override_what_they_set() {
        let base = VapidPrivateKey::generate();
        let own = VapidPrivateKey::generate();
        let yaml = format!(
            "base:\n  push: {{vapid_email: 'mailto:ops@example.com'}}\ncrm:\n  push: {{vapid_private_key: '{}'}}\nhr:\n  push: {{vapid_email: 'mailto:hr@example.com'}}\n",
            own.to_raw_base64url()
        );
        let c = Config::from_yaml(&yaml, "test").unwrap();
        let registry = c.vapid_registry(Some(base.clone())).unwrap();
        let crm = Package::parse("crm").unwrap();
        let hr = Package::parse("hr").unwrap();
        let other = Package::parse("other").unwrap();
        assert_eq!(
            registry.for_package(&crm).key.public_key(),
            own.public_key()
        );
        assert_eq!(registry.for_package(&crm).subject, "mailto:ops@example.com");
        assert_eq!(
            registry.for_package(&hr).key.public_key(),
            base.public_key()
        );
        assert_eq!(registry.for_package(&hr).subject, "mailto:hr@example.com");
        assert_eq!(
            registry.for_package(&other).key.public_key(),
            base.public_key()
        );
        let own_keys: Vec<_> = registry.packages_with_own_key().map(|(p, _)| p).collect();
        assert_eq!(own_keys, [&crm]);
    }

    #[test]
    fn missing_vapid_config_is_an_error_naming_the_key() {
        let c = Config::from_yaml("", "test").unwrap();
        let err = c.vapid_registry(None).unwrap_err().to_string();
        assert!(err.contains("base.push.vapid_private_key"), "{err}");
        let c = Config::from_yaml(
            &format!(
                "base:\n  push: {{vapid_private_key: '{}'}}\n",
                VapidPrivateKey::generate().to_raw_base64url()
            ),
            "test",
        )
        .unwrap();
        let err = c.vapid_registry(None).unwrap_err().to_string();
        assert!(err.contains("base.push.vapid_email"), "{err}");
    }

    #[test]
    fn a_public_key_that_does_not_match_is_refused() {
        let key = VapidPrivateKey::generate();
        let other = VapidPrivateKey::generate();
        let yaml = format!(
            "base:\n  push: {{vapid_private_key: '{}', vapid_public_key: '{}', vapid_email: 'a@example.com'}}\n",
            key.to_raw_base64url(),
            other.public_key()
        );
        let c = Config::from_yaml(&yaml, "test").unwrap();
        let err = c.vapid_registry(None).unwrap_err().to_string();
        assert!(err.contains("base.push.vapid_public_key"), "{err}");
    }
}
