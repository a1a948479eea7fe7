//! How a process really runs, read from /proc: its status fields and the mounts it sees.

/// The value of `Key:` in /proc/{pid}/status, trimmed.
pub fn proc_status(pid: i32, key: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("/proc/{pid}/status has no {key}"))
        .trim()
        .to_string()
}

/// Mount point → options, as the process sees its mounts (its own mount namespace). mountinfo
/// lines are `id parent major:minor root mount-point options …`; a later mount at the same
/// point is mounted over an earlier one, so it wins.
pub fn mount_options(pid: i32) -> std::collections::BTreeMap<String, Vec<String>> {
    let mountinfo = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    mountinfo
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            Some((
                fields.get(4)?.to_string(),
                fields.get(5)?.split(',').map(str::to_string).collect(),
            ))
        })
        .collect()
}
