//! A part written in place: into a directory, the part's own file is its checkpoint.
//!
//! Into an object store a part streams into an upload that is invisible until it completes,
//! so each checkpoint is stored a second time, as a journal segment. A file can be made durable
//! as it grows: each checkpoint is written to the part's file where the stored ones end and
//! `fdatasync`ed, and the journal keeps only the part's claim and `meta.json`. Each byte is
//! written once, not twice: the directory store's worker cost half as much CPU again as the S3
//! one (opendal's fs writer took three blocking-thread hops per unit, and each segment an
//! open, a write, an fsync and a close, then a delete).
//!
//! The file is written with `std::fs` on a blocking thread: opendal's writer can neither make
//! a written prefix durable without closing the file nor cut a failed write back. Everything
//! else in the directory (claims, leases, journals, listing, reads) still goes through opendal.
//!
//! A checkpoint whose write fails is cut back (`set_len`) to where the stored ones end and
//! retried. After a crash the part is what its file holds up to its last whole unit (a write
//! torn by the kill ends in part of one); when a stop finds the directory still refusing, the
//! checkpoints it could not write are kept in the spool directory with `STORED_LENGTH` (where
//! the stored ones end in the file) and the next run writes them there (`journal::salvage`).

use opendal::Buffer;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// In an in-place part's journal: the length of the part's file its stored checkpoints fill.
/// Written only with checkpoints kept for a later run, which are to follow it.
pub const STORED_LENGTH: &str = "stored-length";

/// The directory parts are written into in place (the store's root).
#[derive(Debug)]
pub struct InPlace {
    root: PathBuf,
}

impl InPlace {
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }

    pub fn path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    /// Creates (or empties) the part's file, its directory made durable too so that the file
    /// survives the machine's crash with its checkpoints.
    pub async fn create(&self, key: &str) -> io::Result<PartFile> {
        let path = self.path(key);
        blocking(move || {
            let parent = path.parent().unwrap_or(Path::new("/"));
            std::fs::create_dir_all(parent)?;
            let file = File::create(&path)?;
            File::open(parent)?.sync_all()?;
            Ok(PartFile::new(file, 0))
        })
        .await
    }

    /// The part's file as a dead run left it, its stored length still to be found; None when
    /// there is no file.
    pub async fn open(&self, key: &str) -> io::Result<Option<(PartFile, u64)>> {
        let path = self.path(key);
        blocking(move || {
            let file = match std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
            {
                Ok(file) => file,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e),
            };
            let len = file.metadata()?.len();
            Ok(Some((PartFile::new(file, 0), len)))
        })
        .await
    }
}

/// A part's file: its checkpoints are written at the end of the stored ones and synced, one
/// at a time (shared only with the blocking thread of the write in flight).
pub struct PartFile {
    file: Arc<File>,
    /// Where the stored checkpoints end.
    stored: AtomicU64,
    /// A write failed: the file may hold part of it after the stored checkpoints.
    torn: AtomicBool,
}

impl PartFile {
    fn new(file: File, stored: u64) -> Self {
        Self {
            file: Arc::new(file),
            stored: AtomicU64::new(stored),
            torn: AtomicBool::new(false),
        }
    }

    pub fn stored(&self) -> u64 {
        self.stored.load(Ordering::Acquire)
    }

    /// Writes `data` where the stored checkpoints end and syncs it. After a failed write the
    /// file is first cut back to the stored ones, so that it never holds part of a checkpoint
    /// between or after whole ones.
    pub async fn store(&self, data: Buffer) -> io::Result<()> {
        let (file, at, len) = (self.file.clone(), self.stored(), data.len() as u64);
        let torn = self.torn.swap(true, Ordering::AcqRel);
        blocking(move || {
            if torn {
                file.set_len(at)?;
            }
            write_all_at(&file, data, at)?;
            file.sync_data()
        })
        .await?;
        self.torn.store(false, Ordering::Release);
        self.stored.store(at + len, Ordering::Release);
        Ok(())
    }

    /// Cuts the file to `len` bytes, which become its stored ones (a dead run's part, after
    /// what it was writing when it died).
    pub async fn cut(&self, len: u64) -> io::Result<()> {
        let file = self.file.clone();
        blocking(move || file.set_len(len).and_then(|()| file.sync_data())).await?;
        self.stored.store(len, Ordering::Release);
        Ok(())
    }

    /// Up to `max` bytes at `offset`; empty at the file's end.
    pub async fn read_at(&self, offset: u64, max: usize) -> io::Result<Vec<u8>> {
        let file = self.file.clone();
        blocking(move || {
            use std::os::unix::fs::FileExt;
            let mut buf = vec![0; max];
            let n = file.read_at(&mut buf, offset)?;
            buf.truncate(n);
            Ok(buf)
        })
        .await
    }
}

fn write_all_at(file: &File, data: Buffer, mut at: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    for piece in data {
        file.write_all_at(&piece, at)?;
        at += piece.len() as u64;
    }
    Ok(())
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn after_a_failed_write_the_retry_replaces_what_it_left() {
        let dir = tempfile::tempdir().unwrap();
        let place = InPlace::new(dir.path().to_path_buf());
        let path = place.path("a/b/part.mp4");
        let part = place.create("a/b/part.mp4").await.unwrap();
        part.store(Buffer::from(vec![1u8; 10])).await.unwrap();
        // What a write that failed half way leaves (a full disk: ENOSPC after some pages).
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| io::Write::write_all(&mut f, &[9u8; 50]))
            .unwrap();
        part.torn.store(true, Ordering::Release);
        part.store(Buffer::from(vec![2u8; 4])).await.unwrap();
        assert_eq!(
            std::fs::read(&path).unwrap(),
            [vec![1u8; 10], vec![2u8; 4]].concat()
        );
        assert_eq!(part.stored(), 14);
    }

    #[tokio::test]
    async fn a_dead_runs_file_is_cut_to_the_length_given() {
        let dir = tempfile::tempdir().unwrap();
        let place = InPlace::new(dir.path().to_path_buf());
        assert!(place.open("missing.mp4").await.unwrap().is_none());
        std::fs::write(place.path("p.mp4"), [7u8; 30]).unwrap();
        let (part, len) = place.open("p.mp4").await.unwrap().unwrap();
        assert_eq!(len, 30);
        assert_eq!(part.read_at(25, 100).await.unwrap(), vec![7u8; 5]);
        part.cut(12).await.unwrap();
        part.store(Buffer::from(vec![3u8; 2])).await.unwrap();
        assert_eq!(
            std::fs::read(place.path("p.mp4")).unwrap(),
            [vec![7u8; 12], vec![3u8; 2]].concat()
        );
    }
}
