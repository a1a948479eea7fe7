//! The live source's comings and goings: a stream that never starts and one that stalls (the
//! connection kept, no media) end at the idle timeout; one gone for good ends after the
//! reconnect grace; one that drops and returns within the grace continues as a new part.

use crate::support::*;
use roomrec_testbed::media::{StreamSpec, rtmp_app_url};
use roomrec_testbed::prometheus::scrape;
use std::time::{Duration, Instant};

#[tokio::test]
async fn a_stream_that_never_starts_ends_at_the_idle_timeout() {
    let url = bed().rtmp_url("nobody-publishes-this");
    let started = Instant::now();
    let run = run(&mut worker(
        &url,
        "02",
        &Storage::dir("never"),
        &["--idle-timeout", "4"],
    ))
    .await;
    assert_eq!(run.code, 1);
    assert_eq!(run.manifest["stopReason"], "idle-timeout");
    assert!(
        run.manifest["message"]
            .as_str()
            .unwrap()
            .contains("idle timeout (4 s)"),
        "{:#}",
        run.manifest
    );
    assert!(started.elapsed() < Duration::from_secs(15));
}

#[tokio::test]
async fn a_stalled_stream_ends_at_the_idle_timeout_keeping_what_was_recorded() {
    // The server keeps the worker connected after the publisher stops (nginx-rtmp's default,
    // the bed's `idle` application): no media, no disconnect. The idle timeout (4 s) ends it,
    // long before the reconnect grace (60 s) would.
    let key = "stalls";
    let url = rtmp_app_url(bed().rtmp_port, "idle", key);
    let spec = StreamSpec {
        duration: Some(Duration::from_secs(6)),
        ..StreamSpec::default()
    };
    let storage = Storage::dir(key);
    let worker = start(&mut worker(
        &url,
        "02",
        &storage,
        &["--idle-timeout", "4", "--reconnect-grace", "60"],
    ));
    let _publisher = publish_to(&url, spec, key).await;
    let started = Instant::now();
    let run = finish(worker).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        run.manifest["stopReason"], "idle-timeout",
        "{:#}",
        run.manifest
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    let seconds = verify_parts(&run, &storage, Some("h264"), Some("aac"));
    assert!(seconds > 4.5, "{seconds}");
}

#[tokio::test]
async fn a_stream_gone_for_good_ends_as_source_ended_after_the_reconnect_grace() {
    // The server disconnects its players when the publisher leaves (the bed's `live`): the
    // reconnect grace (3 s) ends it, long before the idle timeout (60 s) would.
    let spec = StreamSpec {
        duration: Some(Duration::from_secs(6)),
        ..StreamSpec::default()
    };
    let _publisher = publish("gone-for-good", spec).await;
    let storage = Storage::dir("gone-for-good");
    let started = Instant::now();
    let run = run(&mut worker(
        &bed().rtmp_url("gone-for-good"),
        "02",
        &storage,
        &["--idle-timeout", "60", "--reconnect-grace", "3"],
    ))
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        run.manifest["stopReason"], "source-ended",
        "{:#}",
        run.manifest
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    let seconds = verify_parts(&run, &storage, Some("h264"), Some("aac"));
    assert!(seconds > 4.5, "{seconds}");
}

#[tokio::test]
async fn a_dropped_stream_that_returns_continues_as_a_new_part() {
    let storage = Storage::dir("drop");
    let metrics = metrics_address();
    let child = start(&mut worker(
        &bed().rtmp_url("drops"),
        "02",
        &storage,
        &[
            "--reconnect-grace",
            "8",
            "--idle-timeout",
            "30",
            "--metrics-address",
            &metrics,
        ],
    ));
    {
        let _first = publish(
            "drops",
            StreamSpec {
                duration: Some(Duration::from_secs(8)),
                ..StreamSpec::default()
            },
        )
        .await;
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
    {
        let _second = publish(
            "drops",
            StreamSpec {
                duration: Some(Duration::from_secs(8)),
                ..StreamSpec::default()
            },
        )
        .await;
        tokio::time::sleep(Duration::from_secs(6)).await;
        let during = scrape(&metrics).await.unwrap();
        assert_eq!(
            during["roomrec_worker_source_reconnects_total"], 1.0,
            "{during:#?}"
        );
        assert_eq!(during["roomrec_worker_recording"], 1.0, "{during:#?}");
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let run = finish(child).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.manifest["stopReason"], "source-ended");
    let parts = parts(&run);
    assert_eq!(parts.len(), 2, "{:#}", run.manifest);
    let seconds = verify_parts(&run, &storage, Some("h264"), Some("aac"));
    assert!(seconds > 6.0, "{seconds}");
}
