//! The codecs relays and clients send, each over a protocol that carries it, recorded in mode
//! 02: copied where MP4 carries the codec (H.264, H.265, VP9, AV1; AAC, Opus, MP3), encoded where it
//! does not (G.711 to AAC), mono and stereo, 8, 44.1 and 48 kHz, 15 to 60 fps, and a resolution
//! change mid-stream; every file decodes in full (ffmpeg reports no error) and keeps the
//! source's rate, channels and frame rate where copied.
//!
//! Small frames and short clips: every publisher encodes in real time on the test machine's two
//! cores alongside the others.

use crate::support::*;
use roomrec_testbed::media::rtmp_app_url;
use roomrec_testbed::rtsp::MediaMtx;
use std::path::Path;
use std::time::Duration;

/// One source: what the publisher encodes and how it sends it, and what the file must hold.
struct Case {
    name: &'static str,
    /// ffmpeg video encoder and its options.
    video: &'static [&'static str],
    fps: u32,
    /// ffmpeg audio encoder and its options.
    audio: &'static [&'static str],
    rate: u32,
    channels: u32,
    /// The codecs the part must have, and whether the worker copies everything.
    want: (&'static str, &'static str),
    copied: bool,
}

const X264: &[&str] = &[
    "-c:v",
    "libx264",
    "-preset",
    "ultrafast",
    "-tune",
    "zerolatency",
    "-pix_fmt",
    "yuv420p",
];
const X265: &[&str] = &[
    "-c:v",
    "libx265",
    "-preset",
    "ultrafast",
    "-tune",
    "zerolatency",
    "-pix_fmt",
    "yuv420p",
    "-x265-params",
    "log-level=error",
];
const VP9: &[&str] = &[
    "-c:v",
    "libvpx-vp9",
    "-deadline",
    "realtime",
    "-cpu-used",
    "8",
    "-b:v",
    "200k",
    "-pix_fmt",
    "yuv420p",
];

const AV1: &[&str] = &[
    "-c:v",
    "libsvtav1",
    "-preset",
    "12",
    "-b:v",
    "200k",
    "-pix_fmt",
    "yuv420p",
];

impl Case {
    /// The publisher's ffmpeg arguments: `seconds` of a 160×120 camera and a tone, to `url` as
    /// `format`.
    fn args(&self, url: &str, format: &str, seconds: u32) -> Vec<String> {
        let mut args: Vec<String> = ["-hide_banner", "-loglevel", "error", "-re"]
            .map(String::from)
            .to_vec();
        args.extend([
            "-f".into(),
            "lavfi".into(),
            "-i".into(),
            format!("testsrc2=size=160x120:rate={}", self.fps),
            "-f".into(),
            "lavfi".into(),
            "-i".into(),
            format!("sine=frequency=440:sample_rate={}", self.rate),
        ]);
        args.extend(self.video.iter().map(|s| s.to_string()));
        // A keyframe every second.
        args.extend(["-g".into(), self.fps.to_string()]);
        args.extend(self.audio.iter().map(|s| s.to_string()));
        args.extend([
            "-ar".into(),
            self.rate.to_string(),
            "-ac".into(),
            self.channels.to_string(),
            "-t".into(),
            seconds.to_string(),
        ]);
        if format == "rtsp" {
            // ffmpeg 5.1 calls its VP9 RTP packetizer experimental.
            args.extend(["-rtsp_transport", "tcp", "-strict", "experimental"].map(String::from));
        }
        args.extend(["-f".into(), format.into(), url.into()]);
        args
    }
}

