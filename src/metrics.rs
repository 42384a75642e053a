//! The optional Prometheus endpoint (`axion_push.metrics.listen`): `GET
//! /metrics` in the text exposition format 0.0.4.
//!
//! Written by hand over a tokio `TcpListener` rather than with the
//! `metrics 0.22` + `metrics-exporter-prometheus 0.13` crates that rumqttd
//! already builds (Cargo.lock): their recorder is process-global, so every
//! daemon in one process (the integration tests run many) would share one
//! set of counters, and anything else recording through the `metrics`
//! facade would land in our exposition; the exporter's listener also
//! renders without a hook, so the queue's depth would need a polling task.
//! The counters are the atomics of [`Stats`], which systemd's `STATUS=`
//! line already reads; the endpoint reads them per scrape, plus one
//! `COUNT(*)` for the queue's depth. The HTTP side is the least a scraper
//! needs: one request per connection, `GET /metrics`,
//! `Connection: close`.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::stats::Stats;
use crate::store::{Health, Store};

/// How long one scrape may take to send its request and read its answer.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the queue's depth may take to count; past it the gauge is left
/// out of that scrape rather than holding the scraper.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);
/// The largest request head read.
const MAX_REQUEST: usize = 8 * 1024;

/// Every metric name the endpoint serves.
pub const NAMES: [&str; 13] = [
    "axion_push_commands_total",
    "axion_push_commands_rejected_total",
    "axion_push_commands_dropped_total",
    "axion_push_pushes_total",
    "axion_push_deactivations_total",
    "axion_push_retries_total",
    "axion_push_expirations_total",
    "axion_push_delivery_queue_depth",
    "axion_push_delivery_duration_seconds",
    "axion_push_broker_connected",
    "axion_push_database_available",
    "axion_push_broker_refusals_total",
    "axion_push_broker_connections",
];

/// What a scrape reads.
#[derive(Clone)]
pub struct Sources {
    pub stats: Arc<Stats>,
    pub store: Store,
    pub health: Health,
    /// True while connected to the broker and subscribed to commands.
    pub broker: watch::Receiver<bool>,
}

/// Binds `addr`; the error names the config key.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr} (axion_push.metrics.listen): {e}"))
}

/// Serves scrapes until `stop`, then closes every connection still open.
pub async fn serve(listener: TcpListener, sources: Sources, stop: CancellationToken) {
    let connections = TaskTracker::new();
    loop {
        let (stream, _) = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics endpoint: accept failed");
                    tokio::select! {
                        () = stop.cancelled() => break,
                        () = tokio::time::sleep(Duration::from_millis(100)) => continue,
                    }
                }
            },
        };
        let sources = sources.clone();
        let stop = stop.clone();
        connections.spawn(async move {
            tokio::select! {
                () = stop.cancelled() => {}
                _ = tokio::time::timeout(CONNECTION_TIMEOUT, answer(stream, &sources)) => {}
            }
        });
    }
    connections.close();
    connections.wait().await;
}

