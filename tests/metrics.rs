//! The Prometheus endpoint (`axion_push.metrics`): off by default, loopback
//! only unless allowed, and what a scrape shows after real deliveries.

mod harness;

use std::net::SocketAddr;

use axion_push::config::{Config, ConfigError};
use axion_push::metrics::sample;
use harness::{Harness, Reply};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `GET path` on the endpoint: the status line and the body.
async fn get(addr: SocketAddr, path: &str) -> (String, String) {
    let (head, body) = request(addr, "GET", path).await;
    (head.lines().next().unwrap().to_owned(), body)
}

/// `method path` on the endpoint: the response head and the body.
async fn request(addr: SocketAddr, method: &str, path: &str) -> (String, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    let mut response = String::new();
    tokio::time::timeout(harness::WAIT, stream.read_to_string(&mut response))
        .await
        .expect("the endpoint answers")
        .unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    (head.to_owned(), body.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_deactivated_as_stale_is_counted() {
    let h = Harness::start_with(|c| {
        c.settings.metrics.listen = Some("127.0.0.1:0".parse().unwrap());
        c.settings.subscriptions.expire_after = std::time::Duration::ZERO;
    })
    .await;
    let addr = h.daemon().metrics_addr().expect("metrics are on");
    let (good, refused) = (h.browser("good"), h.browser("refused"));
    h.subscribe("crm", "bob", &good).await;
    h.subscribe("crm", "alice", &refused).await;
    h.push.script(&refused, [Reply::status(400)]);
    let delivered = h.send("crm", "bob", json!({"title": "for bob"})).await;
    assert_eq!(delivered["delivered"], 1, "{delivered}");
    let stale = h.send("crm", "alice", json!({"title": "for alice"})).await;
    assert_eq!(stale["failures"]["stale"], 1, "{stale}");

    let (_, text) = get(addr, "/metrics").await;
    assert_eq!(sample(&text, "axion_push_stale_total"), Some(1.0), "{text}");
    h.stop().await;
}

#[tokio::test]
async fn metrics_are_off_by_default() {
    assert_eq!(Config::default().settings.metrics.listen, None);
    let h = Harness::start().await;
    assert_eq!(h.daemon().metrics_addr(), None, "nothing listens");
    h.stop().await;
}

#[tokio::test]
async fn a_scrape_shows_pushes_by_host_and_class_the_deactivation_and_the_states() {
    let h = Harness::start_with(|c| {
        c.settings.metrics.listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let addr = h.daemon().metrics_addr().expect("metrics are on");
    assert_ne!(addr.port(), 0, "the bound port is reported");
    let ok = h.browser("ok");
    let gone = h.browser("gone");
    h.push.script(&gone, [Reply::status(410)]);
    h.subscribe("crm", "alice", &ok).await;
    h.subscribe("crm", "alice", &gone).await;
    let result = h
        .send("crm", "alice", json!({"id": "m-1", "title": "T"}))
        .await;
    assert_eq!(result["delivered"], 1, "{result}");
    assert_eq!(result["deactivated"], 1, "{result}");
    assert_eq!(result["queued"], 0, "{result}");

    let (status, text) = get(addr, "/metrics").await;
    assert!(status.contains("200"), "{status}");
    let value = |key: &str| sample(&text, key).unwrap_or_else(|| panic!("no {key} in:\n{text}"));
    assert_eq!(value(r#"axion_push_commands_total{verb="send"}"#), 1.0);
    assert_eq!(value(r#"axion_push_commands_total{verb="subscribe"}"#), 2.0);
    assert_eq!(
        value(r#"axion_push_commands_rejected_total{verb="send"}"#),
        0.0
    );
    assert_eq!(
        value(r#"axion_push_pushes_total{host="127.0.0.1",class="2xx"}"#),
        1.0
    );
    assert_eq!(
        value(r#"axion_push_pushes_total{host="127.0.0.1",class="gone"}"#),
        1.0
    );
    assert_eq!(value("axion_push_deactivations_total"), 1.0);
    assert_eq!(value("axion_push_delivery_queue_depth"), 0.0);
    assert_eq!(value("axion_push_database_available"), 1.0);
    assert_eq!(value("axion_push_broker_connected"), 1.0);
    assert_eq!(value("axion_push_delivery_duration_seconds_count"), 2.0);
    assert_eq!(
        value(r#"axion_push_delivery_duration_seconds_bucket{le="+Inf"}"#),
        2.0
    );
    assert!(
        !text.contains(&ok.endpoint) && !text.contains("/push/"),
        "endpoints are capabilities: the host only"
    );
    h.stop().await;
}

#[tokio::test]
async fn a_rejected_command_is_counted_under_its_verb() {
    let h = Harness::start_with(|c| {
        c.settings.metrics.listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let result = h
        .command(
            &h.command_topic("crm", "alice", axion_push::topics::Verb::Send),
            b"{}",
        )
        .await;
    assert_eq!(result["ok"], false, "{result}");
    let (_, text) = get(h.daemon().metrics_addr().unwrap(), "/metrics").await;
    assert_eq!(
        sample(&text, r#"axion_push_commands_rejected_total{verb="send"}"#),
        Some(1.0),
        "{text}"
    );
    h.stop().await;
}

#[tokio::test]
async fn only_get_metrics_is_served() {
    let h = Harness::start_with(|c| {
        c.settings.metrics.listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let (status, _) = get(h.daemon().metrics_addr().unwrap(), "/").await;
    assert!(status.contains("404"), "{status}");
    h.stop().await;
}

#[tokio::test]
async fn another_method_is_refused_with_the_allowed_one_named() {
    let h = Harness::start_with(|c| {
        c.settings.metrics.listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let (head, _) = request(h.daemon().metrics_addr().unwrap(), "POST", "/metrics").await;
    assert!(head.starts_with("HTTP/1.1 405"), "{head}");
    assert!(
        head.lines().any(|l| l.eq_ignore_ascii_case("allow: GET")),
        "RFC 9110 §15.5.6: a 405 names the allowed methods\n{head}"
    );
    h.stop().await;
}

#[tokio::test]
async fn a_scrape_connection_is_closed_when_the_daemon_stops() {
    let h = Harness::start_with(|c| {
        c.settings.metrics.listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    // A scraper that connected and has not sent its request yet.
    let mut idle = tokio::net::TcpStream::connect(h.daemon().metrics_addr().unwrap())
        .await
        .unwrap();
    h.stop().await;
    // Closed as the daemon stopped, not when the connection's own timeout
    // (10 s) would have ended it.
    let mut rest = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(1),
        idle.read_to_end(&mut rest),
    )
    .await;
    assert!(
        matches!(read, Ok(Ok(0))),
        "the connection outlived the daemon: {read:?}"
    );
}

#[test]
fn a_non_loopback_listen_address_is_a_config_problem_naming_the_key() {
    let yaml = "axion_push:\n  metrics:\n    listen: 0.0.0.0:9464\n";
    match Config::from_yaml(yaml, "test") {
        Err(ConfigError::Invalid { problems, .. }) => {
            assert_eq!(problems.len(), 1, "{problems:?}");
            assert_eq!(problems[0].path, "axion_push.metrics.listen");
            assert!(
                problems[0].message.contains("allow_remote"),
                "{}",
                problems[0].message
            );
        }
        other => panic!("expected a problem, got {other:?}"),
    }
    let allowed = "axion_push:\n  metrics:\n    listen: 0.0.0.0:9464\n    allow_remote: true\n";
    assert!(Config::from_yaml(allowed, "test").is_ok());
}

#[tokio::test]
async fn a_taken_metrics_port_stops_the_start_naming_the_key() {
    harness::init_logging();
    let dir = tempfile::tempdir().unwrap();
    let push = harness::PushService::start().await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut config = harness::test_config(dir.path(), &push);
    config.settings.metrics.listen = Some(taken.local_addr().unwrap());
    let error = match axion_push::daemon::Daemon::start(config).await {
        Ok(_) => panic!("the daemon started on a taken metrics port"),
        Err(e) => format!("{e:#}"),
    };
    assert!(error.contains("axion_push.metrics.listen"), "{error}");
}

#[tokio::test]
async fn a_retried_push_counts_its_5xx_and_the_retry() {
    let h = Harness::start_with(|c| {
        c.settings.metrics.listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let browser = h.browser("b");
    h.push.script(&browser, [Reply::status(503)]);
    h.subscribe("crm", "alice", &browser).await;
    h.send("crm", "alice", json!({"id": "r-1", "title": "T"}))
        .await;
    let last = h.final_result("crm", "alice", "r-1").await;
    assert_eq!(last["delivered"], 1, "{last}");
    let (_, text) = get(h.daemon().metrics_addr().unwrap(), "/metrics").await;
    let value = |key: &str| sample(&text, key).unwrap_or_else(|| panic!("no {key} in:\n{text}"));
    assert_eq!(
        value(r#"axion_push_pushes_total{host="127.0.0.1",class="5xx"}"#),
        1.0
    );
    assert_eq!(
        value(r#"axion_push_pushes_total{host="127.0.0.1",class="2xx"}"#),
        1.0
    );
    assert_eq!(value("axion_push_retries_total"), 1.0);
    assert_eq!(value("axion_push_delivery_queue_depth"), 0.0);
    h.stop().await;
}
