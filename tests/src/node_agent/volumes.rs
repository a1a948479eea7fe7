//! Pod volumes as directories of the pod's sandbox: `emptyDir` (mode 0777, as the kubelet
//! makes it), `secret`, `configMap`, `downwardAPI`, `projected` (with service-account tokens
//! minted through TokenRequest, so in-cluster clients authenticate for real), `hostPath`, and
//! `persistentVolumeClaim` for pre-bound claims whose volume is `hostPath` or `local` (followed
//! the way the kubelet follows a bound claim; there is no binder or CSI in the bed).

use super::env::{Sources, field_value, secret_data};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    DownwardAPIVolumeFile, KeyToPath, PersistentVolume, PersistentVolumeClaim, Pod, ServiceAccount,
    Volume,
};
use kube::api::PostParams;
use kube::{Api, Client};
use std::collections::BTreeMap;
use std::os::unix::fs::{PermissionsExt, chown};
use std::path::{Path, PathBuf};

/// Materializes every volume of `pod` under `dir`; returns volume name → host directory.
/// Errors read like the kubelet's FailedMount events.
pub async fn materialize(
    client: &Client,
    pod: &Pod,
    dir: &Path,
) -> Result<BTreeMap<String, PathBuf>, String> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let sources = Sources::new(client, namespace);
    let spec = pod.spec.as_ref().ok_or("pod has no spec")?;
    let fs_group = spec.security_context.as_ref().and_then(|s| s.fs_group);
    let mut mounted = BTreeMap::new();

    for volume in spec.volumes.iter().flatten() {
        let path = if let Some(host) = &volume.host_path {
            PathBuf::from(&host.path)
        } else if let Some(claim) = &volume.persistent_volume_claim {
            // A readOnly claim is mounted read-only by every container (see pod.rs).
            let read_only = claim.read_only == Some(true);
            let path = claimed_path(client, namespace, &claim.claim_name)
                .await
                .map_err(|e| {
                    format!(
                        "MountVolume.SetUp failed for volume \"{}\" : {e}",
                        volume.name
                    )
                })?;
            // As hostPath DirectoryOrCreate: a missing directory is made (0755, root).
            if !path.exists() {
                std::fs::create_dir_all(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            }
            // fsGroup as the kubelet's local volume plugin: writable mounts only.
            if let Some(gid) = fs_group.filter(|_| !read_only) {
                own_tree(&path, gid as u32, 0o660)?;
            }
            path
        } else {
            let path = dir.join(&volume.name);
            std::fs::create_dir_all(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let files = files_of(client, &sources, pod, volume).await.map_err(|e| {
                format!(
                    "MountVolume.SetUp failed for volume \"{}\" : {e}",
                    volume.name
                )
            })?;
            let mode = default_mode(volume);
            for (relative, (bytes, file_mode)) in files {
                write_file(&path.join(relative), &bytes, file_mode.unwrap_or(mode))?;
            }
            let dir_mode = if volume.empty_dir.is_some() {
                0o777
            } else {
                0o755
            };
            set_mode(&path, dir_mode)?;
            if let Some(gid) = fs_group {
                own_tree(&path, gid as u32, 0)?;
            }
            path
        };
        mounted.insert(volume.name.clone(), path);
    }
    Ok(mounted)
}

/// The host directory behind a claim, followed as the kubelet follows a bound claim: the claim
/// names its volume (`spec.volumeName`; nothing binds claims here, so it must be pre-bound), the
/// volume is reserved for it (if it has a `claimRef`) and is `hostPath` or `local`.
async fn claimed_path(client: &Client, namespace: &str, claim: &str) -> Result<PathBuf, String> {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
    let found = claims
        .get_opt(claim)
        .await
        .map_err(|e| format!("persistentvolumeclaim {namespace}/{claim}: {e}"))?
        .ok_or_else(|| format!("persistentvolumeclaim \"{claim}\" not found"))?;
    let volume_name = found
        .spec
        .and_then(|s| s.volume_name)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| {
            format!(
                "persistentvolumeclaim \"{claim}\" is not bound: this node has no volume binder, \
                 so set spec.volumeName to a hostPath or local PersistentVolume"
            )
        })?;
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    let pv = volumes
        .get_opt(&volume_name)
        .await
        .map_err(|e| format!("persistentvolume {volume_name}: {e}"))?
        .ok_or_else(|| {
            format!("persistentvolume \"{volume_name}\" of claim \"{claim}\" not found")
        })?;
    let spec = pv.spec.unwrap_or_default();
    if let Some(by) = &spec.claim_ref {
        let by_namespace = by.namespace.as_deref().unwrap_or_default();
        let by_name = by.name.as_deref().unwrap_or_default();
        if (by_namespace, by_name) != (namespace, claim) {
            return Err(format!(
                "persistentvolume \"{volume_name}\" is reserved for claim {by_namespace}/{by_name}, \
                 not {namespace}/{claim}"
            ));
        }
    }
    if let Some(host) = spec.host_path {
        Ok(PathBuf::from(host.path))
    } else if let Some(local) = spec.local {
        Ok(PathBuf::from(local.path))
    } else {
        Err(format!(
            "persistentvolume \"{volume_name}\" is neither hostPath nor local: this node has no \
             CSI or other volume plugins"
        ))
    }
}

type Files = BTreeMap<String, (Vec<u8>, Option<i32>)>;

