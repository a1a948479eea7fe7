//! Validate: what the schema cannot check, before a job starts — the worker overrides the
//! chart allows, the operator's defaults filled in and every referenced Secret present and
//! readable — and, once the spec is complete, the `ValidatedJob` that the build takes (the
//! values in force, with no defaulting left to do).

use crate::build::{self, Person};
use crate::defaults::Defaulting;
use crate::error::{Error, Result};
use crate::relay::{self, RelayError};
use crate::secrets::{self, SecretError};
use crate::settings::{Settings, WorkerOverridePolicy};
use kube::{Client, ResourceExt};
use roomrec_api::Mode;
use roomrec_api::crd::{RecordingJob, SecretKeyRef, Storage};
use serde_json::Value;

/// The Event reason (and `Valid` condition reason) of a job whose Secrets the operator may not
/// read.
pub const SECRETS_NOT_GRANTED: &str = "SecretsNotGranted";
/// The Event reason (and, before the start, `Valid` condition reason) of a job asking for a
/// worker image or ServiceAccount the chart does not allow.
pub const OVERRIDE_NOT_ALLOWED: &str = "WorkerOverrideNotAllowed";

/// A job whose spec is complete: what its workers record, and how.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidatedJob {
    pub mode: Mode,
    pub idle_timeout_seconds: u32,
    pub storage: Storage,
    pub people: Vec<Person>,
}

impl ValidatedJob {
    /// The values in force, once the operator's defaults are in the spec; `Err` names the field
    /// still missing.
    pub fn of(job: &RecordingJob) -> Result<Self, &'static str> {
        let spec = &job.spec;
        Ok(Self {
            mode: spec.mode.ok_or("spec.mode")?,
            idle_timeout_seconds: spec.idle_timeout_seconds.ok_or("spec.idleTimeoutSeconds")?,
            storage: spec.storage.clone().ok_or("spec.storage")?,
            people: build::people(job),
        })
    }
}

/// What a job that has not started yet needs before it can.
#[derive(Debug, PartialEq)]
pub enum Validation {
    /// Ready: its workers may start.
    Valid,
    /// A merge patch of the spec that fills in the operator's defaults.
    FillDefaults(Value),
    /// It cannot start: the event reason and the problem, naming the field and the fix.
    Invalid {
        reason: &'static str,
        problem: String,
    },
}

/// What the operator offers that some jobs need.
#[derive(Clone, Copy, Debug, Default)]
pub struct Capabilities {
    /// It may call the TRTC API (relay: start needs it).
    pub trtc_api: bool,
    /// It serves TRTC's room events (wholeRoom and startOn: publish need them).
    pub room_events: bool,
}

