//! One stream recorded by many workers at once into one place, with the same session start:
//! their keys collide, and each must still own what it writes (a claimed key, a journal no
//! other run touches) and store a whole recording of its own.

use crate::support::*;
use roomrec_testbed::media::StreamSpec;
use std::collections::HashSet;

const WORKERS: usize = 20;
const SECONDS: f64 = 8.0;

#[tokio::test]
async fn twenty_workers_with_the_same_keys_store_twenty_whole_recordings_in_s3() {
    same_key_recordings("same-key-s3", Storage::s3("same-key-s3")).await;
}

#[tokio::test]
async fn twenty_workers_with_the_same_keys_store_twenty_whole_recordings_in_cos() {
    let cos = cos_stand_in().await;
    let storage = Storage::cos(&cos, "same-key-cos");
    same_key_recordings("same-key-cos", storage).await;
}

async fn same_key_recordings(name: &str, storage: Storage) {
    // Small and copied (mode 02 copies H.264 and AAC): twenty workers share two cores.
    let spec = StreamSpec {
        width: 320,
        height: 240,
        fps: 15,
        video_kbps: 300,
        ..StreamSpec::default()
    };
    let _publisher = publish(name, spec).await;
    // A kept-alive bed holds an earlier run's parts under the same session.
    let _ = std::fs::remove_dir_all(storage.file(name));
    let options = [
        "--session-start",
        "2026-02-01T00:00:00Z",
        "--max-duration",
        "8",
    ];
    let workers: Vec<Started> = (0..WORKERS)
        .map(|_| start(&mut worker(&bed().rtmp_url(name), "02", &storage, &options)))
        .collect();
    let mut keys = HashSet::new();
    for started in workers {
        let run = finish(started).await;
        assert_eq!(run.code, 0, "{}", run.stderr);
        for part in parts(&run) {
            assert_eq!(part["recovered"], false, "{part:#}");
            let key = part["key"].as_str().unwrap().to_string();
            assert!(keys.insert(key.clone()), "two workers stored {key}");
        }
        // Each plays in full and lasts what the manifest says: the limit, give or take the
        // server's GOP burst at the start and a slow start on two loaded cores.
        let seconds = verify_parts(&run, &storage, Some("h264"), Some("aac"));
        assert!(
            (SECONDS - 2.0..SECONDS + 2.0).contains(&seconds),
            "a worker stored {seconds:.2} s of {SECONDS}: {:#}",
            run.manifest
        );
    }
    assert!(keys.len() >= WORKERS, "{keys:?}");
    let left = files_under(&storage.file(&format!("{name}/.roomrec-journal")));
    assert!(left.is_empty(), "journals left behind: {left:?}");
}
