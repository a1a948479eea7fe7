//! The heritage recordings in the API server: starting one for a request (once, however often
//! it is sent), finding one by its request id, stopping it. All in the heritage namespace.
//!
//! Starting, in order: the UserSig is verified (relay: start); an Idempotency-Key seen before
//! answers with its job; an active job of the same recording answers with its own id; else the
//! request's Secret is created, then the job under the recording's next name (the create is the
//! lock: a concurrent twin gets AlreadyExists and answers with the winner's id), then the Secret
//! is made the job's (ownerReference), so it is deleted with it. A Secret whose job was not
//! created is deleted again.

use super::error::HeritageError;
use super::job;
use super::naming::{self, RECORDING, REQUEST_ID};
use super::request::{HeritageRequest, user_sig_advice};
use super::template::Template;
use crate::secrets::{self, SecretError};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource, ResourceExt};
use roomrec_api::crd::{RecordingJob, RelayMode};
use roomrec_api::trtc::usersig;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use tracing::{info, warn};

/// Names tried when earlier ones turn out to be taken by finished recordings meanwhile.
const CREATE_ATTEMPTS: u32 = 5;

#[derive(Clone)]
pub struct Recordings {
    client: Client,
    namespace: String,
    template: Arc<Template>,
}

/// A request's recording: the one it started, or the one already running for it.
pub struct Started {
    pub request_id: String,
    pub job: RecordingJob,
    /// False: an earlier request's recording answered this one.
    pub created: bool,
}

/// What creating the job under the recording's next name came to.
enum Created {
    New(RecordingJob),
    /// A concurrent request for the same recording created it first.
    Twin(RecordingJob),
}

/// Still recording (or about to): not ended, not asked to stop, not being deleted.
fn active(job: &RecordingJob) -> bool {
    let ended = job
        .status
        .as_ref()
        .and_then(|s| s.phase)
        .is_some_and(|p| p.is_terminal());
    !ended && !job.spec.stop && job.metadata.deletion_timestamp.is_none()
}

impl Recordings {
    pub fn new(client: Client, namespace: String, template: Template) -> Self {
        Self {
            client,
            namespace,
            template: Arc::new(template),
        }
    }

    fn jobs(&self) -> Api<RecordingJob> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    async fn list(&self, selector: &str) -> Result<Vec<RecordingJob>, HeritageError> {
        Ok(self
            .jobs()
            .list(&ListParams::default().labels(selector))
            .await
            .map_err(HeritageError::api("listing RecordingJobs"))?
            .items)
    }

    /// The job a request id names.
    pub async fn find(&self, request_id: &str) -> Result<RecordingJob, HeritageError> {
        let not_found = || HeritageError::NotFound(request_id.to_string());
        // Only ids as roomrec makes them (lowercase, hyphenated UUIDs) are looked up: any other
        // text names no recording, and might not even be a valid label value.
        let canonical = uuid::Uuid::parse_str(request_id).map(|id| id.to_string());
        if canonical.as_deref() != Ok(request_id) {
            return Err(not_found());
        }
        self.list(&format!("{REQUEST_ID}={request_id}"))
            .await?
            .into_iter()
            .next()
            .ok_or_else(not_found)
    }

