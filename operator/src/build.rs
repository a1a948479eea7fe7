//! Build: a validated RecordingJob (plus the operator's settings) → the worker pods and the
//! narrow RBAC that lets each worker report its own job's files. Pure, no API calls, so every
//! rule below is unit-tested from fixtures.

use crate::settings::Settings;
use crate::validate::ValidatedJob;
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
use roomrec_api::crd::{RecordingJob, RoomPerson, Storage};
use roomrec_api::relay::StreamKind;
use roomrec_api::relay::stream_name;
use roomrec_api::worker_env::{EnvValue, StorageTarget, WorkerEnv, WorkerSource};
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
const SCRATCH_DIR: &str = "/var/cache/roomrec";

/// One recorded person: one worker pod at a time and one set of files.
#[derive(Clone, Debug, PartialEq)]
pub struct Person {
    /// Position in `spec.source.trtc.record` (0 for a url source), or with wholeRoom the order
    /// in which people first published: stable, label-safe.
    pub index: usize,
    /// The user id the worker puts on its files (the TRTC user, or a url source's stream name).
    pub user_id: String,
    /// Which of their streams: the camera and microphone, or (wholeRoom) the screen share.
    pub stream: StreamKind,
    /// Their entry in `status.workers`: the user id, or `{userId}/aux` for a whole room's
    /// screen share (`/` is never in a TRTC user id, so the two cannot collide).
    pub key: String,
}

impl Person {
    /// A person known by name: their entry is their user id.
    pub fn named(index: usize, user_id: String, stream: StreamKind) -> Self {
        Person {
            index,
            key: user_id.clone(),
            user_id,
            stream,
        }
    }
}

/// The people a job records: the named ones, a url source's stream, or (wholeRoom) those the
/// room's events say published, in the order they first did, except those the operator left
/// out (`status.notRecorded`: beyond the job's limit).
pub fn people(job: &RecordingJob) -> Vec<Person> {
    match (&job.spec.source.trtc, &job.spec.source.url) {
        (Some(trtc), _) if trtc.whole_room.is_some() => {
            let left_out = job
                .status
                .as_ref()
                .map(|s| s.not_recorded.as_slice())
                .unwrap_or_default();
            let mut people = room_people(job, u32::MAX).0;
            people.retain(|p| !left_out.contains(&p.key));
            people
        }
        (Some(trtc), _) => trtc
            .record
            .iter()
            .enumerate()
            .map(|(index, user_id)| Person::named(index, user_id.clone(), trtc.stream))
            .collect(),
        (None, Some(url)) => vec![Person::named(0, stream_name(url), StreamKind::Main)],
        (None, None) => Vec::new(),
    }
}

