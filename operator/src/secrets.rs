//! Reading one key of a Secret a job names, with an answer that says what is wrong in the job's
//! terms (the field, the Secret, the key) when it is not there. Values are never logged.

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};
use roomrec_api::crd::SecretKeyRef;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The Secret or its key is missing: the user's to fix.
    #[error("{0}")]
    Missing(String),
    /// The API server could not be asked: a retry may help.
    #[error("reading Secret {name} ({field}) failed: {source}")]
    Read {
        name: String,
        field: &'static str,
        #[source]
        source: kube::Error,
    },
}

/// The value of `reference`'s key, for the job field `field`.
pub async fn read_key(
    client: &Client,
    namespace: &str,
    reference: &SecretKeyRef,
    field: &'static str,
) -> Result<Vec<u8>, SecretError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let name = &reference.name;
    let secret = secrets
        .get_opt(name)
        .await
        .map_err(|source| SecretError::Read {
            name: name.clone(),
            field,
            source,
        })?
        .ok_or_else(|| {
            SecretError::Missing(format!(
                "Secret {name} ({field}) not found in namespace {namespace}: create it with key {}",
                reference.key
            ))
        })?;
    secret
        .data
        .and_then(|d| d.get(&reference.key).map(|v| v.0.clone()))
        .ok_or_else(|| {
            SecretError::Missing(format!(
                "Secret {name} ({field}) has no key {}: add it",
                reference.key
            ))
        })
}
