//! A key's owner, exclusive: two workers of one stream and session make the same keys, and
//! without this they streamed into each other's uploads and deleted each other's journals.
//!
//! Before a part's first byte its run claims the key by creating `{journal dir}claim` (holding
//! the run id) only if it does not exist: S3 `If-None-Match: *`, COS `x-cos-forbid-overwrite`,
//! a directory `O_EXCL`. Of two workers exactly one gets it, the other takes the next number.
//! An existence check cannot do this: two writers pass it together.
//!
//! Recovery must tell a dead run's journal from a live neighbour's of the same stream and
//! session. Each run keeps a lease, `{journal root}.runs/{run id}`, that names the journal the
//! run last stored a checkpoint in; another run rebuilds a journal only when its owner's lease
//! is gone, or when neither the lease nor the journal it names changed for `STALE`. Seen
//! across two reads of the store, not against a clock: pods' clocks and the store's may
//! disagree.
//!
//! A live run shows a change at least every `HEARTBEAT`: while media flows its checkpoints do
//! (one every 2–3 s: a new segment, or into a directory a longer part file), and the lease is
//! rewritten only when they stop or move to another journal. Rewritten every 2 s regardless,
//! it cost a third of the worker's own CPU.

use crate::shared::part::PartMeta;
use crate::store::journal::{self, journal_root};
use bytes::Bytes;
use opendal::{ErrorKind, Operator};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// The longest a live run goes without a change others can see. Longer than the checkpoint
/// interval (2 s by default), so checkpoints alone keep a recording run visibly alive.
pub const HEARTBEAT: Duration = Duration::from_secs(4);
/// Nearly four heartbeats: a live worker on a loaded node must never look dead. Not longer: a
/// worker restarted after a crash judges the dead run's journals this long after it starts,
/// and a stop that comes first leaves them to a next run (20 s missed a test's stop).
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

/// The journal this run last stored a checkpoint in, and when; the part writers tell it.
#[derive(Debug, Default)]
pub struct Checkpoints(Mutex<Option<(Arc<str>, Instant)>>);

impl Checkpoints {
    pub fn stored(&self, dir: &Arc<str>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some((dir.clone(), Instant::now()));
    }

    fn last(&self) -> Option<(Arc<str>, Instant)> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// This run's lease, kept visibly alive in the background until `end`.
pub struct Lease {
    op: Operator,
    key: String,
    checkpoints: Arc<Checkpoints>,
    beating: JoinHandle<()>,
}

impl Lease {
    /// Writes the lease before anything is claimed: a claim without a lease is a dead run's.
    pub async fn start(op: &Operator, prefix: &str, run: &str) -> Result<Self, ClaimError> {
        Self::start_every(op, prefix, run, HEARTBEAT).await
    }

    async fn start_every(
        op: &Operator,
        prefix: &str,
        run: &str,
        heartbeat: Duration,
    ) -> Result<Self, ClaimError> {
        let key = lease_key(prefix, run);
        op.write(&key, "0").await.map_err(store_error(&key))?;
        let checkpoints = Arc::<Checkpoints>::default();
        let beating = tokio::spawn(keep_alive(
            op.clone(),
            key.clone(),
            checkpoints.clone(),
            heartbeat,
        ));
        Ok(Self {
            op: op.clone(),
            key,
            checkpoints,
            beating,
        })
    }

    /// The store's time when this lease was last written (its Last-Modified).
    pub async fn written_at(&self) -> Option<jiff::Timestamp> {
        modified(&self.op, &self.key).await
    }

    /// Where the run's part writers report each stored checkpoint.
    pub fn checkpoints(&self) -> Arc<Checkpoints> {
        self.checkpoints.clone()
    }