/// Records 4 s of `case` from `read` while it is published to `publish`, and checks the file.
async fn record(case: &Case, publish: &str, format: &str, read: &str) {
    let _publisher = publish_args(publish, &case.args(publish, format, 30), case.name).await;
    let storage = Storage::dir(&format!("codec-{}", case.name));
    let run = run(&mut worker(
        read,
        "02",
        &storage,
        &["--max-duration", "4", "--idle-timeout", "20"],
    ))
    .await;
    assert_eq!(run.code, 0, "{}: {}", case.name, run.stderr);
    assert_eq!(parts(&run).len(), 1, "{}: {:#}", case.name, run.manifest);
    // At least the 4 s asked for; more when ffmpeg took long to find the tracks (VP9 over
    // RTSP) and wrote what it had read meanwhile at once: --max-duration is checked per read.
    let seconds = verify_parts(&run, &storage, Some(case.want.0), Some(case.want.1));
    assert!(seconds >= 3.9, "{}: {seconds} s", case.name);
    assert!(
        run.stderr.contains(&format!("\"copy\":{}", case.copied)),
        "{}: {}",
        case.name,
        run.stderr
    );
    let file = storage.file(parts(&run)[0]["key"].as_str().unwrap());
    let p = probe(&file);
    let stream = |kind: &str| {
        p.raw["streams"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["codec_type"] == kind)
            .cloned()
            .unwrap()
    };
    let (video, audio) = (stream("video"), stream("audio"));
    // The rate the stream declares (`r_frame_rate`: what FLV's metadata says, what MPEG-TS
    // timestamps step by), or frames over time (`avg_frame_rate`: where the declared one is
    // only the timebase, 90000 for RTP), within a few per cent: a short part's last frame
    // lasts until its end, and on a loaded machine the server may skip a frame.
    let rate = |key: &str| {
        let (n, d) = video[key].as_str().unwrap().split_once('/').unwrap();
        n.parse::<f64>().unwrap() / d.parse::<f64>().unwrap().max(1.0)
    };
    let near = |fps: f64| (fps - case.fps as f64).abs() <= 0.06 * case.fps as f64;
    let counted = video_packets(&file) / p.duration.unwrap();
    assert!(
        near(rate("r_frame_rate")) || near(rate("avg_frame_rate")) || near(counted),
        "{}: {} / {} / {counted} fps, published {}",
        case.name,
        rate("r_frame_rate"),
        rate("avg_frame_rate"),
        case.fps
    );
    if case.copied {
        assert_eq!(
            audio["sample_rate"].as_str().unwrap(),
            case.rate.to_string(),
            "{}",
            case.name
        );
        assert_eq!(audio["channels"], case.channels, "{}", case.name);
    }
    decodes_in_full(&file, case.name);
}

/// How many packets (frames) the video track has.
fn video_packets(file: &Path) -> f64 {
    let out = std::process::Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v", "-count_packets"])
        .args(["-show_entries", "stream=nb_read_packets", "-of", "csv=p=0"])
        .arg(file)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split([',', '\n'])
        .find_map(|field| field.trim().parse().ok())
        .unwrap_or(0.0)
}

