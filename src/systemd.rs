//! systemd's notify protocol (`Type=notify`): `READY=1` once the daemon
//! serves, `WATCHDOG=1` while it is alive, `STATUS=` with live counters,
//! `STOPPING=1` when it stops. Without `NOTIFY_SOCKET` (not under systemd,
//! or another service type) every call does nothing.
//!
//! "Alive" is more than "the process runs": the pings come from a task on
//! the daemon's runtime (a blocked runtime stops them) and only while every
//! one of the daemon's long-running tasks still runs (one that panicked
//! stops them). systemd then restarts the daemon, which resumes its queue.

use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

use crate::daemon::Monitor;

/// How often `STATUS=` is refreshed when no watchdog asks for more.
const STATUS_EVERY: Duration = Duration::from_secs(5);

fn notify(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

pub fn ready(status: &str) {
    notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

pub fn stopping() {
    notify(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// Feeds the watchdog (at half its interval) and refreshes `STATUS=` until
/// `stop`.
pub async fn supervise(monitor: Monitor, stop: CancellationToken) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    let watchdog = sd_notify::watchdog_enabled();
    let every = watchdog.map_or(STATUS_EVERY, |w| (w / 2).min(STATUS_EVERY));
    let mut reported_dead = false;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        let status = monitor.status_line();
        if monitor.is_alive() {
            reported_dead = false;
            if watchdog.is_some() {
                notify(&[NotifyState::Watchdog, NotifyState::Status(&status)]);
            } else {
                notify(&[NotifyState::Status(&status)]);
            }
        } else if !reported_dead {
            reported_dead = true;
            tracing::error!(
                "a task of the daemon has stopped: no longer feeding systemd's watchdog"
            );
            notify(&[NotifyState::Status("a task of the daemon has stopped")]);
        }
    }
}
