//! RTSP and SRT: MediaMTX (`bluenviron/mediamtx`, built by `hack/testbed.sh`), a live media
//! server that publishers push to and players read from, over RTSP (RTP interleaved in the
//! RTSP connection, as the worker reads it) and SRT (MPEG-TS). Like a CDN it refuses a player
//! while nobody publishes a path, and closes its players when the publisher leaves.
//!
//! One per test that needs it (it starts in well under a second): its ports are free ones, its
//! other servers (RTMP, HLS, WebRTC, the API) are off.

use crate::binaries;
use crate::error::{Result, file_error};
use crate::ports::free_port;
use crate::process::{Supervised, port_open};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

pub struct MediaMtx {
    pub rtsp_port: u16,
    /// SRT listens on UDP: this port is not checked for readiness, the RTSP one is.
    pub srt_port: u16,
    process: Supervised,
}

impl MediaMtx {
    pub async fn start(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(file_error(dir))?;
        let (rtsp_port, srt_port) = (free_port(), free_port());
        let conf = dir.join("mediamtx.yml");
        let text = format!(
            "logLevel: info
logDestinations: [stdout]
api: no
metrics: no
pprof: no
playback: no
rtmp: no
hls: no
webrtc: no
rtsp: yes
# TCP only: no UDP ports to collide with other tests', and the way the worker reads RTSP.
rtspTransports: [tcp]
rtspAddress: 127.0.0.1:{rtsp_port}
srt: yes
srtAddress: 127.0.0.1:{srt_port}
paths:
  all_others:
"
        );
        std::fs::write(&conf, text).map_err(file_error(&conf))?;
        let mut command = Command::new(binaries::pinned("mediamtx")?);
        command.arg(&conf).current_dir(dir);
        let mut process = Supervised::spawn("mediamtx", command, &dir.join("mediamtx.log"))?;
        process
            .wait_ready(Duration::from_secs(20), || port_open(rtsp_port))
            .await?;
        Ok(Self {
            rtsp_port,
            srt_port,
            process,
        })
    }

    /// `rtsp://127.0.0.1:{port}/{path}`: where a publisher pushes (`-f rtsp`) and a player reads.
    pub fn rtsp_url(&self, path: &str) -> String {
        format!("rtsp://127.0.0.1:{}/{path}", self.rtsp_port)
    }

    /// Where an SRT publisher pushes MPEG-TS for `path`.
    pub fn srt_publish_url(&self, path: &str) -> String {
        format!(
            "srt://127.0.0.1:{}?streamid=publish:{path}&pkt_size=1316",
            self.srt_port
        )
    }

    /// Where an SRT player reads `path`.
    pub fn srt_read_url(&self, path: &str) -> String {
        format!("srt://127.0.0.1:{}?streamid=read:{path}", self.srt_port)
    }

    pub fn process(&mut self) -> &mut Supervised {
        &mut self.process
    }
}
