//! Finding the process the node agent runs for a container (by its program and environment).

/// The pid of the process the node agent runs for a pod (found by its ROOMREC_POD_NAME).
// Used by e2e.rs and images.rs; chart.rs looks for the operator with `pid_of`.
#[allow(dead_code)]
pub fn worker_pid(pod: &str) -> Option<i32> {
    pid_of("roomrec-worker", &format!("ROOMREC_POD_NAME={pod}"))
}

/// The pid of a process running `program` (its binary's file name) whose environment holds
/// `variable` (`NAME=value`): how a container the node agent runs is found.
pub fn pid_of(program: &str, variable: &str) -> Option<i32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let environ = std::fs::read(entry.path().join("environ")).ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let runs_program = cmdline
                .split(|b| *b == 0)
                .next()?
                .ends_with(program.as_bytes());
            (runs_program && environ.split(|b| *b == 0).any(|v| v == variable.as_bytes()))
                .then_some(pid)
        })
}
