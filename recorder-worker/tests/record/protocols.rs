//! Every protocol the README names, recorded from a real server of that protocol, steady and
//! through a drop: RTMP (nginx-rtmp), HTTP-FLV (Node-Media-Server), live HLS (ffmpeg's HLS
//! muxer behind a plain HTTP server, and nginx-rtmp's HLS), the TRTC relay's HTTP-FLV and HLS
//! play URLs (`https://{domain}/live/{id}.flv|.m3u8`, over TLS), SRT and RTSP (MediaMTX).

use crate::support::{self, *};
use roomrec_testbed::media::rtmp_app_url;
use roomrec_testbed::ports::free_port;
use roomrec_testbed::process::{Supervised, port_open};
use std::path::Path;
use std::time::Duration;

/// A plain HTTP file server (Python's `http.server`) over `dir`.
async fn plain_http(dir: &Path, log: &Path) -> (Supervised, u16) {
    let port = free_port();
    let mut command = std::process::Command::new("python3");
    command
        .args([
            "-m",
            "http.server",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .arg("--directory")
        .arg(dir);
    let mut server = Supervised::spawn("http.server", command, log).unwrap();
    server
        .wait_ready(Duration::from_secs(10), || port_open(port))
        .await
        .unwrap();
    (server, port)
}

/// Waits until `path` exists (a playlist the HLS muxer writes after its first segment).
async fn appears(path: &Path, within: Duration) {
    let deadline = std::time::Instant::now() + within;
    while !path.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "{} did not appear",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_live_hls_source_is_one_part_while_it_flows() {
    // As a new user would have it: ffmpeg's own HLS muxer (2 s segments, a 5-entry playlist)
    // behind a plain HTTP server.
    let dir = bed().scratch("hls-plain/www").unwrap();
    let playlist = dir.join("live.m3u8");
    let url_out = playlist.to_str().unwrap().to_string();
    let mut args = camera_args(&url_out, "hls", 45.0, 2.0);
    let at = args.len() - 1;
    args.splice(
        at..at,
        [
            "-hls_time",
            "2",
            "-hls_list_size",
            "5",
            "-hls_flags",
            "delete_segments",
        ]
        .map(String::from),
    );
    let _publisher = publish_args(&url_out, &args, "hls-plain").await;
    let log = bed().scratch("hls-plain").unwrap().join("http.log");
    let (_server, port) = plain_http(&dir, &log).await;
    appears(&playlist, Duration::from_secs(10)).await;
    let storage = Storage::dir("hls-plain-out");
    let run = run(&mut worker(
        &format!("http://127.0.0.1:{port}/live.m3u8"),
        "02",
        &storage,
        &["--max-duration", "20"],
    ))
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.manifest["stopReason"], "max-duration");
    assert_eq!(parts(&run).len(), 1, "{:#}", run.manifest["parts"]);
    let seconds = verify_parts(&run, &storage, Some("h264"), Some("aac"));
    assert!((19.9..22.5).contains(&seconds), "{seconds} s");
    assert!(
        !run.stderr.contains("the source dropped"),
        "a playlist refresh is not a drop: {}",
        run.stderr
    );
}

/// Seconds each of the two publishers of `through_a_drop` sends, and the gap between them.
const PUBLISHED: f64 = 6.0;
const GAP: f64 = 3.0;
/// The publishers' keyframe interval.
const GOP: f64 = 0.5;

/// Records `source` (worker flags) while `publish(n)` (ffmpeg arguments) publishes 6 s, stops
/// for 3 s and publishes 6 s again; checks every part plays as H.264 + AAC, lasts what the
/// manifest says, and that together they hold the 12 s published less at most `allowance`.
/// Returns the manifest's parts.
async fn through_a_drop(
    name: &str,
    source: &[String],
    publish: impl Fn(usize) -> (String, Vec<String>),
    settle: Duration,
    allowance: f64,
) -> Vec<serde_json::Value> {
    let storage = Storage::dir(name);
    let mut command = support::worker_source(
        source,
        "02",
        &storage,
        &["--reconnect-grace", "20", "--idle-timeout", "40"],
    );
    let worker = start(&mut command);
    tokio::time::sleep(Duration::from_secs(1)).await;
    for n in 0..2 {
        if n == 1 {
            tokio::time::sleep(Duration::from_secs_f64(GAP)).await;
        }
        let (url, args) = publish(n);
        let mut publisher = publish_args(&url, &args, &format!("{name}-{n}")).await;
        publisher_done(&mut publisher, Duration::from_secs(20)).await;
    }
    tokio::time::sleep(settle).await;
    worker.signal(libc::SIGTERM);
    let run = finish(worker).await;
    assert_eq!(run.code, 0, "{name}: {}", run.stderr);
    verify_parts(&run, &storage, Some("h264"), Some("aac"));
    let recorded = recorded_seconds(&run);
    let published = 2.0 * PUBLISHED;
    eprintln!(
        "{name}: recorded {recorded:.2} s of {published} s in {} parts",
        parts(&run).len()
    );
    assert!(
        recorded <= published + 0.3 && recorded >= published - allowance,
        "{name}: recorded {recorded:.2} s of {published} s (allowed loss {allowance} s): {:#}",
        run.manifest["parts"]
    );
    parts(&run)
}

fn flags(url: &str) -> Vec<String> {
    vec!["--source".into(), url.into()]
}

/// The publisher of `through_a_drop` for a URL: `format` is ffmpeg's (`flv`, `mpegts`,
/// `rtsp`).
fn publisher(url: String, format: &'static str) -> impl Fn(usize) -> (String, Vec<String>) {
    move |_| {
        let mut args = camera_args(&url, format, PUBLISHED, GOP);
        if format == "rtsp" {
            let at = args.len() - 1;
            args.splice(at..at, ["-rtsp_transport", "tcp"].map(String::from));
        }
        (url.clone(), args)
    }
}

#[tokio::test]
async fn rtmp_is_recorded_steady_and_through_a_drop() {
    // nginx-rtmp as a CDN has it (players disconnected while nobody publishes): each join
    // costs the retry (0.25 s), the connection and the GOP's rest. returns.rs has the rest.
    let url = rtmp_app_url(bed().rtmp_port, "live", "proto-rtmp");
    let parts = through_a_drop(
        "proto-rtmp",
        &flags(&url),
        publisher(url.clone(), "flv"),
        Duration::from_secs(3),
        2.0 * (0.25 + 0.35 + GOP),
    )
    .await;
    assert_eq!(parts.len(), 2);
}

#[tokio::test]
async fn http_flv_is_recorded_steady_and_through_a_drop() {
    let dir = bed().scratch("proto-flv/nms").unwrap();
    let nms = roomrec_testbed::flv::NodeMediaServer::start(&dir, None)
        .await
        .unwrap();
    let parts = through_a_drop(
        "proto-flv",
        &flags(&nms.flv_url("live", "cam")),
        publisher(nms.rtmp_url("live", "cam"), "flv"),
        Duration::from_secs(3),
        // Node-Media-Server keeps a GOP cache: a join starts at the stream's last keyframe.
        2.0 * (0.25 + 0.35),
    )
    .await;
    // It keeps its players while nobody publishes and carries the returning stream's
    // timestamps on from the last ones: one part (nothing was lost, nothing restarted).
    assert_eq!(parts.len(), 1);
}

#[tokio::test]
async fn the_trtc_relay_flv_play_url_is_recorded_over_https() {
    // --trtc-protocol flv: https://{domain}/live/{sdkAppId}_{room}_{user}_main.flv, with the
    // play domain pointed at Node-Media-Server's HTTPS port (a self-signed certificate: ffmpeg
    // does not verify TLS unless told to).
    let dir = bed().scratch("proto-trtc-flv/nms").unwrap();
    let nms = roomrec_testbed::flv::NodeMediaServer::start(&dir, None)
        .await
        .unwrap();
    let source = trtc_flags(&nms.https_domain(), "flv");
    let parts = through_a_drop(
        "proto-trtc-flv",
        &source,
        publisher(nms.rtmp_url("live", TRTC_STREAM), "flv"),
        Duration::from_secs(3),
        2.0 * (0.25 + 0.35),
    )
    .await;
    assert_eq!(parts.len(), 1);
    let url = parts[0]["url"].as_str().unwrap();
    assert!(url.contains("1400000000_7_alice"), "{url}");
}

const TRTC_STREAM: &str = "1400000000_7_alice_main";

fn trtc_flags(domain: &str, protocol: &str) -> Vec<String> {
    [
        "--trtc-sdk-app-id",
        "1400000000",
        "--trtc-room-id",
        "7",
        "--trtc-user-id",
        "alice",
        "--trtc-play-domain",
        domain,
        "--trtc-protocol",
        protocol,
    ]
    .map(String::from)
    .to_vec()
}

#[tokio::test]
async fn live_hls_is_recorded_through_a_drop_as_one_part() {
    // nginx-rtmp's HLS: when the publisher returns, the playlist goes on (a discontinuity, the
    // timestamps from 0). ffmpeg's HLS client follows it, so nothing is a drop and nothing is
    // lost: one part (HLS keeps every segment, the return included).
    let publish = rtmp_app_url(bed().rtmp_port, "hls", "proto-hls");
    let read = format!(
        "http://127.0.0.1:{}/hls/proto-hls.m3u8",
        bed().rtmp_http_port
    );
    let parts = through_a_drop(
        "proto-hls",
        &flags(&read),
        publisher(publish, "flv"),
        Duration::from_secs(8),
        // The last segment of each publisher is cut where it stopped: nothing is lost, but
        // segment boundaries round each side by a frame or two.
        0.5,
    )
    .await;
    assert_eq!(parts.len(), 1);
}

#[tokio::test]
async fn the_trtc_relay_hls_play_url_is_recorded_over_https() {
    // --trtc-protocol hls: https://{domain}/live/{id}.m3u8. nginx-rtmp cuts the HLS, and
    // Node-Media-Server serves its directory over HTTPS under /live.
    let hls_dir = bed().dir.join("rtmp/hls");
    let dir = bed().scratch("proto-trtc-hls/nms").unwrap();
    let nms = roomrec_testbed::flv::NodeMediaServer::start(&dir, Some(("/live", &hls_dir)))
        .await
        .unwrap();
    let source = trtc_flags(&nms.https_domain(), "hls");
    let parts = through_a_drop(
        "proto-trtc-hls",
        &source,
        publisher(rtmp_app_url(bed().rtmp_port, "hls", TRTC_STREAM), "flv"),
        Duration::from_secs(8),
        0.5,
    )
    .await;
    assert_eq!(parts.len(), 1);
}

#[tokio::test]
async fn srt_is_recorded_steady_and_through_a_drop() {
    let dir = bed().scratch("proto-srt/mediamtx").unwrap();
    let server = roomrec_testbed::rtsp::MediaMtx::start(&dir).await.unwrap();
    let parts = through_a_drop(
        "proto-srt",
        &flags(&server.srt_read_url("cam")),
        publisher(server.srt_publish_url("cam"), "mpegts"),
        Duration::from_secs(3),
        2.0 * (0.25 + 0.35 + GOP),
    )
    .await;
    assert_eq!(parts.len(), 2);
}

#[tokio::test]
async fn rtsp_is_recorded_steady_and_through_a_drop() {
    let dir = bed().scratch("proto-rtsp/mediamtx").unwrap();
    let server = roomrec_testbed::rtsp::MediaMtx::start(&dir).await.unwrap();
    let url = server.rtsp_url("cam");
    let parts = through_a_drop(
        "proto-rtsp",
        &flags(&url),
        publisher(url.clone(), "rtsp"),
        Duration::from_secs(3),
        2.0 * (0.25 + 0.35 + GOP),
    )
    .await;
    assert_eq!(parts.len(), 2);
}

#[tokio::test]
async fn an_hls_playlist_that_ends_is_recorded_once() {
    // ffmpeg's HLS muxer ends its playlist (#EXT-X-ENDLIST) when its publisher stops. The
    // worker's ffmpeg reads to that end; the playlist it finds when it reopens the source is
    // the same broadcast, now with a length, and is not recorded again: the recording ends
    // at the reconnect grace with what was published, once.
    let dir = bed().scratch("hls-ends/www").unwrap();
    let playlist = dir.join("live.m3u8");
    let out = playlist.to_str().unwrap().to_string();
    let mut args = camera_args(&out, "hls", 8.0, 2.0);
    let at = args.len() - 1;
    args.splice(
        at..at,
        ["-hls_time", "2", "-hls_list_size", "0"].map(String::from),
    );
    let log = bed().scratch("hls-ends").unwrap().join("http.log");
    let (_server, port) = plain_http(&dir, &log).await;
    let mut publisher = publish_args(&out, &args, "hls-ends").await;
    appears(&playlist, Duration::from_secs(10)).await;
    let storage = Storage::dir("hls-ends-out");
    let run = run(&mut worker(
        &format!("http://127.0.0.1:{port}/live.m3u8"),
        "02",
        &storage,
        &["--reconnect-grace", "5", "--idle-timeout", "30"],
    ))
    .await;
    publisher_done(&mut publisher, Duration::from_secs(5)).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.manifest["stopReason"], "source-ended");
    assert_eq!(parts(&run).len(), 1, "{:#}", run.manifest["parts"]);
    let seconds = verify_parts(&run, &storage, Some("h264"), Some("aac"));
    assert!(
        (7.5..8.3).contains(&seconds),
        "{seconds} s of 8 s published"
    );
    assert!(
        run.stderr.contains("the HLS playlist has ended"),
        "{}",
        run.stderr
    );
}
