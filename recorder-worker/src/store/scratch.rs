//! The local copy of a part that `--faststart` remuxes when the part ends. It receives the
//! part's bytes as they are recorded, and gives up (freeing its disk) rather than fill the disk:
//! the remux needs as much room again. It never affects the recording itself.
//!
//! Copies live in `{scratch dir}/.roomrec-faststart/`, each under an advisory lock held while
//! the worker uses it, so a later run removes only what workers that are gone left behind.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const SCRATCH_SUBDIR: &str = ".roomrec-faststart";

/// Room kept free beyond the remuxed file's size (its sample tables, the filesystem's slack).
const RESERVE: u64 = 8 << 20;

/// Why a part has no usable copy; the message names the flag that fixes it. Cloneable (the
/// I/O errors are shared) because the copy keeps its reason and hands it out when asked.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ScratchError {
    #[error(
        "cannot write a copy in the scratch directory {} ({source}): make --scratch-dir (ROOMREC_SCRATCH_DIR) a writable directory",
        dir.display()
    )]
    Unwritable {
        dir: PathBuf,
        #[source]
        source: Arc<std::io::Error>,
    },
    #[error(
        "the scratch directory {} ran short of space after {}: a classic copy needs about twice the part's size free; give --scratch-dir more room, or shorten parts with --segment-seconds or --segment-size",
        dir.display(),
        crate::shared::format::human_bytes(*copied)
    )]
    NoRoom { dir: PathBuf, copied: u64 },
    #[error("writing the copy in the scratch directory {} failed: {source}", dir.display())]
    Write {
        dir: PathBuf,
        #[source]
        source: Arc<std::io::Error>,
    },
}

pub struct Scratch {
    dir: PathBuf,
    /// `{pid}-{file name of the key}.fmp4`: unique among running workers.
    path: PathBuf,
    file: Option<File>,
    bytes: u64,
    /// Why there is no usable copy.
    failure: Option<ScratchError>,
}

impl Scratch {
    /// Starts the copy of the part stored under `key`. Never fails: a copy that cannot be made
    /// carries the reason, which ends up in the part's manifest message.
    pub fn create(dir: &Path, key: &str) -> Self {
        let name = key.rsplit('/').next().unwrap_or(key);
        let path = dir
            .join(SCRATCH_SUBDIR)
            .join(format!("{}-{name}.fmp4", std::process::id()));
        let mut scratch = Self {
            dir: dir.to_path_buf(),
            path,
            file: None,
            bytes: 0,
            failure: None,
        };
        match open_locked(&scratch.path) {
            Ok(file) => scratch.file = Some(file),
            Err(e) => scratch.give_up(ScratchError::Unwritable {
                dir: dir.to_path_buf(),
                source: Arc::new(e),
            }),
        }
        scratch
    }

    /// Appends recorded bytes, unless the copy was given up.
    pub fn append(&mut self, data: &[u8]) {
        let Some(file) = self.file.as_mut() else {
            return;
        };
        let n = data.len() as u64;
        let result = match free_bytes(&self.dir) {
            // This write, then a remuxed file as large as the copy, and the reserve.
            Ok(free) if free < n + (self.bytes + n) + RESERVE => Err(ScratchError::NoRoom {
                dir: self.dir.clone(),
                copied: self.bytes,
            }),
            _ => file.write_all(data).map_err(|e| ScratchError::Write {
                dir: self.dir.clone(),
                source: Arc::new(e),
            }),
        };
        match result {
            Ok(()) => self.bytes += data.len() as u64,
            Err(reason) => self.give_up(reason),
        }
    }

    /// The copy's path and size, or why there is none.
    pub fn copy(&self) -> Result<(&Path, u64), ScratchError> {
        match &self.failure {
            Some(reason) => Err(reason.clone()),
            None => Ok((&self.path, self.bytes)),
        }
    }

    /// Where the remuxed file goes: beside the copy, covered by its lock.
    pub fn output(&self) -> PathBuf {
        self.path.with_extension("mp4")
    }

    fn give_up(&mut self, reason: ScratchError) {
        tracing::warn!(path = %self.path.display(), "--faststart: {reason}");
        self.failure = Some(reason);
        self.file = None;
        self.remove_files();
    }

    /// The remuxed file first: a remuxed file without its copy is always a leftover.
    fn remove_files(&self) {
        let _ = std::fs::remove_file(self.output());
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        self.remove_files();
    }
}

fn open_locked(path: &Path) -> std::io::Result<File> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let file = File::create(path)?;
    lock(&file)?;
    Ok(file)
}

/// An exclusive advisory lock, released when the file is closed or its process dies.
fn lock(file: &File) -> std::io::Result<()> {
    // SAFETY: flock on an open descriptor has no memory-safety preconditions.
    match unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

/// Bytes free to this user on the filesystem holding `dir`.
fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())?;
    // SAFETY: statvfs writes only into the zeroed struct it is given.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(stat.f_bavail as u64 * stat.f_frsize as u64)
}

/// Removes the copies and remuxed files that workers which are gone left in `dir` (a killed
/// worker cannot clean up); copies still locked by a running worker stay.
pub fn sweep(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir.join(SCRATCH_SUBDIR)) else {
        return;
    };
    for path in entries.flatten().map(|e| e.path()) {
        let stale = match path.extension().and_then(|e| e.to_str()) {
            Some("fmp4") => File::open(&path).and_then(|f| lock(&f)).is_ok(),
            Some("mp4") => !path.with_extension("fmp4").exists(),
            _ => false,
        };
        if stale {
            tracing::info!(path = %path.display(), "removing a scratch file an earlier run left");
            let _ = std::fs::remove_file(&path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_holds_what_was_appended_and_is_removed_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let mut scratch = Scratch::create(dir.path(), "rec/a_part0001.mp4");
        scratch.append(b"abc");
        scratch.append(b"def");
        let (path, bytes) = scratch.copy().unwrap();
        assert_eq!(bytes, 6);
        assert_eq!(std::fs::read(path).unwrap(), b"abcdef");
        let path = path.to_path_buf();
        assert!(path.starts_with(dir.path().join(SCRATCH_SUBDIR)));
        drop(scratch);
        assert!(!path.exists());
    }

    #[test]
    fn a_directory_that_cannot_be_created_gives_the_reason_and_the_flag() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, b"").unwrap();
        let mut scratch = Scratch::create(&file, "a_part0001.mp4");
        scratch.append(b"abc");
        let reason = scratch.copy().unwrap_err();
        assert!(
            matches!(reason, ScratchError::Unwritable { .. }),
            "{reason:?}"
        );
        assert!(reason.to_string().contains("--scratch-dir"), "{reason}");
    }

    #[test]
    fn sweep_removes_only_what_no_running_worker_holds() {
        let dir = tempfile::tempdir().unwrap();
        let held = Scratch::create(dir.path(), "held_part0001.mp4");
        let (held_path, _) = held.copy().unwrap();
        let held_path = held_path.to_path_buf();
        std::fs::write(held.output(), b"remuxing").unwrap();
        let sub = dir.path().join(SCRATCH_SUBDIR);
        std::fs::write(sub.join("1-left_part0002.fmp4"), b"old").unwrap();
        std::fs::write(sub.join("1-left_part0003.mp4"), b"old").unwrap();
        sweep(dir.path());
        let mut left: Vec<_> = std::fs::read_dir(&sub)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        left.sort();
        assert_eq!(left, vec![held_path, held.output()]);
    }
}
