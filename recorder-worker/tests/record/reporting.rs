//! What the worker tells others: Prometheus metrics that count what the manifest lists, and the
//! files it reports into a RecordingJob's status (with the result in the termination message).

use crate::support::*;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PostParams};
use roomrec_testbed::media::StreamSpec;
use roomrec_testbed::prometheus::scrape;
use roomrec_testbed::wait_until;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

#[tokio::test]
async fn metrics_count_what_the_manifest_lists() {
    let _publisher = publish("metrics", StreamSpec::default()).await;
    let storage = Storage::s3("metrics");
    let address = metrics_address();
    let manifest_file = bed().scratch("metrics").unwrap().join("manifest.json");
    let child = start(&mut worker(
        &bed().rtmp_url("metrics"),
        "02",
        &storage,
        &[
            "--segment-seconds",
            "4",
            "--max-duration",
            "10",
            "--metrics-address",
            &address,
            "--metrics-linger",
            "120",
            "--manifest",
            manifest_file.to_str().unwrap(),
        ],
    ));

    // While recording: checkpoints confirmed (every 2 s) and media counted.
    let during = std::sync::Mutex::new(BTreeMap::new());
    let recording = wait_until(Duration::from_secs(30), || async {
        let Ok(m) = scrape(&address).await else {
            return false;
        };
        let ok = m["roomrec_worker_recording"] == 1.0
            && m["roomrec_worker_recorded_bytes_total"] > 0.0
            && m["roomrec_worker_recorded_seconds_total"] > 0.0;
        *during.lock().unwrap() = m;
        ok
    })
    .await;
    let during = during.into_inner().unwrap();
    assert!(recording.is_ok(), "{during:#?}");
    assert_eq!(
        during["roomrec_worker_spool_limit_bytes"],
        (1u64 << 30) as f64,
        "--spool-max 1G"
    );

    // After: the worker lingers, so the final counts can be read beside the manifest.
    let manifest_read = wait_until(Duration::from_secs(60), || async {
        std::fs::read(&manifest_file)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .is_some()
    })
    .await;
    assert!(manifest_read.is_ok(), "no manifest within 60 s");
    let manifest: Value = serde_json::from_slice(&std::fs::read(&manifest_file).unwrap()).unwrap();
    let after = scrape(&address).await.unwrap();
    let parts = manifest["parts"].as_array().unwrap();
    assert!(parts.len() >= 2, "{manifest:#}");
    let sum = |field: &str| {
        parts
            .iter()
            .map(|p| p[field].as_f64().unwrap())
            .sum::<f64>()
    };
    assert_eq!(
        after["roomrec_worker_recorded_bytes_total"],
        sum("bytes"),
        "{after:#?}"
    );
    let seconds = after["roomrec_worker_recorded_seconds_total"];
    assert!(
        (seconds - sum("durationSeconds")).abs() < 0.05,
        "{seconds} s counted, {} s in the manifest",
        sum("durationSeconds")
    );
    assert_eq!(
        after["roomrec_worker_parts_total{status=\"complete\"}"],
        parts.len() as f64
    );
    assert_eq!(after["roomrec_worker_parts_total{status=\"failed\"}"], 0.0);
    assert_eq!(after["roomrec_worker_recording"], 0.0);
    assert_eq!(after["roomrec_worker_spool_bytes"], 0.0);
    assert_eq!(after["roomrec_worker_source_reconnects_total"], 0.0);

    // A SIGTERM ends the lingering at once.
    let signalled = Instant::now();
    child.signal(libc::SIGTERM);
    let run = finish(child).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(signalled.elapsed() < Duration::from_secs(10));
    verify_parts(
        &Run { manifest, ..run },
        &storage,
        Some("h264"),
        Some("aac"),
    );
}

/// A RecordingJob in a fresh namespace, to report into.
async fn recording_job(client: &kube::Client, name: &str) -> Api<DynamicObject> {
    roomrec_testbed::crds::install_recording_job_crd(client)
        .await
        .expect("the RecordingJob CRD is established");
    let ns = bed().namespace("report").await.unwrap();
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("roomrec.dev", "v1alpha1", "RecordingJob"),
        "recordingjobs",
    );
    let jobs: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &resource);
    let job = DynamicObject::new(name, &resource).data(json!({"spec": {
        "source": {"url": "rtmp://127.0.0.1:1/live/x"},
        "storage": {"s3": {"bucket": "recordings"}},
    }}));
    // A CRD that was just established can take a moment to be served.
    let mut created = None;
    for _ in 0..50 {
        match jobs.create(&PostParams::default(), &job).await {
            Ok(j) => {
                created = Some(j);
                break;
            }
            Err(kube::Error::Api(e)) if e.code == 404 => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(e) => panic!("creating the RecordingJob: {e}"),
        }
    }
    created.expect("the RecordingJob is created");
    jobs
}