    /// Once every part of the run is stored or kept: what it kept is a later run's to rebuild.
    pub async fn end(self) {
        self.beating.abort();
        if let Err(e) = self.op.delete(&self.key).await {
            tracing::warn!(lease = %self.key, "cannot delete the run's lease: {e}");
        }
    }
}

/// Rewrites the lease whenever `heartbeat` passes without a checkpoint stored in the journal
/// it names (the recording is quiet, between parts, or finishing), naming the journal of the
/// newest checkpoint. While checkpoints come, it wakes about once per heartbeat and writes
/// nothing.
async fn keep_alive(op: Operator, key: String, checkpoints: Arc<Checkpoints>, heartbeat: Duration) {
    let mut named: Option<Arc<str>> = None;
    let mut shown = Instant::now();
    for beat in 1u64.. {
        tokio::time::sleep_until((shown + heartbeat).into()).await;
        let last = checkpoints.last();
        if let Some((dir, at)) = &last
            && *at > shown
            && named.as_ref() == Some(dir)
        {
            shown = *at;
            continue;
        }
        named = last.map(|(dir, _)| dir).or(named);
        if let Err(e) = op.write(&key, lease_content(beat, named.as_deref())).await {
            tracing::warn!(lease = %key, "cannot renew the run's lease: {e}");
        }
        shown = Instant::now();
    }
}

/// `{beat}`, then the journal the run is writing on a line of its own.
fn lease_content(beat: u64, journal: Option<&str>) -> String {
    match journal {
        Some(dir) => format!("{beat}\n{dir}"),
        None => beat.to_string(),
    }
}

/// What a journal's owner looks like at one read of the store.
#[derive(Debug, Clone, PartialEq)]
pub enum Owner {
    /// No claim, or the claiming run's lease is gone: nobody writes this journal.
    Gone,
    /// The lease of run `run` read `beat`, and the journal it names had got as far as
    /// `newest`: alive unless both read the same after `STALE`.
    Beating {
        run: String,
        beat: Bytes,
        newest: Option<Progress>,
    },
}

/// How far a journal's part has got.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    /// Its newest checkpoint.
    Segment(String),
    /// A part written in place (no segments): its file's length.
    InPlace { key: String, len: u64 },
}

impl Progress {
    /// The object that shows it.
    fn key(&self) -> &str {
        match self {
            Progress::Segment(key) | Progress::InPlace { key, .. } => key,
        }
    }
}

pub async fn observe(op: &Operator, prefix: &str, dir: &str) -> Result<Owner, ClaimError> {
    let Some(run) = owner(op, dir).await? else {
        return Ok(Owner::Gone);
    };
    let Some(beat) = read_optional(op, &lease_key(prefix, &run)).await? else {
        return Ok(Owner::Gone);
    };
    let newest = match std::str::from_utf8(&beat)
        .ok()
        .and_then(|lease| lease.split_once('\n'))
    {
        Some((_, journal)) => newest_checkpoint(op, journal).await?,
        None => None,
    };
    Ok(Owner::Beating { run, beat, newest })
}

/// The last checkpoint stored in journal `dir`; without segments, the length of its part's
/// file (written in place, or not at all yet).
async fn newest_checkpoint(op: &Operator, dir: &str) -> Result<Option<Progress>, ClaimError> {
    match journal::segments(op, dir).await.map(|mut s| s.pop()) {
        Ok(Some(newest)) => return Ok(Some(Progress::Segment(newest))),
        Ok(None) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(store_error(dir)(e)),
    }
    let meta_key = journal::meta_key(dir);
    let Some(meta) = read_optional(op, &meta_key).await? else {
        return Ok(None);
    };
    let Ok(meta) = serde_json::from_slice::<PartMeta>(&meta) else {
        return Ok(None);
    };
    match op.stat(&meta.key).await {
        Ok(stat) => Ok(Some(Progress::InPlace {
            len: stat.content_length(),
            key: meta.key,
        })),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(store_error(&meta.key)(e)),
    }
}

/// How long the owner seen in `before` has shown no change by the store's own clock: from the
/// later of its lease's and its newest checkpoint's Last-Modified to `store_now` (this run's
/// own lease's). Only for an object store, which stamps every object itself; a directory's
/// times come from each writer's clock. A restart that comes long after its crash need not
/// wait out `STALE` again (and a stop soon after it then found the dead run's part unjudged).
pub async fn quiet_for(
    op: &Operator,
    prefix: &str,
    before: &Owner,
    store_now: jiff::Timestamp,
) -> Option<Duration> {
    let Owner::Beating { run, newest, .. } = before else {
        return None;
    };
    let mut last = modified(op, &lease_key(prefix, run)).await?;
    if let Some(progress) = newest {
        last = last.max(modified(op, progress.key()).await?);
    }
    // Last-Modified has whole seconds: one less, never more.
    let quiet = store_now.duration_since(last).as_secs() - 1;
    u64::try_from(quiet).ok().map(Duration::from_secs)
}

