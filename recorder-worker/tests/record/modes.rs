//! Modes and codecs: each mode (00 MP3, 01 video MP4, 02 audio-video MP4) into each backend,
//! MP3 from the source copied rather than re-encoded, audio MP4 cannot carry encoded to AAC,
//! and a source without the track a mode needs refused with advice.

use crate::support::*;
use roomrec_testbed::media::StreamSpec;

#[tokio::test]
async fn every_mode_into_every_backend() {
    let _publisher = publish("modes", StreamSpec::default()).await;
    let url = bed().rtmp_url("modes");
    // COS through its stand-in (a test double that checks every request's COS signature).
    let cos = cos_stand_in().await;
    let mut runs = Vec::new();
    for (mode, video, audio) in [
        ("00", None, Some("mp3")),
        ("01", Some("h264"), None),
        ("02", Some("h264"), Some("aac")),
    ] {
        for storage in [
            Storage::s3(&format!("modes/{mode}")),
            Storage::cos(&cos, &format!("modes/{mode}")),
            Storage::dir(&format!("modes-{mode}")),
        ] {
            let child = start(&mut worker(&url, mode, &storage, &["--max-duration", "4"]));
            runs.push((mode, video, audio, storage, child));
        }
    }
    for (mode, video, audio, storage, child) in runs {
        let run = finish(child).await;
        assert_eq!(run.code, 0, "mode {mode}: {}", run.stderr);
        assert_eq!(run.manifest["stopReason"], "max-duration");
        assert_eq!(parts(&run).len(), 1, "{:#}", run.manifest);
        let seconds = verify_parts(&run, &storage, video, audio);
        assert!((3.9..5.5).contains(&seconds), "mode {mode}: {seconds} s");
        let url = parts(&run)[0]["url"].as_str().unwrap().to_string();
        match &storage {
            Storage::S3 { endpoint, .. } => assert!(
                url.starts_with(&format!("{endpoint}/recordings/modes/{mode}/modes_")),
                "{url}"
            ),
            Storage::Cos { .. } => assert!(
                url.starts_with(&format!(
                    "https://{COS_BUCKET}.cos.ap-shanghai.myqcloud.com/modes/{mode}/modes_"
                )),
                "{url}"
            ),
            Storage::Dir(dir) => assert!(
                url.starts_with(&format!("file://{}/modes_", dir.display())),
                "{url}"
            ),
        }
    }
    let requests = cos.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.method == "PUT" || r.method == "POST"),
        "nothing was written to COS"
    );
    assert!(
        requests.iter().all(|r| r.status != 403),
        "the COS stand-in refused a signature: {requests:?}"
    );
}

#[tokio::test]
async fn mp3_audio_is_copied_not_reencoded() {
    let spec = StreamSpec {
        audio_codec: Some("libmp3lame"),
        ..StreamSpec::default()
    };
    let _publisher = publish("mp3-source", spec).await;
    let url = bed().rtmp_url("mp3-source");
    for (mode, video) in [("00", None), ("02", Some("h264"))] {
        let storage = Storage::s3(&format!("mp3src/{mode}"));
        let run = run(&mut worker(&url, mode, &storage, &["--max-duration", "3"])).await;
        assert_eq!(run.code, 0, "{}", run.stderr);
        verify_parts(&run, &storage, video, Some("mp3"));
        assert!(
            run.stderr.contains("\"copy\":true"),
            "MP3 from the source is copied: {}",
            run.stderr
        );
        // Mode 00 usually encodes (AAC sources): ffmpeg started that way, reported MP3 and
        // was started again to copy it. MP4 carries MP3 as the usual command does.
        assert_eq!(
            run.stderr.contains(RESTARTED),
            mode == "00",
            "mode {mode}: {}",
            run.stderr
        );
    }
}

/// What the worker logs when the source's tracks need another ffmpeg command than the usual.
const RESTARTED: &str = "the source needs another ffmpeg command";

#[tokio::test]
async fn audio_mp4_cannot_carry_is_encoded_to_aac() {
    let spec = StreamSpec {
        audio_codec: Some("nellymoser"),
        ..StreamSpec::default()
    };
    let _publisher = publish("nellymoser", spec).await;
    let url = bed().rtmp_url("nellymoser");
    let storage = Storage::s3("nellymoser");
    let run = run(&mut worker(&url, "02", &storage, &["--max-duration", "4"])).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let seconds = verify_parts(&run, &storage, Some("h264"), Some("aac"));
    assert!((3.9..5.5).contains(&seconds), "{seconds} s");
    assert!(
        run.stderr.contains("\"copy\":false") && run.stderr.contains(RESTARTED),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn a_source_without_audio_fails_audio_modes_with_advice() {
    let spec = StreamSpec {
        audio_codec: None,
        ..StreamSpec::default()
    };
    let _publisher = publish("silent", spec).await;
    let url = bed().rtmp_url("silent");
    let storage = Storage::dir("silent");
    let run = run(&mut worker(&url, "00", &storage, &["--max-duration", "3"])).await;
    assert_eq!(run.code, 3, "a missing track is not worth a retry");
    let message = run.manifest["message"].as_str().unwrap();
    assert!(
        message.contains("no audio track") && message.contains("VideoMp4 (01)"),
        "{message}"
    );
    assert!(parts(&run).is_empty());
    let ok = self::run(&mut worker(&url, "01", &storage, &["--max-duration", "3"])).await;
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    verify_parts(&ok, &storage, Some("h264"), None);
}
