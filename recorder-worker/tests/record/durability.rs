//! The worker killed mid-recording: SIGKILL loses at most a few seconds, the next run
//! rebuilds the part from its checkpoints and continues with a new part; what a stream gone
//! quiet delivered is checkpointed before the kill.

use crate::support::*;
use roomrec_testbed::media::StreamSpec;
use roomrec_testbed::prometheus::scrape;
use std::time::Duration;

#[tokio::test]
async fn sigkill_loses_at_most_a_few_seconds_and_a_restart_continues_with_a_new_part() {
    let _publisher = publish("sigkill", StreamSpec::default()).await;
    let storage = Storage::s3("sigkill");
    // A kept-alive bed holds the parts of an earlier run of this test under the same session.
    let _ = std::fs::remove_dir_all(storage.file("sigkill"));
    // With --faststart both times: its copy is lost with the worker, the rebuilt part still
    // becomes a classic MP4, and nothing more is lost than without it.
    let scratch = bed().scratch("sigkill-scratch").unwrap();
    let session = [
        "--session-start",
        "2026-01-01T00:00:00Z",
        "--faststart",
        "--scratch-dir",
        scratch.to_str().unwrap(),
    ];
    let child = start(&mut worker(
        &bed().rtmp_url("sigkill"),
        "02",
        &storage,
        &session,
    ));
    tokio::time::sleep(Duration::from_secs(12)).await;
    let killed = jiff::Timestamp::now();
    child.signal(libc::SIGKILL);
    let killed_run = finish(child).await;
    assert!(
        !files_under(&scratch).is_empty(),
        "the killed worker left its copy"
    );
    let connected = event_time(&killed_run.stderr, "reading ").expect("reading event");
    let recorded_before_kill = (killed - connected).total(jiff::Unit::Second).unwrap();

    let mut restart = worker(&bed().rtmp_url("sigkill"), "02", &storage, &session);
    restart.args(["--max-duration", "3"]);
    let run = run(&mut restart).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let parts = parts(&run);
    assert_eq!(parts.len(), 2, "{:#}", run.manifest);
    assert_eq!(parts[0]["part"], 1);
    assert_eq!(parts[0]["recovered"], true);
    // 2, or 3 when the killed run had claimed 2 ahead: a dead run's claim is told from a live
    // neighbour's only once its lease has stopped, after the restart numbered its part.
    assert!(
        [2, 3].contains(&parts[1]["part"].as_u64().unwrap()),
        "{:#}",
        run.manifest
    );
    assert_ne!(parts[0]["key"], parts[1]["key"]);
    verify_parts(&run, &storage, Some("h264"), Some("aac"));
    for part in &parts {
        assert_classic(&storage.file(part["key"].as_str().unwrap()));
    }
    assert!(
        files_under(&scratch).is_empty(),
        "the restart removed the killed worker's copy and its own"
    );
    let recovered = parts[0]["durationSeconds"].as_f64().unwrap();
    let lost = recorded_before_kill - recovered;
    eprintln!(
        "SIGKILL after {recorded_before_kill:.2} s of media: {recovered:.2} s recovered, {lost:.2} s lost"
    );
    // Checkpoint 2 s + one fragment (1 s) + a write in flight.
    assert!(lost <= 3.5, "lost {lost:.2} s");
    // The journal is gone once the part is rebuilt.
    let journal = storage.file("sigkill/.roomrec-journal");
    assert!(!journal.exists() || std::fs::read_dir(&journal).unwrap().next().is_none());
}

