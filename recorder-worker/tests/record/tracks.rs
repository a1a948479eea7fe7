//! Tracks that come and go: in mode 02 a person with the camera off is recorded as audio only
//! (and with the microphone off as video only), the part's message says so, and when the
//! missing track appears a new part begins with both. Modes that record only the missing
//! track still fail, with advice.

use crate::support::*;
use roomrec_testbed::media::{StreamSpec, rtmp_app_url};
use std::time::Duration;

fn spec(video: bool, audio: bool, seconds: u64) -> StreamSpec {
    StreamSpec {
        width: 320,
        height: 240,
        fps: 25,
        video_kbps: 300,
        video_codec: video.then_some("libx264"),
        audio_codec: audio.then_some("aac"),
        duration: Some(Duration::from_secs(seconds)),
    }
}

/// The publishers' keyframe interval: the worker reads the source again when a track appears,
/// and a server without a GOP cache (nginx-rtmp) starts it at the next keyframe.
const GOP: f64 = 0.5;

/// The first publisher sends only one track for 6 s, the second both for 6 s. `app` `idle`
/// keeps the worker's connection through the switch (the new track appears in the stream it
/// reads), `live` drops it (the worker reconnects and finds both).
async fn switch(app: &str, first_video: bool, key: &str) -> (Run, Storage) {
    let url = rtmp_app_url(bed().rtmp_port, app, key);
    let storage = Storage::dir(key);
    let worker = start(&mut worker(
        &url,
        "02",
        &storage,
        &["--reconnect-grace", "20", "--idle-timeout", "30"],
    ));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let one = stream_args(&url, "flv", 6.0, GOP, first_video, !first_video);
    let mut one = publish_args(&url, &one, &format!("{key}-1")).await;
    publisher_done(&mut one, Duration::from_secs(15)).await;
    let both = stream_args(&url, "flv", 6.0, GOP, true, true);
    let mut both = publish_args(&url, &both, &format!("{key}-2")).await;
    publisher_done(&mut both, Duration::from_secs(15)).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    worker.signal(libc::SIGTERM);
    (finish(worker).await, storage)
}

/// Checks the two parts: the first has only `first` (its message says which track was
/// missing), the second both, and together they hold what was published.
fn check_switch(run: &Run, storage: &Storage, first: (Option<&str>, Option<&str>), word: &str) {
    assert_eq!(run.code, 0, "{}", run.stderr);
    let parts = parts(run);
    assert_eq!(parts.len(), 2, "{:#}", run.manifest);
    for (n, part) in parts.iter().enumerate() {
        let file = storage.file(part["key"].as_str().unwrap());
        let p = probe(&file);
        let want = if n == 0 {
            first
        } else {
            (Some("h264"), Some("aac"))
        };
        assert_eq!(
            (p.codec("video"), p.codec("audio")),
            want,
            "part {}: {:#}",
            n + 1,
            p.raw["streams"]
        );
        let claimed = part["durationSeconds"].as_f64().unwrap();
        assert!((p.duration.unwrap() - claimed).abs() < 0.2, "{part:#}");
    }
    let message = parts[0]["message"].as_str().unwrap_or_default();
    assert!(message.contains(word), "part 1's message: {message:?}");
    assert_eq!(parts[1]["message"].as_str().unwrap_or_default(), "");
    // What reading the source again costs: joining a running stream on nginx-rtmp (measured
    // 1.4 s: ffmpeg's connection and the stream from its next keyframe on), after a dropped
    // connection also the worker's retry (0.25 s).
    let recorded = recorded_seconds(run);
    assert!(
        (12.0 - 1.7..=12.3).contains(&recorded),
        "recorded {recorded:.2} s of 12 s published: {:#}",
        run.manifest["parts"]
    );
}

#[tokio::test]
async fn a_camera_that_is_off_in_mode_02_records_the_audio_and_a_new_part_begins_when_it_comes_on()
{
    let (kept, dropped) = tokio::join!(
        switch("idle", false, "camera-off-idle"),
        switch("live", false, "camera-off-live"),
    );
    for (run, storage) in [kept, dropped] {
        check_switch(&run, &storage, (None, Some("aac")), "camera");
    }
}

#[tokio::test]
async fn a_microphone_that_is_off_in_mode_02_records_the_video_and_a_new_part_begins_when_it_comes_on()
 {
    let (kept, dropped) = tokio::join!(
        switch("idle", true, "mic-off-idle"),
        switch("live", true, "mic-off-live"),
    );
    for (run, storage) in [kept, dropped] {
        check_switch(&run, &storage, (Some("h264"), None), "microphone");
    }
}

#[tokio::test]
async fn modes_that_record_only_the_missing_track_still_fail_with_advice() {
    let _audio = publish("only-audio", spec(false, true, 30)).await;
    let _video = publish("only-video", spec(true, false, 30)).await;
    let storage = Storage::dir("only-one");
    let mut audio_only = worker(
        &bed().rtmp_url("only-audio"),
        "01",
        &storage,
        &["--max-duration", "3"],
    );
    let mut video_only = worker(
        &bed().rtmp_url("only-video"),
        "00",
        &storage,
        &["--max-duration", "3"],
    );
    let (no_video, no_audio) = tokio::join!(run(&mut audio_only), run(&mut video_only));
    for (run, missing, advice) in [
        (no_video, "no video track", "AudioMp3 (00)"),
        (no_audio, "no audio track", "VideoMp4 (01)"),
    ] {
        assert_eq!(run.code, 3, "{}", run.stderr);
        let message = run.manifest["message"].as_str().unwrap();
        assert!(
            message.contains(missing) && message.contains(advice),
            "{message}"
        );
        assert!(parts(&run).is_empty());
    }
}
