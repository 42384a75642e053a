//! Whether the database answers, shared by everything that writes to it, so
//! an outage is logged once when it starts and once when it ends — not once
//! per command or per delivery — and can be watched (the daemon shows it
//! on its retained status topic).

use std::sync::Arc;

use tokio::sync::watch;

use super::StoreError;

#[derive(Debug, Clone)]
pub struct Health {
    available: Arc<watch::Sender<bool>>,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            available: Arc::new(watch::Sender::new(true)),
        }
    }
}

impl Health {
    /// Records a failed statement; logs when this starts an outage.
    pub fn failed(&self, error: &StoreError, what: &str) {
        if self.set(false) {
            tracing::error!(
                error = %error,
                "database unavailable while {what}: commands stay unacknowledged and deliveries wait until it is back"
            );
        }
    }

    /// Records a statement that worked; logs when this ends an outage.
    pub fn ok(&self) {
        if self.set(true) {
            tracing::info!("database available again");
        }
    }

    /// Sets the state; true (and watchers told) only when it changed.
    fn set(&self, available: bool) -> bool {
        self.available.send_if_modified(|now| {
            let changed = *now != available;
            *now = available;
            changed
        })
    }

    pub fn is_available(&self) -> bool {
        *self.available.borrow()
    }

    /// Follows the database's availability.
    pub fn watch(&self) -> watch::Receiver<bool> {
        self.available.subscribe()
    }
}
