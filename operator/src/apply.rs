//! Apply: the writes a reconcile makes besides the status — the finalizer, the operator's
//! defaults, the workers' RBAC (server-side apply with the operator's field manager) and the
//! worker pods the decision asks for. Each write is idempotent, so a repeated pass (after a
//! lost response, or an operator restart) changes nothing.

use crate::build;
use crate::error::{Error, Result};
use crate::status::FIELD_MANAGER;
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource, ResourceExt};
use roomrec_api::crd::RecordingJob;
use serde_json::json;

pub const FINALIZER: &str = "roomrec.dev/finalize";

pub async fn add_finalizer(jobs: &Api<RecordingJob>, job: &RecordingJob) -> Result<()> {
    let name = job.name_any();
    let patch = json!({"metadata": {"finalizers": [FINALIZER]}});
    jobs.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|source| Error::Apply {
            what: format!("the finalizer of {name}"),
            source,
        })?;
    Ok(())
}

pub async fn remove_finalizer(jobs: &Api<RecordingJob>, job: &RecordingJob) -> Result<()> {
    let kept: Vec<&String> = job
        .finalizers()
        .iter()
        .filter(|f| *f != FINALIZER)
        .collect();
    // The resourceVersion makes this a compare-and-swap: other finalizers added meanwhile survive.
    let patch = json!({"metadata": {
        "finalizers": kept,
        "resourceVersion": job.resource_version(),
    }});
    match jobs
        .patch(
            &job.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(Error::Finalizer(e.to_string())),
    }
}

/// Writes the operator's defaults into the spec (a merge patch, compare-and-swap on the
/// resourceVersion so a concurrent user edit is never overwritten). Returns the fields filled
/// in, or None when the job changed meanwhile (the next reconcile sees the new version).
pub async fn fill_defaults(
    jobs: &Api<RecordingJob>,
    job: &RecordingJob,
    mut patch: serde_json::Value,
) -> Result<Option<Vec<String>>> {
    let name = job.name_any();
    let filled: Vec<String> = patch["spec"]
        .as_object()
        .map(|spec| spec.keys().map(|k| format!("spec.{k}")).collect())
        .unwrap_or_default();
    patch["metadata"] = json!({ "resourceVersion": job.resource_version() });
    match jobs
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(Some(filled)),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(None),
        Err(source) => Err(Error::Apply {
            what: format!("the defaults of {name}"),
            source,
        }),
    }
}

/// The worker's ServiceAccount (unless the job brings one), and a Role + RoleBinding that let
/// it patch this job's status and nothing else.
pub async fn worker_rbac(client: &Client, job: &RecordingJob) -> Result<()> {
    let ns = job.namespace().unwrap_or_default();
    let params = PatchParams::apply(FIELD_MANAGER).force();
    if let Some(sa) = build::service_account(job) {
        let api: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
        apply(&api, &sa, &params).await?;
    }
    let roles: Api<Role> = Api::namespaced(client.clone(), &ns);
    apply(&roles, &build::role(job), &params).await?;
    let bindings: Api<RoleBinding> = Api::namespaced(client.clone(), &ns);
    apply(&bindings, &build::role_binding(job), &params).await?;
    Ok(())
}

/// Creates a worker pod; true when this call created it (a pod of that name made by an earlier
/// pass whose status write did not land is ours already).
pub async fn create_pod(pods: &Api<Pod>, pod: &Pod) -> Result<bool> {
    match pods.create(&PostParams::default(), pod).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(source) => Err(Error::Apply {
            what: format!("worker pod {}", pod.name_any()),
            source,
        }),
    }
}

/// Deletes a worker pod gracefully (its worker closes its files); gone already is fine.
pub async fn delete_pod(pods: &Api<Pod>, name: &str) -> Result<()> {
    match pods.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(source) => Err(Error::Delete {
            what: format!("worker pod {name}"),
            source,
        }),
    }
}

async fn apply<K>(api: &Api<K>, object: &K, params: &PatchParams) -> Result<()>
where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let mut value = serde_json::to_value(object).expect("objects serialize");
    value["apiVersion"] = K::api_version(&()).into();
    value["kind"] = K::kind(&()).into();
    let name = object.meta().name.clone().unwrap_or_default();
    api.patch(&name, params, &Patch::Apply(&value))
        .await
        .map_err(|source| Error::Apply {
            what: format!("{} {name}", K::kind(&())),
            source,
        })?;
    Ok(())
}
