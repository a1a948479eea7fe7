//! The live view of a recording: running figures and every part's state.
//!
//! Shared by the recorder (which writes it) with the progress output and the status reporter
//! (which read it).

use crate::shared::part::{PartMeta, PartRecord};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use tokio::sync::Notify;

#[derive(Debug, Default)]
pub struct Status {
    pub bytes: AtomicU64,
    pub media_millis: AtomicU64,
    pub part: AtomicU64,
    pub spool_bytes: AtomicU64,
    pub connected: AtomicBool,
    /// The open part's number (0: none) and its figures so far; kept in atomics because they
    /// change with every fragment.
    open_part: AtomicU32,
    open_bytes: AtomicU64,
    open_media_millis: AtomicU64,
    /// The parts of this run and those recovered at start, by number.
    parts: Mutex<BTreeMap<u32, LivePart>>,
    /// Signalled when a part is recovered, opens, closes or is stored: the report goes out now.
    pub parts_changed: Notify,
}

/// One part as the status report shows it.
#[derive(Debug, Clone)]
pub enum LivePart {
    /// Being written, or its upload completing: the figures so far.
    Recording {
        meta: PartMeta,
        bytes: u64,
        seconds: f64,
    },
    Finished(PartRecord),
}

impl LivePart {
    pub fn url(&self) -> &str {
        match self {
            LivePart::Recording { meta, .. } => &meta.url,
            LivePart::Finished(record) => &record.url,
        }
    }
}

impl Status {
    pub fn part_recovered(&self, record: PartRecord) {
        self.insert(record.part, LivePart::Finished(record));
    }

    pub fn part_opened(&self, meta: PartMeta) {
        self.open_bytes.store(0, Ordering::Relaxed);
        self.open_media_millis.store(0, Ordering::Relaxed);
        self.open_part.store(meta.part, Ordering::Relaxed);
        let part = meta.part;
        self.insert(
            part,
            LivePart::Recording {
                meta,
                bytes: 0,
                seconds: 0.0,
            },
        );
    }

    /// Part `part`'s size (init segment included) and media that are durable in the store (its
    /// checkpoints so far): the report never claims what a crash would lose. Ignored once the
    /// part is closed (`part_closed` has its final figures).
    pub fn open_durable(&self, part: u32, bytes: u64, seconds: f64) {
        if self.open_part.load(Ordering::Relaxed) != part {
            return;
        }
        self.open_media_millis
            .fetch_max((seconds * 1000.0) as u64, Ordering::Relaxed);
        let before = self.open_bytes.fetch_max(bytes, Ordering::Relaxed);
        // The part's first durable figures are reported at once, not at the next tick: until
        // then the status shows the file empty, and a short recording would never show more.
        if before == 0 && bytes > 0 {
            self.parts_changed.notify_one();
        }
    }

    /// The part stops growing; its upload completes in the background.
    pub fn part_closed(&self, meta: &PartMeta, bytes: u64, seconds: f64) {
        let _ = self
            .open_part
            .compare_exchange(meta.part, 0, Ordering::Relaxed, Ordering::Relaxed);
        self.insert(
            meta.part,
            LivePart::Recording {
                meta: meta.clone(),
                bytes,
                seconds,
            },
        );
    }

    pub fn part_finished(&self, record: PartRecord) {
        self.insert(record.part, LivePart::Finished(record));
    }

    pub fn is_recording(&self) -> bool {
        self.open_part.load(Ordering::Relaxed) != 0
    }

    /// Every part, the open one with its current figures.
    pub fn parts(&self) -> Vec<LivePart> {
        let open = self.open_part.load(Ordering::Relaxed);
        let parts = self.parts.lock().unwrap_or_else(|e| e.into_inner());
        parts
            .values()
            .map(|p| match p {
                LivePart::Recording { meta, .. } if meta.part == open => LivePart::Recording {
                    meta: meta.clone(),
                    bytes: self.open_bytes.load(Ordering::Relaxed),
                    seconds: self.open_media_millis.load(Ordering::Relaxed) as f64 / 1000.0,
                },
                other => other.clone(),
            })
            .collect()
    }

    fn insert(&self, part: u32, state: LivePart) {
        self.parts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(part, state);
        self.parts_changed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether a report is due (the notification is taken, as the reporter takes it).
    fn report_due(status: &Status) -> bool {
        let notified = status.parts_changed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable()
    }

    #[test]
    fn a_parts_first_durable_figures_are_reported_at_once_later_ones_at_the_tick() {
        let status = Status::default();
        status.part_opened(PartMeta::example(1));
        assert!(report_due(&status), "the part's start is reported");
        assert!(!report_due(&status));
        status.open_durable(1, 0, 0.0);
        assert!(!report_due(&status), "nothing durable yet");
        status.open_durable(1, 400_000, 1.2);
        assert!(
            report_due(&status),
            "the first durable figures are reported at once"
        );
        let LivePart::Recording { bytes, seconds, .. } = status.parts()[0].clone() else {
            panic!("the part is open");
        };
        assert_eq!((bytes, seconds), (400_000, 1.2));
        status.open_durable(1, 900_000, 3.2);
        assert!(!report_due(&status), "later figures wait for the tick");
        status.open_durable(2, 100, 0.1);
        assert!(
            !report_due(&status),
            "figures of a part that is not open are ignored"
        );
    }
}
