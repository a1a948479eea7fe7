//! The pure build: a RecordingJob (plus the operator's settings) → the worker pods and the
//! narrow RBAC that lets each worker report its own job's files. No API calls here, so every
//! rule below is unit-tested from fixtures.

use crate::crd::{RecordingJob, Storage};
use crate::settings::Settings;
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource,
    LocalObjectReference, ObjectFieldSelector, PersistentVolumeClaimVolumeSource, Pod,
    PodSecurityContext, PodSpec, ResourceRequirements, SeccompProfile, SecretVolumeSource,
    SecurityContext, ServiceAccount, Volume, VolumeMount,
};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};
use std::collections::BTreeMap;

pub const LABEL_JOB_UID: &str = "roomrec.dev/job-uid";
pub const LABEL_PERSON: &str = "roomrec.dev/person";
pub const LABEL_ATTEMPT: &str = "roomrec.dev/attempt";
pub const CONTAINER: &str = "worker";
/// Workers run as this non-root user (the worker image's `nonroot`).
pub const WORKER_UID: i64 = 65532;

const SPOOL_DIR: &str = "/var/spool/roomrec";
const CREDENTIALS_DIR: &str = "/var/run/secrets/roomrec/storage";
const VOLUME_DIR: &str = "/var/lib/roomrec/recordings";

/// One recorded person: one worker pod at a time and one set of files.
#[derive(Clone, Debug, PartialEq)]
pub struct Person {
    /// Position in `spec.source.trtc.record` (0 for a url source): stable, label-safe.
    pub index: usize,
    /// The user id the worker puts on its files.
    pub user_id: String,
}

pub fn people(job: &RecordingJob) -> Vec<Person> {
    match (&job.spec.source.trtc, &job.spec.source.url) {
        (Some(trtc), _) => trtc
            .record
            .iter()
            .enumerate()
            .map(|(index, user_id)| Person {
                index,
                user_id: user_id.clone(),
            })
            .collect(),
        (None, Some(url)) => vec![Person {
            index: 0,
            user_id: stream_name(url),
        }],
        (None, None) => Vec::new(),
    }
}

/// The user id the worker gives a URL source's files: the last path segment without extension,
/// with anything but `[A-Za-z0-9_.-]` replaced (the worker's `source::stream_name`).
pub fn stream_name(url: &str) -> String {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let last = path.trim_end_matches('/').rsplit('/').next().unwrap_or("");
    let name: String = last
        .split('.')
        .next()
        .unwrap_or(last)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect();
    if name.is_empty() {
        "stream".into()
    } else {
        name
    }
}

/// `{job}-{suffix}`, kept within 63 characters (a valid label value and hostname) and unique:
/// a long job name is cut and the job's uid keeps names of similar jobs apart.
pub fn child_name(job: &RecordingJob, suffix: &str) -> String {
    let name = job.name_any();
    let full = format!("{name}-{suffix}");
    if full.len() <= 63 {
        return full;
    }
    let uid = job.uid().unwrap_or_default();
    let uid = &uid[..uid.len().min(8)];
    let keep = 63 - suffix.len() - uid.len() - 2;
    let cut = name[..keep.min(name.len())].trim_end_matches(['-', '.']);
    format!("{cut}-{uid}-{suffix}")
}

pub fn pod_name(job: &RecordingJob, person: &Person, attempt: u32) -> String {
    child_name(job, &format!("{}-{attempt}", person.index))
}

pub fn worker_service_account(job: &RecordingJob) -> String {
    job.spec
        .worker
        .as_ref()
        .and_then(|w| w.service_account_name.clone())
        .unwrap_or_else(|| child_name(job, "worker"))
}

fn owner(job: &RecordingJob) -> OwnerReference {
    job.controller_owner_ref(&())
        .expect("a stored job has a name and uid")
}

fn labels(job: &RecordingJob) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), "roomrec-worker".into()),
        (
            "app.kubernetes.io/managed-by".into(),
            "roomrec-operator".into(),
        ),
        (LABEL_JOB_UID.into(), job.uid().unwrap_or_default()),
    ])
}

