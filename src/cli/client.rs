//! A short-lived MQTT client for the verbs that talk to a running daemon.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use rumqttc::{AsyncClient, Event, Incoming, QoS, SubscribeFilter};

use crate::config::Config;
use crate::model::{Package, User};
use crate::report::ResultReport;
use crate::topics::Topics;

fn connect(config: &Config, purpose: &str) -> Result<(AsyncClient, rumqttc::EventLoop, String)> {
    let settings = &config.settings;
    let client_id = format!("axion-push-{purpose}-{}", crate::command::new_id());
    let mut options =
        crate::mqtt::options(&settings.mqtt, Some(settings.broker.listen), &client_id)?;
    options.set_clean_session(true);
    let (host, port) = options.broker_address();
    let (client, mut eventloop) = AsyncClient::new(options, 16);
    eventloop.set_network_options(crate::mqtt::network_options());
    Ok((client, eventloop, format!("{host}:{port}")))
}

/// Why the broker could not be reached, and what to check: the external
/// broker `mqtt.url` names (its password masked), or `serve` for the
/// embedded one. The cause is said once (rumqttc's errors repeat their
/// source in their own text).
fn unreachable(config: &Config, broker: &str, error: &rumqttc::ConnectionError) -> anyhow::Error {
    let cause = causes(error);
    let file = config.source.as_ref().map_or_else(
        || "the built-in defaults".to_owned(),
        |f| f.display().to_string(),
    );
    match &config.settings.mqtt.url {
        Some(url) => anyhow::anyhow!(
            "cannot reach the MQTT broker at {} (axion_push.mqtt.url in {file}): {cause}. \
             Is that broker running, and reachable from here?",
            crate::store::redact_url(url.as_str())
        ),
        None => anyhow::anyhow!(
            "cannot reach the MQTT broker at {broker} (axion-push's embedded broker, \
             axion_push.broker.listen in {file}): {cause}. Is `axion-push serve` running with this config?"
        ),
    }
}

/// An error and its sources in one line, leaving out a level whose text
/// only repeats the next one's behind a prefix ("I/O: Connection refused"
/// before "Connection refused").
fn causes(error: &dyn std::error::Error) -> String {
    let mut texts = vec![error.to_string()];
    let mut source = error.source();
    while let Some(next) = source {
        let text = next.to_string();
        if texts.last().is_some_and(|outer| outer.contains(&text)) {
            texts.pop();
        }
        texts.push(text);
        source = next.source();
    }
    texts.join(": ")
}

/// A command to publish, and where and how long to wait for its report.
pub(super) struct Request<'a> {
    pub command_topic: &'a str,
    pub result_topic: &'a str,
    pub id: &'a str,
    pub payload: Vec<u8>,
    pub timeout: Duration,
}

/// What to listen for after a send's report: its receipts.
pub(super) struct Receipts<'a> {
    /// The result topics the receipts come on (the send's users').
    pub filter: String,
    /// How long after the report.
    pub wait: Duration,
    /// Called with each receipt of the send, in arrival order.
    pub each: &'a mut dyn FnMut(&ResultReport),
}

/// Publishes the command and waits for its report (the one with its `id` on
/// its result topic), handing it to `on_report` as soon as it comes; with
/// `receipts`, then listens for the send's receipts for their `wait`.
/// Everything is subscribed before the command goes out, so a receipt that
/// comes before the report is not missed (it is handed over after it).
pub(super) async fn request_watching(
    config: &Config,
    request: Request<'_>,
    mut receipts: Option<Receipts<'_>>,
    on_report: impl FnOnce(&ResultReport),
) -> Result<()> {
    let Request {
        command_topic,
        result_topic,
        id,
        payload,
        timeout,
    } = request;
    let (client, mut eventloop, broker) = connect(config, "cli")?;
    let mut payload = Some(payload);
    let mut early: Vec<ResultReport> = Vec::new();
    let mut filters = vec![SubscribeFilter::new(
        result_topic.to_owned(),
        QoS::AtLeastOnce,
    )];
    if let Some(r) = &receipts {
        filters.push(SubscribeFilter::new(r.filter.clone(), QoS::AtLeastOnce));
    }
    let is_receipt = |report: &ResultReport| {
        report.command == "receipt" && report.send_id.as_deref() == Some(id)
    };
    let wait = async {
        loop {
            let event = eventloop
                .poll()
                .await
                .map_err(|e| unreachable(config, &broker, &e))?;
            match event {
                Event::Incoming(Incoming::ConnAck(_)) => {
                    client.try_subscribe_many(filters.clone())?;
                }
                Event::Incoming(Incoming::SubAck(_)) => {
                    if let Some(payload) = payload.take() {
                        client.try_publish(command_topic, QoS::AtLeastOnce, false, payload)?;
                    }
                }
                Event::Incoming(Incoming::Publish(p)) => {
                    match serde_json::from_slice::<ResultReport>(&p.payload) {
                        Ok(report) if p.topic == result_topic && report.id == id => {
                            return Ok::<_, anyhow::Error>(report);
                        }
                        Ok(report) if is_receipt(&report) => early.push(report),
                        _ => {}
                    }
                }
                _ => {}
            }
        }
    };
    let report = match tokio::time::timeout(timeout, wait).await {
        Ok(result) => result?,
        Err(_) => bail!(
            "no result from the daemon within {}s: is `axion-push serve` running and connected to the broker at {broker}?",
            timeout.as_secs()
        ),
    };
    on_report(&report);
    if let Some(receipts) = receipts.as_mut() {
        for receipt in &early {
            (receipts.each)(receipt);
        }
        let listen = async {
            loop {
                let event = match eventloop.poll().await {
                    Ok(event) => event,
                    Err(e) => return Err::<(), _>(unreachable(config, &broker, &e)),
                };
                if let Event::Incoming(Incoming::Publish(p)) = event
                    && let Ok(report) = serde_json::from_slice::<ResultReport>(&p.payload)
                    && is_receipt(&report)
                {
                    (receipts.each)(&report);
                }
            }
        };
        if let Ok(result) = tokio::time::timeout(receipts.wait, listen).await {
            result?;
        }
    }
    let _ = client.try_disconnect();
    Ok(())
}