/// ffmpeg decodes every frame of both tracks without a word on stderr.
fn decodes_in_full(file: &Path, name: &str) {
    let out = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(file)
        .args(["-f", "null", "-"])
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{name}: {} does not decode cleanly: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn the_codecs_relays_and_clients_send_are_copied_or_encoded_and_play_in_full() {
    let mediamtx = MediaMtx::start(&bed().scratch("codecs/mediamtx").unwrap())
        .await
        .unwrap();
    let rtmp = |key: &str| rtmp_app_url(bed().rtmp_port, "live", key);
    let cases = [
        // RTMP (FLV): what TRTC's relay and OBS send, and older Flash-era clients.
        (
            Case {
                name: "h264-15fps-aac-44k-stereo",
                video: X264,
                fps: 15,
                audio: &["-c:a", "aac", "-b:a", "64k"],
                rate: 44100,
                channels: 2,
                want: ("h264", "aac"),
                copied: true,
            },
            "flv",
        ),
        (
            Case {
                name: "h264-60fps-mp3-48k-mono",
                video: X264,
                fps: 60,
                audio: &["-c:a", "libmp3lame", "-b:a", "64k"],
                rate: 48000,
                channels: 1,
                want: ("h264", "mp3"),
                copied: true,
            },
            "flv",
        ),
        (
            Case {
                name: "h264-25fps-g711a-8k-mono",
                video: X264,
                fps: 25,
                audio: &["-c:a", "pcm_alaw"],
                rate: 8000,
                channels: 1,
                want: ("h264", "aac"),
                copied: false,
            },
            "flv",
        ),
        // SRT (MPEG-TS): what encoders and gateways send.
        (
            Case {
                name: "h265-30fps-opus-48k-stereo",
                video: X265,
                fps: 30,
                audio: &["-c:a", "libopus", "-b:a", "64k"],
                rate: 48000,
                channels: 2,
                want: ("hevc", "opus"),
                copied: true,
            },
            "srt",
        ),
        (
            Case {
                name: "h264-30fps-aac-48k-mono",
                video: X264,
                fps: 30,
                audio: &["-c:a", "aac", "-b:a", "64k"],
                rate: 48000,
                channels: 1,
                want: ("h264", "aac"),
                copied: true,
            },
            "srt",
        ),
        // RTSP: cameras and WebRTC gateways.
        // SRT carrying Matroska (an encoder in SRT listener mode, the worker calling): the
        // container that carries VP9 and AV1 live with this ffmpeg (5.1 sends neither in FLV
        // or MPEG-TS, and its VP9 RTP is experimental: copied, it loses every frame). AAC, as
        // SRT encoders send it: the worker's first ffmpeg command expects it there, and an
        // encoder in listener mode serves one connection, so it could not be started again.
        (
            Case {
                name: "vp9-25fps-aac-48k-mono",
                video: VP9,
                fps: 25,
                audio: &["-c:a", "aac", "-b:a", "48k"],
                rate: 48000,
                channels: 1,
                want: ("vp9", "aac"),
                copied: true,
            },
            "matroska",
        ),
        (
            Case {
                name: "av1-24fps-aac-44k-stereo",
                video: AV1,
                fps: 24,
                audio: &["-c:a", "aac", "-b:a", "64k"],
                rate: 44100,
                channels: 2,
                want: ("av1", "aac"),
                copied: true,
            },
            "matroska",
        ),
        (
            Case {
                name: "h264-20fps-g711u-8k-mono",
                video: X264,
                fps: 20,
                audio: &["-c:a", "pcm_mulaw"],
                rate: 8000,
                channels: 1,
                want: ("h264", "aac"),
                copied: false,
            },
            "rtsp",
        ),
    ];
    let mut runs = Vec::new();
    for (case, protocol) in &cases {
        let (publish, format, read) = match *protocol {
            "flv" => (rtmp(case.name), "flv", rtmp(case.name)),
            "srt" => (
                mediamtx.srt_publish_url(case.name),
                "mpegts",
                mediamtx.srt_read_url(case.name),
            ),
            container @ ("webm" | "matroska") => {
                let port = roomrec_testbed::ports::free_port();
                (
                    format!("srt://127.0.0.1:{port}?mode=listener&pkt_size=1316"),
                    container,
                    format!("srt://127.0.0.1:{port}"),
                )
            }
            _ => (
                mediamtx.rtsp_url(case.name),
                "rtsp",
                mediamtx.rtsp_url(case.name),
            ),
        };
        runs.push(async move { record(case, &publish, format, &read).await });
    }
    futures::future::join_all(runs).await;
}

#[tokio::test]
async fn a_resolution_change_mid_stream_continues_the_file_and_plays() {
    // An encoder that changes its resolution on the same connection (320×240, then 160×120)
    // over SRT: MPEG-TS carries the new parameter sets in the stream, the file keeps them
    // where they come, and it decodes across the change. (Over RTMP a change comes as a new
    // FLV sequence header, which ffmpeg 5.1 cannot carry into a copied stream: see
    // docs/architecture.md.)
    let dir = bed().scratch("codecs-resolution").unwrap();
    let mut clips = Vec::new();
    for (n, size) in ["320x240", "160x120"].iter().enumerate() {
        let clip = dir.join(format!("{n}.ts"));
        let status = std::process::Command::new("ffmpeg")
            .args(["-v", "error", "-y", "-f", "lavfi", "-i"])
            .arg(format!("testsrc2=size={size}:rate=25"))
            .args(["-f", "lavfi", "-i", "sine=sample_rate=48000"])
            .args(X264)
            .args(["-g", "25", "-c:a", "aac", "-t", "4", "-f", "mpegts"])
            .arg(&clip)
            .status()
            .unwrap();
        assert!(status.success());
        clips.push(std::fs::read(&clip).unwrap());
    }
    let joined = dir.join("joined.ts");
    std::fs::write(&joined, clips.concat()).unwrap();
    let mediamtx = MediaMtx::start(&dir.join("mediamtx")).await.unwrap();
    let publish = mediamtx.srt_publish_url("resize");
    let args: Vec<String> = ["-hide_banner", "-loglevel", "error", "-re", "-i"]
        .map(String::from)
        .into_iter()
        .chain([joined.to_str().unwrap().to_string()])
        .chain(["-c", "copy", "-f", "mpegts"].map(String::from))
        .chain([publish.clone()])
        .collect();
    let storage = Storage::dir("codecs-resolution-out");
    let worker = start(&mut worker(
        &mediamtx.srt_read_url("resize"),
        "02",
        &storage,
        &["--reconnect-grace", "3", "--idle-timeout", "20"],
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut publisher = publish_args(&publish, &args, "codecs-resolution").await;
    publisher_done(&mut publisher, Duration::from_secs(20)).await;
    let run = finish(worker).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(parts(&run).len(), 1, "{:#}", run.manifest);
    let seconds = verify_parts(&run, &storage, Some("h264"), Some("aac"));
    assert!(
        (7.0..8.3).contains(&seconds),
        "{seconds} s of 8 s published"
    );
    let file = storage.file(parts(&run)[0]["key"].as_str().unwrap());
    decodes_in_full(&file, "resolution change");
    // Both resolutions are in the file, in order.
    let out = std::process::Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v", "-show_entries"])
        .args(["frame=width", "-of", "csv=p=0"])
        .arg(&file)
        .output()
        .unwrap();
    let widths: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim_end_matches(',').to_string())
        .filter(|w| !w.is_empty())
        .collect();
    let first_small = widths.iter().position(|w| w == "160").unwrap();
    assert!(
        widths[..first_small].iter().all(|w| w == "320")
            && widths[first_small..].iter().all(|w| w == "160"),
        "{widths:?}"
    );
}
