//! The media side: nginx with the RTMP module (live applications, plus HLS served over HTTP)
//! and a synthetic publisher, ffmpeg's `lavfi` test sources encoded as a real camera would be.

use crate::binaries;
use crate::error::{Result, file_error};
use crate::ports::free_port;
use crate::process::{Supervised, port_open};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const RTMP_MODULE: &str = "/usr/lib/nginx/modules/ngx_rtmp_module.so";

pub struct RtmpServer {
    pub rtmp_port: u16,
    pub http_port: u16,
    process: Supervised,
}

impl RtmpServer {
    pub async fn start(dir: &Path) -> Result<Self> {
        Self::start_with_on_publish(dir, None).await
    }

    /// Like [`RtmpServer::start`], with `on_publish {url}` in the `live` application when
    /// `on_publish` is given: nginx-rtmp then POSTs a form (`call=publish`, `app`, `name`, …, and
    /// the push URL's own query string appended as sent) to `url` before taking a push, and
    /// drops the push unless the answer is 2xx. `None` gives exactly [`RtmpServer::start`]'s
    /// configuration.
    pub async fn start_with_on_publish(dir: &Path, on_publish: Option<&str>) -> Result<Self> {
        let live_notify = on_publish
            .map(|url| format!(" on_publish {url};"))
            .unwrap_or_default();
        let hls = dir.join("hls");
        std::fs::create_dir_all(&hls).map_err(file_error(&hls))?;
        let (rtmp_port, http_port) = (free_port(), free_port());
        let conf = dir.join("nginx.conf");
        let text = format!(
            r#"load_module {RTMP_MODULE};
daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
rtmp {{
  server {{
    listen 127.0.0.1:{rtmp_port};
    chunk_size 4096;
    # live: any stream key is accepted and fanned out to every player. Like a CDN, playing a
    # stream nobody publishes is refused, and players are disconnected when the publisher goes.
    application live {{ live on; record off; idle_streams off;{live_notify} }}
    # idle: nginx-rtmp's default (idle_streams on), as a user's own server has it: playing a
    # stream nobody publishes is accepted and waits, players stay connected while the
    # publisher is away, and a returning publisher's timestamps start again from 0.
    application idle {{ live on; record off; }}
    # hls: also cut into HLS segments, served over HTTP at /hls/{{key}}.m3u8.
    application hls {{ live on; record off; hls on; hls_path {hls}; hls_fragment 2s; hls_playlist_length 30s; }}
  }}
}}
http {{
  access_log off;
  client_body_temp_path {dir}/tmp-body;
  proxy_temp_path {dir}/tmp-proxy;
  fastcgi_temp_path {dir}/tmp-fastcgi;
  uwsgi_temp_path {dir}/tmp-uwsgi;
  scgi_temp_path {dir}/tmp-scgi;
  types {{ application/vnd.apple.mpegurl m3u8; video/mp2t ts; }}
  server {{
    listen 127.0.0.1:{http_port};
    location /hls/ {{ alias {hls}/; add_header Cache-Control no-cache; }}
    location /stat {{ rtmp_stat all; }}
  }}
}}
"#,
            dir = dir.display(),
            hls = hls.display(),
        );
        std::fs::write(&conf, text).map_err(file_error(&conf))?;
        let mut nginx = Command::new(binaries::system("nginx")?);
        nginx
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(dir.join("error.log"));
        let mut process = Supervised::spawn("nginx-rtmp", nginx, &dir.join("nginx.log"))?;
        process
            .wait_ready(Duration::from_secs(20), || async {
                port_open(rtmp_port).await && port_open(http_port).await
            })
            .await?;
        Ok(Self {
            rtmp_port,
            http_port,
            process,
        })
    }

    /// `rtmp://127.0.0.1:{port}/live/{key}`.
    pub fn url(&self, key: &str) -> String {
        format!("rtmp://127.0.0.1:{}/live/{key}", self.rtmp_port)
    }

    /// `rtmp://127.0.0.1:{port}/idle/{key}`: the application with nginx-rtmp's default
    /// `idle_streams on` (players wait for a publisher and stay connected while it is away).
    pub fn idle_url(&self, key: &str) -> String {
        rtmp_app_url(self.rtmp_port, "idle", key)
    }

    /// A stream published here (`rtmp://…/hls/{key}`) is also readable as HLS at this URL.
    pub fn hls_url(&self, key: &str) -> String {
        format!("http://127.0.0.1:{}/hls/{key}.m3u8", self.http_port)
    }

    pub fn hls_publish_url(&self, key: &str) -> String {
        format!("rtmp://127.0.0.1:{}/hls/{key}", self.rtmp_port)
    }

    pub fn process(&mut self) -> &mut Supervised {
        &mut self.process
    }
}

/// `rtmp://127.0.0.1:{port}/{app}/{key}` on the bed's nginx-rtmp: `live` (players are
/// refused and disconnected while nobody publishes), `idle` (nginx-rtmp's default, players wait
/// and stay connected) or `hls` (also cut to HLS).
pub fn rtmp_app_url(port: u16, app: &str, key: &str) -> String {
    format!("rtmp://127.0.0.1:{port}/{app}/{key}")
}

/// What the synthetic publisher sends. The default is the issue's reference stream: H.264
/// 1280×720 at 30 fps, ~2 Mbit/s, with AAC audio.
#[derive(Clone, Debug)]
pub struct StreamSpec {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub video_kbps: u32,
    /// `None` publishes no video track.
    pub video_codec: Option<&'static str>,
    /// ffmpeg audio encoder (`aac`, `libmp3lame`, …); `None` publishes no audio track.
    pub audio_codec: Option<&'static str>,
    /// Stop after this long; `None` runs until stopped.
    pub duration: Option<Duration>,
}

