//! axion-push bridges MQTT real-time notifications to the Web Push API.
//!
//! A service publishes a notification on `axion/{package}/push/{user}/send`;
//! the daemon publishes it as a real-time event on `axion/{package}/push/{user}`
//! and delivers it, encrypted (RFC 8291) and signed (RFC 8292), to every
//! active browser subscription of that user. The contract is `DESIGN.md`.
//!
//! # Map
//!
//! Leaves (they import nothing of ours but `model`):
//! - [`model`]: validated nouns — package, user, group, endpoint, keys.
//! - [`topics`]: the topic grammar, both ways.
//! - [`config`]: `config.yaml`, defaults, VAPID key forms, problems by key path.
//! - [`notification`]: what the user sees, parsed from a send command.
//! - [`report`]: result reports, real-time events, the egress channel.
//! - [`backoff`]: exponential delays with jitter, and the one for database
//!   outages.
//! - [`clock`]: milliseconds, the unit of every stored and reported time.
//! - [`token`]: subscribe tokens the host application issues.
//! - [`receipt`]: receipt tokens each push carries, and what a browser may
//!   report with one (shown, failed, clicked, closed).
//! - [`stats`]: live counters since start (by verb, push service host and
//!   answer class, a latency histogram).
//!
//! Adapters:
//! - [`store`]: every SQL statement; the Axion table, groups, and the
//!   durable delivery queue.
//! - [`push`]: encryption, VAPID, payload, endpoint policy, HTTP, outcomes.
//! - [`broker`]: the embedded rumqttd broker behind our gateway, which
//!   checks every login, confines each browser to its own user's topics
//!   (built with `topics`) and bounds connections.
//! - [`metrics`]: the optional Prometheus endpoint, reading `stats`, the
//!   queue's depth and the broker and database states.
//! - [`systemd`]: READY, WATCHDOG, STATUS and STOPPING for `Type=notify`.
//!
//! Flow:
//! - [`command`]: a message parsed into a command and applied; a send is
//!   recorded in the queue.
//! - [`delivery`]: the engine that works the queue — concurrent requests,
//!   retries, per push-service circuit breakers, result reports — and the
//!   ledger of what the broker acknowledged.
//! - [`mqtt`]: the client loop — intake, ordered acks, egress through an
//!   outbox that knows what the broker acknowledged.
//! - [`daemon`]: wiring, start and stop order.
//! - [`cli`]: the `axion-push` verbs.
//!
//! # A send command's path
//!
//! `mqtt` receives `axion/crm/push/alice/send` → `command::Processor` parses
//! the topic (`topics`) and the notification (`notification`), records the
//! send and one delivery per active subscription of alice in one
//! transaction (`store`), and hands the real-time event to egress (`report`)
//! → `mqtt` acknowledges the command → `delivery` claims the deliveries and
//! sends them over `push` (encrypt, sign, POST, read the answer as an
//! `Outcome`) → each is settled in the queue: delivered, deactivated
//! (404/410), refused, expired, or put back for a retry → the result report
//! goes to egress and `mqtt` publishes it → once the broker acknowledges an
//! event or a report, `delivery`'s ledger marks it published; one never
//! acknowledged is published again at the next start, or by another daemon
//! on the same database once it looks orphaned.

pub mod backoff;
pub mod broker;
pub mod cli;
pub mod clock;
pub mod command;
pub mod config;
pub mod daemon;
pub mod delivery;
pub mod metrics;
pub mod model;
pub mod mqtt;
pub mod notification;
pub mod push;
pub mod receipt;
pub mod report;
pub mod stats;
pub mod store;
pub mod systemd;
pub mod token;
pub mod topics;
