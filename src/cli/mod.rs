//! The `axion-push` command line (DESIGN §6). Each verb is a short function
//! over library calls; exit codes: 0 success, 1 failure, 2 usage.

mod client;
mod test_push;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

use crate::broker::BrokerError;
use crate::config::{
    Config, ConfigError, DEFAULT_CONFIG_FILE, LOCAL_CONFIG_FILE, VapidPrivateKey, locate,
};
use crate::daemon::Daemon;
use crate::model::{Package, User};
use crate::receipt::{subscription_id, subscription_text};
use crate::store::Store;
use crate::topics::Topics;

/// The embedded broker's log filter (see `init_logging`).
pub const QUIET_BROKER: &str =
    "rumqttd=warn,rumqttd::router::routing=off,rumqttd::server::broker=off";

/// The package used when a verb is given none: `base`, whose keys are the
/// defaults in config.yaml.
pub const DEFAULT_PACKAGE: &str = "base";

#[derive(Debug, Parser)]
#[command(
    name = "axion-push",
    version,
    about = "Bridges MQTT real-time notifications to Web Push"
)]
pub struct Cli {
    /// Config file [default: $AXION_PUSH_CONFIG, else ./config.local.yaml if it exists, else ./config.yaml]
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    verb: Action,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// Run the daemon until SIGINT or SIGTERM
    Serve,
    /// Print a new VAPID key pair as a config.yaml block
    GenerateVapid {
        /// The contact to put in vapid_email
        #[arg(long, default_value = "mailto:admin@example.com")]
        email: String,
    },
    /// Send a notification through the running daemon and print its result
    TestPush {
        /// Axion user to notify (or @group)
        user: String,
        #[arg(long, default_value = "axion-push test")]
        title: String,
        #[arg(long, default_value = "If you can read this, Web Push works.")]
        body: String,
        #[arg(long, default_value = DEFAULT_PACKAGE)]
        package: String,
        /// Page opened when the notification is clicked
        #[arg(long, default_value = "/")]
        url: String,
        /// Seconds to wait for the result report
        #[arg(long, default_value_t = 30)]
        timeout: u64,
        /// After the report, print the browsers' receipts (shown, failed,
        /// clicked, closed) as they come, for this long (e.g. 30s)
        #[arg(long, value_name = "DURATION", value_parser = crate::config::parse_duration)]
        wait_receipts: Option<std::time::Duration>,
    },
    /// List a user's subscriptions from the database
    Subscriptions {
        user: String,
        /// Only this package [default: all]
        #[arg(long)]
        package: Option<String>,
        /// Print JSON lines, endpoints in full
        #[arg(long)]
        json: bool,
    },
    /// Print real-time events as they are published (one JSON line each)
    Listen {
        /// Only this user [default: all]
        user: Option<String>,
        /// Only this package [default: all]
        #[arg(long)]
        package: Option<String>,
    },
    /// Say whether the daemon is online (its retained status on the broker) and print its key figures
    Status {
        /// Seconds to wait for the broker
        #[arg(long, default_value_t = 10)]
        timeout: u64,
    },
    /// Create or update the database schema
    Migrate,
    /// Print a subscribe token for a user (needs subscribe_token_secret)
    SubscribeToken {
        user: String,
        #[arg(long, default_value = DEFAULT_PACKAGE)]
        package: String,
        /// How long it stays valid: 15m, 24h, or a number of seconds (at most 7 days)
        #[arg(long, default_value = "24h", value_parser = crate::config::parse_duration)]
        valid: Duration,
    },
    /// Check the config and report every problem with its key path
    CheckConfig,
}

/// Parses the arguments and runs the verb.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("axion-push: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("axion-push: {}", chain_text(&e));
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes on one line, like anyhow's `{:#}`, leaving out
/// a cause the text already says: the library's errors show their source
/// in their own message too (`database unavailable: …`), so that a log
/// line carries it.
fn chain_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

