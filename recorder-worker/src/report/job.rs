//! Reports this worker's files into its RecordingJob's `status.files` by server-side apply.
//!
//! `files` is a list-map keyed by `url`, and each worker applies with a field manager of its
//! own (`roomrec-worker-{pod}`), so a worker owns exactly its entries and those of earlier pods
//! stay. Server-side apply removes entries a manager stops listing, so every apply lists all the
//! entries this worker owns: recovered parts, stored parts and the open one.
//!
//! One task sends the reports: when a part is recovered, opens or is stored (coalesced), every
//! `--report-interval` (60 s by default) while a part is open, and once more from the manifest at
//! the end. A failed report is logged and retried on the next tick; it never touches the
//! recording.

use crate::shared::live::{LivePart, Status};
use crate::shared::part::PartRecord;
use kube::api::{Api, Patch, PatchParams};
use roomrec_api::crd::FileStatus;
use roomrec_api::{FileState, RecordingJob};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// One apply's bound, so a hanging API server delays the next report, not forever.
const APPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// The API server refuses longer field managers.
const MAX_MANAGER_CHARS: usize = 128;

/// The RecordingJob to report into: `NAMESPACE/NAME`.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRef {
    pub namespace: String,
    pub name: String,
}

/// Why `--report-job` does not name a RecordingJob; each message ends with the form to use.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum JobRefError {
    #[error("{0:?} has no '/': {JOB_REF_USAGE}")]
    NoSlash(String),
    #[error(
        "{0:?} is not a namespace (lowercase letters, digits and '-', at most 63): {JOB_REF_USAGE}"
    )]
    BadNamespace(String),
    #[error(
        "{0:?} is not an object name (lowercase letters, digits, '-' and '.', at most 253): {JOB_REF_USAGE}"
    )]
    BadName(String),
}

const JOB_REF_USAGE: &str = "use NAMESPACE/NAME, e.g. recordings/class-7";

impl JobRef {
    /// A namespace (DNS label) and a name (DNS subdomain), as the API server requires them.
    pub fn parse(s: &str) -> Result<Self, JobRefError> {
        let Some((namespace, name)) = s.split_once('/') else {
            return Err(JobRefError::NoSlash(s.into()));
        };
        if !is_dns_label(namespace) {
            return Err(JobRefError::BadNamespace(namespace.into()));
        }
        if !is_dns_subdomain(name) {
            return Err(JobRefError::BadName(name.into()));
        }
        Ok(Self {
            namespace: namespace.into(),
            name: name.into(),
        })
    }
}

impl std::fmt::Display for JobRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