#[tokio::test]
async fn a_stream_gone_quiet_has_all_it_delivered_checkpointed_before_a_sigkill() {
    // Media checkpoints as it comes once the interval has passed; what a stream that goes quiet
    // left pending is checkpointed by the recorder's deadline. The publisher is frozen, so the
    // connection stays open and nothing more arrives, and a long interval makes what is pending
    // several seconds of media: without the deadline the restart would find it missing.
    let mut publisher = publish("quiet", StreamSpec::default()).await;
    let storage = Storage::s3("quiet");
    let _ = std::fs::remove_dir_all(storage.file("quiet"));
    let metrics = metrics_address();
    let options = [
        "--session-start",
        "2026-01-02T00:00:00Z",
        "--checkpoint-seconds",
        "8",
    ];
    let mut first = worker(&bed().rtmp_url("quiet"), "02", &storage, &options);
    first.args(["--stall-seconds", "60", "--metrics-address", &metrics]);
    let child = start(&mut first);
    tokio::time::sleep(Duration::from_secs(6)).await;
    publisher.process().signal(libc::SIGSTOP);
    // Quiet for longer than the interval, and the connection not yet given up.
    tokio::time::sleep(Duration::from_secs(11)).await;
    let delivered = scrape(&metrics).await.unwrap()["roomrec_worker_recorded_seconds_total"];
    child.signal(libc::SIGKILL);
    let _ = finish(child).await;
    publisher.process().signal(libc::SIGCONT);
    assert!(delivered > 3.0, "{delivered} s delivered before the pause");

    let mut restart = worker(&bed().rtmp_url("quiet"), "02", &storage, &options);
    restart.args(["--max-duration", "2"]);
    let run = run(&mut restart).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let parts = parts(&run);
    assert_eq!(parts[0]["recovered"], true, "{:#}", run.manifest);
    verify_parts(&run, &storage, Some("h264"), Some("aac"));
    let recovered = parts[0]["durationSeconds"].as_f64().unwrap();
    assert!(
        recovered >= delivered - 0.1,
        "{delivered:.2} s delivered before the stream went quiet, {recovered:.2} s recovered"
    );
}

#[tokio::test]
async fn a_worker_rebuilds_only_its_own_recordings_journals_never_a_running_neighbours() {
    // Two people recorded into one prefix: the second worker starts while the first one's part
    // is open, its journal live under the same `.roomrec-journal/`. The second must leave it
    // alone (it once "recovered" and deleted it, and the first recording lost its part); a
    // journal of its own stream and session it does rebuild.
    let _alice = publish("neighbour-alice", StreamSpec::default()).await;
    let _bob = publish("neighbour-bob", StreamSpec::default()).await;
    let storage = Storage::s3("neighbours");
    let _ = std::fs::remove_dir_all(storage.file("neighbours"));
    let session = ["--session-start", "2026-01-02T00:00:00Z"];
    let alice = start(&mut worker(
        &bed().rtmp_url("neighbour-alice"),
        "02",
        &storage,
        &[&session[..], &["--max-duration", "14"]].concat(),
    ));
    // Alice's part has checkpoints in the journal by now.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let journal = storage.file("neighbours/.roomrec-journal");
    assert!(
        std::fs::read_dir(&journal).is_ok_and(|mut d| d.next().is_some()),
        "alice's journal is live"
    );
    let mut bob = worker(&bed().rtmp_url("neighbour-bob"), "02", &storage, &session);
    bob.args(["--max-duration", "3"]);
    let bob = run(&mut bob).await;
    assert_eq!(bob.code, 0, "{}", bob.stderr);
    let bobs = parts(&bob);
    assert_eq!(
        bobs.len(),
        1,
        "bob recovered a part that is not his: {:#}",
        bob.manifest
    );
    assert_eq!(bobs[0]["recovered"], false);
    assert!(bobs[0]["key"].as_str().unwrap().contains("neighbour-bob"));

    let alice = finish(alice).await;
    assert_eq!(alice.code, 0, "{}", alice.stderr);
    let alices = parts(&alice);
    assert_eq!(alices.len(), 1, "{:#}", alice.manifest);
    assert_eq!(alices[0]["status"], "succeeded", "{:#}", alice.manifest);
    let seconds = verify_parts(&alice, &storage, Some("h264"), Some("aac"));
    assert!(seconds >= 12.5, "alice's part holds {seconds} s of 14");
}

