//! The live source's comings and goings: a stream that never starts and one that stalls end
//! at the idle timeout, and one that drops and returns within the reconnect grace continues
//! as a new part.

use crate::support::*;
use roomrec_testbed::media::StreamSpec;
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
    let spec = StreamSpec {
        duration: Some(Duration::from_secs(6)),
        ..StreamSpec::default()
    };
    let _publisher = publish("stalls", spec).await;
    let storage = Storage::dir("stalls");
    // A grace as long as the idle timeout: the recording ends by the idle rule.
    let run = run(&mut worker(
        &bed().rtmp_url("stalls"),
        "02",
        &storage,
        &["--idle-timeout", "3", "--reconnect-grace", "3"],
    ))
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        ["idle-timeout", "source-ended"].contains(&run.manifest["stopReason"].as_str().unwrap())
    );
    let seconds = verify_parts(&run, &storage, Some("h264"), Some("aac"));
    assert!(seconds > 2.0, "{seconds}");
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