/// Prints every real-time event as a JSON line until interrupted.
pub(super) async fn listen(
    config: &Config,
    package: Option<&str>,
    user: Option<&str>,
) -> Result<ExitCode> {
    let package = package
        .map(Package::parse)
        .transpose()
        .context("--package")?;
    let user = user.map(User::parse).transpose().context("USER")?;
    let topics = Topics::new(config.settings.mqtt.topic_prefix.clone());
    let filter = topics.event_filter(package.as_ref(), user.as_ref());
    let (client, mut eventloop, broker) = connect(config, "listen")?;
    let mut reported = false;
    loop {
        let event = tokio::select! {
            event = eventloop.poll() => event,
            _ = tokio::signal::ctrl_c() => break,
        };
        match event {
            Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                reported = false;
                client.try_subscribe(filter.as_str(), QoS::AtMostOnce)?;
            }
            Ok(Event::Incoming(Incoming::SubAck(_))) => {
                eprintln!("listening on {filter} at {broker}");
            }
            Ok(Event::Incoming(Incoming::Publish(p))) => {
                let event: serde_json::Value =
                    serde_json::from_slice(&p.payload).unwrap_or_else(|_| {
                        serde_json::Value::String(String::from_utf8_lossy(&p.payload).into_owned())
                    });
                println!("{}", serde_json::json!({"topic": p.topic, "event": event}));
            }
            Ok(_) => {}
            Err(e) => {
                if !reported {
                    eprintln!("broker {broker}: {e}; retrying");
                    reported = true;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    let _ = client.try_disconnect();
    Ok(ExitCode::SUCCESS)
}

/// How long after subscribing a retained message may take to arrive.
const RETAINED_GRACE: Duration = Duration::from_secs(2);

/// The retained daemon status: `None` when the broker holds none. An error
/// when the broker cannot be reached.
pub(super) async fn daemon_status(
    config: &Config,
    topic: &str,
    timeout: Duration,
) -> Result<(Option<serde_json::Value>, String)> {
    let (client, mut eventloop, broker) = connect(config, "status")?;
    let mut none_after: Option<tokio::time::Instant> = None;
    let wait = async {
        // A retained message comes right after the SUBACK; none within
        // `RETAINED_GRACE` of it means the broker holds none.
        loop {
            let event = match none_after {
                Some(deadline) => match tokio::time::timeout_at(deadline, eventloop.poll()).await {
                    Ok(event) => event,
                    Err(_) => return Ok(None),
                },
                None => eventloop.poll().await,
            };
            let event = event.map_err(|e| unreachable(config, &broker, &e))?;
            match event {
                Event::Incoming(Incoming::ConnAck(_)) => {
                    client.try_subscribe(topic, QoS::AtLeastOnce)?;
                }
                Event::Incoming(Incoming::SubAck(_)) => {
                    none_after = Some(tokio::time::Instant::now() + RETAINED_GRACE);
                }
                Event::Incoming(Incoming::Publish(p)) if p.topic == topic => {
                    let value = serde_json::from_slice(&p.payload).unwrap_or_else(|_| {
                        serde_json::Value::String(String::from_utf8_lossy(&p.payload).into_owned())
                    });
                    return Ok::<_, anyhow::Error>(Some(value));
                }
                _ => {}
            }
        }
    };
    let status = match tokio::time::timeout(timeout, wait).await {
        Ok(result) => result?,
        Err(_) => bail!(
            "the MQTT broker at {broker} did not answer within {}s",
            timeout.as_secs()
        ),
    };
    let _ = client.try_disconnect();
    Ok((status, broker))
}