#[tokio::test]
async fn a_running_workers_checkpoints_keep_it_alive_to_a_neighbour_without_rewriting_its_lease() {
    // While media flows a run's checkpoints show it is alive and its lease is not rewritten
    // (a request every 2 s was a third of the worker's own CPU). A second worker of the same
    // stream and session finds the first one's journal, watches it for the stale time and
    // must leave it alone: it sees the journal the lease names grow, not the lease change.
    let _publisher = publish("alive", StreamSpec::default()).await;
    let storage = Storage::s3("alive");
    let _ = std::fs::remove_dir_all(storage.file("alive"));
    let session = ["--session-start", "2026-01-03T00:00:00Z"];
    let first = start(&mut worker(
        &bed().rtmp_url("alive"),
        "02",
        &storage,
        &[&session[..], &["--max-duration", "40"]].concat(),
    ));
    tokio::time::sleep(Duration::from_secs(8)).await;
    let leases = files_under(&storage.file("alive/.roomrec-journal/.runs"));
    assert_eq!(leases.len(), 1, "{leases:?}");
    let lease = std::fs::read_to_string(&leases[0]).unwrap();
    let (_, journal) = lease
        .split_once('\n')
        .unwrap_or_else(|| panic!("the lease names no journal: {lease:?}"));
    assert!(journal.ends_with("_part0001.mp4/"), "{lease:?}");
    let checkpoints = |dir: &str| {
        files_under(&storage.file(dir))
            .iter()
            .filter(|f| f.extension().is_some_and(|e| e == "seg"))
            .count()
    };
    let stored_before = checkpoints(journal);

    a_second_worker_leaves_the_running_one_alone(&bed().rtmp_url("alive"), &storage, &session)
        .await;
    // More than the stale time later: the same lease, and more checkpoints in its journal.
    assert_eq!(
        std::fs::read_to_string(&leases[0]).unwrap(),
        lease,
        "the lease was rewritten while checkpoints came"
    );
    let stored_after = checkpoints(journal);
    eprintln!(
        "the first worker's journal: {stored_before} checkpoints, {stored_after} after the second worker's run"
    );
    assert!(
        stored_after >= stored_before + 3,
        "{stored_before} checkpoints before, {stored_after} after"
    );

    its_one_part_is_whole(first, &storage, 38.5).await;
}

#[tokio::test]
async fn a_restart_long_after_a_crash_rebuilds_the_killed_part_without_waiting_out_the_stale_time()
{
    // The killed run's lease stays behind. A restart that comes after the stale time has
    // passed by the store's own clock (Last-Modified of the dead lease and of its newest
    // checkpoint against the restart's own lease) judges it dead at once: waiting the stale
    // time again is how a stop soon after a restart left the killed part unassembled.
    let _publisher = publish("late-restart", StreamSpec::default()).await;
    let storage = Storage::s3("late-restart");
    let _ = std::fs::remove_dir_all(storage.file("late-restart"));
    let session = ["--session-start", "2026-01-04T00:00:00Z"];
    let child = start(&mut worker(
        &bed().rtmp_url("late-restart"),
        "02",
        &storage,
        &session,
    ));
    tokio::time::sleep(Duration::from_secs(6)).await;
    child.signal(libc::SIGKILL);
    let _ = finish(child).await;
    assert_eq!(
        files_under(&storage.file("late-restart/.roomrec-journal/.runs")).len(),
        1,
        "the killed run's lease is left behind"
    );
    // Longer than the stale time (15 s) after its last sign of life.
    tokio::time::sleep(Duration::from_secs(17)).await;

    let mut restart = worker(&bed().rtmp_url("late-restart"), "02", &storage, &session);
    restart.args(["--max-duration", "2"]);
    let started = std::time::Instant::now();
    let run = run(&mut restart).await;
    let took = started.elapsed();
    assert_eq!(run.code, 0, "{}", run.stderr);
    let parts = parts(&run);
    assert_eq!(parts.len(), 2, "{:#}", run.manifest);
    assert_eq!(parts[0]["recovered"], true, "{:#}", run.manifest);
    assert_eq!(parts[0]["status"], "succeeded", "{:#}", run.manifest);
    verify_parts(&run, &storage, Some("h264"), Some("aac"));
    // Connecting, 2 s of media and the parts' ends: far less than the stale time.
    assert!(
        took < Duration::from_secs(11),
        "the restart took {took:?}: it waited out the stale time again"
    );
    assert!(files_under(&storage.file("late-restart/.roomrec-journal/.runs")).is_empty());
}