async fn modified(op: &Operator, key: &str) -> Option<jiff::Timestamp> {
    let meta = op.stat(key).await.ok()?;
    meta.last_modified().map(|t| t.into_inner())
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
        (before @ Owner::Beating { run, .. }, now) if before == now => {
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

    #[tokio::test]
    async fn a_run_storing_checkpoints_is_alive_though_its_lease_does_not_change() {
        let (_dir, op) = fs_store();
        assert!(claim(&op, "j/a/", "live").await.unwrap());
        // Claimed ahead, never written: alive through the journal its lease names.
        assert!(claim(&op, "j/b/", "live").await.unwrap());
        op.write(&lease_key("", "live"), lease_content(3, Some("j/a/")))
            .await
            .unwrap();
        op.write(&journal::segment_key("j/a/", 1), "x")
            .await
            .unwrap();
        for (seq, judged) in [(1, "j/a/"), (2, "j/b/")] {
            let before = observe(&op, "", judged).await.unwrap();
            let Owner::Beating { newest, .. } = &before else {
                panic!("{before:?}")
            };
            assert_eq!(
                newest,
                &Some(Progress::Segment(journal::segment_key("j/a/", seq)))
            );
            op.write(&journal::segment_key("j/a/", seq + 1), "x")
                .await
                .unwrap();
            assert!(
                !abandoned(&op, "", judged, &before).await.unwrap(),
                "{judged}"
            );
        }
        // Neither the lease nor its journal changed: the run stopped.
        let before = observe(&op, "", "j/b/").await.unwrap();
        assert!(abandoned(&op, "", "j/b/", &before).await.unwrap());
        assert_eq!(observe(&op, "", "j/a/").await.unwrap(), Owner::Gone);
    }

    #[tokio::test]
    async fn a_run_writing_a_part_in_place_is_alive_while_its_file_grows() {
        let (_dir, op) = fs_store();
        let meta = PartMeta::example(1);
        let dir = journal::journal_dir("", &meta.key);
        assert!(claim(&op, &dir, "live").await.unwrap());
        op.write(&lease_key("", "live"), lease_content(3, Some(&dir)))
            .await
            .unwrap();
        op.write(&journal::meta_key(&dir), serde_json::to_vec(&meta).unwrap())
            .await
            .unwrap();
        op.write(&meta.key, vec![0u8; 10]).await.unwrap();
        let before = observe(&op, "", &dir).await.unwrap();
        let Owner::Beating { newest, .. } = &before else {
            panic!("{before:?}")
        };
        assert_eq!(
            newest,
            &Some(Progress::InPlace {
                key: meta.key.clone(),
                len: 10
            })
        );
        op.write(&meta.key, vec![0u8; 20]).await.unwrap();
        assert!(!abandoned(&op, "", &dir, &before).await.unwrap());
        // The file stopped growing and the lease did not change: the run stopped.
        let before = observe(&op, "", &dir).await.unwrap();
        assert!(abandoned(&op, "", &dir, &before).await.unwrap());
    }

    #[tokio::test]
    async fn the_lease_is_rewritten_only_when_checkpoints_stop_or_move_to_another_journal() {
        let (_dir, op) = fs_store();
        let heartbeat = Duration::from_millis(400);
        let lease = Lease::start_every(&op, "", "run", heartbeat).await.unwrap();
        let read = || async {
            String::from_utf8(op.read(&lease_key("", "run")).await.unwrap().to_vec()).unwrap()
        };
        let store_for = |dir: &'static str, time: Duration| {
            let checkpoints = lease.checkpoints();
            async move {
                let (dir, until) = (Arc::<str>::from(dir), Instant::now() + time);
                while Instant::now() < until {
                    checkpoints.stored(&dir);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        // Named once, then the checkpoints alone show the run alive.
        store_for("j/a/", heartbeat * 2).await;
        let named = read().await;
        assert!(named.ends_with("\nj/a/"), "{named:?}");
        store_for("j/a/", heartbeat * 4).await;
        assert_eq!(read().await, named, "rewritten while checkpoints came");
        // Another journal: named within a heartbeat.
        store_for("j/b/", heartbeat * 2).await;
        let moved = read().await;
        assert!(moved.ends_with("\nj/b/"), "{moved:?}");
        store_for("j/b/", heartbeat * 3).await;
        assert_eq!(read().await, moved);
        // No checkpoints: rewritten every heartbeat, still naming the last journal.
        tokio::time::sleep(heartbeat * 3).await;
        let beating = read().await;
        assert_ne!(beating, moved);
        assert!(beating.ends_with("\nj/b/"), "{beating:?}");
        tokio::time::sleep(heartbeat * 3).await;
        assert_ne!(read().await, beating);
        lease.end().await;
        assert!(!op.exists(&lease_key("", "run")).await.unwrap());
    }
}
