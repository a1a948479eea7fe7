//! Reading the Secrets a job names, with an answer that says what is wrong in the job's terms
//! (the field, the Secret, the key) when it is not there or the operator may not read it.
//! Values are never logged.

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};
use roomrec_api::crd::SecretKeyRef;

/// The chart value that lets the operator read Secrets in more namespaces.
pub const GRANT_VALUE: &str = "operator.secretNamespaces";

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The Secret or its key is missing: the user's to fix.
    #[error("{0}")]
    Missing(String),
    /// The operator may not read Secrets in that namespace (403): the chart's to fix.
    #[error("{0}")]
    NotGranted(String),
    /// The API server could not be asked: a retry may help.
    #[error("reading Secret {name} ({field}) failed: {source}")]
    Read {
        name: String,
        field: &'static str,
        #[source]
        source: kube::Error,
    },
}

/// The Secret `name` in `namespace`, named by the job field `field`; None when it does not
/// exist.
pub async fn get(
    client: &Client,
    namespace: &str,
    name: &str,
    field: &'static str,
) -> Result<Option<Secret>, SecretError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    match secrets.get_opt(name).await {
        Ok(secret) => Ok(secret),
        // The chart grants Secret reads per namespace, never cluster-wide.
        Err(kube::Error::Api(e)) if e.code == 403 => Err(SecretError::NotGranted(format!(
            "the operator may not read Secrets in namespace {namespace} (Secret {name}, {field}): add {namespace} to the chart value {GRANT_VALUE}, or install the chart for it with operator.watchNamespace={namespace}"
        ))),
        Err(source) => Err(SecretError::Read {
            name: name.to_string(),
            field,
            source,
        }),
    }
}

/// The value of `reference`'s key, for the job field `field`.
pub async fn read_key(
    client: &Client,
    namespace: &str,
    reference: &SecretKeyRef,
    field: &'static str,
) -> Result<Vec<u8>, SecretError> {
    let name = &reference.name;
    let secret = get(client, namespace, name, field).await?.ok_or_else(|| {
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