async fn run(cli: Cli) -> Result<ExitCode> {
    let config_path = cli.config.as_deref();
    match cli.verb {
        Action::CheckConfig => return Ok(check_config(config_path).await),
        Action::GenerateVapid { email } => return generate_vapid(&email),
        _ => {}
    }
    let config = Config::load(config_path)?;
    match cli.verb {
        Action::Serve => {
            init_daemon_logging(&config.settings.log.level);
            match &config.source {
                Some(file) => tracing::info!(file = %file.display(), "config read"),
                None => tracing::info!("no config file found: running on the built-in defaults"),
            }
            for warning in &config.warnings {
                tracing::warn!(key = warning.path, "config: {}", warning.message);
            }
            let (_, asked_for) = locate(config_path);
            serve(config, asked_for).await
        }
        Action::TestPush {
            user,
            title,
            body,
            package,
            url,
            timeout,
            wait_receipts,
        } => {
            init_logging("warn");
            test_push::run(
                &config,
                test_push::TestPush {
                    user: &user,
                    title: &title,
                    body: &body,
                    package: &package,
                    url: &url,
                    timeout,
                    wait_receipts,
                },
            )
            .await
        }
        Action::Subscriptions {
            user,
            package,
            json,
        } => {
            init_logging("warn");
            subscriptions(&config, &user, package.as_deref(), json).await
        }
        Action::Listen { user, package } => {
            init_logging("warn");
            client::listen(&config, package.as_deref(), user.as_deref()).await
        }
        Action::Status { timeout } => {
            init_logging("warn");
            status(&config, Duration::from_secs(timeout)).await
        }
        Action::Migrate => {
            init_logging("info");
            let store = Store::open(&config.settings.database).await?;
            store.migrate().await?;
            store.close().await;
            println!("{}", up_to_date(&config.settings.database.url));
            Ok(ExitCode::SUCCESS)
        }
        Action::SubscribeToken {
            user,
            package,
            valid,
        } => subscribe_token(&config, &user, &package, valid),
        Action::CheckConfig | Action::GenerateVapid { .. } => unreachable!("handled above"),
    }
}

/// What `migrate` says once the schema of the database at `url` is current
/// (its password masked).
fn up_to_date(url: &str) -> String {
    format!("database {} is up to date", crate::store::redact_url(url))
}

/// What a host application does for its logged-in user, for scripts and
/// tests: prints a token the browser login, `subscribe`, `unsubscribe` and
/// `list` accept.
fn subscribe_token(
    config: &Config,
    user: &str,
    package: &str,
    valid: std::time::Duration,
) -> Result<ExitCode> {
    let Some(secret) = &config.settings.subscribe_token_secret else {
        let file = config
            .source
            .as_ref()
            .map_or_else(|| LOCAL_CONFIG_FILE.to_owned(), |f| f.display().to_string());
        anyhow::bail!(
            "axion_push.subscribe_token_secret is not set: this daemon accepts subscribes without tokens. \
             To require them, set it in {file} to a secret of at least 32 characters, \
             e.g. the output of `openssl rand -base64 32`, and restart the daemon"
        );
    };
    let user = crate::model::User::parse(user)?;
    let package = crate::model::Package::parse(package)?;
    if valid.as_secs() > crate::token::MAX_LIFETIME_SECS {
        anyhow::bail!(
            "--valid may be at most {}: the daemon refuses longer-lived tokens",
            crate::token::MAX_LIFETIME
        );
    }
    let expires = crate::clock::now_ms() / 1000 + valid.as_secs();
    println!(
        "{}",
        crate::token::TokenKey::new(secret.expose()).issue(&package, &user, expires)
    );
    Ok(ExitCode::SUCCESS)
}

/// Logs to stderr. `RUST_LOG` overrides the config. The embedded broker and
/// sqlx are kept to warnings unless the filter names them, and rumqttd's
/// per-connection logs are off: it logs errors for every client that leaves
/// politely (DISCONNECT, then close), which is most of them.
fn init_logging(level: &str) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(log_filter(level))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

