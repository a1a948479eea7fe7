//! Into a directory each part is written in place: its checkpoints go into the part's own file
//! (synced), not into journal segments. A SIGKILL leaves the file ending in a torn write that
//! the next run cuts off; a running worker's growing file shows it alive to a neighbour; a
//! directory that refuses writes through the stop has the rest kept in the spool directory,
//! and the next run writes it where the stored checkpoints end.

use crate::support::*;
use roomrec_testbed::media::StreamSpec;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// An empty directory store of its own.
fn empty_dir(name: &str) -> (Storage, PathBuf) {
    let dir = bed().scratch(name).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    (Storage::Dir(dir.clone()), dir)
}

/// The recorded files in a directory store (not its journals).
fn part_files(dir: &Path) -> Vec<PathBuf> {
    files_under(dir)
        .into_iter()
        .filter(|f| f.extension().is_some_and(|e| e == "mp4"))
        .filter(|f| !f.to_string_lossy().contains(".roomrec-journal"))
        .collect()
}

fn segments_under(dir: &Path) -> usize {
    files_under(dir)
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "seg"))
        .count()
}

#[tokio::test]
async fn into_a_directory_a_sigkill_loses_at_most_a_few_seconds_and_the_restart_keeps_the_file() {
    let _publisher = publish("inplace-kill", StreamSpec::default()).await;
    let (storage, dir) = empty_dir("inplace-kill");
    let session = ["--session-start", "2026-01-05T00:00:00Z"];
    let child = start(&mut worker(
        &bed().rtmp_url("inplace-kill"),
        "02",
        &storage,
        &session,
    ));
    tokio::time::sleep(Duration::from_secs(12)).await;
    let killed = jiff::Timestamp::now();
    child.signal(libc::SIGKILL);
    let killed_run = finish(child).await;
    let connected = event_time(&killed_run.stderr, "reading ").expect("reading event");
    let recorded_before_kill = (killed - connected).total(jiff::Unit::Second).unwrap();
    // Written in place: the part's file holds what was stored, its journal no segments.
    let files = part_files(&dir);
    assert_eq!(files.len(), 1, "{files:?}");
    let left = std::fs::metadata(&files[0]).unwrap().len();
    assert!(
        left > 1_000_000,
        "the killed part's file holds {left} bytes"
    );
    assert_eq!(segments_under(&dir), 0, "checkpoints went to segments");

    let mut restart = worker(&bed().rtmp_url("inplace-kill"), "02", &storage, &session);
    restart.args(["--max-duration", "3"]);
    let run = run(&mut restart).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let parts = parts(&run);
    assert_eq!(parts.len(), 2, "{:#}", run.manifest);
    assert_eq!(parts[0]["recovered"], true, "{:#}", run.manifest);
    assert_eq!(
        parts[0]["key"],
        files[0].strip_prefix(&dir).unwrap().to_str().unwrap()
    );
    // Every byte of it plays: a write torn by the kill was cut off.
    verify_parts(&run, &storage, Some("h264"), Some("aac"));
    let recovered = parts[0]["durationSeconds"].as_f64().unwrap();
    let lost = recorded_before_kill - recovered;
    eprintln!(
        "SIGKILL after {recorded_before_kill:.2} s of media: {recovered:.2} s recovered in place ({left} bytes left, {} kept), {lost:.2} s lost",
        parts[0]["bytes"]
    );
    assert!(lost <= 3.5, "lost {lost:.2} s");
    let journal = dir.join(".roomrec-journal");
    assert!(
        files_under(&journal).is_empty(),
        "{:?}",
        files_under(&journal)
    );
}

