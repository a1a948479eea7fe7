//! How a container image becomes a local program — the one rule the node agent invents.
//!
//! 1. `command` given: its first word is the program. An absolute path that exists on this
//!    machine is used as is; otherwise its file name is looked up like an image entrypoint.
//! 2. No `command`: the image's entrypoint is the image *name*: the last path segment of the
//!    repository, without tag or digest (`ghcr.io/roomrec/roomrec-worker:0.1` → `roomrec-worker`).
//! 3. A name is looked up in the explicit image map first (repository → binary, e.g.
//!    `ghcr.io/roomrec/roomrec-worker` → `target/debug/roomrec-worker`), then in the agent's
//!    search path (`$ROOMREC_NODE_PATH`), then in `$PATH`.
//!
//! `args` follow the program, after `$(VAR)` expansion, as the kubelet does.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, Default)]
pub struct ImageResolver {
    /// Repository (no tag) → local binary.
    pub images: HashMap<String, PathBuf>,
    /// Directories searched before `$PATH`.
    pub search_path: Vec<PathBuf>,
}

impl ImageResolver {
    /// The program to run for `image` with the container's `command` (already expanded).
    pub fn program(&self, image: &str, command: Option<&str>) -> Result<PathBuf, String> {
        if let Some(command) = command {
            let path = Path::new(command);
            if path.is_absolute() && path.is_file() {
                return Ok(path.to_path_buf());
            }
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or(command);
            return self.lookup(name).ok_or_else(|| {
                format!("command {command:?} of image {image:?} is not a program on this node (searched the image map, $ROOMREC_NODE_PATH and $PATH)")
            });
        }
        let repository = repository(image);
        if let Some(path) = self.images.get(repository) {
            return Ok(path.clone());
        }
        let name = repository.rsplit('/').next().unwrap_or(repository);
        self.lookup(name).ok_or_else(|| {
            format!("image {image:?} has no local binary: map {repository:?} in the node agent's image map or put {name:?} on $ROOMREC_NODE_PATH")
        })
    }

    fn lookup(&self, name: &str) -> Option<PathBuf> {
        if let Some(path) = self.images.get(name) {
            return Some(path.clone());
        }
        let path_var = std::env::var_os("PATH").unwrap_or_default();
        self.search_path
            .iter()
            .cloned()
            .chain(std::env::split_paths(&path_var))
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    }
}

/// `registry:5000/org/name:tag@sha256:…` → `registry:5000/org/name`.
pub fn repository(image: &str) -> &str {
    let without_digest = image.split('@').next().unwrap_or(image);
    match without_digest.rfind(':') {
        // A colon after the last slash is a tag; before it, a registry port.
        Some(colon) if !without_digest[colon..].contains('/') => &without_digest[..colon],
        _ => without_digest,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_strips_tag_and_digest_but_not_port() {
        assert_eq!(repository("busybox"), "busybox");
        assert_eq!(repository("busybox:1.36"), "busybox");
        assert_eq!(
            repository("ghcr.io/roomrec/roomrec-worker:0.1"),
            "ghcr.io/roomrec/roomrec-worker"
        );
        assert_eq!(repository("localhost:5000/worker"), "localhost:5000/worker");
        assert_eq!(
            repository("localhost:5000/worker:v1@sha256:abc"),
            "localhost:5000/worker"
        );
    }

    #[test]
    fn image_name_maps_to_binary_on_path() {
        let resolver = ImageResolver::default();
        assert_eq!(
            resolver
                .program("docker.io/library/sh:latest", None)
                .unwrap()
                .file_name()
                .unwrap(),
            "sh"
        );
        assert!(
            resolver
                .program("example.com/no-such-binary-here:1", None)
                .is_err()
        );
        assert!(
            resolver
                .program("x", Some("true"))
                .unwrap()
                .ends_with("true")
        );
    }

    #[test]
    fn explicit_map_wins() {
        let mut resolver = ImageResolver::default();
        resolver
            .images
            .insert("ghcr.io/roomrec/roomrec-worker".into(), "/bin/true".into());
        assert_eq!(
            resolver
                .program("ghcr.io/roomrec/roomrec-worker:dev", None)
                .unwrap(),
            PathBuf::from("/bin/true")
        );
    }
}