fn log_filter(level: &str) -> tracing_subscriber::EnvFilter {
    let mut filter = std::env::var("RUST_LOG").unwrap_or_else(|_| level.to_owned());
    if !filter.contains("rumqttd") {
        filter.push_str(&format!(",{QUIET_BROKER}"));
    }
    if !filter.contains("sqlx") {
        filter.push_str(",sqlx=warn");
    }
    tracing_subscriber::EnvFilter::new(filter)
}

/// `serve`'s logging: native journal entries when stderr is connected to
/// the journal (systemd says so in `JOURNAL_STREAM`), so each event's fields
/// (`COMMAND_ID`, `PACKAGE`, `USER`, `ORIGIN`, …) can be queried with
/// `journalctl -u axion-push COMMAND_ID=…`; plain stderr otherwise.
fn init_daemon_logging(level: &str) {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    if journal_is_stderr()
        && let Ok(journal) = tracing_journald::layer()
    {
        let journal = journal
            .with_field_prefix(None)
            .with_syslog_identifier("axion-push".into());
        let _ = tracing_subscriber::registry()
            .with(log_filter(level))
            .with(journal)
            .try_init();
        return;
    }
    init_logging(level);
}

/// `JOURNAL_STREAM` (`device:inode`) names the stream systemd connected to
/// the journal; it only counts when that is still our stderr (not, say, a
/// shell started from a service that redirected it).
fn journal_is_stderr() -> bool {
    #[cfg(unix)]
    {
        use std::os::fd::AsFd as _;
        use std::os::unix::fs::MetadataExt as _;
        let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
            return false;
        };
        let Some((dev, ino)) = stream.to_str().and_then(|s| s.split_once(':')) else {
            return false;
        };
        let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() else {
            return false;
        };
        let Ok(meta) = std::fs::File::from(fd).metadata() else {
            return false;
        };
        dev.parse() == Ok(meta.dev()) && ino.parse() == Ok(meta.ino())
    }
    #[cfg(not(unix))]
    false
}

