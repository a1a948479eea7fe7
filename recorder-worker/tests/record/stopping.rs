//! Stopping a recording from outside: SIGTERM (also with `--faststart`) and `--stop-file`
//! each finish a complete, playable file.

use crate::support::*;
use roomrec_testbed::media::StreamSpec;
use std::time::{Duration, Instant};

#[tokio::test]
async fn sigterm_finishes_a_playable_file_of_the_right_length() {
    let _publisher = publish("sigterm", StreamSpec::default()).await;
    // Plain, and with --faststart, whose classic copy must be stored within the shutdown time too.
    let children = [("sigterm", false), ("sigterm-faststart", true)].map(|(prefix, faststart)| {
        let storage = Storage::s3(prefix);
        let flags: &[&str] = if faststart { &["--faststart"] } else { &[] };
        let child = start(&mut worker(
            &bed().rtmp_url("sigterm"),
            "02",
            &storage,
            flags,
        ));
        (storage, faststart, child)
    });
    tokio::time::sleep(Duration::from_secs(10)).await;
    let signalled = jiff::Timestamp::now();
    for (_, _, child) in &children {
        child.signal(libc::SIGTERM);
    }
    let started = Instant::now();
    for (storage, faststart, child) in children {
        let run = finish(child).await;
        // The remux takes a moment more: bounded by the shutdown timeout (25 s), within a pod's
        // grace period (40 s).
        let within = Duration::from_secs(if faststart { 30 } else { 10 });
        assert!(
            started.elapsed() < within,
            "finished within a pod's grace period"
        );
        assert_eq!(run.code, 0, "{}", run.stderr);
        assert_eq!(run.manifest["stopReason"], "signal");
        let seconds = verify_parts(&run, &storage, Some("h264"), Some("aac"));
        if faststart {
            for part in parts(&run) {
                assert_eq!(part["message"], "", "{part:#}");
                assert_classic(&storage.file(part["key"].as_str().unwrap()));
            }
        }
        // ffmpeg starts reading the live stream when the worker logs "reading …": the file
        // holds the media from then until SIGTERM.
        let connected = event_time(&run.stderr, "reading ").expect("reading event");
        let recorded_wall = (signalled - connected).total(jiff::Unit::Second).unwrap();
        assert!(
            (seconds - recorded_wall).abs() <= 1.0,
            "file {seconds} s vs {recorded_wall} s between connecting and SIGTERM (faststart: {faststart})"
        );
    }
}

#[tokio::test]
async fn a_stop_file_ends_the_recording_gracefully() {
    let _publisher = publish("stopfile", StreamSpec::default()).await;
    let storage = Storage::dir("stopfile");
    let flag = bed().scratch("stopfile-flag").unwrap().join("stop");
    // Left by an earlier run on a kept-alive bed.
    let _ = std::fs::remove_file(&flag);
    let child = start(&mut worker(
        &bed().rtmp_url("stopfile"),
        "02",
        &storage,
        &["--stop-file", flag.to_str().unwrap()],
    ));
    tokio::time::sleep(Duration::from_secs(8)).await;
    std::fs::write(&flag, b"").unwrap();
    let run = finish(child).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.manifest["stopReason"], "stop-requested");
    let seconds = verify_parts(&run, &storage, Some("h264"), Some("aac"));
    assert!(seconds > 2.0, "{seconds}");
}
