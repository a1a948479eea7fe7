//! A container's environment as the kubelet builds it: service variables for the API server,
//! `envFrom`, then `env` (literal values with `$(VAR)` expansion, `secretKeyRef`,
//! `configMapKeyRef`, downward-API `fieldRef` and `resourceFieldRef`).

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};
use kube::{Api, Client};
use std::collections::BTreeMap;

/// Resolves the environment of `container` in `pod`. An error names the reference that failed,
/// the way the kubelet's CreateContainerConfigError does.
pub async fn resolve(
    client: &Client,
    pod: &Pod,
    container: &Container,
    service_env: &[(String, String)],
) -> Result<Vec<(String, String)>, String> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let sources = Sources::new(client, namespace);
    let mut env: Vec<(String, String)> = service_env.to_vec();

    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        if let Some(r) = &from.config_map_ref {
            match sources.config_map(&r.name).await? {
                Some(cm) => {
                    for (k, v) in cm.data.unwrap_or_default() {
                        set(&mut env, format!("{prefix}{k}"), v);
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(format!("configmap \"{}\" not found", r.name)),
            }
        }
        if let Some(r) = &from.secret_ref {
            match sources.secret(&r.name).await? {
                Some(secret) => {
                    for (k, v) in secret_data(&secret) {
                        set(&mut env, format!("{prefix}{k}"), v);
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(format!("secret \"{}\" not found", r.name)),
            }
        }
    }

    for var in container.env.iter().flatten() {
        let value = match &var.value_from {
            None => Some(expand(var.value.as_deref().unwrap_or(""), &env)),
            Some(from) => {
                if let Some(r) = &from.secret_key_ref {
                    let optional = r.optional == Some(true);
                    match sources.secret(&r.name).await? {
                        Some(secret) => match secret_data(&secret).remove(&r.key) {
                            Some(v) => Some(v),
                            None if optional => None,
                            None => {
                                return Err(format!(
                                    "couldn't find key {} in Secret {namespace}/{}",
                                    r.key, r.name
                                ));
                            }
                        },
                        None if optional => None,
                        None => return Err(format!("secret \"{}\" not found", r.name)),
                    }
                } else if let Some(r) = &from.config_map_key_ref {
                    let optional = r.optional == Some(true);
                    match sources.config_map(&r.name).await? {
                        Some(cm) => match cm.data.unwrap_or_default().remove(&r.key) {
                            Some(v) => Some(v),
                            None if optional => None,
                            None => {
                                return Err(format!(
                                    "couldn't find key {} in ConfigMap {namespace}/{}",
                                    r.key, r.name
                                ));
                            }
                        },
                        None if optional => None,
                        None => return Err(format!("configmap \"{}\" not found", r.name)),
                    }
                } else if let Some(field) = &from.field_ref {
                    Some(field_value(pod, &field.field_path)?)
                } else {
                    from.resource_field_ref
                        .as_ref()
                        .map(|r| resource_value(container, &r.resource))
                }
            }
        };
        if let Some(value) = value {
            set(&mut env, var.name.clone(), value);
        }
    }
    Ok(env)
}

/// The downward API's `fieldRef` paths.
pub fn field_value(pod: &Pod, path: &str) -> Result<String, String> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    // The agent writes the pod's addresses into its copy of the pod before containers start.
    let status = pod.status.as_ref();
    let keyed = |prefix: &str, map: Option<&BTreeMap<String, String>>| -> Option<String> {
        let key = path.strip_prefix(prefix)?.strip_suffix("']")?;
        Some(map.and_then(|m| m.get(key)).cloned().unwrap_or_default())
    };
    let value = match path {
        "metadata.name" => meta.name.clone(),
        "metadata.namespace" => meta.namespace.clone(),
        "metadata.uid" => meta.uid.clone(),
        "metadata.labels" => Some(format_map(meta.labels.as_ref())),
        "metadata.annotations" => Some(format_map(meta.annotations.as_ref())),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()),
        "spec.serviceAccountName" => spec.and_then(|s| s.service_account_name.clone()),
        "status.podIP" => status.and_then(|s| s.pod_ip.clone()),
        "status.hostIP" => status.and_then(|s| s.host_ip.clone()),
        "status.podIPs" => status.and_then(|s| s.pod_ips.as_ref()).map(|ips| {
            ips.iter()
                .map(|i| i.ip.clone())
                .collect::<Vec<_>>()
                .join(",")
        }),
        "status.hostIPs" => status.and_then(|s| s.host_ips.as_ref()).map(|ips| {
            ips.iter()
                .map(|i| i.ip.clone())
                .collect::<Vec<_>>()
                .join(",")
        }),
        _ => keyed("metadata.labels['", meta.labels.as_ref())
            .or_else(|| keyed("metadata.annotations['", meta.annotations.as_ref())),
    };
    value.ok_or_else(|| format!("unsupported or empty downward API field {path:?}"))
}

