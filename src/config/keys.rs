//! Every key of the daemon's own section, `axion_push`: its default as
//! `config.yaml` writes it, and what it means — the one place a key is
//! declared. `read_settings` takes a key's default from here when the file
//! leaves it out (so `Settings::default()` is this table read), and tests
//! hold the shipped `config.yaml` and the README's table to it, row by row.

/// One key of `axion_push`.
pub struct Key {
    /// The key's full path, as problems name it.
    pub path: &'static str,
    /// The default, in YAML as `config.yaml` writes it.
    pub default: &'static str,
    /// What it means, as the README's table says it.
    pub meaning: &'static str,
}

pub const KEYS: &[Key] = &[
    Key {
        path: "axion_push.mqtt.url",
        default: "null",
        meaning: "an external broker, `mqtt://host:1883` or `mqtts://host:8883`; `null` starts the embedded broker",
    },
    Key {
        path: "axion_push.mqtt.client_id",
        default: "axion-push",
        meaning: "the daemon's client id (persistent session) and its `instance` in the status; unique per instance",
    },
    Key {
        path: "axion_push.mqtt.username",
        default: "null",
        meaning: "a login on the broker; needs a non-empty `password`",
    },
    Key {
        path: "axion_push.mqtt.password",
        default: "null",
        meaning: "the login's password, never logged",
    },
    Key {
        path: "axion_push.mqtt.shared_group",
        default: "null",
        meaning: "e.g. `axion-push`: subscribe through `$share/axion-push/…` so several instances split the commands",
    },
    Key {
        path: "axion_push.mqtt.topic_prefix",
        default: r#""""#,
        meaning: "prepended to every topic, e.g. `staging/`",
    },
    Key {
        path: "axion_push.mqtt.keep_alive",
        default: "30s",
        meaning: "MQTT keep-alive",
    },
    Key {
        path: "axion_push.mqtt.ca_file",
        default: "null",
        meaning: "PEM roots for an `mqtts://` broker with a private CA (system roots otherwise)",
    },
    Key {
        path: "axion_push.broker.listen",
        default: "127.0.0.1:1883",
        meaning: "the embedded broker's MQTT listener, for services and the command line (loopback only by default; another address needs `users`)",
    },
    Key {
        path: "axion_push.broker.websocket_listen",
        default: "null",
        meaning: "e.g. `127.0.0.1:8083`: MQTT over WebSocket for browsers, which log in as `{package}/{user}` with their subscribe token and are confined to that user (see [Security](#security)); another address than loopback needs `subscribe_token_secret` and a TLS reverse proxy in front",
    },
    Key {
        path: "axion_push.broker.websocket_origins",
        default: "[]",
        meaning: "web origins (`https://app.example.com`) whose pages may open the WebSocket listener; a handshake from any other page is refused with 403 (a client sending no `Origin` is not a browser and goes on to log in)",
    },
    Key {
        path: "axion_push.broker.max_payload_bytes",
        default: "1048576",
        meaning: "the largest message the embedded broker accepts",
    },
    Key {
        path: "axion_push.broker.users",
        default: "{}",
        meaning: "service accounts (`name: password`, no empty password, no `/` in a name) the MQTT listener accepts; with any, or with `mqtt.username` set, every service must log in (the daemon's own `mqtt` login is always accepted); otherwise anyone who reaches that (loopback) listener may connect",
    },
    Key {
        path: "axion_push.broker.max_connections",
        default: "1000",
        meaning: "open connections on both listeners together; beyond, new ones wait until one closes. Each takes three file descriptors (see `LimitNOFILE` in the unit)",
    },
    Key {
        path: "axion_push.broker.websocket_max_per_address",
        default: "32",
        meaning: "open WebSocket connections from one IP address; beyond, new ones are closed. Behind a reverse proxy every browser comes from the proxy's address: raise it there and cap per client in the proxy",
    },
    Key {
        path: "axion_push.broker.connect_timeout",
        default: "5s",
        meaning: "how long a new connection may take to log in (the WebSocket handshake included) before it is closed",
    },
    Key {
        path: "axion_push.database.url",
        default: "sqlite://axion-push.db",
        meaning: "`sqlite://PATH` (relative to the working directory), `mysql://USER:PASSWORD@HOST:3306/DB` (or `mariadb://`), `postgres://USER:PASSWORD@HOST:5432/DB` (or `postgresql://`); its password is never shown (see [Deployment](#deployment))",
    },
    Key {
        path: "axion_push.database.busy_timeout",
        default: "5s",
        meaning: "SQLite only: how long a statement waits for a locked database (refused on a server database)",
    },
    Key {
        path: "axion_push.database.max_connections",
        default: "4",
        meaning: "pool size on MariaDB/MySQL and PostgreSQL; SQLite always uses one connection (its writes take one lock for the whole file: more connections would only wait for each other)",
    },
    Key {
        path: "axion_push.vapid_key_file",
        default: "vapid.pem",
        meaning: "where the first-run key is written (mode 0600) and read back",
    },
    Key {
        path: "axion_push.subscribe_token_secret",
        default: "null",
        meaning: "when set (at least 32 characters), browsers log in to the WebSocket listener with a token the host application issued for their user and package, and `subscribe`, `unsubscribe` and `list` must carry one as `token` (see [Security](#security))",
    },
    Key {
        path: "axion_push.delivery.concurrency",
        default: "256",
        meaning: "pushes in flight at once, over all push services",
    },
    Key {
        path: "axion_push.delivery.default_ttl",
        default: "86400",
        meaning: "seconds, when a command has no `ttl`",
    },
    Key {
        path: "axion_push.delivery.request_timeout",
        default: "10s",
        meaning: "one push request, connecting included",
    },
    Key {
        path: "axion_push.delivery.shutdown_grace",
        default: "10s",
        meaning: "on SIGTERM, how long pushes in flight may finish; the rest stay queued for the next run",
    },
    Key {
        path: "axion_push.delivery.retry_initial",
        default: "5s",
        meaning: "first delay before retrying a 429/5xx/timeout/broken connection; doubles per attempt with ±50 % jitter, never below `Retry-After`",
    },
    Key {
        path: "axion_push.delivery.retry_max",
        default: "10m",
        meaning: "longest delay between attempts, unless `Retry-After` asks for more",
    },
    Key {
        path: "axion_push.delivery.pause_max",
        default: "1h",
        meaning: "longest pause of a push service that keeps failing, whatever its `Retry-After` asks (a single delivery still honours it)",
    },
    Key {
        path: "axion_push.delivery.dedup_window",
        default: "24h",
        meaning: "a send `id` seen within it is answered `duplicate` and not delivered again",
    },
    Key {
        path: "axion_push.delivery.extra_root_ca",
        default: "null",
        meaning: "a PEM file of extra trusted roots (a private push service, tests)",
    },
    Key {
        path: "axion_push.endpoints.allow_hosts",
        default: r#"[fcm.googleapis.com, "*.push.services.mozilla.com", "*.push.apple.com", "*.notify.windows.com"]"#,
        meaning: "push-service hosts; `*.domain` matches subdomains",
    },
    Key {
        path: "axion_push.endpoints.allow_ports",
        default: "[443]",
        meaning: "the ports an endpoint may use; another port of an allowed host is another of its services. A private push service adds its own (`http` endpoints need 80)",
    },
    Key {
        path: "axion_push.endpoints.allow_http",
        default: "false",
        meaning: "accept `http://` endpoints",
    },
    Key {
        path: "axion_push.endpoints.allow_private_addresses",
        default: "false",
        meaning: "accept endpoints on loopback, private, link-local and other special-purpose addresses (see [Security](#security))",
    },
    Key {
        path: "axion_push.limits.max_command_bytes",
        default: "65536",
        meaning: "larger commands are answered with an error",
    },
    Key {
        path: "axion_push.limits.max_subscriptions_per_user",
        default: "50",
        meaning: "active subscriptions per user and package; subscribing one more deactivates the oldest (the result's `deactivated` counts them)",
    },
    Key {
        path: "axion_push.metrics.listen",
        default: "null",
        meaning: "e.g. `127.0.0.1:9464`: serve `GET /metrics` in the Prometheus text format (see [Operations](#operations)); `null` = off. A non-loopback address is refused unless `allow_remote` is set",
    },
    Key {
        path: "axion_push.metrics.allow_remote",
        default: "false",
        meaning: "accept a `metrics.listen` address other than loopback; the endpoint has no authentication, so firewall it",
    },
    Key {
        path: "axion_push.receipts.enabled",
        default: "true",
        meaning: "each push carries a receipt token and browsers report `shown` / `failed` (see [Receipts](#receipts)); `false` = no token, receipts refused",
    },
    Key {
        path: "axion_push.receipts.clicks",
        default: "false",
        meaning: "also take `clicked` and `closed` receipts: what people do with notifications",
    },
    Key {
        path: "axion_push.subscriptions.expire_after",
        default: "60d",
        meaning: "a subscription whose push service refused its pushes this long, for it alone — while taking other subscriptions' pushes — is deactivated as `stale` (see [Receipts](#receipts)); outages, 429/5xx, timeouts, a wrong VAPID key and the endpoint policy never count",
    },
    Key {
        path: "axion_push.log.level",
        default: "info",
        meaning: "a level or a tracing filter; `RUST_LOG` overrides it",
    },
];

/// The key at `path`; every key the reader asks for is in [`KEYS`].
pub fn key(path: &str) -> &'static Key {
    KEYS.iter()
        .find(|k| k.path == path)
        .unwrap_or_else(|| panic!("{path} is read but not declared in config::keys::KEYS"))
}

/// `key`'s default as the YAML reader gives it.
pub fn default_value(key: &Key) -> serde_json::Value {
    let document = super::yaml::parse(&format!("v: {}", key.default))
        .unwrap_or_else(|e| panic!("the default of {} is not YAML: {e:?}", key.path));
    document["v"].clone()
}
