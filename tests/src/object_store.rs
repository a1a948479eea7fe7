//! The S3-compatible object store: versitygw with its POSIX backend. It verifies AWS SigV4 on
//! every request (unsigned and wrongly signed requests are refused), supports multipart uploads,
//! and keeps objects as plain files, so a test can also look at them on disk.

use crate::binaries;
use crate::error::{Result, file_error};
use crate::ports::free_port;
use crate::process::{Supervised, port_open};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

pub const ACCESS_KEY: &str = "roomrec-testbed";
pub const SECRET_KEY: &str = "roomrec-testbed-secret-key";
pub const REGION: &str = "us-east-1";
/// The bucket every test bed starts with.
pub const BUCKET: &str = "recordings";

pub struct ObjectStore {
    pub port: u16,
    pub root: PathBuf,
    dir: PathBuf,
    process: Option<Supervised>,
}

impl ObjectStore {
    pub async fn start(dir: &Path) -> Result<Self> {
        let root = dir.join("data");
        std::fs::create_dir_all(&root).map_err(file_error(&root))?;
        let mut store = Self {
            port: free_port(),
            root,
            dir: dir.to_path_buf(),
            process: None,
        };
        store.resume().await?;
        store.create_bucket(BUCKET)?;
        Ok(store)
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A bucket is a top-level directory of the POSIX backend.
    pub fn create_bucket(&self, name: &str) -> Result<PathBuf> {
        let path = self.root.join(name);
        std::fs::create_dir_all(&path).map_err(file_error(&path))?;
        Ok(path)
    }

    /// Where an object's bytes are on disk.
    pub fn object_path(&self, bucket: &str, key: &str) -> PathBuf {
        self.root.join(bucket).join(key)
    }

    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().and_then(Supervised::pid)
    }

    /// Stops the server (for outage tests); the data stays.
    pub fn pause(&mut self) {
        self.process.take();
    }

    /// Starts (again) on the same port and data.
    pub async fn resume(&mut self) -> Result<()> {
        if self.process.is_some() {
            return Ok(());
        }
        let mut gateway = Command::new(binaries::pinned("versitygw")?);
        gateway
            .env_clear()
            .env("ROOT_ACCESS_KEY", ACCESS_KEY)
            .env("ROOT_SECRET_KEY", SECRET_KEY)
            .args([
                "--port",
                &format!("127.0.0.1:{}", self.port),
                "--region",
                REGION,
                // Like S3 and COS, keep connections open between requests (versitygw closes
                // each one by default, which made every request pay for a new connection).
                "--keep-alive",
                "posix",
            ])
            .arg(&self.root);
        let mut process = Supervised::spawn(
            "object store (versitygw)",
            gateway,
            &self.dir.join("versitygw.log"),
        )?;
        let port = self.port;
        process
            .wait_ready(Duration::from_secs(20), || port_open(port))
            .await?;
        self.process = Some(process);
        Ok(())
    }
}
