//! HTTP-FLV: Node-Media-Server 4 (`node-media-server` from the npm registry, installed by
//! `hack/testbed.sh`), an RTMP server that also plays every stream as FLV over HTTP and HTTPS
//! at `/{app}/{name}.flv` — the form of the TRTC relay's `flv` play URL
//! (`https://{domain}/live/{id}.flv`). It keeps a GOP cache, so a player that joins a running
//! stream starts at its last keyframe.
//!
//! One per test that needs it: free ports, a self-signed certificate (openssl) for HTTPS, its
//! web console off. It can also serve a directory (express's static files, HTTP and HTTPS):
//! the bed's nginx-rtmp HLS directory under `/live` gives the TRTC relay's `hls` play URL
//! (`https://{domain}/live/{id}.m3u8`) over TLS.

use crate::binaries;
use crate::error::{Result, file_error};
use crate::ports::free_port;
use crate::process::{Supervised, port_open};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

pub struct NodeMediaServer {
    pub rtmp_port: u16,
    pub http_port: u16,
    pub https_port: u16,
    process: Supervised,
}

/// A self-signed certificate for 127.0.0.1 and localhost: `{dir}/cert.pem`, `{dir}/key.pem`.
pub fn self_signed(dir: &Path) -> Result<()> {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    crate::process::run(
        "openssl",
        Command::new(binaries::system("openssl")?)
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .args(["-subj", "/CN=127.0.0.1"])
            .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert),
    )?;
    Ok(())
}

impl NodeMediaServer {
    /// Starts it in `dir`; `files` serves a directory under a path (`("/live", hls_dir)`).
    pub async fn start(dir: &Path, files: Option<(&str, &Path)>) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(file_error(dir))?;
        self_signed(dir)?;
        let (rtmp_port, http_port, https_port) = (free_port(), free_port(), free_port());
        let conf = dir.join("config.json");
        let mut config = serde_json::json!({
            "bind": "127.0.0.1",
            "notify": { "url": "" },
            "store": { "path": dir.join("data"), "maxHistory": 100 },
            "auth": {
                "play": false,
                "publish": false,
                "secret": "roomrec-testbed",
                "jwt": {
                    "secret": "roomrec-testbed-jwt",
                    "expiresIn": "24h",
                    "refreshExpiresIn": "7d",
                    "algorithm": "HS256",
                    "users": [],
                },
            },
            "rtmp": { "port": rtmp_port },
            "http": { "port": http_port },
            "https": {
                "port": https_port,
                "key": dir.join("key.pem"),
                "cert": dir.join("cert.pem"),
            },
            "webadmin": { "enable": false },
            "record": { "auto": false, "path": dir.join("record") },
        });
        if let Some((router, root)) = files {
            config["static"] = serde_json::json!({ "router": router, "root": root });
        }
        std::fs::write(&conf, config.to_string()).map_err(file_error(&conf))?;
        let mut command = Command::new(binaries::pinned("node-media-server")?);
        command
            .arg("-c")
            .arg(&conf)
            .arg("--no-admin")
            .current_dir(dir);
        let mut process = Supervised::spawn("node-media-server", command, &dir.join("nms.log"))?;
        process
            .wait_ready(Duration::from_secs(30), || async {
                port_open(rtmp_port).await
                    && port_open(http_port).await
                    && port_open(https_port).await
            })
            .await?;
        Ok(Self {
            rtmp_port,
            http_port,
            https_port,
            process,
        })
    }

    /// Where a publisher pushes `{app}/{name}` over RTMP.
    pub fn rtmp_url(&self, app: &str, name: &str) -> String {
        format!("rtmp://127.0.0.1:{}/{app}/{name}", self.rtmp_port)
    }

    /// `http://127.0.0.1:{port}/{app}/{name}.flv`.
    pub fn flv_url(&self, app: &str, name: &str) -> String {
        format!("http://127.0.0.1:{}/{app}/{name}.flv", self.http_port)
    }

    /// The TRTC relay's play domain for this server over HTTPS: `127.0.0.1:{https port}`.
    pub fn https_domain(&self) -> String {
        format!("127.0.0.1:{}", self.https_port)
    }

    pub fn process(&mut self) -> &mut Supervised {
        &mut self.process
    }
}
