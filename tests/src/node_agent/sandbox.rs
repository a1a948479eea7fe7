//! Starts a container's process the way a runtime would, using what Linux gives a root process:
//! the pod's network namespace, a private mount namespace where each volume is bind-mounted at
//! its `mountPath` (read-only when asked), an optionally read-only root filesystem, the user and
//! groups of the security context, `no_new_privs`, and a session of its own so the whole process
//! tree can be killed when the main process ends (as a PID namespace would). What it does not
//! do: images, cgroups, seccomp, capabilities beyond dropping root. docs/testing.md lists it.

use std::ffi::CString;
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// Descriptors at which mount sources are opened in the child (above what a few pods inherit).
const SOURCE_FD_BASE: libc::c_int = 900;

/// Where programs of non-root containers are mounted (see `Sandbox::spawn`).
const IMAGE_MOUNT_DIR: &str = "/run/roomrec-node/images";

#[derive(Clone, Debug)]
pub struct BindMount {
    pub source: PathBuf,
    pub target: PathBuf,
    pub read_only: bool,
}

#[derive(Clone, Debug, Default)]
pub struct Sandbox {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub working_dir: Option<PathBuf>,
    pub mounts: Vec<BindMount>,
    pub read_only_root: bool,
    pub user: Option<u32>,
    pub group: Option<u32>,
    pub supplemental_groups: Vec<u32>,
    pub no_new_privileges: bool,
    /// The pod's network namespace; None runs in the host's (`hostNetwork`).
    pub netns: Option<RawFd>,
    pub log: PathBuf,
}

impl Sandbox {
    pub fn spawn(&self) -> std::io::Result<tokio::process::Child> {
        // An image's entrypoint is readable by any user; a binary cargo built under a private
        // home (CARGO_TARGET_DIR in /root/.cache) is not. Like an image layer, the program is
        // bind-mounted into the container at a path every user can reach, and run from there.
        let mut own_mounts = self.mounts.clone();
        let mut program = self.program.clone();
        if self.user.is_some_and(|uid| uid != 0)
            && let Some(name) = self.program.file_name()
        {
            let target = Path::new(IMAGE_MOUNT_DIR).join(name);
            own_mounts.push(BindMount {
                source: self.program.clone(),
                target: target.clone(),
                read_only: true,
            });
            program = target;
        }
        // Mount points must exist before the namespace is made; like a runtime, create missing
        // ones (a directory, or an empty file for a file source such as the termination log).
        for mount in &own_mounts {
            if !mount.target.exists() {
                if mount.source.is_dir() {
                    std::fs::create_dir_all(&mount.target)?;
                } else {
                    if let Some(parent) = mount.target.parent() {
                        std::fs::create_dir_all(parent)?;
                    }
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .mode(0o644)
                        .open(&mount.target)?;
                }
            }
        }
        // Each source is opened (in the new namespace, before any mount) at a known descriptor
        // and mounted through /proc/self/fd: a volume mounted over a directory (an emptyDir at
        // /tmp) must not hide the sources of later mounts.
        let mounts: Vec<(CString, CString, CString, libc::c_int, bool)> = own_mounts
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let fd = SOURCE_FD_BASE + i as libc::c_int;
                let via = PathBuf::from(format!("/proc/self/fd/{fd}"));
                Ok((
                    c_path(&m.source)?,
                    c_path(&via)?,
                    c_path(&m.target)?,
                    fd,
                    m.read_only,
                ))
            })
            .collect::<std::io::Result<_>>()?;
        let root = c_path(Path::new("/"))?;
        let cwd = c_path(self.working_dir.as_deref().unwrap_or(Path::new("/")))?;
        let read_only_root = self.read_only_root;
        let (user, group) = (self.user, self.group.or(self.user.map(|_| 0)));
        let groups: Vec<libc::gid_t> = self.supplemental_groups.clone();
        let no_new_privileges = self.no_new_privileges;
        let netns = self.netns;

        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut command = tokio::process::Command::new(&program);
        command
            .arg0(&self.program)
            .args(&self.args)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        // SAFETY: between fork and exec the closure only makes system calls on memory prepared
        // before the fork (the CStrings and vectors above); it allocates nothing.
        unsafe {
            command.pre_exec(move || {
                check(libc::setsid())?;
                if let Some(fd) = netns {
                    check(libc::setns(fd, libc::CLONE_NEWNET))?;
                }
                check(libc::unshare(libc::CLONE_NEWNS))?;
                let none = std::ptr::null();
                check(libc::mount(
                    none,
                    root.as_ptr(),
                    none,
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ))?;
                for (source, _, _, fd, _) in &mounts {
                    let opened = libc::open(source.as_ptr(), libc::O_PATH | libc::O_CLOEXEC);
                    check(opened)?;
                    // An agent running a thousand pods holds descriptors past the base: the
                    // lowest free one may be the one wanted (dup3 onto itself is EINVAL).
                    if opened != *fd {
                        check(libc::dup3(opened, *fd, libc::O_CLOEXEC))?;
                        check(libc::close(opened))?;
                    }
                }
                for (_, via, target, _, read_only) in &mounts {
                    check(libc::mount(
                        via.as_ptr(),
                        target.as_ptr(),
                        none,
                        libc::MS_BIND | libc::MS_REC,
                        std::ptr::null(),
                    ))?;
                    if *read_only {
                        check(libc::mount(
                            none,
                            target.as_ptr(),
                            none,
                            libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
                            std::ptr::null(),
                        ))?;
                    }
                }
                if read_only_root {
                    check(libc::mount(
                        none,
                        root.as_ptr(),
                        none,
                        libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
                        std::ptr::null(),
                    ))?;
                }
                if let Some(gid) = group {
                    check(libc::setgroups(groups.len(), groups.as_ptr()))?;
                    check(libc::setgid(gid))?;
                }
                if let Some(uid) = user {
                    check(libc::setuid(uid))?;
                }
                check(libc::chdir(cwd.as_ptr()))?;
                if no_new_privileges {
                    check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))?;
                }
                // After setuid: a change of credentials clears the parent-death signal.
                check(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL))?;
                Ok(())
            });
        }
        command.spawn()
    }
}