impl Default for StreamSpec {
    fn default() -> Self {
        Self {
            width: 1280,
            height: 720,
            fps: 30,
            video_kbps: 2000,
            video_codec: Some("libx264"),
            audio_codec: Some("aac"),
            duration: None,
        }
    }
}

impl StreamSpec {
    /// ffmpeg arguments that publish this stream, in real time, to `url` (FLV over RTMP).
    pub fn ffmpeg_args(&self, url: &str) -> Vec<String> {
        let mut args: Vec<String> = vec![
            "-hide_banner".into(),
            "-loglevel".into(),
            "warning".into(),
            "-re".into(),
        ];
        if self.video_codec.is_some() {
            args.extend([
                "-f".into(),
                "lavfi".into(),
                "-i".into(),
                format!(
                    "testsrc2=size={}x{}:rate={}",
                    self.width, self.height, self.fps
                ),
            ]);
        }
        if self.audio_codec.is_some() {
            args.extend([
                "-f".into(),
                "lavfi".into(),
                "-i".into(),
                "sine=frequency=440:sample_rate=44100".into(),
            ]);
        }
        if let Some(codec) = self.video_codec {
            let kbps = self.video_kbps;
            args.extend([
                "-c:v".into(),
                codec.into(),
                "-preset".into(),
                "ultrafast".into(),
                "-tune".into(),
                "zerolatency".into(),
                "-pix_fmt".into(),
                "yuv420p".into(),
                "-b:v".into(),
                format!("{kbps}k"),
                "-maxrate".into(),
                format!("{kbps}k"),
                "-bufsize".into(),
                format!("{}k", kbps * 2),
                // A keyframe every 2 s, as live platforms require.
                "-g".into(),
                (self.fps * 2).to_string(),
                "-keyint_min".into(),
                (self.fps * 2).to_string(),
            ]);
        }
        if let Some(codec) = self.audio_codec {
            // Flash's Nellymoser (what old RTMP clients send) is mono only.
            let channels = if codec == "nellymoser" { "1" } else { "2" };
            args.extend([
                "-c:a".into(),
                codec.into(),
                "-b:a".into(),
                "128k".into(),
                "-ac".into(),
                channels.into(),
            ]);
        }
        if let Some(duration) = self.duration {
            args.extend(["-t".into(), format!("{:.3}", duration.as_secs_f64())]);
        }
        args.extend(["-f".into(), "flv".into(), url.into()]);
        args
    }
}

/// A running synthetic publisher; dropping it stops the stream.
pub struct Publisher {
    process: Supervised,
    pub url: String,
}

impl Publisher {
    pub async fn start(url: &str, spec: &StreamSpec, log: &Path) -> Result<Self> {
        let mut ffmpeg = Command::new(binaries::system("ffmpeg")?);
        ffmpeg.args(spec.ffmpeg_args(url));
        let mut process = Supervised::spawn("publisher (ffmpeg)", ffmpeg, log)?;
        // Give ffmpeg a moment to connect; a refused publish shows up as an early exit.
        tokio::time::sleep(Duration::from_millis(800)).await;
        process.check_running()?;
        Ok(Self {
            process,
            url: url.to_string(),
        })
    }

    /// Runs ffmpeg with `args` as given (input, encoding, output and `url` all in them): a
    /// publisher [`StreamSpec`] cannot describe (another container, codec or protocol). `url`
    /// only names it.
    pub async fn start_args(url: &str, args: &[String], log: &Path) -> Result<Self> {
        let mut ffmpeg = Command::new(binaries::system("ffmpeg")?);
        ffmpeg.args(args);
        let mut process = Supervised::spawn("publisher (ffmpeg)", ffmpeg, log)?;
        tokio::time::sleep(Duration::from_millis(800)).await;
        process.check_running()?;
        Ok(Self {
            process,
            url: url.to_string(),
        })
    }

    pub fn process(&mut self) -> &mut Supervised {
        &mut self.process
    }

    /// Ends the stream now (SIGTERM, then SIGKILL).
    pub fn stop(&mut self) {
        self.process.stop();
    }
}

/// What ffprobe says about a file or stream.
#[derive(Debug, Clone)]
pub struct Probe {
    pub codecs: Vec<(String, String)>,
    pub duration: Option<f64>,
    pub raw: serde_json::Value,
}

impl Probe {
    pub fn codec(&self, kind: &str) -> Option<&str> {
        self.codecs
            .iter()
            .find(|(k, _)| k == kind)
            .map(|(_, c)| c.as_str())
    }
}

/// Runs ffprobe on `input` (a path or URL) and returns its streams and duration.
pub fn ffprobe(input: &str, timeout: Duration) -> Result<Probe> {
    let out = crate::process::run(
        "ffprobe",
        Command::new(binaries::system("ffprobe")?).args([
            "-v",
            "error",
            "-rw_timeout",
            &(timeout.as_micros()).to_string(),
            "-print_format",
            "json",
            "-show_streams",
            "-show_format",
            input,
        ]),
    )?;
    let raw: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
    let codecs = raw["streams"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            (
                s["codec_type"].as_str().unwrap_or_default().to_string(),
                s["codec_name"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let duration = raw["format"]["duration"]
        .as_str()
        .and_then(|d| d.parse().ok());
    Ok(Probe {
        codecs,
        duration,
        raw,
    })
}
