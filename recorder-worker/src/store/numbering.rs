//! Part numbers and object keys. A part takes the first number whose object and journal do not
//! exist, so a restarted worker never overwrites what an earlier run stored. Finding it asks
//! the store, so the next number is always claimed ahead of need, in the background: opening a
//! part (at the first media, at a rotation) never waits for the store while ffmpeg's output,
//! and behind it the media server's queue for this player, fills up.

use crate::store::journal;
use crate::store::keys::{KeyTemplate, KeyVars};
use crate::store::storage::StorageConfig;
use opendal::Operator;
use roomrec_api::Mode;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// What makes a part's key: everything but the number.
pub struct KeyMaker {
    pub template: KeyTemplate,
    pub storage: StorageConfig,
    pub mode: Mode,
    pub stream: String,
    pub user: String,
    pub start: String,
}

impl KeyMaker {
    fn vars(&self) -> KeyVars<'_> {
        KeyVars {
            stream: &self.stream,
            user: &self.user,
            start: &self.start,
            ext: self.mode.extension(),
            mode: self.mode.code(),
        }
    }

    pub fn key(&self, part: u32) -> String {
        self.storage.key(&self.template.render(&self.vars(), part))
    }

    /// Whether a journal directory (`…/.roomrec-journal/{file}/`) holds one of this
    /// recording's parts.
    pub fn owns_journal(&self, dir: &str) -> bool {
        let file = dir.trim_end_matches('/').rsplit('/').next().unwrap_or("");
        self.template.is_part_file(&self.vars(), file)
    }
}

pub struct PartNumbers {
    op: Operator,
    keys: Arc<KeyMaker>,
    /// The search for the next free number, from the one after the last taken.
    next: Option<JoinHandle<u32>>,
    from: u32,
}

impl PartNumbers {
    pub fn new(op: Operator, keys: KeyMaker) -> Self {
        Self {
            op,
            keys: Arc::new(keys),
            next: None,
            from: 1,
        }
    }

    pub fn key(&self, part: u32) -> String {
        self.keys.key(part)
    }

    pub fn owns_journal(&self, dir: &str) -> bool {
        self.keys.owns_journal(dir)
    }

    /// Starts looking for the next free number (once earlier runs' journals are rebuilt, so
    /// their parts count as taken).
    pub fn claim_ahead(&mut self) {
        if self.next.is_none() {
            let (op, keys, from) = (self.op.clone(), self.keys.clone(), self.from);
            self.next = Some(tokio::spawn(first_free(op, keys, from)));
        }
    }

    /// The next free number, usually found already; then the search for the one after it
    /// starts.
    pub async fn take(&mut self) -> u32 {
        self.claim_ahead();
        let search = self.next.take().expect("started above");
        let part = match search.await {
            Ok(part) => part,
            // The search task cannot panic; if it did, search again here.
            Err(_) => first_free(self.op.clone(), self.keys.clone(), self.from).await,
        };
        self.from = part + 1;
        self.claim_ahead();
        part
    }
}

/// The first number from `from` whose object and journal do not exist. When the store cannot
/// say, it asks again, and after a while skips the number: skipping is harmless, overwriting
/// an earlier run's part is not.
async fn first_free(op: Operator, keys: Arc<KeyMaker>, from: u32) -> u32 {
    let mut part = from;
    let mut unanswered = 0;
    loop {
        let key = keys.key(part);
        let journal = journal::meta_key(&journal::journal_dir(&keys.storage.prefix, &key));
        match (op.exists(&key).await, op.exists(&journal).await) {
            (Ok(false), Ok(false)) => return part,
            (Ok(_), Ok(_)) => part += 1,
            (a, b) => {
                let error = a
                    .err()
                    .or(b.err())
                    .map(|e| e.to_string())
                    .unwrap_or_default();
                tracing::warn!(part, "cannot check whether part {part} exists: {error}");
                unanswered += 1;
                if unanswered >= 10 {
                    part += 1;
                    unanswered = 0;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}
