//! Where the test bed's binaries are: the pinned builds of `hack/testbed.sh` (its bin directory,
//! `$ROOMREC_TESTBED_BIN` when set) and Debian's packages on PATH.

use crate::error::{Result, TestbedError};
use std::path::PathBuf;
use std::sync::OnceLock;

/// The repository root (this crate lives in `tests/`).
pub fn repo_root() -> PathBuf {
    // Cargo runs a test with its own package's directory, a child of the root like this one.
    // Taken at run time first: a build cached outside the clone (CI's target directory) may
    // have been compiled in another checkout, whose path `env!` would have kept.
    let package = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    package
        .parent()
        .expect("a workspace member has a parent")
        .to_path_buf()
}

fn pinned_bin_dir() -> &'static Option<PathBuf> {
    static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(dir) = std::env::var_os("ROOMREC_TESTBED_BIN") {
            return Some(PathBuf::from(dir));
        }
        let script = repo_root().join("hack/testbed.sh");
        let out = std::process::Command::new("bash")
            .arg(script)
            .arg("--print")
            .output()
            .ok()?;
        Some(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
    })
}

/// A binary built by `hack/testbed.sh` (kube-apiserver, etcd, kubectl, helm, versitygw, …).
pub fn pinned(name: &str) -> Result<PathBuf> {
    let dir = pinned_bin_dir().as_ref();
    match dir.map(|d| d.join(name)) {
        Some(path) if path.is_file() => Ok(path),
        _ => Err(TestbedError::MissingBinary {
            binary: name.to_string(),
            hint: "run `make testbed` (hack/testbed.sh) to build the pinned test-bed binaries"
                .into(),
        }),
    }
}

/// The prometheus-operator CRDs `hack/testbed.sh` fetched (ServiceMonitor, PodMonitor,
/// PrometheusRule): `monitoring-crds/` beside the pinned bin directory.
pub fn monitoring_crds() -> Result<Vec<PathBuf>> {
    let missing = || TestbedError::MissingBinary {
        binary: "monitoring-crds/*.yaml".into(),
        hint: "run `make testbed` (hack/testbed.sh fetches the prometheus-operator CRDs)".into(),
    };
    let dir = pinned_bin_dir()
        .as_ref()
        .and_then(|bin| bin.parent())
        .map(|d| d.join("monitoring-crds"))
        .ok_or_else(missing)?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|_| missing())?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(missing());
    }
    Ok(files)
}

/// A command from the system (Debian's ffmpeg, nginx, prometheus, openssl).
pub fn system(name: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| TestbedError::MissingBinary {
            binary: name.to_string(),
            hint: "run `make testbed` (hack/testbed.sh installs the Debian packages)".into(),
        })
}