async fn answer(mut stream: TcpStream, sources: &Sources) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 || head.len() + n > MAX_REQUEST {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let mut parts = line.lines().next().unwrap_or_default().split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (status, extra, body) = match (method, path) {
        ("GET", "/metrics") => ("200 OK", "", render(sources).await),
        ("GET", _) => (
            "404 Not Found",
            "",
            "only /metrics is served here\n".to_owned(),
        ),
        // RFC 9110 §15.5.6: a 405 names the methods the resource allows.
        _ => (
            "405 Method Not Allowed",
            "Allow: GET\r\n",
            "only GET /metrics\n".to_owned(),
        ),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\n{extra}Content-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// The exposition text.
pub async fn render(sources: &Sources) -> String {
    let depth = tokio::time::timeout(QUERY_TIMEOUT, sources.store.pending_deliveries()).await;
    // A scrape only reads the database's state: a read can work while
    // writes fail (a lock held by another process), and letting it flip the
    // state would make the retained status flap.
    let depth = match depth {
        Ok(Ok(depth)) => Some(depth),
        Ok(Err(_)) | Err(_) => None,
    };
    let stats = &sources.stats;
    let mut out = String::with_capacity(4096);
    header(
        &mut out,
        "axion_push_commands_total",
        "counter",
        "Commands answered (applied or refused), by verb.",
    );
    for (verb, n) in stats.by_verb.snapshot() {
        let _ = writeln!(out, "axion_push_commands_total{{verb=\"{verb}\"}} {n}");
    }
    header(
        &mut out,
        "axion_push_commands_rejected_total",
        "counter",
        "Commands refused with an error, by verb.",
    );
    for (verb, n) in stats.rejected_by_verb.snapshot() {
        let _ = writeln!(
            out,
            "axion_push_commands_rejected_total{{verb=\"{verb}\"}} {n}"
        );
    }
    header(
        &mut out,
        "axion_push_pushes_total",
        "counter",
        "Push requests by push service host and answer class (2xx, gone = 404/410, 429, 5xx, 413, 4xx, timeout, connection, policy, other).",
    );
    for (host, class, n) in stats.pushes.snapshot() {
        let _ = writeln!(
            out,
            "axion_push_pushes_total{{host=\"{}\",class=\"{class}\"}} {n}",
            escape(&host)
        );
    }
    for (name, help, value) in [
        (
            "axion_push_commands_dropped_total",
            "QoS 0 commands dropped unread because the daemon's intake was full (the database is slow or away).",
            Stats::get(&stats.dropped),
        ),
        (
            "axion_push_deactivations_total",
            "Subscriptions deactivated because their push service called them gone (404/410).",
            Stats::get(&stats.deactivated),
        ),
        (
            "axion_push_stale_total",
            "Subscriptions deactivated as stale: their push service refused their pushes, and took others', for subscriptions.expire_after.",
            Stats::get(&stats.stale),
        ),
        (
            "axion_push_retries_total",
            "Push attempts put back in the queue for a retry.",
            Stats::get(&stats.retried),
        ),
        (
            "axion_push_expirations_total",
            "Deliveries dropped because their message's TTL ran out while waiting for a retry.",
            Stats::get(&stats.expired),
        ),
    ] {
        header(&mut out, name, "counter", help);
        let _ = writeln!(out, "{name} {value}");
    }
    header(
        &mut out,
        "axion_push_delivery_queue_depth",
        "gauge",
        "Deliveries in the database queue, due or waiting for a retry (all instances).",
    );
    if let Some(depth) = depth {
        let _ = writeln!(out, "axion_push_delivery_queue_depth {depth}");
    }
    let latency = stats.latency.snapshot();
    header(
        &mut out,
        "axion_push_delivery_duration_seconds",
        "histogram",
        "From a push request's start to the push service's answer (or the request's failure).",
    );
    for (bound, n) in &latency.buckets {
        let _ = writeln!(
            out,
            "axion_push_delivery_duration_seconds_bucket{{le=\"{bound}\"}} {n}"
        );
    }
    let _ = writeln!(
        out,
        "axion_push_delivery_duration_seconds_bucket{{le=\"+Inf\"}} {}\naxion_push_delivery_duration_seconds_sum {}\naxion_push_delivery_duration_seconds_count {}",
        latency.count, latency.sum_seconds, latency.count
    );
    header(
        &mut out,
        "axion_push_broker_connected",
        "gauge",
        "1 while connected to the MQTT broker and subscribed to commands.",
    );
    let _ = writeln!(
        out,
        "axion_push_broker_connected {}",
        u8::from(*sources.broker.borrow())
    );
    header(
        &mut out,
        "axion_push_database_available",
        "gauge",
        "1 while the database answers.",
    );
    let _ = writeln!(
        out,
        "axion_push_database_available {}",
        u8::from(sources.health.is_available())
    );
    header(
        &mut out,
        "axion_push_broker_refusals_total",
        "counter",
        "What the embedded broker's gateway refused, by reason (login, origin, address_cap, timeout, protocol, will, publish, retain, subscribe, endpoints, rate).",
    );
    for (reason, n) in stats.gateway.refusals() {
        let _ = writeln!(
            out,
            "axion_push_broker_refusals_total{{reason=\"{reason}\"}} {n}"
        );
    }
    header(
        &mut out,
        "axion_push_broker_connections",
        "gauge",
        "Open connections on the embedded broker's listeners (mqtt, websocket).",
    );
    for (listener, n) in stats.gateway.connections() {
        let _ = writeln!(
            out,
            "axion_push_broker_connections{{listener=\"{listener}\"}} {n}"
        );
    }
    out
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A label value: backslash, quote and newline escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Reads one sample's value from exposition text: `name` followed by its
/// labels exactly as written (`{verb="send"}`), or nothing.
pub fn sample(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (key, value) = l.rsplit_once(' ')?;
        (key == name_and_labels).then(|| value.parse().ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn a_sample_is_read_by_its_name_and_labels() {
        let text = "# TYPE x counter\nx{a=\"1\"} 3\nx 4\ny_bucket{le=\"+Inf\"} 2\n";
        assert_eq!(sample(text, "x{a=\"1\"}"), Some(3.0));
        assert_eq!(sample(text, "x"), Some(4.0));
        assert_eq!(sample(text, "y_bucket{le=\"+Inf\"}"), Some(2.0));
        assert_eq!(sample(text, "z"), None);
    }
}
