//! The object store unreachable: a private store (so a test may stop it) paused for 30 s, the
//! COS endpoint down for 30 s, past the memory spool (spilled to disk), at the end of a run
//! (the next run uploads what was kept), and until the spool is full (the recording fails,
//! what was stored stays); a store that answers with noise, lies in its body or hangs.

use crate::support::*;
use roomrec_testbed::cos::Fault;
use roomrec_testbed::media::StreamSpec;
use roomrec_testbed::object_store::ObjectStore;
use roomrec_testbed::prometheus::scrape;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[tokio::test]
async fn an_object_store_outage_of_30_seconds_loses_nothing() {
    let (mut store, storage) = private_store("outage").await;
    let _publisher = publish("outage", StreamSpec::default()).await;
    let metrics = metrics_address();
    let child = start(&mut worker(
        &bed().rtmp_url("outage"),
        "02",
        &storage,
        &["--max-duration", "45", "--metrics-address", &metrics],
    ));
    tokio::time::sleep(Duration::from_secs(8)).await;
    let before = scrape(&metrics).await.unwrap();
    store.pause();
    tokio::time::sleep(Duration::from_secs(30)).await;
    // The outage shows: requests retried, recorded data waiting, and nothing newly confirmed
    // (what was in flight at the pause may still have landed).
    let during = scrape(&metrics).await.unwrap();
    assert!(
        during["roomrec_worker_upload_retries_total"] > 0.0,
        "{during:#?}"
    );
    assert!(
        during["roomrec_worker_spool_bytes"] > 1e6,
        "30 s at 2 Mbit/s wait in the spool: {during:#?}"
    );
    assert_eq!(during["roomrec_worker_recording"], 1.0);
    assert!(
        during["roomrec_worker_recorded_bytes_total"]
            < before["roomrec_worker_recorded_bytes_total"] + 1e6,
        "{before:#?} {during:#?}"
    );
    store.resume().await.unwrap();
    let run = finish(child).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let seconds = verify_parts(&run, &storage, Some("h264"), Some("aac"));
    assert!(
        seconds >= 44.0,
        "recorded {seconds} s of 45 across a 30 s outage: {:#}\n{}",
        run.manifest,
        run.stderr
    );
}

#[tokio::test]
async fn a_cos_outage_of_30_seconds_loses_nothing() {
    // The COS endpoint itself goes down (connections cut, new ones refused) and comes back.
    let mut cos = cos_stand_in().await;
    let storage = Storage::cos(&cos, "cos-outage");
    let _publisher = publish("cos-outage", StreamSpec::default()).await;
    let metrics = metrics_address();
    let child = start(&mut worker(
        &bed().rtmp_url("cos-outage"),
        "02",
        &storage,
        &["--max-duration", "45", "--metrics-address", &metrics],
    ));
    tokio::time::sleep(Duration::from_secs(8)).await;
    cos.stop();
    tokio::time::sleep(Duration::from_secs(30)).await;
    let during = scrape(&metrics).await.unwrap();
    assert!(
        during["roomrec_worker_upload_retries_total"] > 0.0,
        "{during:#?}"
    );
    assert!(
        during["roomrec_worker_spool_bytes"] > 1e6,
        "30 s at 2 Mbit/s wait in the spool: {during:#?}"
    );
    cos.restart().await.unwrap();
    let run = finish(child).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let seconds = verify_parts(&run, &storage, Some("h264"), Some("aac"));
    assert!(
        seconds >= 44.0,
        "recorded {seconds} s of 45 across a 30 s COS outage: {:#}\n{}",
        run.manifest,
        run.stderr
    );
    // Every request that reached COS was signed correctly, before and after.
    assert!(cos.requests().iter().all(|r| r.status != 403));
}

#[tokio::test]
async fn a_store_that_answers_garbage_lies_or_hangs_loses_nothing() {
    // The COS endpoint misbehaves three ways in turn, 10 s each, while a 60 s recording runs:
    // 500s with noise for a body, answers whose body is noise (the request itself carried
    // out), and requests that hang mid-body. Each is retried; nothing recorded is lost.
    let cos = cos_stand_in().await;
    let storage = Storage::cos(&cos, "cos-faults");
    let _publisher = publish("cos-faults", StreamSpec::default()).await;
    let metrics = metrics_address();
    let child = start(&mut worker(
        &bed().rtmp_url("cos-faults"),
        "02",
        &storage,
        &[
            "--max-duration",
            "60",
            "--store-request-timeout",
            "3",
            "--metrics-address",
            &metrics,
        ],
    ));
    tokio::time::sleep(Duration::from_secs(8)).await;
    for fault in [Fault::Garbage, Fault::WrongBody, Fault::Hang] {
        let retries = scrape(&metrics).await.unwrap()["roomrec_worker_upload_retries_total"];
        cos.misbehave(Some(fault));
        tokio::time::sleep(Duration::from_secs(10)).await;
        cos.misbehave(None);
        if fault != Fault::WrongBody {
            // A body of noise is read only where the answer matters (a 200 to a PUT says all
            // it has to in its status); the other two cannot go unnoticed.
            let after = scrape(&metrics).await.unwrap()["roomrec_worker_upload_retries_total"];
            assert!(after > retries, "{fault:?}: no request was retried");
        }
        tokio::time::sleep(Duration::from_secs(4)).await;
    }
    let run = finish(child).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let seconds = verify_parts(&run, &storage, Some("h264"), Some("aac"));
    assert!(
        seconds >= 59.0,
        "recorded {seconds} s of 60 through a misbehaving store: {:#}\n{}",
        run.manifest,
        run.stderr
    );
    assert!(cos.requests().iter().any(|r| r.status == 500));
}