/// The validate step for a job that has not started.
pub async fn validate(
    job: &RecordingJob,
    settings: &Settings,
    client: &Client,
    offered: Capabilities,
) -> Result<Validation> {
    if let Some(problem) = refused_override(job, &settings.worker_overrides, &settings.worker_image)
    {
        return Ok(Validation::Invalid {
            reason: OVERRIDE_NOT_ALLOWED,
            problem,
        });
    }
    match settings.defaults.apply_to(&job.spec) {
        Defaulting::Complete => {}
        Defaulting::Patch(patch) => return Ok(Validation::FillDefaults(patch)),
        Defaulting::Impossible(problem) => {
            return Ok(Validation::Invalid {
                reason: "InvalidSpec",
                problem,
            });
        }
    }
    let ns = job.namespace().unwrap_or_default();
    for wanted in referenced_secrets(job) {
        let problem = match wanted.problem(client, &ns).await {
            Ok(None) => continue,
            Ok(Some(problem)) | Err(SecretError::Missing(problem)) => problem,
            Err(SecretError::NotGranted(problem)) => return Ok(not_granted(problem)),
            Err(SecretError::Read { source, .. }) => return Err(Error::Read(source)),
        };
        return Ok(Validation::Invalid {
            reason: "InvalidReference",
            problem,
        });
    }
    if let Some(trtc) = job
        .spec
        .source
        .trtc
        .as_ref()
        .filter(|t| t.starts_on_publish())
        && !offered.room_events
    {
        let field = if trtc.whole_room.is_some() {
            "spec.source.trtc.wholeRoom"
        } else {
            "spec.source.trtc.startOn: publish"
        };
        return Ok(Validation::Invalid {
            reason: "NoRoomEvents",
            problem: format!(
                "{field} follows the room's events, but this operator does not receive them: set the chart value trtc.events.enabled (flag --room-events-address) and point the TRTC console's room event callback at it, or name the people in spec.source.trtc.record and leave startOn out"
            ),
        });
    }
    if let Some(trtc) = relay::started_by_roomrec(job) {
        if !offered.trtc_api {
            return Ok(Validation::Invalid {
                reason: "NoTrtcApi",
                problem: "spec.source.trtc.relay: start needs the operator's access to the TRTC API: set the chart value trtc.api.credentialsSecret (a Secret with secretId and secretKey; flag --trtc-credentials-dir), or use relay: existing".into(),
            });
        }
        // The agents' UserSigs, checked before any relay or worker starts.
        let now = jiff::Timestamp::now().as_second();
        let mut people = build::people(job);
        if people.is_empty() {
            // A whole room's people are not known yet: check the first agent's.
            people.push(Person::named(0, String::new(), Default::default()));
        }
        for person in people {
            let agent = relay::agent_user_id(trtc, &person);
            match relay::agent_user_sig(client, job, trtc, &agent, now).await {
                Ok(_) => {}
                Err(RelayError::Secret(SecretError::Read { source, .. })) => {
                    return Err(Error::Read(source));
                }
                Err(RelayError::Secret(SecretError::NotGranted(problem))) => {
                    return Ok(not_granted(problem));
                }
                Err(e) => {
                    return Ok(Validation::Invalid {
                        reason: "InvalidUserSig",
                        problem: e.to_string(),
                    });
                }
            }
        }
    }
    Ok(Validation::Valid)
}

fn not_granted(problem: String) -> Validation {
    Validation::Invalid {
        reason: SECRETS_NOT_GRANTED,
        problem,
    }
}

/// Why the job's `spec.worker` asks for more than the chart allows, naming the field and the
/// chart value to change; None when it does not. An image or a ServiceAccount of the job's
/// choosing would let anyone who may create a RecordingJob run any program, or act as any
/// ServiceAccount of the namespace, through the operator (the chart's admission policy also
/// asks that whoever sets them may create pods there; this check holds without it).
pub fn refused_override(
    job: &RecordingJob,
    allowed: &WorkerOverridePolicy,
    default_image: &str,
) -> Option<String> {
    let overrides = job.spec.worker.as_ref()?;
    if let Some(image) = overrides.image.as_deref()
        && image != default_image
        && !image_allowed(image, &allowed.allowed_images)
    {
        return Some(format!(
            "spec.worker.image {image} is not an image this operator may run: add it to the chart value worker.overrides.allowedImages (flag --allowed-worker-images), or leave spec.worker.image out to run {default_image}"
        ));
    }
    if overrides.service_account_name.is_some() && !allowed.allow_service_account {
        return Some("spec.worker.serviceAccountName is not allowed by this operator: set the chart value worker.overrides.allowServiceAccount=true (flag --allow-worker-service-account), or leave it out so that the workers run as the ServiceAccount the operator makes for the job".into());
    }
    None
}

/// Whether `image` is one of `allowed`: an exact reference, or a prefix ending in `*`
/// (`registry.example.com/roomrec/*`).
fn image_allowed(image: &str, allowed: &[String]) -> bool {
    allowed
        .iter()
        .any(|pattern| match pattern.strip_suffix('*') {
            Some(prefix) => image.starts_with(prefix),
            None => image == pattern,
        })
}

/// A Secret a job names, and the keys its reader needs (any one of the sets).
#[derive(Debug, PartialEq)]
pub struct WantedSecret {
    pub field: &'static str,
    pub name: String,
    pub key_sets: Vec<Vec<String>>,
}

impl WantedSecret {
    fn keyed(field: &'static str, reference: &SecretKeyRef) -> Self {
        Self {
            field,
            name: reference.name.clone(),
            key_sets: vec![vec![reference.key.clone()]],
        }
    }

