//! The embedded broker's resource limits: a connection that does not log
//! in is closed after `broker.connect_timeout`, at most
//! `broker.max_connections` are open at once, and with file descriptors
//! exhausted the broker waits instead of spinning a core.

mod harness;
#[path = "harness/process.rs"]
mod process;

use std::time::{Duration, Instant};

use harness::{Harness, PushService, WAIT};
use tokio::io::AsyncReadExt;

/// Connects a client that logs in; true once it has its CONNACK.
async fn logs_in(port: u16, within: Duration) -> bool {
    let options = rumqttc::MqttOptions::new(format!("late-{port}"), "127.0.0.1", port);
    let (_client, mut eventloop) = rumqttc::AsyncClient::new(options, 8);
    let connack = async {
        loop {
            match eventloop.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Incoming::ConnAck(_))) => return,
                Ok(_) => {}
                // Refused while the broker is out of descriptors: again.
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    };
    tokio::time::timeout(within, connack).await.is_ok()
}

/// rumqttd gave every connection 60 s to send CONNECT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_does_not_log_in_is_closed_after_the_connect_timeout() {
    let h =
        Harness::start_with(|c| c.settings.broker.connect_timeout = Duration::from_secs(1)).await;
    let addr = h.daemon().embedded_broker().unwrap().listen;
    let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
    let started = Instant::now();
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(WAIT, idle.read(&mut byte))
        .await
        .expect("the broker closes an idle connection within the wait");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    h.stop().await;
}

/// rumqttd allowed 10,000 connections; `max_connections` caps both
/// listeners together, and a client beyond waits for a free slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_max_connections_a_client_waits_for_a_free_slot() {
    let h = Harness::start_with(|c| {
        // The test's own client holds one.
        c.settings.broker.max_connections = 3;
        c.settings.broker.connect_timeout = Duration::from_secs(60);
    })
    .await;
    let port = h.daemon().embedded_broker().unwrap().listen.port();
    let first = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let _second = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let waiting = tokio::spawn(logs_in(port, WAIT));
    // Nothing frees a slot for a second: the client must still wait.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!waiting.is_finished(), "a client beyond the cap got in");
    drop(first);
    assert!(waiting.await.unwrap(), "the client got the freed slot");
    h.stop().await;
}

/// CPU time (user + system) of a process, from `/proc/PID/stat`, in clock
/// ticks (1/100 s on Linux).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which is in parentheses.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// With 260 idle sockets under a limit of 200 file descriptors, rumqttd's
/// accept loop retried at once and burned a core (5 s of CPU in 5 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_file_descriptors_exhausted_the_broker_waits_instead_of_spinning() {
    harness::init_logging();
    let dir = tempfile::tempdir().unwrap();
    let push = PushService::start().await;
    let (config, port) = process::write_config(dir.path(), &push, "");
    let yaml = std::fs::read_to_string(&config).unwrap().replace(
        &format!("    listen: 127.0.0.1:{port}\n"),
        &format!("    listen: 127.0.0.1:{port}\n    connect_timeout: 60s\n"),
    );
    std::fs::write(&config, yaml).unwrap();
    let mut command = std::process::Command::new("sh");
    command
        .arg("-c")
        .arg(format!(
            "ulimit -n 200 && exec '{}' serve --config '{}'",
            process::bin(),
            config.display()
        ))
        .env("RUST_LOG", "info");
    let mut serve = process::Serve::spawn(command);
    serve.wait_for("axion-push is running");

    let mut idle = Vec::new();
    for _ in 0..260 {
        idle.push(
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap(),
        );
    }
    serve.wait_for("cannot accept connections");
    let pid = serve.child.id();
    let before = cpu_ticks(pid);
    // A measurement window, not a wait for an event.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let spent = cpu_ticks(pid) - before;
    assert!(
        spent < 40,
        "{spent} ticks of CPU in 2 s while out of descriptors"
    );

    drop(idle);
    assert!(
        logs_in(port, WAIT).await,
        "a client logs in once the idle ones are gone"
    );
    serve.wait_for("accepts connections again");
}