/// A private object store (so a test may stop it) and the storage flags for it.
async fn private_store(name: &str) -> (ObjectStore, Storage) {
    let dir = bed().scratch(name).unwrap();
    let store = ObjectStore::start(&dir).await.unwrap();
    let storage = Storage::S3 {
        endpoint: store.endpoint(),
        bucket: roomrec_testbed::object_store::BUCKET.into(),
        prefix: name.into(),
        access: roomrec_testbed::object_store::ACCESS_KEY.into(),
        secret: roomrec_testbed::object_store::SECRET_KEY.into(),
        bucket_dir: store.root.join(roomrec_testbed::object_store::BUCKET),
    };
    (store, storage)
}

#[tokio::test]
async fn an_outage_beyond_the_memory_spool_spills_to_disk_and_loses_nothing() {
    let (mut store, storage) = private_store("spill").await;
    let spool = bed().scratch("spill-spool").unwrap();
    let _publisher = publish("spill", StreamSpec::default()).await;
    let args = [
        "--max-duration",
        "35",
        "--spool-memory",
        "1M",
        "--spool-dir",
        spool.to_str().unwrap(),
    ];
    let child = start(&mut worker(&bed().rtmp_url("spill"), "02", &storage, &args));
    tokio::time::sleep(Duration::from_secs(6)).await;
    store.pause();
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert!(
        !files_under(&spool).is_empty(),
        "checkpoints spilled to disk during the outage"
    );
    store.resume().await.unwrap();
    let run = finish(child).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let seconds = verify_parts(&run, &storage, Some("h264"), Some("aac"));
    assert!(
        seconds >= 34.0,
        "recorded {seconds} s of 35: {:#}",
        run.manifest
    );
    let message = parts(&run)[0]["message"].as_str().unwrap().to_string();
    assert!(
        message.contains("assembled from its checkpoints"),
        "{message}"
    );
    assert!(
        files_under(&spool).is_empty(),
        "the spool is empty once the store took everything"
    );
}

#[tokio::test]
async fn checkpoints_the_store_never_took_are_kept_and_uploaded_by_the_next_run() {
    let (mut store, storage) = private_store("kept").await;
    let spool = bed().scratch("kept-spool").unwrap();
    let _publisher = publish("kept", StreamSpec::default()).await;
    let session = "2026-02-02T00:00:00Z";
    let args = [
        "--spool-dir",
        spool.to_str().unwrap(),
        "--shutdown-timeout",
        "3",
        "--session-start",
        session,
    ];
    let child = start(&mut worker(&bed().rtmp_url("kept"), "02", &storage, &args));
    tokio::time::sleep(Duration::from_secs(8)).await;
    store.pause();
    tokio::time::sleep(Duration::from_secs(4)).await;
    child.signal(libc::SIGTERM);
    let first = finish(child).await;
    assert_eq!(
        first.code, 1,
        "the store is down at the end: {}",
        first.stderr
    );
    let message = parts(&first)[0]["message"].as_str().unwrap().to_string();
    assert!(message.contains(spool.to_str().unwrap()), "{message}");
    let recorded = parts(&first)[0]["durationSeconds"].as_f64().unwrap();
    assert!(
        files_under(&spool)
            .iter()
            .any(|f| f.extension().is_some_and(|e| e == "seg"))
    );

    store.resume().await.unwrap();
    let args = [
        "--spool-dir",
        spool.to_str().unwrap(),
        "--max-duration",
        "2",
        "--session-start",
        session,
    ];
    let run = run(&mut worker(&bed().rtmp_url("kept"), "02", &storage, &args)).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let parts = parts(&run);
    assert_eq!(parts.len(), 2, "{:#}", run.manifest);
    assert_eq!(parts[0]["recovered"], true);
    verify_parts(&run, &storage, Some("h264"), Some("aac"));
    let recovered = parts[0]["durationSeconds"].as_f64().unwrap();
    assert!(
        recovered >= recorded - 0.5,
        "everything the first run recorded ({recorded} s), including what only its spool held, is in the file ({recovered} s)"
    );
    assert!(files_under(&spool).is_empty());
}

/// The journal objects (`meta.json`, `NNNNNNNN.seg`) under a journal root on disk, with their
/// sizes.
fn journal_objects(root: &Path) -> BTreeMap<PathBuf, u64> {
    files_under(root)
        .into_iter()
        .filter(|f| {
            f.file_name().is_some_and(|n| n == "meta.json")
                || f.extension().is_some_and(|e| e == "seg")
        })
        .map(|f| {
            let len = std::fs::metadata(&f).unwrap().len();
            (f, len)
        })
        .collect()
}