    /// What is wrong with it, naming the field and the fix; None when it is there.
    async fn problem(&self, client: &Client, ns: &str) -> Result<Option<String>, SecretError> {
        let (name, field) = (&self.name, self.field);
        let wanted = self.key_sets[0].join(" and ");
        let Some(secret) = secrets::get(client, ns, name, field).await? else {
            return Ok(Some(format!(
                "Secret {name} ({field}) not found in namespace {ns}: create it with key(s) {wanted}"
            )));
        };
        let data = secret.data.unwrap_or_default();
        let complete = self
            .key_sets
            .iter()
            .any(|keys| keys.iter().all(|k| data.contains_key(k)));
        Ok((!complete).then(|| format!("Secret {name} ({field}) lacks key(s) {wanted}: add them")))
    }
}

/// Every Secret the job names, with the keys the worker or the callback reads.
pub fn referenced_secrets(job: &RecordingJob) -> Vec<WantedSecret> {
    let pair = |a: &str, b: &str| vec![a.to_string(), b.to_string()];
    let mut wanted = Vec::new();
    let storage = job.spec.storage.clone().unwrap_or_default();
    if let Some(name) = storage.cos.and_then(|c| c.credentials_secret) {
        wanted.push(WantedSecret {
            field: "spec.storage.cos.credentialsSecret",
            name,
            key_sets: vec![
                pair("secretId", "secretKey"),
                pair("accessKeyId", "secretAccessKey"),
            ],
        });
    }
    if let Some(name) = storage.s3.and_then(|c| c.credentials_secret) {
        wanted.push(WantedSecret {
            field: "spec.storage.s3.credentialsSecret",
            name,
            key_sets: vec![
                pair("accessKeyId", "secretAccessKey"),
                pair("secretId", "secretKey"),
            ],
        });
    }
    if let Some(r) = job
        .spec
        .callback
        .as_ref()
        .and_then(|c| c.signing_secret.as_ref())
    {
        wanted.push(WantedSecret::keyed("spec.callback.signingSecret", r));
    }
    if let Some(trtc) = &job.spec.source.trtc {
        if let Some(r) = &trtc.push_key_secret {
            wanted.push(WantedSecret::keyed("spec.source.trtc.pushKeySecret", r));
        }
        if let Some(r) = &trtc.user_sig_secret {
            wanted.push(WantedSecret::keyed("spec.source.trtc.userSigSecret", r));
        }
        if let Some(r) = &trtc.secret_key_secret {
            wanted.push(WantedSecret::keyed("spec.source.trtc.secretKeySecret", r));
        }
    }
    wanted
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(yaml: &str) -> RecordingJob {
        serde_yaml::from_str(&format!(
            "apiVersion: roomrec.dev/v1alpha1\nkind: RecordingJob\nmetadata: {{name: j, namespace: n}}\nspec:\n{yaml}"
        ))
        .unwrap()
    }

    #[test]
    fn a_complete_spec_is_validated_and_an_incomplete_one_names_the_field() {
        let complete = job(
            "  source: {url: rtmp://h/live/cam}\n  mode: \"02\"\n  idleTimeoutSeconds: 9\n  storage: {volume: {claimName: c}}",
        );
        let v = ValidatedJob::of(&complete).unwrap();
        assert_eq!(v.mode, Mode::AudioVideoMp4);
        assert_eq!(v.idle_timeout_seconds, 9);
        assert_eq!(v.people[0].user_id, "cam");
        let partial =
            job("  source: {url: rtmp://h/live/cam}\n  mode: AudioMp3\n  idleTimeoutSeconds: 9");
        assert_eq!(ValidatedJob::of(&partial), Err("spec.storage"));
    }

    #[test]
    fn every_referenced_secret_is_wanted_with_its_keys() {
        let j = job(
            "  source: {trtc: {sdkAppId: 1400000000, roomId: 1, userId: rec, record: [a], playDomain: p, userSigSecret: {name: sig, key: userSig}}}\n  storage: {cos: {region: ap-shanghai, bucket: b-1250000000, credentialsSecret: cos-keys}}\n  callback: {url: 'http://h', signingSecret: {name: cb, key: k}}",
        );
        let wanted = referenced_secrets(&j);
        let fields: Vec<&str> = wanted.iter().map(|w| w.field).collect();
        assert_eq!(
            fields,
            [
                "spec.storage.cos.credentialsSecret",
                "spec.callback.signingSecret",
                "spec.source.trtc.userSigSecret"
            ]
        );
        assert_eq!(wanted[0].key_sets[0], ["secretId", "secretKey"]);
        assert_eq!(wanted[2].key_sets, [["userSig"]]);
    }
}