fn is_dns_label(s: &str) -> bool {
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    s.len() <= 63
        && edge(s.chars().next())
        && edge(s.chars().last())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// The reporting task; `finish` sends the last report.
pub struct Reporter {
    last: oneshot::Sender<Vec<PartRecord>>,
    task: JoinHandle<()>,
}

impl Reporter {
    /// Starts reporting `status`'s parts into `job` as worker `pod`, an open part's figures
    /// every `interval`.
    pub fn start(job: JobRef, pod: String, status: Arc<Status>, interval: Duration) -> Self {
        let (last, last_rx) = oneshot::channel();
        let task = tokio::spawn(report(job, pod, status, interval, last_rx));
        Self { last, task }
    }

    /// The last report, from the manifest's parts; waits for it at most `within`.
    pub async fn finish(self, parts: Vec<PartRecord>, within: Duration) {
        let _ = self.last.send(parts);
        let mut task = self.task;
        if tokio::time::timeout(within, &mut task).await.is_err() {
            tracing::warn!("the last status report did not complete in time");
            task.abort();
        }
    }
}

/// Where reports go, once a client could be built.
struct Target {
    api: Api<RecordingJob>,
    job: JobRef,
    params: PatchParams,
    /// Entries an earlier container of this pod wrote (same field manager, e.g. a Job's pod
    /// with restartPolicy OnFailure): they must stay listed or the first apply would remove
    /// them. None until read.
    inherited: Option<Vec<FileStatus>>,
    applied: bool,
}

async fn report(
    job: JobRef,
    pod: String,
    status: Arc<Status>,
    interval: Duration,
    mut last: oneshot::Receiver<Vec<PartRecord>>,
) {
    let mut target: Option<Target> = None;
    let mut pending = false;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let (entries, is_last) = tokio::select! {
            biased;
            parts = &mut last => match parts {
                Ok(parts) => (final_entries(&parts, &status.parts(), &pod), true),
                Err(_) => return,
            },
            _ = status.parts_changed.notified() => (live_entries(&status.parts(), &pod), false),
            _ = tick.tick() => {
                if !status.is_recording() && !pending {
                    continue;
                }
                (live_entries(&status.parts(), &pod), false)
            }
        };
        if target.is_none() {
            target = connect(&job, &pod)
                .await
                .inspect_err(|e| tracing::warn!(job = %job, "cannot report to the RecordingJob: no Kubernetes client: {e}"))
                .ok();
        }
        pending = match target.as_mut() {
            Some(t) => match tokio::time::timeout(APPLY_TIMEOUT, t.apply(entries, &pod)).await {
                Ok(Ok(())) => false,
                Ok(Err(e)) => {
                    tracing::warn!(job = %t.job, "cannot report the files into the RecordingJob's status: {e}");
                    true
                }
                Err(_) => {
                    tracing::warn!(job = %t.job, "reporting the files into the RecordingJob's status timed out");
                    true
                }
            },
            None => true,
        };
        if is_last {
            return;
        }
    }
}

async fn connect(job: &JobRef, pod: &str) -> Result<Target, kube::Error> {
    // In a pod: the service account; elsewhere (tests, a laptop): KUBECONFIG.
    let client = kube::Client::try_default().await?;
    let manager: String = format!("roomrec-worker-{pod}")
        .chars()
        .take(MAX_MANAGER_CHARS)
        .collect();
    Ok(Target {
        api: Api::namespaced(client, &job.namespace),
        job: job.clone(),
        params: PatchParams::apply(&manager).force(),
        inherited: None,
        applied: false,
    })
}

impl Target {
    async fn apply(&mut self, entries: Vec<FileStatus>, pod: &str) -> Result<(), kube::Error> {
        let inherited = match &self.inherited {
            Some(v) => v,
            None => match self.api.get(&self.job.name).await {
                Ok(job) => self.inherited.insert(inherited_entries(&job, pod)),
                // A role that may only patch the status (the operator's per-job Role): pods
                // are not restarted in place there, so there is nothing to carry over.
                Err(kube::Error::Api(e)) if e.code == 403 => {
                    tracing::debug!(job = %self.job, "may not read the RecordingJob: reporting without earlier entries of this pod");
                    self.inherited.insert(Vec::new())
                }
                Err(e) => return Err(e),
            },
        };
        let files = merge(entries, inherited);
        if files.is_empty() && !self.applied {
            return Ok(());
        }
        let patch = json!({
            "apiVersion": format!("{}/{}", roomrec_api::GROUP, roomrec_api::VERSION),
            "kind": roomrec_api::KIND,
            "status": files_status(files),
        });
        self.api
            .patch_status(&self.job.name, &self.params, &Patch::Apply(&patch))
            .await?;
        self.applied = true;
        Ok(())
    }
}

/// An empty list is left out: this worker then owns no entry, rather than the whole list.
fn files_status(files: Vec<FileStatus>) -> Value {
    if files.is_empty() {
        json!({})
    } else {
        json!({ "files": files })
    }
}