fn meta(job: &RecordingJob, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: job.namespace(),
        labels: Some(labels(job)),
        owner_references: Some(vec![owner(job)]),
        ..Default::default()
    }
}

/// The label selector of everything a job owns.
pub fn selector(job: &RecordingJob) -> String {
    format!("{LABEL_JOB_UID}={}", job.uid().unwrap_or_default())
}

/// The per-job ServiceAccount (only when the job does not bring its own).
pub fn service_account(job: &RecordingJob) -> Option<ServiceAccount> {
    let own = job
        .spec
        .worker
        .as_ref()
        .is_some_and(|w| w.service_account_name.is_some());
    (!own).then(|| ServiceAccount {
        metadata: meta(job, worker_service_account(job)),
        ..Default::default()
    })
}

/// The Role a worker needs: read and patch this one job's status (its `files` entries; the read
/// keeps entries an earlier container of the same pod wrote). Nothing else.
pub fn role(job: &RecordingJob) -> Role {
    Role {
        metadata: meta(job, child_name(job, "worker-report")),
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec!["roomrec.dev".into()]),
            resources: Some(vec!["recordingjobs/status".into()]),
            resource_names: Some(vec![job.name_any()]),
            verbs: vec!["get".into(), "patch".into()],
            ..Default::default()
        }]),
    }
}

pub fn role_binding(job: &RecordingJob) -> RoleBinding {
    let name = child_name(job, "worker-report");
    RoleBinding {
        metadata: meta(job, name.clone()),
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "Role".into(),
            name,
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: worker_service_account(job),
            namespace: job.namespace(),
            ..Default::default()
        }]),
    }
}

/// What the n-th worker of a person must still do.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Resume {
    /// The session start all of the job's parts share (keys `{stream}_{start}_part{n}`), so a
    /// replacement continues with the next free part number instead of overwriting.
    pub session_start: String,
    /// Media seconds the person's earlier workers stored (counted against maxDurationSeconds).
    pub recorded_seconds: f64,
}

fn env(name: &str, value: impl ToString) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.to_string()),
        ..Default::default()
    }
}

