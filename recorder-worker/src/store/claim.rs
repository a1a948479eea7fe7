//! A key's owner, exclusive: two workers of one stream and session make the same keys, and
//! without this they streamed into each other's uploads and deleted each other's journals.
//!
//! Before a part's first byte its run claims the key by creating `{journal dir}claim` (holding
//! the run id) only if it does not exist: S3 `If-None-Match: *`, COS `x-cos-forbid-overwrite`,
//! a directory `O_EXCL`. Of two workers exactly one gets it, the other takes the next number.
//! An existence check cannot do this: two writers pass it together.
//!
//! Recovery must tell a dead run's journal from a live neighbour's of the same stream and
//! session. Each run keeps a lease, `{journal root}.runs/{run id}`, rewritten every
//! `HEARTBEAT`; another run rebuilds a journal only when its owner's lease is gone or did not
//! change for `STALE`. Seen across two reads of the store, not against a clock: pods' clocks
//! and the store's may disagree.

use crate::store::journal::journal_root;
use bytes::Bytes;
use opendal::{ErrorKind, Operator};
use std::time::Duration;
use tokio::task::JoinHandle;

pub const HEARTBEAT: Duration = Duration::from_secs(2);
/// Many heartbeats: a live worker on a loaded node must never look dead.
pub const STALE: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    #[error(
        "the storage {store} cannot create an object only if it does not exist, so two recordings with the same keys could overwrite each other: refusing to record into it"
    )]
    Unsupported { store: String },
    #[error("{key}: {source}")]
    Store {
        key: String,
        #[source]
        source: opendal::Error,
    },
}

fn store_error(key: &str) -> impl FnOnce(opendal::Error) -> ClaimError + '_ {
    move |source| ClaimError::Store {
        key: key.to_string(),
        source,
    }
}

/// A new id for this run: the process id and the time, unique across pods in practice (two
/// pods would need the same pid in the same nanosecond).
pub fn new_run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("{nanos:x}-{:x}", std::process::id())
}

pub fn claim_key(dir: &str) -> String {
    format!("{dir}claim")
}

pub fn lease_key(prefix: &str, run: &str) -> String {
    format!("{}.runs/{run}", journal_root(prefix))
}

/// Fails loudly for a store that cannot claim atomically: a recorded failure is better than
/// a silent overwrite.
pub fn ensure_supported(op: &Operator, store: &str) -> Result<(), ClaimError> {
    if op.info().capability().write_with_if_not_exists {
        Ok(())
    } else {
        Err(ClaimError::Unsupported {
            store: store.to_string(),
        })
    }
}

/// Claims the key of journal `dir` for `run`: true when this run holds it.
pub async fn claim(op: &Operator, dir: &str, run: &str) -> Result<bool, ClaimError> {
    let key = claim_key(dir);
    match op
        .write_with(&key, run.to_string())
        .if_not_exists(true)
        .await
    {
        Ok(_) => Ok(true),
        // A retried request whose first attempt went through finds its own claim.
        Err(e) if e.kind() == ErrorKind::ConditionNotMatch => {
            Ok(owner(op, dir).await?.as_deref() == Some(run))
        }
        Err(source) => Err(ClaimError::Store { key, source }),
    }
}

/// The run that claimed journal `dir`; None for a journal without a claim.
pub async fn owner(op: &Operator, dir: &str) -> Result<Option<String>, ClaimError> {
    let key = claim_key(dir);
    read_optional(op, &key)
        .await
        .map(|b| b.map(|b| String::from_utf8_lossy(&b).into_owned()))
}

async fn read_optional(op: &Operator, key: &str) -> Result<Option<Bytes>, ClaimError> {
    match op.read(key).await {
        Ok(b) => Ok(Some(b.to_bytes())),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(store_error(key)(e)),
    }
}

/// This run's lease, rewritten in the background until `end`.
pub struct Lease {
    op: Operator,
    key: String,
    beating: JoinHandle<()>,
}