    /// Asks the recording to stop (`spec.stop`), as `kubectl patch` would.
    pub async fn stop(&self, request_id: &str) -> Result<RecordingJob, HeritageError> {
        let job = self.find(request_id).await?;
        let stopped = self
            .jobs()
            .patch(
                &job.name_any(),
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"stop": true}})),
            )
            .await
            .map_err(HeritageError::api("setting spec.stop"))?;
        info!(job = %stopped.name_any(), request_id, "heritage recording asked to stop");
        Ok(stopped)
    }

    /// Starts the request's recording, or answers with the one already started for it.
    pub async fn start(
        &self,
        request: &HeritageRequest,
        idempotency_key: Option<&str>,
    ) -> Result<Started, HeritageError> {
        job::check(request, &self.template)?;
        self.verify_user_sig(request).await?;
        let recording = naming::recording_hash(request);
        let key_label = idempotency_key.map(naming::key_label);
        if let Some(label) = &key_label
            && let Some(job) = self.list(label).await?.into_iter().next()
        {
            if job.labels().get(RECORDING) != Some(&recording) {
                return Err(HeritageError::KeyReused {
                    job: job.name_any(),
                });
            }
            return existing(job);
        }
        let earlier = self.list(&format!("{RECORDING}={recording}")).await?;
        if let Some(job) = earlier.iter().find(|j| active(j)) {
            return self.answered_by(job.clone(), key_label.as_deref()).await;
        }
        let next = earlier
            .iter()
            .filter_map(|j| naming::sequence_of(&j.name_any(), &recording))
            .max()
            .unwrap_or(0)
            + 1;
        let request_id = uuid::Uuid::new_v4().to_string();
        let mut labels = BTreeMap::from([
            (REQUEST_ID.to_string(), request_id.clone()),
            (RECORDING.to_string(), recording.clone()),
        ]);
        if let Some(label) = &key_label {
            labels.insert(label.clone(), "true".into());
        }
        let secret = job::secret(
            request,
            &self.template,
            &self.namespace,
            &labels,
            &request_id,
        );
        if let Some(secret) = &secret {
            self.secrets()
                .create(&PostParams::default(), secret)
                .await
                .map_err(HeritageError::api("creating the request's Secret"))?;
        }
        let secret_name = secret.as_ref().map(|_| job::secret_name(&request_id));
        let outcome = self
            .create_job(request, &recording, next, &labels, secret_name.as_deref())
            .await;
        // A twin request won the name, or the job could not be created: the Secret goes.
        let created = match outcome {
            Ok(Created::New(job)) => job,
            Ok(Created::Twin(twin)) => {
                self.delete_secret(secret_name.as_deref()).await;
                return self.answered_by(twin, key_label.as_deref()).await;
            }
            Err(e) => {
                self.delete_secret(secret_name.as_deref()).await;
                return Err(e);
            }
        };
        if let Some(name) = &secret_name
            && let Err(e) = self.own_secret(name, &created).await
        {
            // A Secret without its owner would outlive the job: take both back.
            let _ = self
                .jobs()
                .delete(&created.name_any(), &DeleteParams::default())
                .await;
            self.delete_secret(Some(name)).await;
            return Err(e);
        }
        info!(
            job = %created.name_any(),
            request_id,
            sdk_app_id = request.sdk_app_id,
            "heritage recording created"
        );
        Ok(Started {
            request_id,
            job: created,
            created: true,
        })
    }

    /// Creates the job under the first free name from `sequence` on, or finds the active job a
    /// twin request created under that name first.
    async fn create_job(
        &self,
        request: &HeritageRequest,
        recording: &str,
        mut sequence: u32,
        labels: &BTreeMap<String, String>,
        secret: Option<&str>,
    ) -> Result<Created, HeritageError> {
        for _ in 0..CREATE_ATTEMPTS {
            let name = naming::job_name(recording, sequence);
            let job = job::recording_job(
                request,
                &self.template,
                &self.namespace,
                &name,
                labels,
                secret,
            );
            match self.jobs().create(&PostParams::default(), &job).await {
                Ok(created) => return Ok(Created::New(created)),
                Err(kube::Error::Api(e)) if e.code == 409 => {
                    let taken = self
                        .jobs()
                        .get_opt(&name)
                        .await
                        .map_err(HeritageError::api("reading the RecordingJob"))?;
                    match taken {
                        Some(twin) if active(&twin) => return Ok(Created::Twin(twin)),
                        // Ended (or deleted) since the list: the next number is free.
                        _ => sequence += 1,
                    }
                }
                Err(source) => {
                    return Err(HeritageError::Api {
                        what: format!("creating RecordingJob {name}"),
                        source,
                    });
                }
            }
        }
        Err(HeritageError::Api {
            what: "creating the RecordingJob".into(),
            source: kube::Error::Api(
                kube::core::Status::failure(
                    &format!("{CREATE_ATTEMPTS} names were taken one after the other"),
                    "Conflict",
                )
                .with_code(409)
                .boxed(),
            ),
        })
    }

    /// An earlier request's active job answers this one; it remembers this request's
    /// Idempotency-Key, so the key keeps naming it after it ends.
    async fn answered_by(
        &self,
        job: RecordingJob,
        key_label: Option<&str>,
    ) -> Result<Started, HeritageError> {
        let Some(label) = key_label.filter(|l| !job.labels().contains_key(*l)) else {
            return existing(job);
        };
        let job = self
            .jobs()
            .patch(
                &job.name_any(),
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {label: "true"}}})),
            )
            .await
            .map_err(HeritageError::api("labelling the RecordingJob"))?;
        existing(job)
    }

    async fn own_secret(&self, name: &str, job: &RecordingJob) -> Result<(), HeritageError> {
        let owner = job
            .controller_owner_ref(&())
            .expect("a created job has a name and uid");
        self.secrets()
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"ownerReferences": [owner]}})),
            )
            .await
            .map(|_| ())
            .map_err(HeritageError::api(
                "making the job own the request's Secret",
            ))
    }

    async fn delete_secret(&self, name: Option<&str>) {
        let Some(name) = name else { return };
        if let Err(e) = self.secrets().delete(name, &DeleteParams::default()).await {
            warn!(secret = name, error = %e, "deleting a heritage request's Secret failed");
        }
    }

    /// relay: start: the UserSig must be signed with the application's key (it is not kept:
    /// roomrec makes the agents' UserSigs from that key).
    async fn verify_user_sig(&self, request: &HeritageRequest) -> Result<(), HeritageError> {
        let (RelayMode::Start, Some(reference)) =
            (self.template.relay, &self.template.secret_key_secret)
        else {
            return Ok(());
        };
        let key = secrets::read_key(
            &self.client,
            &self.namespace,
            reference,
            "the heritage template's secretKeySecret",
        )
        .await
        .map_err(|e| match e {
            SecretError::Missing(problem) | SecretError::NotGranted(problem) => {
                HeritageError::Setup(problem)
            }
            SecretError::Read { source, .. } => HeritageError::Api {
                what: "reading the application's key".into(),
                source,
            },
        })?;
        let now = jiff::Timestamp::now().as_second();
        usersig::verify(
            request.user_sig.expose(),
            request.sdk_app_id,
            &request.user_id,
            key.trim_ascii_end(),
            now,
        )
        .map(|_| ())
        .map_err(|e| HeritageError::invalid("UserSig", user_sig_advice(&e, &request.user_id)))
    }
}

fn existing(job: RecordingJob) -> Result<Started, HeritageError> {
    let request_id = job
        .labels()
        .get(REQUEST_ID)
        .cloned()
        .ok_or_else(|| HeritageError::Setup(format!(
            "RecordingJob {} has no {REQUEST_ID} label: it was not made by the heritage API; delete or relabel it",
            job.name_any()
        )))?;
    Ok(Started {
        request_id,
        job,
        created: false,
    })
}