/// This worker's `status.files` entries, by URL.
fn files_of(job: &DynamicObject, pod: &str) -> BTreeMap<String, Value> {
    job.data["status"]["files"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| f["pod"] == pod)
        .map(|f| (f["url"].as_str().unwrap().to_string(), f.clone()))
        .collect()
}

#[tokio::test]
async fn files_are_reported_into_the_recording_job_status_and_the_result_into_the_termination_message()
 {
    let client = bed().client().await.unwrap();
    let jobs = recording_job(&client, "report").await;
    let ns = jobs.namespace().unwrap().to_string();
    let _publisher = publish("report", StreamSpec::default()).await;
    let storage = Storage::s3("report");
    let message_file = bed().scratch("report").unwrap().join("termination-log");
    let job_ref = format!("{ns}/report");
    let mut command = worker(
        &bed().rtmp_url("report"),
        "02",
        &storage,
        &[
            "--segment-seconds",
            "10",
            "--max-duration",
            "25",
            "--report-job",
            &job_ref,
            "--report-name",
            "test-pod",
            "--report-interval",
            "3",
            "--termination-message",
            message_file.to_str().unwrap(),
        ],
    );
    command.env("KUBECONFIG", &bed().kubeconfig);
    let child = start(&mut command);

    // While recording: an entry `recording` whose bytes grow (a report every 3 s).
    let mut recording: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    while !child.output.is_finished() {
        if let Ok(job) = jobs.get("report").await {
            for (url, file) in files_of(&job, "test-pod") {
                if file["status"] == "recording" {
                    assert!(file.get("endedAt").is_none(), "{file}");
                    let bytes = file["bytes"].as_u64().unwrap();
                    let seen = recording.entry(url).or_default();
                    if seen.last() != Some(&bytes) {
                        seen.push(bytes);
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let run = finish(child).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        !run.stderr.contains("cannot report"),
        "every report went through: {}",
        run.stderr
    );
    eprintln!("recording entries seen (bytes per report): {recording:?}");
    assert!(!recording.is_empty(), "a recording entry was seen");
    assert!(
        recording
            .values()
            .any(|b| b.len() >= 2 && b.windows(2).all(|w| w[0] < w[1])),
        "an open part's bytes grow while it records: {recording:?}"
    );

    // At the end: every part of the manifest, succeeded, with its figures.
    let parts = parts(&run);
    assert!(parts.len() >= 3, "{:#}", run.manifest);
    let job = jobs.get("report").await.unwrap();
    let files = files_of(&job, "test-pod");
    assert_eq!(files.len(), parts.len(), "{:#}", job.data["status"]);
    for part in &parts {
        let file = &files[part["url"].as_str().unwrap()];
        assert_eq!(file["status"], "succeeded", "{file}");
        assert_eq!(file["userId"], part["userId"]);
        assert_eq!(file["part"], part["part"]);
        assert_eq!(file["bytes"], part["bytes"]);
        assert_eq!(
            file["durationSeconds"].as_f64(),
            part["durationSeconds"].as_f64()
        );
        assert_eq!(file["startedAt"], part["startedAt"]);
        assert_eq!(file["endedAt"], part["endedAt"]);
        assert!(file.get("message").is_none(), "{file}");
    }
    let managers = job.metadata.managed_fields.clone().unwrap_or_default();
    assert!(
        managers
            .iter()
            .any(|m| m.manager.as_deref() == Some("roomrec-worker-test-pod")
                && m.subresource.as_deref() == Some("status")
                && m.operation.as_deref() == Some("Apply")),
        "{managers:#?}"
    );

    let message: Value =
        serde_json::from_str(&std::fs::read_to_string(&message_file).unwrap()).unwrap();
    assert_eq!(
        message,
        json!({
            "status": "succeeded",
            "stopReason": "max-duration",
            "message": "",
            "retryable": true,
            "parts": parts.len(),
            "bytes": run.manifest["bytes"],
            "durationSeconds": run.manifest["durationSeconds"],
        })
    );
}