#[tokio::test]
async fn a_worker_writing_in_place_is_alive_to_a_neighbour_while_its_file_grows() {
    // No segments show the run alive, and its lease is not rewritten while checkpoints come:
    // a second worker of the same stream and session must see the part's file grow.
    let _publisher = publish("inplace-alive", StreamSpec::default()).await;
    let (storage, dir) = empty_dir("inplace-alive");
    let session = ["--session-start", "2026-01-06T00:00:00Z"];
    let first = start(&mut worker(
        &bed().rtmp_url("inplace-alive"),
        "02",
        &storage,
        &[&session[..], &["--max-duration", "36"]].concat(),
    ));
    tokio::time::sleep(Duration::from_secs(8)).await;
    let leases = files_under(&dir.join(".roomrec-journal/.runs"));
    assert_eq!(leases.len(), 1, "{leases:?}");
    let lease = std::fs::read_to_string(&leases[0]).unwrap();
    let files = part_files(&dir);
    assert_eq!(files.len(), 1, "{files:?}");
    let size_before = std::fs::metadata(&files[0]).unwrap().len();

    a_second_worker_leaves_the_running_one_alone(
        &bed().rtmp_url("inplace-alive"),
        &storage,
        &session,
    )
    .await;
    assert_eq!(
        std::fs::read_to_string(&leases[0]).unwrap(),
        lease,
        "the lease was rewritten while checkpoints came"
    );
    let size_after = std::fs::metadata(&files[0]).unwrap().len();
    assert!(
        size_after > size_before + 2_000_000,
        "the first worker's file: {size_before} bytes, {size_after} after the second's run"
    );

    its_one_part_is_whole(first, &storage, 34.5).await;
}

/// Limits the files the worker writes to `bytes` (RLIMIT_FSIZE): a write past it fails with
/// EFBIG after writing what fits, as a full disk does. SIGXFSZ is ignored, or it would kill.
fn file_size_limit(command: &mut tokio::process::Command, bytes: u64) {
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        command.pre_exec(move || {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let limit = libc::rlimit {
                rlim_cur: bytes,
                rlim_max: bytes,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[tokio::test]
async fn a_directory_refusing_writes_through_the_stop_has_the_rest_kept_and_put_in_place_next_run()
{
    let _publisher = publish("inplace-full", StreamSpec::default()).await;
    let (storage, dir) = empty_dir("inplace-full");
    let spool = bed().scratch("inplace-full-spool").unwrap();
    let _ = std::fs::remove_dir_all(&spool);
    std::fs::create_dir_all(&spool).unwrap();
    let session = "2026-01-07T00:00:00Z";
    let args = [
        "--spool-dir",
        spool.to_str().unwrap(),
        "--shutdown-timeout",
        "3",
        "--session-start",
        session,
    ];
    // 2 Mbit/s: the part's file reaches 2 MiB after about 8 s; every write after that fails
    // part of the way, and is retried until the stop.
    let mut first = worker(&bed().rtmp_url("inplace-full"), "02", &storage, &args);
    first.args(["--max-duration", "16"]);
    file_size_limit(&mut first, 2 << 20);
    let first = run(&mut first).await;
    assert_eq!(
        first.code, 1,
        "the directory refused writes at the end: {}",
        first.stderr
    );
    assert!(
        first.stderr.contains("File too large"),
        "no write failed: {}",
        first.stderr
    );
    let message = parts(&first)[0]["message"].as_str().unwrap().to_string();
    assert!(message.contains(spool.to_str().unwrap()), "{message}");
    let recorded = parts(&first)[0]["durationSeconds"].as_f64().unwrap();
    assert!(segments_under(&spool) > 0, "{:?}", files_under(&spool));
    assert!(
        files_under(&spool)
            .iter()
            .any(|f| f.ends_with("stored-length")),
        "{:?}",
        files_under(&spool)
    );

    let mut next = worker(&bed().rtmp_url("inplace-full"), "02", &storage, &args);
    next.args(["--max-duration", "2"]);
    let run = run(&mut next).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let parts = parts(&run);
    assert_eq!(parts.len(), 2, "{:#}", run.manifest);
    assert_eq!(parts[0]["recovered"], true, "{:#}", run.manifest);
    // Whole and in order: the bytes of the torn writes are gone, the kept ones follow the
    // stored ones.
    verify_parts(&run, &storage, Some("h264"), Some("aac"));
    let recovered = parts[0]["durationSeconds"].as_f64().unwrap();
    eprintln!(
        "recorded {recorded:.2} s, the file reached the limit, {recovered:.2} s in the part after the next run"
    );
    assert!(
        (recovered - recorded).abs() < 0.5,
        "the first run recorded {recorded} s, its part holds {recovered} s"
    );
    assert!(files_under(&spool).is_empty(), "{:?}", files_under(&spool));
    assert!(files_under(&dir.join(".roomrec-journal")).is_empty());
}