impl Lease {
    /// Writes the lease before anything is claimed: a claim without a lease is a dead run's.
    pub async fn start(op: &Operator, prefix: &str, run: &str) -> Result<Self, ClaimError> {
        let key = lease_key(prefix, run);
        op.write(&key, "0").await.map_err(store_error(&key))?;
        let beating = tokio::spawn({
            let (op, key) = (op.clone(), key.clone());
            async move {
                for beat in 1u64.. {
                    tokio::time::sleep(HEARTBEAT).await;
                    if let Err(e) = op.write(&key, beat.to_string()).await {
                        tracing::warn!(lease = %key, "cannot renew the run's lease: {e}");
                    }
                }
            }
        });
        Ok(Self {
            op: op.clone(),
            key,
            beating,
        })
    }

    /// Once every part of the run is stored or kept: what it kept is a later run's to rebuild.
    pub async fn end(self) {
        self.beating.abort();
        if let Err(e) = self.op.delete(&self.key).await {
            tracing::warn!(lease = %self.key, "cannot delete the run's lease: {e}");
        }
    }
}

/// What a journal's owner looks like at one read of the store.
#[derive(Debug, Clone, PartialEq)]
pub enum Owner {
    /// No claim, or the claiming run's lease is gone: nobody writes this journal.
    Gone,
    /// The lease of run `run` read `beat`: alive unless it reads the same after `STALE`.
    Beating { run: String, beat: Bytes },
}

pub async fn observe(op: &Operator, prefix: &str, dir: &str) -> Result<Owner, ClaimError> {
    let Some(run) = owner(op, dir).await? else {
        return Ok(Owner::Gone);
    };
    Ok(match read_optional(op, &lease_key(prefix, &run)).await? {
        None => Owner::Gone,
        Some(beat) => Owner::Beating { run, beat },
    })
}

/// Whether the owner seen `before` is dead now (read again, `STALE` later); a dead run's lease
/// is deleted with the verdict, so its other journals need no wait.
pub async fn abandoned(
    op: &Operator,
    prefix: &str,
    dir: &str,
    before: &Owner,
) -> Result<bool, ClaimError> {
    let now = observe(op, prefix, dir).await?;
    match (before, &now) {
        (_, Owner::Gone) => Ok(true),
        (Owner::Beating { run, beat }, Owner::Beating { run: r, beat: b })
            if run == r && beat == b =>
        {
            let key = lease_key(prefix, run);
            op.delete(&key).await.map_err(store_error(&key))?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fs_store() -> (tempfile::TempDir, Operator) {
        let dir = tempfile::tempdir().unwrap();
        let op =
            Operator::new(opendal::services::Fs::default().root(&dir.path().to_string_lossy()))
                .unwrap();
        (dir, op)
    }

    #[tokio::test]
    async fn of_many_claims_on_one_key_exactly_one_wins() {
        let (_dir, op) = fs_store();
        let claims = (0..20).map(|i| {
            let op = op.clone();
            tokio::spawn(async move { claim(&op, "j/k/", &format!("run{i}")).await.unwrap() })
        });
        let mut won = 0;
        for c in claims {
            won += usize::from(c.await.unwrap());
        }
        assert_eq!(won, 1);
        let holder = owner(&op, "j/k/").await.unwrap().unwrap();
        assert!(
            claim(&op, "j/k/", &holder).await.unwrap(),
            "a retry finds its own claim"
        );
    }

    #[tokio::test]
    async fn a_journal_is_abandoned_only_when_its_lease_is_gone_or_stopped() {
        let (_dir, op) = fs_store();
        assert!(claim(&op, "j/a/", "live").await.unwrap());
        op.write(&lease_key("", "live"), "1").await.unwrap();
        let before = observe(&op, "", "j/a/").await.unwrap();
        assert!(matches!(before, Owner::Beating { .. }));
        op.write(&lease_key("", "live"), "2").await.unwrap();
        assert!(!abandoned(&op, "", "j/a/", &before).await.unwrap());
        // The same beat again: the run stopped.
        let before = observe(&op, "", "j/a/").await.unwrap();
        assert!(abandoned(&op, "", "j/a/", &before).await.unwrap());
        assert_eq!(observe(&op, "", "j/a/").await.unwrap(), Owner::Gone);
        assert_eq!(observe(&op, "", "j/none/").await.unwrap(), Owner::Gone);
    }
}