/// One `status.files` entry.
fn entry(part: &LivePart, pod: &str) -> FileStatus {
    let millis = |seconds: f64| (seconds * 1000.0).round() / 1000.0;
    match part {
        LivePart::Recording {
            meta,
            bytes,
            seconds,
        } => FileStatus {
            url: meta.url.clone(),
            user_id: meta.user_id.clone(),
            status: FileState::Recording,
            message: meta.note.clone().unwrap_or_default(),
            part: meta.part,
            bytes: *bytes,
            duration_seconds: millis(*seconds),
            started_at: Some(meta.started_at.clone()),
            ended_at: None,
            pod: Some(pod.into()),
        },
        LivePart::Finished(r) => FileStatus {
            url: r.url.clone(),
            user_id: r.user_id.clone(),
            status: r.status,
            message: r.message.clone(),
            part: r.part,
            bytes: r.bytes,
            duration_seconds: millis(r.duration_seconds),
            started_at: Some(r.started_at.clone()),
            ended_at: Some(r.ended_at.clone()),
            pod: Some(pod.into()),
        },
    }
}

fn live_entries(parts: &[LivePart], pod: &str) -> Vec<FileStatus> {
    parts.iter().map(|p| entry(p, pod)).collect()
}

/// The manifest's parts, and any part whose upload had not completed at the end, as failed
/// (its checkpoints stay in the journal for the next run).
fn final_entries(manifest: &[PartRecord], live: &[LivePart], pod: &str) -> Vec<FileStatus> {
    let stored: HashSet<&str> = manifest.iter().map(|p| p.url.as_str()).collect();
    let mut entries: Vec<FileStatus> = manifest
        .iter()
        .map(|p| entry(&LivePart::Finished(p.clone()), pod))
        .collect();
    for part in live.iter().filter(|p| !stored.contains(p.url())) {
        let mut e = entry(part, pod);
        if e.status == FileState::Recording {
            e.status = FileState::Failed;
            e.message = "not stored before the worker stopped; the next run rebuilds it from its checkpoints".into();
            e.ended_at = Some(crate::shared::format::now_rfc3339());
        }
        entries.push(e);
    }
    entries
}

/// The job's entries this pod wrote before (an earlier container of the same pod). One still
/// `recording` was being written when that container ended and was not recovered.
fn inherited_entries(job: &RecordingJob, pod: &str) -> Vec<FileStatus> {
    let Some(status) = &job.status else {
        return Vec::new();
    };
    status
        .files
        .iter()
        .filter(|f| f.pod.as_deref() == Some(pod))
        .cloned()
        .map(|mut f| {
            if f.status == FileState::Recording {
                f.status = FileState::Failed;
                f.message =
                    "the worker restarted while recording this file and could not rebuild it"
                        .into();
            }
            f
        })
        .collect()
}