fn format_map(map: Option<&BTreeMap<String, String>>) -> String {
    map.into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `resourceFieldRef`: the container's limit (or request), in the units the kubelet reports.
fn resource_value(container: &Container, resource: &str) -> String {
    let resources = container.resources.as_ref();
    let (kind, name) = resource.split_once('.').unwrap_or(("limits", resource));
    let map = match kind {
        "requests" => resources.and_then(|r| r.requests.as_ref()),
        _ => resources.and_then(|r| r.limits.as_ref()),
    };
    match map.and_then(|m| m.get(name)) {
        Some(quantity) => quantity.0.clone(),
        // Without a limit the kubelet reports the node's allocatable amount.
        None if name == "cpu" => std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .to_string(),
        None => "0".into(),
    }
}

/// Kubernetes' `$(VAR)` expansion: defined variables are replaced, `$$` escapes, unknown
/// references stay as written.
pub fn expand(input: &str, env: &[(String, String)]) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(body) = after.strip_prefix('(')
            && let Some(end) = body.find(')')
        {
            let name = &body[..end];
            match env.iter().rev().find(|(k, _)| k == name) {
                Some((_, v)) => out.push_str(v),
                None => {
                    out.push_str("$(");
                    out.push_str(name);
                    out.push(')');
                }
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

fn set(env: &mut Vec<(String, String)>, name: String, value: String) {
    env.retain(|(k, _)| *k != name);
    env.push((name, value));
}

pub fn secret_data(secret: &Secret) -> BTreeMap<String, String> {
    let mut data: BTreeMap<String, String> = secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), String::from_utf8_lossy(&v.0).into_owned()))
        .collect();
    data.extend(secret.string_data.clone().unwrap_or_default());
    data
}

/// Secrets and ConfigMaps of one namespace, fetched on demand.
pub struct Sources {
    secrets: Api<Secret>,
    config_maps: Api<ConfigMap>,
}

impl Sources {
    pub fn new(client: &Client, namespace: &str) -> Self {
        Self {
            secrets: Api::namespaced(client.clone(), namespace),
            config_maps: Api::namespaced(client.clone(), namespace),
        }
    }

    pub async fn secret(&self, name: &str) -> Result<Option<Secret>, String> {
        self.secrets
            .get_opt(name)
            .await
            .map_err(|e| format!("secret {name}: {e}"))
    }

    pub async fn config_map(&self, name: &str) -> Result<Option<ConfigMap>, String> {
        self.config_maps
            .get_opt(name)
            .await
            .map_err(|e| format!("configmap {name}: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn expands_like_the_kubelet() {
        let e = env(&[("A", "1"), ("B", "two")]);
        assert_eq!(expand("$(A)-$(B)", &e), "1-two");
        assert_eq!(expand("$(MISSING)", &e), "$(MISSING)");
        assert_eq!(expand("$$(A)", &e), "$(A)");
        assert_eq!(expand("cost $5", &e), "cost $5");
        assert_eq!(expand("$(A", &e), "$(A");
    }

    #[test]
    fn downward_api_fields() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u-1", "labels": {"app": "rec"}},
            "spec": {"containers": [], "nodeName": "local", "serviceAccountName": "sa"},
            "status": {"podIP": "198.18.3.7", "podIPs": [{"ip": "198.18.3.7"}],
                       "hostIP": "198.18.3.1", "hostIPs": [{"ip": "198.18.3.1"}]}
        }))
        .unwrap();
        assert_eq!(field_value(&pod, "metadata.name").unwrap(), "p");
        assert_eq!(field_value(&pod, "metadata.namespace").unwrap(), "ns");
        assert_eq!(field_value(&pod, "metadata.uid").unwrap(), "u-1");
        assert_eq!(field_value(&pod, "metadata.labels['app']").unwrap(), "rec");
        assert_eq!(field_value(&pod, "spec.nodeName").unwrap(), "local");
        assert_eq!(field_value(&pod, "spec.serviceAccountName").unwrap(), "sa");
        assert_eq!(field_value(&pod, "status.podIP").unwrap(), "198.18.3.7");
        assert_eq!(field_value(&pod, "status.podIPs").unwrap(), "198.18.3.7");
        assert_eq!(field_value(&pod, "status.hostIP").unwrap(), "198.18.3.1");
        assert!(field_value(&pod, "status.bogus").is_err());
    }
}
