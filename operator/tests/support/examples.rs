//! The repository's `examples/`, edited to point at the bed and applied with kubectl.

use super::cluster::repo;
use super::kubectl::kubectl;

/// `examples/{name}` with each `(from, to)` replaced (each `from` must still be there).
pub fn example(name: &str, edits: &[(&str, String)]) -> String {
    let mut text = std::fs::read_to_string(repo().join("examples").join(name)).unwrap();
    for (from, to) in edits {
        assert!(
            text.contains(from),
            "examples/{name} no longer contains {from:?}"
        );
        text = text.replace(from, to);
    }
    text
}

/// `kubectl apply -n {namespace} -f -`.
pub fn apply_in(namespace: &str, yaml: &str) {
    let out = kubectl(&["apply", "-n", namespace, "-f", "-"], Some(yaml));
    assert!(
        out.status.success(),
        "kubectl apply: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
