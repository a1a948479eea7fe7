//! kubectl and helm (the pinned builds of `hack/testbed.sh`) against the bed's API server, and
//! the chart rendered with the test release name into the system namespace.

use super::cluster::{RELEASE, SYSTEM_NAMESPACE, bed, repo};
use std::path::PathBuf;
use std::process::Stdio;

pub fn tool(name: &str) -> PathBuf {
    roomrec_testbed::binaries::pinned(name).unwrap()
}

/// The chart rendered with the test release name into roomrec-system.
pub fn helm_template(only: &[&str]) -> String {
    helm_template_with(only, &[])
}

/// As `helm_template`, with values set (`key=value`, as `--set`).
pub fn helm_template_with(only: &[&str], set: &[&str]) -> String {
    let mut extra = Vec::new();
    for file in only {
        extra.extend(["--show-only", file]);
    }
    for value in set {
        extra.extend(["--set", value]);
    }
    let output = helm_template_output(&extra);
    assert!(
        output.status.success(),
        "helm template: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// `helm template` of the chart with the test release name into roomrec-system, `extra`
/// arguments after; the output as it is (a test of refused values wants the failure).
pub fn helm_template_output(extra: &[&str]) -> std::process::Output {
    let chart = repo().join("charts/roomrec").display().to_string();
    let mut args = vec![
        "template",
        RELEASE,
        &chart,
        "--namespace",
        SYSTEM_NAMESPACE,
        "--kube-version",
        "1.37.2",
    ];
    args.extend(extra);
    helm(&args)
}

/// `helm` against the bed's API server.
pub fn helm(args: &[&str]) -> std::process::Output {
    std::process::Command::new(tool("helm"))
        .env("KUBECONFIG", &bed().kubeconfig)
        .args(args)
        .output()
        .unwrap()
}

pub fn kubectl(args: &[&str], stdin: Option<&str>) -> std::process::Output {
    use std::io::Write;
    let mut child = std::process::Command::new(tool("kubectl"))
        .env("KUBECONFIG", &bed().kubeconfig)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

/// `kubectl apply --server-side` of `yaml` (cluster-wide objects or ones in roomrec-system,
/// which is created first).
pub fn kubectl_apply(yaml: &str) {
    let _ = kubectl(&["create", "namespace", SYSTEM_NAMESPACE], None);
    let out = kubectl(&["apply", "--server-side", "-f", "-"], Some(yaml));
    assert!(
        out.status.success(),
        "kubectl apply: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The Events (`events.k8s.io`) of `namespace`, as JSON objects.
// Used by e2e.rs.
#[allow(dead_code)]
pub fn events_in(namespace: &str) -> Vec<serde_json::Value> {
    let out = kubectl(
        &["get", "events.events.k8s.io", "-n", namespace, "-o", "json"],
        None,
    );
    assert!(
        out.status.success(),
        "kubectl get events: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    list["items"].as_array().cloned().unwrap_or_default()
}
