//! The stop deadline: once the recording is stopping, when its uploads must be done.

use std::time::Duration;

/// The recording is stopping: uploads must be done by `deadline` (the rest of the shutdown
/// time keeps what they could not store and writes the manifest).
#[derive(Debug)]
pub struct Stopping {
    // A watch, not a polled flag: the tasks waiting on it sleep until it is set (a poll
    // every 100 ms per waiting task cost more CPU than the recording itself).
    deadline: tokio::sync::watch::Sender<Option<tokio::time::Instant>>,
}

impl Default for Stopping {
    fn default() -> Self {
        Self {
            deadline: tokio::sync::watch::Sender::new(None),
        }
    }
}

impl Stopping {
    /// The first call sets the deadline; later ones keep it.
    pub fn begin(&self, uploads_within: Duration) {
        self.deadline.send_if_modified(|deadline| {
            let first = deadline.is_none();
            if first {
                *deadline = Some(tokio::time::Instant::now() + uploads_within);
            }
            first
        });
    }

    /// Resolves when the recording is stopping and its upload deadline has passed.
    pub(crate) async fn passed(&self) {
        let mut watch = self.deadline.subscribe();
        let deadline = match watch.wait_for(Option::is_some).await {
            Ok(deadline) => *deadline,
            // Unreachable while `self` lives (it owns the sender).
            Err(_) => None,
        };
        match deadline {
            Some(deadline) => tokio::time::sleep_until(deadline).await,
            None => std::future::pending().await,
        }
    }
}
