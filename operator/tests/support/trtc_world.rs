//! The TRTC side of a test world: the TRTC stand-in (a test double for Tencent's cloud, which
//! cannot be reached from here) sending signed room events to the operator, the operator's
//! credential files for it, and the operator flags that point at both.

use roomrec_testbed::media::StreamSpec;
use roomrec_testbed::trtc::{StandInConfig, TrtcStandIn};
use std::path::{Path, PathBuf};

pub const APP: u64 = 1400000000;
/// The application's secret key (TRTC console): UserSigs are made and checked with it.
pub const APP_KEY: &str = "5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e";
/// The operator's TRTC API credentials.
pub const SECRET_ID: &str = "AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE";
pub const SECRET_KEY: &str = "Gu5t9xGARNpq86cd98joQYCN3EXAMPLE";
/// The CSS push domain's authentication key (the examples').
pub const PUSH_KEY: &str = "e12c46f2612d5106e2034781ab261ca3";
/// The room event callback key set in the TRTC console.
pub const EVENTS_KEY: &str = "roomrecEvents0123456789abcdefghi";

/// The stand-in and what the operator needs to use it.
pub struct TrtcSide {
    pub trtc: TrtcStandIn,
    /// The operator's flags: API endpoint and credentials, the room events address and key.
    pub operator_args: Vec<String>,
}

/// Starts the stand-in (files under `dir`) with its room events going to a free port, and
/// writes the operator's credential files there; `secret_key` may be wrong on purpose.
pub async fn trtc_side(dir: &Path, secret_key: &str) -> TrtcSide {
    let events_port = roomrec_testbed::ports::free_port();
    let trtc = TrtcStandIn::start(
        StandInConfig::new(dir)
            .app(APP, APP_KEY)
            .credential(SECRET_ID, SECRET_KEY)
            .push_key(PUSH_KEY)
            .callback(
                &format!("http://127.0.0.1:{events_port}/trtc/events"),
                EVENTS_KEY,
            ),
    )
    .await
    .unwrap();
    let credentials: PathBuf = dir.join("trtc-api");
    std::fs::create_dir_all(&credentials).unwrap();
    std::fs::write(credentials.join("secretId"), SECRET_ID).unwrap();
    std::fs::write(credentials.join("secretKey"), secret_key).unwrap();
    let events_key = dir.join("events-key");
    std::fs::write(&events_key, EVENTS_KEY).unwrap();
    let operator_args = vec![
        "--trtc-api-endpoint".into(),
        trtc.endpoint(),
        "--trtc-region".into(),
        "ap-guangzhou".into(),
        "--trtc-credentials-dir".into(),
        credentials.display().to_string(),
        "--room-events-address".into(),
        format!("127.0.0.1:{events_port}"),
        "--room-events-key-file".into(),
        events_key.display().to_string(),
    ];
    TrtcSide {
        trtc,
        operator_args,
    }
}

/// A small camera: 320×240 at 15 fps with AAC, so that several anchors, their relays and
/// workers run at once on two cores.
pub fn small_camera() -> StreamSpec {
    StreamSpec {
        width: 320,
        height: 240,
        fps: 15,
        video_kbps: 300,
        ..StreamSpec::default()
    }
}