fn c_path(path: &Path) -> std::io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
}

fn check(rc: libc::c_int) -> std::io::Result<()> {
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Signals the container's whole session (its main process leads it).
pub fn signal_tree(pid: u32, signal: libc::c_int) {
    // SAFETY: kill(2) has no memory-safety preconditions; a negative pid names a process group.
    unsafe {
        libc::kill(-(pid as i32), signal);
    }
}

/// Signals only the main process, as a runtime delivers SIGTERM to PID 1.
pub fn signal_main(pid: u32, signal: libc::c_int) {
    // SAFETY: as above.
    unsafe {
        libc::kill(pid as i32, signal);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    /// An agent running a thousand pods holds descriptors up to and past the base the mount
    /// sources are opened at: in the child, a source then opens at exactly its own descriptor.
    /// The spawn must still mount it (it failed with EINVAL, dup3 onto itself, for 103 of
    /// 1,000 pods in the cluster benchmark). Needs root, as the node agent does.
    #[tokio::test]
    async fn mount_sources_are_mounted_when_the_agent_holds_descriptors_past_the_base() {
        let dir = tempfile::tempdir().unwrap();
        let mut mounts = Vec::new();
        let mut expected = String::new();
        for i in 0..16 {
            let source = dir.path().join(format!("source-{i}"));
            std::fs::write(&source, format!("{i}\n")).unwrap();
            mounts.push(BindMount {
                source,
                target: dir.path().join(format!("target-{i}")),
                read_only: true,
            });
            expected += &format!("{i}\n");
        }
        // Every descriptor below the base taken: in the child, after the few the spawn itself
        // opens, the next source opens at the descriptor it is wanted at.
        let mut held = Vec::new();
        loop {
            let file = std::fs::File::open("/dev/null").unwrap();
            let fd = file.as_raw_fd();
            held.push(file);
            assert!(fd < SOURCE_FD_BASE, "descriptors below the base were free");
            if fd == SOURCE_FD_BASE - 1 {
                break;
            }
        }
        let targets: Vec<String> = mounts
            .iter()
            .map(|m| m.target.display().to_string())
            .collect();
        let sandbox = Sandbox {
            program: PathBuf::from("/bin/cat"),
            args: targets,
            mounts,
            log: dir.path().join("log"),
            ..Sandbox::default()
        };
        let spawned = sandbox.spawn();
        drop(held);
        let status = spawned.unwrap().wait().await.unwrap();
        let log = std::fs::read_to_string(dir.path().join("log")).unwrap();
        assert!(status.success(), "{log}");
        assert_eq!(log, expected);
    }
}