/// `asked_for`: the config file was named (`--config`, the environment or
/// `config.local.yaml`) rather than found as `./config.yaml`.
async fn serve(config: Config, asked_for: bool) -> Result<ExitCode> {
    let source = config.source.clone();
    // Watched before anything starts: a SIGTERM that comes while the daemon
    // starts (systemd stopping it, a test that saw it run) stops it as soon
    // as it runs, instead of killing it on the spot.
    let stop = stop_signals()?;
    let daemon = match Daemon::start(config).await {
        Ok(daemon) => daemon,
        Err(e) => return Err(with_local_settings_hint(e, source.as_deref(), asked_for)),
    };
    let monitor = daemon.monitor();
    crate::systemd::ready(&monitor.status_line());
    let stop_supervising = tokio_util::sync::CancellationToken::new();
    let supervisor = tokio::spawn(crate::systemd::supervise(monitor, stop_supervising.clone()));
    stop.await;
    crate::systemd::stopping();
    stop_supervising.cancel();
    let _ = supervisor.await;
    daemon.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

/// A taken port on a developer's machine (a Mosquitto already on 1883)
/// calls for a setting of that machine, which belongs in a file of its own:
/// the checkout's `config.yaml` documents the defaults.
fn with_local_settings_hint(
    error: anyhow::Error,
    source: Option<&std::path::Path>,
    asked_for: bool,
) -> anyhow::Error {
    let Some(addr) = error.chain().find_map(|cause| match cause.downcast_ref() {
        Some(BrokerError::AddressInUse { addr, .. }) => Some(*addr),
        _ => None,
    }) else {
        return error;
    };
    let free = std::net::SocketAddr::new(addr.ip(), addr.port().wrapping_add(1));
    let hint = match source {
        Some(file) if asked_for => format!("Change it in {}.", file.display()),
        Some(_) => format!(
            "Keep {DEFAULT_CONFIG_FILE} as shipped and put this machine's settings in \
             {LOCAL_CONFIG_FILE}, which is read instead of it when present (and ignored by git):\n  \
             sed 's/{addr}/{free}/' {DEFAULT_CONFIG_FILE} > {LOCAL_CONFIG_FILE}"
        ),
        None => format!(
            "Put this machine's settings in {LOCAL_CONFIG_FILE} (read when present, ignored by git)."
        ),
    };
    anyhow::anyhow!("{error:#}. {hint}")
}

/// Connects to the configured database (without changing it) and says what
/// the daemon will find there: the engine and its version, Axion's table,
/// and whether several daemons may share it. An SQLite file that does not
/// exist yet is not created.
async fn check_database(
    settings: &crate::config::DatabaseSettings,
) -> std::result::Result<(), crate::config::Problem> {
    use crate::store::{Backend, redact_url};
    let problem = |message: String| crate::config::Problem {
        path: "axion_push.database.url".into(),
        message,
    };
    let url = redact_url(&settings.url);
    if Backend::of_url(&settings.url) == Some(Backend::Sqlite) {
        let file = settings
            .url
            .trim_start_matches("sqlite://")
            .split('?')
            .next()
            .unwrap_or_default();
        if !std::path::Path::new(file).exists() {
            println!("  database: SQLite, {url} (created at first start)");
            return Ok(());
        }
    }
    let store = Store::open(settings)
        .await
        .map_err(|e| problem(e.to_string()))?;
    let info = store.info().await;
    store.close().await;
    let info = info.map_err(|e| problem(format!("{url}: {e}")))?;
    println!(
        "  database: {} {} at {url}",
        info.backend.name(),
        info.version
    );
    match &info.axion_table_missing_columns {
        None => println!(
            "  def_notify_push_subscription: not there yet; `axion-push migrate` or the first start creates it"
        ),
        Some(missing) if missing.is_empty() => {
            println!("  def_notify_push_subscription: present, with every column the daemon uses")
        }
        Some(missing) => {
            return Err(problem(format!(
                "{url}: def_notify_push_subscription lacks the columns {}; the daemon never alters Axion's table",
                missing.join(", ")
            )));
        }
    }
    if info.skip_locked {
        println!("  several daemons may share this database (claims skip locked rows)");
    } else {
        println!(
            "  warning: {} {} has no FOR UPDATE SKIP LOCKED (MariaDB 10.6, MySQL 8 have it): only one daemon may use this database",
            info.backend.name(),
            info.version
        );
    }
    Ok(())
}

/// SIGTERM or SIGINT, watched from now on.
fn stop_signals() -> Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received"),
                _ = int.recv() => tracing::info!("SIGINT received"),
            }
        })
    }
    #[cfg(not(unix))]
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}