async fn files_of(
    client: &Client,
    sources: &Sources,
    pod: &Pod,
    volume: &Volume,
) -> Result<Files, String> {
    let mut files = Files::new();
    if let Some(s) = &volume.secret {
        let name = s.secret_name.as_deref().unwrap_or_default();
        add_secret(&mut files, sources, name, s.items.as_deref(), s.optional).await?;
    }
    if let Some(c) = &volume.config_map {
        add_config_map(&mut files, sources, &c.name, c.items.as_deref(), c.optional).await?;
    }
    if let Some(d) = &volume.downward_api {
        add_downward(&mut files, pod, d.items.as_deref())?;
    }
    for source in volume
        .projected
        .iter()
        .flat_map(|p| p.sources.iter().flatten())
    {
        if let Some(s) = &source.secret {
            add_secret(&mut files, sources, &s.name, s.items.as_deref(), s.optional).await?;
        }
        if let Some(c) = &source.config_map {
            add_config_map(&mut files, sources, &c.name, c.items.as_deref(), c.optional).await?;
        }
        if let Some(d) = &source.downward_api {
            add_downward(&mut files, pod, d.items.as_deref())?;
        }
        if let Some(t) = &source.service_account_token {
            let token = service_account_token(
                client,
                pod,
                t.audience.clone(),
                t.expiration_seconds.unwrap_or(3607),
            )
            .await?;
            files.insert(t.path.clone(), (token.into_bytes(), None));
        }
    }
    Ok(files)
}

/// A Secret's keys (all, or `items`) as files; a missing Secret fails unless optional.
async fn add_secret(
    files: &mut Files,
    sources: &Sources,
    name: &str,
    items: Option<&[KeyToPath]>,
    optional: Option<bool>,
) -> Result<(), String> {
    match sources.secret(name).await? {
        Some(secret) => project(files, secret_data(&secret), items),
        None if optional == Some(true) => Ok(()),
        None => Err(format!("secret \"{name}\" not found")),
    }
}

/// A ConfigMap's keys (all, or `items`) as files; a missing ConfigMap fails unless optional.
async fn add_config_map(
    files: &mut Files,
    sources: &Sources,
    name: &str,
    items: Option<&[KeyToPath]>,
    optional: Option<bool>,
) -> Result<(), String> {
    match sources.config_map(name).await? {
        Some(cm) => project(files, cm.data.unwrap_or_default(), items),
        None if optional == Some(true) => Ok(()),
        None => Err(format!("configmap \"{name}\" not found")),
    }
}

/// Downward-API `fieldRef` items as files.
fn add_downward(
    files: &mut Files,
    pod: &Pod,
    items: Option<&[DownwardAPIVolumeFile]>,
) -> Result<(), String> {
    for item in items.into_iter().flatten() {
        if let Some(field) = &item.field_ref {
            let value = field_value(pod, &field.field_path)?;
            files.insert(item.path.clone(), (value.into_bytes(), item.mode));
        }
    }
    Ok(())
}

/// A token for the pod's service account, bound to the pod as the kubelet binds it.
async fn service_account_token(
    client: &Client,
    pod: &Pod,
    audience: Option<String>,
    expiration_seconds: i64,
) -> Result<String, String> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let account = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".into());
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: audience.map(|a| vec![a]),
            expiration_seconds: Some(expiration_seconds),
            bound_object_ref: Some(k8s_openapi::api::authentication::v1::BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let response = api
        .create_token_request(&account, &PostParams::default(), &request)
        .await
        .map_err(|e| format!("token for service account {namespace}/{account}: {e}"))?;
    Ok(response.status.and_then(|s| s.token).unwrap_or_default())
}

/// Puts `data` into `files`, all keys or only `items` (key → path, mode).
fn project(
    files: &mut Files,
    data: BTreeMap<String, String>,
    items: Option<&[KeyToPath]>,
) -> Result<(), String> {
    match items {
        None => {
            for (k, v) in data {
                files.insert(k, (v.into_bytes(), None));
            }
        }
        Some(items) => {
            for item in items {
                let value = data
                    .get(&item.key)
                    .ok_or_else(|| format!("key {:?} not found", item.key))?;
                files.insert(item.path.clone(), (value.clone().into_bytes(), item.mode));
            }
        }
    }
    Ok(())
}

fn default_mode(volume: &Volume) -> i32 {
    volume
        .secret
        .as_ref()
        .and_then(|s| s.default_mode)
        .or(volume.config_map.as_ref().and_then(|c| c.default_mode))
        .or(volume.projected.as_ref().and_then(|p| p.default_mode))
        .or(volume.downward_api.as_ref().and_then(|d| d.default_mode))
        .unwrap_or(0o644)
}

fn write_file(path: &Path, bytes: &[u8], mode: i32) -> Result<(), String> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    std::fs::write(path, bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    set_mode(path, mode as u32)
}

fn set_mode(path: &Path, mode: u32) -> Result<(), String> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// `fsGroup`: the kubelet gives the group ownership of volume contents. A non-zero `mask` also
/// adds group permissions as its SetVolumeOwnership does for volumes it did not fill itself
/// (claims): `mask` (0o660) on files, plus search and setgid on directories, so that files
/// created later get the group too. Symbolic links are left alone.
fn own_tree(path: &Path, gid: u32, mask: u32) -> Result<(), String> {
    let error = |e: std::io::Error| format!("{}: {e}", path.display());
    let meta = std::fs::symlink_metadata(path).map_err(error)?;
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    chown(path, None, Some(gid)).map_err(error)?;
    if mask != 0 {
        let add = if meta.is_dir() {
            mask | 0o110 | 0o2000
        } else {
            mask
        };
        set_mode(path, (meta.permissions().mode() & 0o7777) | add)?;
    }
    if meta.is_dir() {
        for entry in std::fs::read_dir(path).map_err(error)?.flatten() {
            own_tree(&entry.path(), gid, mask)?;
        }
    }
    Ok(())
}
