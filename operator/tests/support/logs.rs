//! Where a failing wait finds what went wrong: the operator's log (a process a test started,
//! or a pod of the chart) and the logs of the worker containers the node agent ran.

use super::cluster::bed;

/// Where a failing wait finds the operator's log: a process the test started, or a pod.
pub trait OperatorLog {
    fn log_text(&self) -> String;
}

/// The log of `container` in every pod the node agent ran in `namespace`, by pod directory.
pub fn container_logs(namespace: &str, container: &str) -> Vec<(String, String)> {
    std::fs::read_dir(bed().dir.join("node/pods"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().to_string();
            name.starts_with(&format!("{namespace}_")).then(|| {
                let log = entry.path().join(format!("{container}.log"));
                (name, std::fs::read_to_string(log).unwrap_or_default())
            })
        })
        .collect()
}

/// The last `bytes` of `text` (on a character boundary).
pub fn tail(text: &str, bytes: usize) -> String {
    let start = text.len().saturating_sub(bytes);
    text[text.floor_char_boundary(start)..].to_string()
}

pub fn worker_logs(namespace: &str) -> String {
    container_logs(namespace, "worker")
        .into_iter()
        .map(|(name, text)| format!("--- {name} ---\n{}\n", tail(&text, 3000)))
        .collect()
}