async fn check_config(path: Option<&std::path::Path>) -> ExitCode {
    use crate::config::Problem;
    let (file, _) = locate(path);
    let warn = |warnings: &[Problem]| {
        for w in warnings {
            eprintln!("  warning: {w}");
        }
    };
    let report = |problems: &[Problem], warnings: &[Problem]| {
        eprintln!("{}: {} problem(s)", file.display(), problems.len());
        for p in problems {
            eprintln!("  {p}");
        }
        warn(warnings);
        ExitCode::FAILURE
    };
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(ConfigError::Invalid {
            problems, warnings, ..
        }) => return report(&problems, &warnings),
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    // Without a key in base.push the daemon uses the key file, creating it on
    // first start; checking must not create it.
    let key_file = &config.settings.vapid_key_file;
    let fallback = match (&config.push.private_key, std::fs::read_to_string(key_file)) {
        (Some(_), _) => None,
        (None, Ok(text)) => match VapidPrivateKey::decode(&text) {
            Ok(key) => Some(key),
            Err(e) => {
                return report(
                    &[Problem {
                        path: "axion_push.vapid_key_file".into(),
                        message: format!("{} {e}", key_file.display()),
                    }],
                    &config.warnings,
                );
            }
        },
        (None, Err(_)) => Some(VapidPrivateKey::generate()),
    };
    match config.vapid_registry(fallback) {
        Ok(registry) => {
            let source = config.source.as_ref().map_or_else(
                || "built-in defaults (no config file)".to_owned(),
                |p| p.display().to_string(),
            );
            println!("{source}: OK");
            if !config.warnings.is_empty() {
                eprintln!("{source}: {} warning(s)", config.warnings.len());
                warn(&config.warnings);
            }
            if config.push.private_key.is_none() && !key_file.exists() {
                println!(
                    "  a VAPID key will be generated at first start in {}",
                    key_file.display()
                );
            } else {
                println!("  VAPID public key: {}", registry.default.key.public_key());
            }
            for (package, identity) in registry.packages_with_own_key() {
                println!(
                    "  {package}: VAPID public key {}",
                    identity.key.public_key()
                );
            }
            for note in config.notes() {
                println!("  note: {note}");
            }
            match check_database(&config.settings.database).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(problem) => report(&[problem], &[]),
            }
        }
        Err(ConfigError::Invalid {
            problems, warnings, ..
        }) => report(&problems, &warnings),
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn generate_vapid(email: &str) -> Result<ExitCode> {
    let email =
        crate::config::normalize_subject(email).map_err(|e| anyhow::anyhow!("--email {e}"))?;
    let key = VapidPrivateKey::generate();
    println!("base:");
    println!("  push:");
    println!("    vapid_private_key: {}", key.to_raw_base64url());
    println!("    vapid_public_key: {}", key.public_key());
    println!("    vapid_email: {email}");
    Ok(ExitCode::SUCCESS)
}

async fn subscriptions(
    config: &Config,
    user: &str,
    package: Option<&str>,
    json: bool,
) -> Result<ExitCode> {
    let user = User::parse(user).context("USER")?;
    let package = package
        .map(Package::parse)
        .transpose()
        .context("--package")?;
    let store = Store::open(&config.settings.database).await?;
    let rows = store.subscriptions(&user, package.as_ref()).await?;
    let ids: Vec<String> = rows
        .iter()
        .map(|row| subscription_text(&subscription_id(&row.package, &row.endpoint)))
        .collect();
    // Each row's health, read per package.
    let mut health = std::collections::HashMap::new();
    let mut by_package: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
    for (row, id) in rows.iter().zip(&ids) {
        by_package
            .entry(row.package.as_str())
            .or_default()
            .push(id.clone());
    }
    for (name, ids) in by_package {
        if let Ok(package) = Package::parse(name) {
            for h in store.health(&package, &ids).await? {
                health.insert((name.to_owned(), h.subscription.clone()), h);
            }
        }
    }
    store.close().await;
    let now = crate::clock::now_ms();
    for (row, id) in rows.iter().zip(ids) {
        let health = health
            .get(&(row.package.clone(), id.clone()))
            .map(|h| crate::command::listed_health(h, now));
        if json {
            println!(
                "{}",
                serde_json::json!({
                    "user": row.user, "package": row.package, "module": row.module,
                    "subscription": id, "endpoint": row.endpoint, "user_agent": row.user_agent,
                    "created_at": row.created_at, "active": row.active, "health": health,
                })
            );
        } else {
            let origin = crate::model::Endpoint::parse(&row.endpoint)
                .map_or_else(|_| "(invalid endpoint)".to_owned(), |e| e.origin());
            println!(
                "{}\t{}\t{}\t{}\t{}\t{}",
                row.package,
                if row.active { "active" } else { "inactive" },
                row.created_at.as_deref().unwrap_or("-"),
                origin,
                row.user_agent.as_deref().unwrap_or("-"),
                health.map_or_else(|| "nothing recorded yet".to_owned(), |h| h.words),
            );
        }
    }
    if rows.is_empty() {
        eprintln!("{user} has no subscriptions");
    }
    Ok(ExitCode::SUCCESS)
}

/// `status`: the retained status from the broker, then the metrics
/// endpoint's key figures when `metrics.listen` is set. Exits 1 unless the
/// daemon says it is online with its database available.
async fn status(config: &Config, timeout: Duration) -> Result<ExitCode> {
    let topics = Topics::new(config.settings.mqtt.topic_prefix.clone());
    let topic = topics.status();
    let (found, broker) = client::daemon_status(config, &topic, timeout).await?;
    let Some(found) = found else {
        eprintln!(
            "no daemon status on {topic} at the broker {broker}: axion-push has not run against this broker (or it uses another topic_prefix)"
        );
        return Ok(ExitCode::FAILURE);
    };
    let field = |name: &str| found[name].as_str().unwrap_or("?").to_owned();
    let (state, instance, version) = (field("state"), field("instance"), field("version"));
    let database = found["database"].as_str();
    println!(
        "axion-push {version}, instance {instance}: {state}{}",
        database.map_or_else(String::new, |d| format!("; database {d}"))
    );
    println!("  broker: {broker}");
    if let Some(addr) = config.settings.metrics.listen {
        match scrape(addr, timeout).await {
            Ok(text) => print_figures(&text),
            Err(e) => eprintln!("  metrics: cannot read http://{addr}/metrics: {e}"),
        }
    }
    if state != "online" {
        eprintln!("the daemon {instance} is {state}");
        return Ok(ExitCode::FAILURE);
    }
    if database.is_some_and(|d| d != "ok") {
        eprintln!(
            "the daemon {instance} is online but its database is unavailable: commands wait unanswered"
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// `GET /metrics` on the daemon's endpoint.
async fn scrape(addr: std::net::SocketAddr, timeout: Duration) -> Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = if addr.ip().is_unspecified() {
        std::net::SocketAddr::from(([127, 0, 0, 1], addr.port()))
    } else {
        addr
    };
    let fetch = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: axion-push\r\nConnection: close\r\n\r\n")
            .await?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    };
    let response = tokio::time::timeout(timeout, fetch)
        .await
        .map_err(|_| anyhow::anyhow!("no answer within {}s", timeout.as_secs()))??;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("not an HTTP response")?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("{}", head.lines().next().unwrap_or_default());
    }
    Ok(body.to_owned())
}

/// A few lines a human reads at a glance.
fn print_figures(text: &str) {
    let sum = |name: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    };
    let one = |name: &str| crate::metrics::sample(text, name);
    let show = |v: Option<f64>| v.map_or_else(|| "?".to_owned(), |v| v.to_string());
    println!(
        "  commands: {} ({} rejected)",
        sum("axion_push_commands_total"),
        sum("axion_push_commands_rejected_total")
    );
    let mut by_class = std::collections::BTreeMap::<String, f64>::new();
    for line in text
        .lines()
        .filter(|l| l.starts_with("axion_push_pushes_total{"))
    {
        if let (Some(class), Some((_, value))) = (
            line.split("class=\"")
                .nth(1)
                .and_then(|r| r.split('"').next()),
            line.rsplit_once(' '),
        ) {
            *by_class.entry(class.to_owned()).or_default() += value.parse::<f64>().unwrap_or(0.0);
        }
    }
    let pushes: Vec<String> = by_class.iter().map(|(c, n)| format!("{c} {n}")).collect();
    println!(
        "  pushes: {}",
        if pushes.is_empty() {
            "none yet".to_owned()
        } else {
            pushes.join(", ")
        }
    );
    println!(
        "  deactivated {}, retries {}, expired {}",
        show(one("axion_push_deactivations_total")),
        show(one("axion_push_retries_total")),
        show(one("axion_push_expirations_total")),
    );
    println!(
        "  queue depth {}; broker connected {}; database available {}",
        show(one("axion_push_delivery_queue_depth")),
        show(one("axion_push_broker_connected")),
        show(one("axion_push_database_available")),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrate_names_its_database_without_the_password() {
        let said = up_to_date("mysql://axion:hunter2@db.example:3306/axion");
        assert!(!said.contains("hunter2"), "{said}");
        assert!(said.contains("db.example:3306/axion"), "{said}");
        assert!(said.ends_with("is up to date"), "{said}");
    }

    #[test]
    fn an_error_is_shown_with_each_cause_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("database unavailable: {0}")]
        struct Outer(#[source] std::io::Error);
        let e = anyhow::Error::new(Outer(std::io::Error::other("connection refused")))
            .context("cannot list subscriptions");
        assert_eq!(
            chain_text(&e),
            "cannot list subscriptions: database unavailable: connection refused"
        );
    }
}