/// The worker pod for `person`'s `attempt`-th run.
pub fn pod(
    job: &RecordingJob,
    person: &Person,
    attempt: u32,
    resume: &Resume,
    settings: &Settings,
) -> Pod {
    let spec = &job.spec;
    // The controller fills these in before any worker starts; the operator's defaults are
    // the same values it would have written.
    let defaults = &settings.defaults;
    let mode = spec.mode.unwrap_or(defaults.mode);
    let mut env_vars = vec![env("ROOMREC_MODE", mode.code())];
    if let Some(trtc) = &spec.source.trtc {
        env_vars.push(env("ROOMREC_TRTC_SDK_APP_ID", trtc.sdk_app_id));
        match (trtc.room_id, &trtc.str_room_id) {
            (Some(room), _) => env_vars.push(env("ROOMREC_TRTC_ROOM_ID", room)),
            (None, Some(room)) => env_vars.push(env("ROOMREC_TRTC_STR_ROOM_ID", room)),
            (None, None) => {}
        }
        env_vars.push(env("ROOMREC_TRTC_USER_ID", &person.user_id));
        env_vars.push(env("ROOMREC_TRTC_PLAY_DOMAIN", &trtc.play_domain));
        env_vars.push(env("ROOMREC_TRTC_PROTOCOL", serde_plain(&trtc.protocol)));
        env_vars.push(env("ROOMREC_TRTC_STREAM", serde_plain(&trtc.stream)));
        if let Some(bizid) = trtc.legacy_biz_id {
            env_vars.push(env("ROOMREC_TRTC_LEGACY_BIZID", bizid));
        }
    } else if let Some(url) = &spec.source.url {
        env_vars.push(env("ROOMREC_SOURCE", url));
    }

    let mut volumes = vec![
        Volume {
            name: "spool".into(),
            empty_dir: Some(EmptyDirVolumeSource {
                size_limit: Some(Quantity(settings.spool_limit.clone())),
                ..Default::default()
            }),
            ..Default::default()
        },
        Volume {
            name: "tmp".into(),
            empty_dir: Some(EmptyDirVolumeSource {
                size_limit: Some(Quantity("64Mi".into())),
                ..Default::default()
            }),
            ..Default::default()
        },
    ];
    let mut mounts = vec![
        mount("spool", SPOOL_DIR, false),
        mount("tmp", "/tmp", false),
    ];
    if let Some(storage) = spec.storage.as_ref().or(defaults.storage.as_ref()) {
        storage_env(storage, &mut env_vars, &mut volumes, &mut mounts);
    }

    env_vars.push(env(
        "ROOMREC_IDLE_TIMEOUT_SECONDS",
        spec.idle_timeout_seconds
            .unwrap_or(defaults.idle_timeout_seconds),
    ));
    if let Some(max) = spec.max_duration_seconds {
        // A replacement records only what is left; at least a second so the value stays valid
        // (the controller does not start a worker when nothing is left).
        let left = (f64::from(max) - resume.recorded_seconds).ceil().max(1.0);
        env_vars.push(env("ROOMREC_MAX_DURATION_SECONDS", left as u64));
    }
    if let Some(segment) = &spec.segment {
        if let Some(seconds) = segment.duration_seconds {
            env_vars.push(env("ROOMREC_SEGMENT_SECONDS", seconds));
        }
        if let Some(bytes) = segment.size_bytes {
            env_vars.push(env("ROOMREC_SEGMENT_SIZE", bytes));
        }
    }
    let grace = settings.worker_grace.as_secs().max(15);
    env_vars.extend([
        env("ROOMREC_SESSION_START", &resume.session_start),
        env("ROOMREC_SPOOL_DIR", SPOOL_DIR),
        env("ROOMREC_SHUTDOWN_TIMEOUT_SECONDS", grace - 10),
        env("ROOMREC_LOG_FORMAT", "json"),
        env("ROOMREC_MANIFEST", "-"),
        env(
            "ROOMREC_REPORT_JOB",
            format!("{}/{}", job.namespace().unwrap_or_default(), job.name_any()),
        ),
        EnvVar {
            name: "ROOMREC_POD_NAME".into(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "metadata.name".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        },
        env("ROOMREC_TERMINATION_MESSAGE", "/dev/termination-log"),
    ]);
    let ports = (settings.worker_metrics_port != 0).then(|| {
        env_vars.push(env(
            "ROOMREC_METRICS_ADDRESS",
            format!("0.0.0.0:{}", settings.worker_metrics_port),
        ));
        vec![ContainerPort {
            name: Some("metrics".into()),
            container_port: settings.worker_metrics_port.into(),
            protocol: Some("TCP".into()),
            ..Default::default()
        }]
    });
    for (name, value) in &settings.worker_env {
        env_vars.push(env(name, value));
    }

    let overrides = spec.worker.clone().unwrap_or_default();
    let mut metadata = meta(job, pod_name(job, person, attempt));
    let pod_labels = metadata.labels.get_or_insert_default();
    pod_labels.insert(LABEL_PERSON.into(), person.index.to_string());
    pod_labels.insert(LABEL_ATTEMPT.into(), attempt.to_string());
    Pod {
        metadata,
        spec: Some(PodSpec {
            restart_policy: Some("Never".into()),
            termination_grace_period_seconds: Some(grace as i64),
            service_account_name: Some(worker_service_account(job)),
            image_pull_secrets: (!settings.worker_image_pull_secrets.is_empty()).then(|| {
                settings
                    .worker_image_pull_secrets
                    .iter()
                    .map(|name| LocalObjectReference { name: name.clone() })
                    .collect()
            }),
            node_selector: overrides.node_selector,
            tolerations: overrides.tolerations,
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(WORKER_UID),
                run_as_group: Some(WORKER_UID),
                fs_group: Some(WORKER_UID),
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            containers: vec![Container {
                name: CONTAINER.into(),
                image: Some(
                    overrides
                        .image
                        .unwrap_or_else(|| settings.worker_image.clone()),
                ),
                args: Some(vec!["record".into()]),
                env: Some(env_vars),
                ports,
                volume_mounts: Some(mounts),
                resources: overrides
                    .resources
                    .or_else(|| settings.worker_resources.clone())
                    .or_else(|| Some(default_resources())),
                termination_message_policy: Some("FallbackToLogsOnError".into()),
                security_context: Some(SecurityContext {
                    allow_privilege_escalation: Some(false),
                    read_only_root_filesystem: Some(true),
                    run_as_non_root: Some(true),
                    capabilities: Some(Capabilities {
                        drop: Some(vec!["ALL".into()]),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            volumes: Some(volumes),
            ..Default::default()
        }),
        status: None,
    }
}

/// A copy remuxes at under 1 % of a core (docs/benchmarks.md); memory stays near 30 MiB plus
/// the in-memory spool (32 MiB).
fn default_resources() -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".into(), Quantity("50m".into())),
            ("memory".into(), Quantity("96Mi".into())),
        ])),
        limits: Some(BTreeMap::from([(
            "memory".into(),
            Quantity("256Mi".into()),
        )])),
        ..Default::default()
    }
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: Some(read_only),
        ..Default::default()
    }
}

/// `ROOMREC_STORAGE` and friends; credentials only as a mounted Secret (never copied).
fn storage_env(
    storage: &Storage,
    env_vars: &mut Vec<EnvVar>,
    volumes: &mut Vec<Volume>,
    mounts: &mut Vec<VolumeMount>,
) {
    let mut credentials = None;
    if let Some(cos) = &storage.cos {
        env_vars.push(env(
            "ROOMREC_STORAGE",
            format!("cos://{}/{}", cos.bucket, trim_path(&cos.path)),
        ));
        env_vars.push(env("ROOMREC_REGION", &cos.region));
        if let Some(endpoint) = &cos.endpoint {
            env_vars.push(env("ROOMREC_ENDPOINT", endpoint));
        }
        credentials = cos.credentials_secret.clone();
    } else if let Some(s3) = &storage.s3 {
        env_vars.push(env(
            "ROOMREC_STORAGE",
            format!("s3://{}/{}", s3.bucket, trim_path(&s3.path)),
        ));
        if let Some(region) = &s3.region {
            env_vars.push(env("ROOMREC_REGION", region));
        }
        if let Some(endpoint) = &s3.endpoint {
            env_vars.push(env("ROOMREC_ENDPOINT", endpoint));
        }
        if s3.virtual_host {
            env_vars.push(env("ROOMREC_S3_VIRTUAL_HOST", "true"));
        }
        credentials = s3.credentials_secret.clone();
    } else if let Some(volume) = &storage.volume {
        let path = trim_path(&volume.path);
        let dir = if path.is_empty() {
            VOLUME_DIR.to_string()
        } else {
            format!("{VOLUME_DIR}/{path}")
        };
        env_vars.push(env("ROOMREC_STORAGE", format!("file://{dir}")));
        volumes.push(Volume {
            name: "recordings".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: volume.claim_name.clone(),
                read_only: Some(false),
            }),
            ..Default::default()
        });
        mounts.push(mount("recordings", VOLUME_DIR, false));
    }
    if let Some(secret) = credentials {
        env_vars.push(env("ROOMREC_CREDENTIALS_DIR", CREDENTIALS_DIR));
        volumes.push(Volume {
            name: "storage-credentials".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret),
                default_mode: Some(0o440),
                ..Default::default()
            }),
            ..Default::default()
        });
        mounts.push(mount("storage-credentials", CREDENTIALS_DIR, true));
    }
}

fn trim_path(path: &Option<String>) -> String {
    path.as_deref().unwrap_or("").trim_matches('/').to_string()
}

/// An enum's serde name (`rtmp`, `main`).
fn serde_plain<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}
