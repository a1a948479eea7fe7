//! CustomResourceDefinitions in the bed's API server: applied server-side (as `kubectl apply
//! --server-side` or the chart would) and waited for until the API server reports them
//! Established, so objects of their kinds can be created. One place for every test binary:
//! the operator's end-to-end tests (the RecordingJob CRD and prometheus-operator's), the
//! worker's status reports and the bed's own smoke test.

use crate::bed::wait_until;
use crate::binaries::repo_root;
use crate::error::{Result, TestbedError, file_error};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The field manager of every CRD the bed's tests apply.
pub const FIELD_MANAGER: &str = "roomrec-testbed";

/// How long a CRD may take to be Established.
pub const ESTABLISHED_WITHIN: Duration = Duration::from_secs(30);

/// The repository's RecordingJob CRD, as `crdgen` writes it (`crds/recordingjob.yaml`).
pub fn recording_job_crd_file() -> PathBuf {
    repo_root().join("crds/recordingjob.yaml")
}

/// Applies the RecordingJob CRD of the repository and waits until it is Established.
pub async fn install_recording_job_crd(client: &Client) -> Result<()> {
    apply_crd_file(client, &recording_job_crd_file()).await
}

/// Applies the CRD in the YAML file `file` (one document) and waits until it is Established.
pub async fn apply_crd_file(client: &Client, file: &Path) -> Result<()> {
    let text = std::fs::read_to_string(file).map_err(file_error(file))?;
    let crd: CustomResourceDefinition = serde_yaml::from_str(&text)
        .map_err(|e| file_error(file)(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
    apply_crd(client, &crd).await
}

/// Applies `crd` (server-side, taking over fields another manager set) and waits until the
/// API server reports it Established.
pub async fn apply_crd(client: &Client, crd: &CustomResourceDefinition) -> Result<()> {
    let name = crd.name_any();
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(crd),
    )
    .await?;
    let established = wait_until(ESTABLISHED_WITHIN, || async {
        api.get(&name)
            .await
            .ok()
            .is_some_and(|c| is_established(&c))
    })
    .await;
    established.map_err(|()| TestbedError::Command {
        what: format!("establishing the CRD {name}"),
        message: format!("not Established within {} s", ESTABLISHED_WITHIN.as_secs()),
    })
}

/// Whether the API server reports `crd` Established (its kinds can be served).
fn is_established(crd: &CustomResourceDefinition) -> bool {
    crd.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
        })
}
