//! One relay push: an ffmpeg publishing the relayed anchor's synthetic stream (pass-through: as
//! the anchor publishes it) to one `PublishCdnUrl`, restarted after a pause when it ends by
//! itself (the push server refused it or dropped it), as TRTC keeps retrying a CDN push while
//! the task runs; stopped when the task no longer feeds it.

use super::Shared;
use crate::binaries;
use crate::media::StreamSpec;
use crate::process::Supervised;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Pause before a push that ended by itself is tried again.
pub const PUSH_RETRY: Duration = Duration::from_secs(2);
/// How often a running push is looked at.
const POLL: Duration = Duration::from_millis(200);
/// How many ends of a push its state keeps.
const KEEP_ERRORS: usize = 5;

fn record(shared: &Shared, key: &(String, usize), update: impl FnOnce(&mut super::model::Push)) {
    let mut world = shared.lock();
    if let Some(task) = world.task_mut(&key.0)
        && let Some(push) = task.info.pushes.get_mut(key.1)
    {
        update(push);
    }
}

fn record_failure(shared: &Shared, key: &(String, usize), error: String) {
    record(shared, key, |push| {
        push.pushing = false;
        push.failures += 1;
        push.last_errors.push(error);
        let extra = push.last_errors.len().saturating_sub(KEEP_ERRORS);
        push.last_errors.drain(..extra);
    });
}

/// Stops ffmpeg off the async threads (it may take a moment to flush).
async fn stop(process: Supervised) {
    let _ = tokio::task::spawn_blocking(move || drop(process)).await;
}

/// Waits until cancelled or `pause` passes; true when cancelled.
async fn cancelled_within(cancel: &mut watch::Receiver<bool>, pause: Duration) -> bool {
    tokio::select! {
        _ = cancel.changed() => true,
        _ = tokio::time::sleep(pause) => *cancel.borrow(),
    }
}

pub(crate) async fn run(
    shared: Arc<Shared>,
    key: (String, usize),
    url: String,
    spec: StreamSpec,
    log: PathBuf,
    mut cancel: watch::Receiver<bool>,
) {
    loop {
        if *cancel.borrow() {
            return;
        }
        let spawned = binaries::system("ffmpeg").and_then(|ffmpeg| {
            let mut command = Command::new(ffmpeg);
            command.args(spec.ffmpeg_args(&url));
            Supervised::spawn("relay push (ffmpeg)", command, &log)
        });
        let mut process = match spawned {
            Ok(process) => process,
            Err(e) => {
                record_failure(&shared, &key, e.to_string());
                if cancelled_within(&mut cancel, PUSH_RETRY).await {
                    return;
                }
                continue;
            }
        };
        record(&shared, &key, |push| {
            push.pushing = true;
            push.starts += 1;
        });
        let ended = loop {
            if cancelled_within(&mut cancel, POLL).await {
                break None;
            }
            if let Err(e) = process.check_running() {
                break Some(e.to_string());
            }
        };
        match ended {
            None => {
                record(&shared, &key, |push| push.pushing = false);
                stop(process).await;
                return;
            }
            Some(error) => {
                record_failure(&shared, &key, error);
                drop(process);
                if cancelled_within(&mut cancel, PUSH_RETRY).await {
                    return;
                }
            }
        }
    }
}