#[tokio::test]
async fn a_full_spool_fails_the_recording_and_keeps_what_was_stored() {
    // A private store: stopping it cannot disturb the other tests, and it is resumed before
    // anything is asserted (a failed assertion drops it, which ends its process).
    let (mut store, storage) = private_store("spoolfull").await;
    // A kept-alive bed holds the parts of an earlier run of this test under the same session.
    let _ = std::fs::remove_dir_all(storage.file("spoolfull"));
    let journal = storage.file("spoolfull/.roomrec-journal");
    let spec = StreamSpec {
        width: 640,
        height: 360,
        video_kbps: 800,
        ..StreamSpec::default()
    };
    let _publisher = publish("spoolfull", spec).await;
    let session = ["--session-start", "2026-03-03T00:00:00Z"];
    let mut first = worker(
        &bed().rtmp_url("spoolfull"),
        "02",
        &storage,
        &[
            "--spool-memory",
            "256k",
            "--spool-max",
            "512k",
            "--shutdown-timeout",
            "5",
        ],
    );
    first.args(session);
    let child = start(&mut first);
    // Long enough for a few checkpoints (every 2 s) to reach the journal.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let paused = jiff::Timestamp::now();
    store.pause();
    // What the store took before the outage (nothing lands once it is stopped).
    let stored = journal_objects(&journal);
    let first = tokio::time::timeout(Duration::from_secs(90), finish(child)).await;
    store.resume().await.unwrap();
    let first = first.expect("the recording ends once the spool is full");

    assert_eq!(first.code, 1, "retryable: {}", first.stderr);
    assert_eq!(first.manifest["status"], "failed", "{:#}", first.manifest);
    assert_eq!(first.manifest["stopReason"], "failed");
    let message = first.manifest["message"].as_str().unwrap();
    assert!(
        message.contains("the spool is full: the object store has been unreachable for too long"),
        "{message}"
    );
    assert!(
        first.stderr.contains("spool full"),
        "the log says why: {}",
        first.stderr
    );
    let full = event_time(&first.stderr, "spool full").expect("spool full event");
    let full_after = (full - paused).total(jiff::Unit::Second).unwrap();
    let connected = event_time(&first.stderr, "reading ").expect("reading event");
    let recorded_before_outage = (paused - connected).total(jiff::Unit::Second).unwrap();
    let first_parts = parts(&first);
    assert_eq!(first_parts.len(), 1, "{:#}", first.manifest);
    let key = first_parts[0]["key"].as_str().unwrap().to_string();
    // The store was down when the part ended: it cannot be complete, its journal stays.
    assert_eq!(first_parts[0]["status"], "failed", "{:#}", first_parts[0]);
    assert!(!storage.file(&key).exists());

    // Nothing the store took before the outage was deleted.
    let checkpoints = stored
        .keys()
        .filter(|f| f.extension().is_some_and(|e| e == "seg"))
        .count();
    assert!(
        stored.keys().any(|f| f.ends_with("meta.json")) && checkpoints >= 2,
        "the journal had checkpoints before the outage: {stored:?}"
    );
    let kept = journal_objects(&journal);
    for (file, len) in &stored {
        assert_eq!(
            kept.get(file),
            Some(len),
            "{} was stored before the outage",
            file.display()
        );
    }
    let journal_bytes: u64 = kept
        .iter()
        .filter(|(f, _)| f.extension().is_some_and(|e| e == "seg"))
        .map(|(_, len)| len)
        .sum();

    // The next run rebuilds the part from its journal.
    let mut next = worker(
        &bed().rtmp_url("spoolfull"),
        "02",
        &storage,
        &["--max-duration", "2"],
    );
    next.args(session);
    let run = run(&mut next).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let parts = parts(&run);
    assert_eq!(parts.len(), 2, "{:#}", run.manifest);
    assert_eq!(parts[0]["part"], 1);
    assert_eq!(parts[0]["key"], key.as_str());
    assert_eq!(parts[0]["recovered"], true);
    assert_eq!(
        parts[0]["bytes"], journal_bytes,
        "every checkpoint is in the file"
    );
    assert_ne!(parts[1]["key"], key.as_str());
    verify_parts(&run, &storage, Some("h264"), Some("aac"));
    let recovered = parts[0]["durationSeconds"].as_f64().unwrap();
    eprintln!(
        "spool full {full_after:.1} s into the outage; {recorded_before_outage:.2} s recorded before it, {recovered:.2} s recovered from {checkpoints} checkpoints ({journal_bytes} bytes)"
    );
    assert!(
        recovered >= recorded_before_outage - 3.5,
        "recovered {recovered:.2} s of the {recorded_before_outage:.2} s recorded before the outage"
    );
    assert!(
        journal_objects(&journal).is_empty(),
        "the journal is gone once the part is rebuilt"
    );
}
