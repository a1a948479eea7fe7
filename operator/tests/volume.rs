//! The volume storage backend end to end: `examples/volume-mp3.yaml` (a PersistentVolumeClaim
//! and a RecordingJob writing MP3 into it) applied with kubectl, the claim pre-bound to a
//! hostPath PersistentVolume in the bed's scratch directory, which the node agent bind-mounts
//! into the real worker (running as 65532 with fsGroup 65532 and a read-only root). Claims the
//! node agent cannot follow keep the pod's container waiting with a message that says why.

/// The parts of `tests/support/` these tests use, and those they build on (each file says
/// what it holds).
mod support {
    pub mod cluster;
    pub mod examples;
    pub mod jobs;
    pub mod kubectl;
    pub mod logs;
    pub mod operator_process;

    pub use self::{cluster::*, examples::*, jobs::*, operator_process::*};
}

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use kube::api::{Api, PostParams};
use roomrec_testbed::media::ffprobe;
use roomrec_testbed::wait_until;
use serde_json::json;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use support::*;

/// Where the worker mounts the claim (operator/src/worker.rs).
const MOUNT: &str = "/var/lib/roomrec/recordings";

/// The host file behind a `file://` URL of the worker: its mount point maps to `host_dir`.
fn host_file(url: &str, host_dir: &Path) -> PathBuf {
    let inside = url
        .strip_prefix(&format!("file://{MOUNT}/"))
        .unwrap_or_else(|| panic!("{url} is not under file://{MOUNT}/"));
    host_dir.join(inside)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volume_example_records_mp3_into_a_claim() {
    cluster().await;
    let ns = bed().namespace("volume").await.unwrap();

    // A hostPath volume reserved for the example's claim. Its directory does not exist yet:
    // the node agent creates it (as hostPath DirectoryOrCreate) and applies the pod's fsGroup.
    let pv_name = format!("recordings-pv-{ns}");
    let host_dir = bed().scratch("volumes").unwrap().join(&ns);
    let volumes: Api<PersistentVolume> = Api::all(bed().client().await.unwrap());
    let pv: PersistentVolume = serde_json::from_value(json!({
        "metadata": {"name": pv_name},
        "spec": {
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "hostPath": {"path": host_dir.to_str().unwrap()},
            "claimRef": {"namespace": ns, "name": "recordings"},
        },
    }))
    .unwrap();
    volumes.create(&PostParams::default(), &pv).await.unwrap();

    let op = Operator::start(&ns, &[]).await;
    let key = format!("podcast-{ns}");
    let _publisher = publish(&key, None).await;
    apply_in(
        &ns,
        &example(
            "volume-mp3.yaml",
            &[
                ("rtmp://127.0.0.1:1935/live/podcast", bed().rtmp_url(&key)),
                ("maxDurationSeconds: 20", "maxDurationSeconds: 8".into()),
                (
                    "volumeName: recordings-pv",
                    format!("volumeName: {pv_name}"),
                ),
            ],
        ),
    );

    let api = jobs(&ns).await;
    let job = ended_as(&api, "podcast", "Succeeded", Duration::from_secs(90), &op).await;
    let status = job.status.clone().unwrap();
    assert_eq!(
        status.stop_reason.map(roomrec_api::StopReason::as_str),
        Some("max-duration")
    );

    let files = files(&job);
    assert!(!files.is_empty(), "no files: {}", status_json(&job));
    let mut total = 0.0;
    for f in &files {
        assert_eq!(f.status.as_str(), "succeeded", "{}", status_json(&job));
        assert!(
            f.url.starts_with(&format!("file://{MOUNT}/podcast/")) && f.url.ends_with(".mp3"),
            "{}",
            f.url
        );
        let path = host_file(&f.url, &host_dir);
        let probe = ffprobe(path.to_str().unwrap(), Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("{} ({}) does not play: {e}", f.url, path.display()));
        assert_eq!(
            probe.codec("audio"),
            Some("mp3"),
            "{}: {:?}",
            f.url,
            probe.codecs
        );
        assert_eq!(probe.codec("video"), None, "{}: {:?}", f.url, probe.codecs);
        let duration = probe.duration.unwrap_or(0.0);
        assert!(
            (duration - f.duration_seconds).abs() < 1.5,
            "{} plays {duration} s but the status says {}",
            f.url,
            f.duration_seconds
        );
        // The worker runs as 65532:65532, so its files have that group; the volume's root
        // was made by the node agent as root, and is writable to the worker only because
        // fsGroup gave it group 65532 with group write and setgid.
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.gid(), 65532, "{} group", path.display());
        total += duration;
    }
    assert!((total - 8.0).abs() < 1.5, "recorded {total} s of 8");
    println!("recorded {total:.2} s in {} file(s)", files.len());

    let root = std::fs::metadata(&host_dir).unwrap();
    assert_eq!(
        (root.uid(), root.gid(), root.mode() & 0o7777),
        (0, 65532, 0o2775),
        "the volume's root after fsGroup"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_the_node_cannot_mount_keep_the_container_waiting_with_the_reason() {
    cluster().await;
    let ns = bed().namespace("volume-errors").await.unwrap();
    let client = bed().client().await.unwrap();
    let nfs_pv = format!("nfs-pv-{ns}");
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    let pv: PersistentVolume = serde_json::from_value(json!({
        "metadata": {"name": nfs_pv},
        "spec": {
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteOnce"],
            "nfs": {"server": "127.0.0.1", "path": "/exports"},
        },
    }))
    .unwrap();
    volumes.create(&PostParams::default(), &pv).await.unwrap();
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
    for (name, volume_name) in [("unbound", None), ("nfs", Some(nfs_pv.clone()))] {
        let claim: PersistentVolumeClaim = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}},
                "volumeName": volume_name,
            },
        }))
        .unwrap();
        claims.create(&PostParams::default(), &claim).await.unwrap();
    }

    let pods: Api<Pod> = Api::namespaced(client, &ns);
    let cases = [
        ("absent", "persistentvolumeclaim \"absent\" not found"),
        ("unbound", "is not bound"),
        ("nfs", "is neither hostPath nor local"),
    ];
    for (claim, _) in cases {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": claim},
            "spec": {
                "restartPolicy": "Never",
                "containers": [{
                    "name": "main",
                    "image": "busybox",
                    "command": ["/bin/true"],
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                }],
                "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}],
            },
        }))
        .unwrap();
        pods.create(&PostParams::default(), &pod).await.unwrap();
    }
    for (claim, expected) in cases {
        let last = std::sync::Mutex::new(String::new());
        let found = wait_until(Duration::from_secs(30), || async {
            let Ok(pod) = pods.get(claim).await else {
                return false;
            };
            let waiting = pod
                .status
                .and_then(|s| s.container_statuses)
                .unwrap_or_default()
                .into_iter()
                .find_map(|c| c.state.and_then(|s| s.waiting));
            let text = format!("{waiting:?}");
            *last.lock().unwrap() = text;
            waiting.is_some_and(|w| {
                w.reason.as_deref() == Some("ContainerCreating")
                    && w.message.as_deref().is_some_and(|m| {
                        m.starts_with("MountVolume.SetUp failed for volume \"data\"")
                            && m.contains(expected)
                    })
            })
        })
        .await;
        assert!(
            found.is_ok(),
            "pod {claim}: waiting for {expected:?}, last {}",
            last.lock().unwrap()
        );
    }
}