/// A whole room's people (those recorded, those beyond the limit), from `status.room.people`.
/// Screen shares count only when the job asks for them.
pub fn room_people(job: &RecordingJob, max_people: u32) -> (Vec<Person>, Vec<String>) {
    let Some(whole_room) = job
        .spec
        .source
        .trtc
        .as_ref()
        .and_then(|t| t.whole_room.as_ref())
    else {
        return (Vec::new(), Vec::new());
    };
    let limit = whole_room.max_people.unwrap_or(max_people) as usize;
    let mut seen: Vec<(&String, &RoomPerson)> = job
        .status
        .as_ref()
        .and_then(|s| s.room.as_ref())
        .map(|r| r.people.iter().collect())
        .unwrap_or_default();
    seen.retain(|(_, p)| p.stream == StreamKind::Main || whole_room.screen_share);
    seen.sort_by_key(|(key, p)| (p.index, key.to_string()));
    let beyond = seen.split_off(limit.min(seen.len()));
    let people = seen
        .into_iter()
        .map(|(key, p)| Person {
            index: p.index as usize,
            user_id: p.user_id.clone(),
            stream: p.stream,
            key: key.clone(),
        })
        .collect();
    (
        people,
        beyond.into_iter().map(|(key, _)| key.clone()).collect(),
    )
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

fn env_var(name: &str, value: &EnvValue) -> EnvVar {
    match value {
        EnvValue::Text(text) => EnvVar {
            name: name.into(),
            value: Some(text.clone()),
            ..Default::default()
        },
        EnvValue::PodField(path) => EnvVar {
            name: name.into(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: (*path).into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        },
    }
}

/// What `person`'s worker is told: the job's validated values, what is left of its maximum
/// duration, and where it reports.
pub fn worker_env(
    job: &RecordingJob,
    validated: &ValidatedJob,
    person: &Person,
    resume: &Resume,
    settings: &Settings,
) -> WorkerEnv {
    let spec = &job.spec;
    let source = match &spec.source.trtc {
        Some(trtc) => WorkerSource::Relay(crate::relay::stream(trtc, person)),
        None => WorkerSource::Url(spec.source.url.clone().unwrap_or_default()),
    };
    let grace = worker_grace_seconds(settings);
    WorkerEnv {
        source,
        mode: validated.mode,
        storage: storage_target(&validated.storage),
        idle_timeout_seconds: validated.idle_timeout_seconds
            + if crate::relay::started_by_roomrec(job).is_some() {
                crate::relay::VERDICT_GRACE_SECONDS
            } else {
                0
            },
        // A replacement records only what is left; at least a second so the value stays valid
        // (the controller does not start a worker when nothing is left).
        max_duration_seconds: spec
            .max_duration_seconds
            .map(|max| (f64::from(max) - resume.recorded_seconds).ceil().max(1.0) as u64),
        segment_seconds: spec.segment.as_ref().and_then(|s| s.duration_seconds),
        segment_size: spec.segment.as_ref().and_then(|s| s.size_bytes),
        faststart_scratch_dir: spec.faststart.then(|| SCRATCH_DIR.into()),
        session_start: resume.session_start.clone(),
        spool_dir: SPOOL_DIR.into(),
        shutdown_timeout_seconds: grace - 10,
        report_job: format!("{}/{}", job.namespace().unwrap_or_default(), job.name_any()),
        report_interval_seconds: settings.worker_report_interval_seconds,
        termination_message: "/dev/termination-log".into(),
        metrics_address: (settings.worker_metrics_port != 0)
            .then(|| format!("0.0.0.0:{}", settings.worker_metrics_port)),
    }
}

/// The pods' termination grace period: at least 15 s, of which the worker gets all but 10 to
/// close its files.
fn worker_grace_seconds(settings: &Settings) -> u64 {
    settings.worker_grace.as_secs().max(15)
}

/// The worker pod for `person`'s `attempt`-th run.
pub fn pod(
    job: &RecordingJob,
    validated: &ValidatedJob,
    person: &Person,
    attempt: u32,
    resume: &Resume,
    settings: &Settings,
) -> Pod {
    let spec = &job.spec;
    let mut env_vars: Vec<EnvVar> = worker_env(job, validated, person, resume, settings)
        .vars()
        .iter()
        .map(|(name, value)| env_var(name, value))
        .collect();
    for (name, value) in &settings.worker_env {
        env_vars.push(env_var(name, &EnvValue::Text(value.clone())));
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
    storage_volumes(&validated.storage, &mut volumes, &mut mounts);
    if spec.faststart {
        // Its own emptyDir without a sizeLimit: exceeding a limit gets the pod evicted, while
        // the worker sees the disk's real free space and keeps a part that does not fit as
        // fragmented MP4.
        volumes.push(Volume {
            name: "scratch".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        });
        mounts.push(mount("scratch", SCRATCH_DIR, false));
    }
    let grace = worker_grace_seconds(settings);
    let ports = (settings.worker_metrics_port != 0).then(|| {
        vec![ContainerPort {
            name: Some("metrics".into()),
            container_port: settings.worker_metrics_port.into(),
            protocol: Some("TCP".into()),
            ..Default::default()
        }]
    });

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

/// The worker's `--storage` flags for the job's storage.
fn storage_target(storage: &Storage) -> StorageTarget {
    let mut target = StorageTarget::default();
    let credentials = if let Some(cos) = &storage.cos {
        target.url = format!("cos://{}/{}", cos.bucket, trim_path(&cos.path));
        target.region = Some(cos.region.clone());
        target.endpoint = cos.endpoint.clone();
        &cos.credentials_secret
    } else if let Some(s3) = &storage.s3 {
        target.url = format!("s3://{}/{}", s3.bucket, trim_path(&s3.path));
        target.region = s3.region.clone();
        target.endpoint = s3.endpoint.clone();
        target.virtual_host = s3.virtual_host;
        &s3.credentials_secret
    } else if let Some(volume) = &storage.volume {
        let path = trim_path(&volume.path);
        target.url = if path.is_empty() {
            format!("file://{VOLUME_DIR}")
        } else {
            format!("file://{VOLUME_DIR}/{path}")
        };
        &None
    } else {
        &None
    };
    target.credentials_dir = credentials.as_ref().map(|_| CREDENTIALS_DIR.into());
    target
}

/// The volume a volume storage writes to, and the store's credentials: only ever a mounted
/// Secret, never copied into the pod's spec.
fn storage_volumes(storage: &Storage, volumes: &mut Vec<Volume>, mounts: &mut Vec<VolumeMount>) {
    if let Some(volume) = &storage.volume {
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
    let secret = storage
        .cos
        .as_ref()
        .and_then(|c| c.credentials_secret.clone())
        .or_else(|| {
            storage
                .s3
                .as_ref()
                .and_then(|s| s.credentials_secret.clone())
        });
    if let Some(secret) = secret {
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
