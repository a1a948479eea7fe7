//! Part numbers and object keys. A part takes the first number whose object does not exist and
//! whose key this run claims (`claim`): a restarted worker never overwrites what an earlier run
//! stored, and of two workers making the same keys each gets numbers of its own. Finding it asks
//! the store, so the next number is always claimed ahead of need, in the background: opening a
//! part (at the first media, at a rotation) never waits for the store while ffmpeg's output,
//! and behind it the media server's queue for this player, fills up.

use crate::store::claim;
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
    /// This run's id, which its claims hold.
    run: Arc<str>,
    /// The search for the next free number, from the one after the last taken.
    next: Option<JoinHandle<u32>>,
    from: u32,
}

impl PartNumbers {
    pub fn new(op: Operator, keys: KeyMaker, run: &str) -> Self {
        Self {
            op,
            keys: Arc::new(keys),
            run: run.into(),
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
            let (op, keys, run) = (self.op.clone(), self.keys.clone(), self.run.clone());
            self.next = Some(tokio::spawn(first_free(op, keys, run, self.from)));
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
            Err(_) => {
                let (op, keys, run) = (self.op.clone(), self.keys.clone(), self.run.clone());
                first_free(op, keys, run, self.from).await
            }
        };
        self.from = part + 1;
        self.claim_ahead();
        part
    }
}

impl PartNumbers {
    /// At the run's end: the number claimed ahead is given back (a claim left behind, from a
    /// search that does not end in time, is discarded by a later run once this one's lease is
    /// gone).
    pub async fn release(&mut self) {
        let Some(search) = self.next.take() else {
            return;
        };
        let search_abort = search.abort_handle();
        match tokio::time::timeout(Duration::from_secs(5), search).await {
            Ok(Ok(part)) => {
                let dir = journal::journal_dir(&self.keys.storage.prefix, &self.keys.key(part));
                // Nothing but the claim is in it: no part opened with this number.
                if let Err(e) = self.op.delete_with(&dir).recursive(true).await {
                    tracing::warn!(part, "cannot give back the claim of part {part}: {e}");
                }
            }
            Ok(Err(_)) => {}
            Err(_) => search_abort.abort(),
        }
    }
}

/// The first number from `from` whose object does not exist and whose key this run claimed.
/// When the store cannot say, it asks again, and after a while skips the number: skipping is
/// harmless, overwriting an earlier run's part is not.
async fn first_free(op: Operator, keys: Arc<KeyMaker>, run: Arc<str>, from: u32) -> u32 {
    let mut part = from;
    let mut unanswered = 0;
    loop {
        let key = keys.key(part);
        let dir = journal::journal_dir(&keys.storage.prefix, &key);
        match claim_unstored(&op, &key, &dir, &run).await {
            Ok(true) => return part,
            Ok(false) => part += 1,
            Err(e) => {
                tracing::warn!(part, "cannot claim part {part}: {e}");
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

/// Claims `key` when its object does not exist. Checked again after the claim: a run that
/// held it may have completed the object and deleted its journal (with the claim) since.
async fn claim_unstored(
    op: &Operator,
    key: &str,
    dir: &str,
    run: &str,
) -> Result<bool, claim::ClaimError> {
    let stored = |source| claim::ClaimError::Store {
        key: key.to_string(),
        source,
    };
    if op.exists(key).await.map_err(stored)? || !claim::claim(op, dir, run).await? {
        return Ok(false);
    }
    if op.exists(key).await.map_err(stored)? {
        let _ = op.delete(&claim::claim_key(dir)).await;
        return Ok(false);
    }
    Ok(true)
}