/// This run's entries, then the inherited ones it does not replace.
fn merge(mut entries: Vec<FileStatus>, inherited: &[FileStatus]) -> Vec<FileStatus> {
    let ours: HashSet<String> = entries.iter().map(|e| e.url.clone()).collect();
    entries.extend(inherited.iter().filter(|e| !ours.contains(&e.url)).cloned());
    entries
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared::part::PartMeta;
    use roomrec_api::FileState;

    fn record(part: u32, message: &str) -> PartRecord {
        PartRecord::from_meta(
            &PartMeta::example(part),
            FileState::Succeeded,
            message.into(),
            1000,
            9.87654,
            false,
        )
    }

    #[test]
    fn job_refs_parse_namespace_slash_name() {
        let j = JobRef::parse("recordings/class-7.a").unwrap();
        assert_eq!(
            (j.namespace.as_str(), j.name.as_str()),
            ("recordings", "class-7.a")
        );
        assert_eq!(j.to_string(), "recordings/class-7.a");
        for bad in [
            "class-7",
            "/class-7",
            "recordings/",
            "a/b/c",
            "Recordings/x",
            "ns/X",
            "ns/-x",
            "ns/x-",
            "ns/a..b",
            "a b/x",
            "",
        ] {
            let e = JobRef::parse(bad).unwrap_err().to_string();
            assert!(e.contains("NAMESPACE/NAME"), "{bad:?}: {e}");
        }
        assert_eq!(
            JobRef::parse("Recordings/x"),
            Err(JobRefError::BadNamespace("Recordings".into()))
        );
        assert!(JobRef::parse(&format!("{}/x", "n".repeat(64))).is_err());
        assert!(JobRef::parse(&format!("ns/{}", "n".repeat(63))).is_ok());
    }

    #[test]
    fn entries_have_the_crd_shape() {
        let open = LivePart::Recording {
            meta: PartMeta::example(2),
            bytes: 5,
            seconds: 1.23456,
        };
        assert_eq!(
            json!(entry(&open, "pod-a")),
            json!({"url": "http://s3/b/p/2.mp4", "userId": "alice", "status": "recording",
                   "part": 2, "bytes": 5, "durationSeconds": 1.235,
                   "startedAt": "2026-01-01T00:00:00Z", "pod": "pod-a"})
        );
        let done = json!(entry(&LivePart::Finished(record(1, "")), "pod-a"));
        assert_eq!(done["status"], "succeeded");
        assert_eq!(done["durationSeconds"], 9.877);
        assert!(
            done.get("message").is_none(),
            "an empty message is left out"
        );
        assert!(done["endedAt"].is_string());
        let noted = json!(entry(&LivePart::Finished(record(1, "recovered")), "pod-a"));
        assert_eq!(noted["message"], "recovered");
        // A part's note (mode 02 with the camera off) is its message while it records and
        // once it is stored, before anything the store added.
        let mut meta = PartMeta::example(3);
        meta.note = Some("the camera was off".into());
        let open = LivePart::Recording {
            meta: meta.clone(),
            bytes: 5,
            seconds: 1.0,
        };
        assert_eq!(
            json!(entry(&open, "pod-a"))["message"],
            "the camera was off"
        );
        let done = PartRecord::from_meta(
            &meta,
            FileState::Succeeded,
            "recovered".into(),
            1,
            1.0,
            true,
        );
        assert_eq!(
            json!(entry(&LivePart::Finished(done), "pod-a"))["message"],
            "the camera was off; recovered"
        );
    }

    #[test]
    fn the_last_report_lists_the_manifest_and_marks_unstored_parts_failed() {
        let live = [
            LivePart::Finished(record(1, "")),
            LivePart::Recording {
                meta: PartMeta::example(2),
                bytes: 5,
                seconds: 1.0,
            },
        ];
        let entries = json!(final_entries(&[record(1, "")], &live, "p"));
        let entries = entries.as_array().unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0]["status"], "succeeded");
        assert_eq!(entries[1]["status"], "failed");
        assert!(entries[1]["endedAt"].is_string());
    }

    #[test]
    fn entries_of_an_earlier_container_of_this_pod_stay_listed() {
        let file = |url: &str, status: &str, pod: &str| json!({"url": url, "userId": "alice", "status": status, "pod": pod});
        let job = |files: Value| -> RecordingJob {
            serde_json::from_value(json!({
                "apiVersion": "roomrec.dev/v1alpha1", "kind": "RecordingJob",
                "metadata": {"name": "j", "namespace": "n"},
                "spec": {"source": {"url": "rtmp://h/live/a"}},
                "status": {"files": files},
            }))
            .unwrap()
        };
        let with_files = job(json!([
            file("u1", "succeeded", "p"),
            file("u2", "recording", "p"),
            file("u3", "succeeded", "other"),
        ]));
        let inherited = inherited_entries(&with_files, "p");
        assert_eq!(inherited.len(), 2);
        assert_eq!(inherited[1].status, FileState::Failed);
        let ours: FileStatus = serde_json::from_value(file("u2", "succeeded", "p")).unwrap();
        let merged = merge(vec![ours], &inherited);
        let urls: Vec<&str> = merged.iter().map(|e| e.url.as_str()).collect();
        assert_eq!(urls, ["u2", "u1"]);
        assert_eq!(
            merged[0].status,
            FileState::Succeeded,
            "this run's entry wins"
        );
        assert!(inherited_entries(&job(json!([])), "p").is_empty());
        assert_eq!(files_status(Vec::new()), json!({}));
    }
}
