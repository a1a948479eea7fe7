//! Supervised child processes: output goes to a log file, the child dies with the test process
//! (PR_SET_PDEATHSIG, so even a SIGKILLed test leaves nothing behind), and dropping the handle
//! stops it — SIGTERM, then SIGKILL after a grace period — which also runs when a test panics.

use crate::error::{Result, TestbedError, file_error, log_tail};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How much of a component's log an error about it quotes.
const ERROR_LOG_LINES: usize = 15;

pub struct Supervised {
    name: String,
    child: Option<Child>,
    log: PathBuf,
    grace: Duration,
}

impl Supervised {
    /// Starts `command` with stdout and stderr appended to `log`.
    pub fn spawn(name: &str, mut command: Command, log: &Path) -> Result<Self> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(file_error(log))?;
        let err = out.try_clone().map_err(file_error(log))?;
        command.stdin(Stdio::null()).stdout(out).stderr(err);
        die_with_parent(&mut command);
        let child = command.spawn().map_err(|source| TestbedError::Spawn {
            what: format!("{name} ({:?})", command.get_program()),
            source,
        })?;
        Ok(Self {
            name: name.to_string(),
            child: Some(child),
            log: log.to_path_buf(),
            grace: Duration::from_secs(10),
        })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Fails with the log's location if the process has already exited.
    pub fn check_running(&mut self) -> Result<()> {
        if let Some(child) = self.child.as_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            return Err(TestbedError::ExitedEarly {
                what: self.name.clone(),
                status: status.to_string(),
                log: self.log.clone(),
                tail: log_tail(&self.log, ERROR_LOG_LINES, usize::MAX),
            });
        }
        Ok(())
    }

    /// Polls `ready` until it holds, failing early if the process exits.
    pub async fn wait_ready<F, Fut>(&mut self, timeout: Duration, mut ready: F) -> Result<()>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + timeout;
        loop {
            self.check_running()?;
            if ready().await {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(TestbedError::NotReady {
                    what: self.name.clone(),
                    seconds: timeout.as_secs(),
                    log: self.log.clone(),
                    tail: log_tail(&self.log, ERROR_LOG_LINES, usize::MAX),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sends a signal without waiting (e.g. SIGKILL to simulate a crash).
    pub fn signal(&self, signal: i32) {
        if let Some(pid) = self.pid() {
            // SAFETY: kill(2) has no memory-safety preconditions.
            unsafe { libc::kill(pid as i32, signal) };
        }
    }

    /// SIGTERM, then SIGKILL after the grace period; returns once the process is gone.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + self.grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Asks the kernel to SIGKILL the child when the thread that spawned it exits.
pub(crate) fn die_with_parent(command: &mut Command) {
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec here.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

/// Runs a short command to completion, failing with its stderr.
pub fn run(what: &str, command: &mut Command) -> Result<String> {
    let output = command.output().map_err(|source| TestbedError::Spawn {
        what: what.to_string(),
        source,
    })?;
    if !output.status.success() {
        return Err(TestbedError::Command {
            what: what.to_string(),
            message: format!(
                "{}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// True once something accepts TCP connections on 127.0.0.1:`port`.
pub async fn port_open(port: u16) -> bool {
    tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_ok()
}
