//! A test double for Tencent Real-Time Communication (TRTC) and its Cloud Streaming Services
//! (CSS), which cannot be reached from here. It checks what roomrec sends as strictly as the
//! real service would, and behaves as TRTC does where roomrec depends on it:
//!
//! * **The TRTC server API** (`trtc.tencentcloudapi.com`, version 2019-07-22) on
//!   `http://127.0.0.1:PORT` ([`TrtcStandIn::endpoint`]): StartPublishCdnStream,
//!   StopPublishCdnStream, RemoveUser(ByStrRoomId), DismissRoom(ByStrRoomId). Every request is
//!   checked by [`check::Checker`] (TC3-HMAC-SHA256 with `roomrec_api::trtc::tc3::verify`, the
//!   X-TC-* headers, each JSON field and its type and range, the agent's UserSig with
//!   `roomrec_api::trtc::usersig::verify`) and answered as Tencent answers: HTTP 200 with
//!   `{"Response":{…,"RequestId"}}` or `{"Response":{"Error":{"Code","Message"},"RequestId"}}`.
//!   [`TrtcStandIn::requests`] is the log of every request.
//! * **A CSS push and play domain**: an nginx-rtmp of its own (`live` application, `idle_streams
//!   off` like the bed's other RTMP server: playing a stream nobody publishes is refused, and
//!   players are dropped when the publisher goes). With a push key, nginx asks the stand-in
//!   (`on_publish`) before taking a push, and the stand-in allows it only when `txSecret`/
//!   `txTime` verify with the key (`roomrec_api::trtc::push_auth::verify`, expired refused).
//!   Playing needs no authentication: `rtmp://{play_domain}/live/{stream}`.
//! * **Rooms**: per application and room, who is in it and what they publish. Tests drive
//!   anchors ([`TrtcStandIn::anchor`]); relay tasks add their agents.
//! * **Relay tasks** ([`TrtcStandIn::relays`]): a StartPublishCdnStream agent joins the room and,
//!   whenever the subscribed user publishes the subscribed stream (camera = StreamType 0,
//!   screen = 1), pushes that anchor's synthetic stream (an ffmpeg with the anchor's
//!   [`StreamSpec`], pass-through) to every `PublishCdnUrl`; the push stops when the anchor
//!   stops publishing or leaves, and starts again when they publish again. With nobody
//!   publishing in the room for `MaxIdleTime`, the agent leaves and the task ends. A second task
//!   with the same agent UserId ends the first (TRTC's "duplicate user").
//! * **Room event callbacks** (when configured): 101–104 and 201–206 POSTed as TRTC does, signed
//!   (`Sign`, `SdkAppId` headers) and retried as TRTC retries ([`CallbackRetry`]);
//!   [`TrtcStandIn::events`] is the log of what was sent and how it was answered.
//!
//! Error codes it answers besides the checker's: `ResourceNotFound` for StopPublishCdnStream of
//! a task that does not run (never existed or ended: Tencent lists it for this action),
//! `FailedOperation.RoomNotExist` for RemoveUser/DismissRoom of an empty room (Tencent's code),
//! `FailedOperation` for an agent UserId that is in the room as a user, `InvalidParameter` for an
//! agent that would subscribe itself, and `UnsupportedOperation` for what the stand-in does not
//! model (transcoding, a subscribed user of another room).
//!
//! Exit reasons (event 104 `Reason`): 1 an anchor left or StopPublishCdnStream ended the agent's
//! task, 2 the agent left at `MaxIdleTime`, 3 removed by RemoveUser or DismissRoom, 5 a session
//! ended because the same UserId entered again. An exit sends only 104 (no 202/204/206).
//! DismissRoom sends 104 (Reason 3) for each user, then 102; the last user leaving sends 102.
//!
//! ```no_run
//! # async fn example(dir: &std::path::Path) -> roomrec_testbed::Result<()> {
//! use roomrec_testbed::media::StreamSpec;
//! use roomrec_testbed::trtc::{StandInConfig, TrtcStandIn};
//! let stand_in = TrtcStandIn::start(
//!     StandInConfig::new(dir)
//!         .app(1400000000, "app-key")
//!         .credential("AKIDexample", "secret-key")
//!         .push_key("css-push-key"),
//! )
//! .await?;
//! let teacher = stand_in.anchor(1400000000, 43474, "teacher_1");
//! teacher.publish(StreamSpec::default())?;
//! // … point roomrec at stand_in.endpoint() and stand_in.push_domain(), then look at
//! // stand_in.relays(), stand_in.room_users(1400000000, 43474), stand_in.events() …
//! # Ok(()) }
//! ```

pub mod callback;
pub mod check;
pub mod model;
mod push;
mod server;

pub use callback::{CallbackRetry, sign};
pub use check::{Checker, Refusal, RoomId, StreamType};
pub use model::{
    ApiRequest, Attempt, Delivery, EndReason, PublishCheck, Push, RelayState, RelayTask, SentEvent,
    event, exit_reason,
};

use crate::error::{Result, TestbedError, file_error};
use crate::media::{RtmpServer, StreamSpec};
use model::{AnchorAction, World, anchor_action};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// How often idle relays are looked for.
const IDLE_TICK: Duration = Duration::from_millis(200);

/// What the stand-in knows and where it keeps its files.
#[derive(Clone, Debug)]
pub struct StandInConfig {
    /// Applications: `SdkAppId → secret key` (UserSigs are checked with it).
    pub apps: BTreeMap<u64, String>,
    /// API credentials: `SecretId → SecretKey`.
    pub credentials: BTreeMap<String, String>,
    /// `X-TC-Region`s served. [`StandInConfig::new`]: ap-beijing, ap-guangzhou, ap-singapore.
    pub regions: Vec<String>,
    /// The CSS push domain's authentication key; `None`: pushes need no txSecret.
    pub push_key: Option<String>,
    /// Room event callbacks: `(url, callback key)`.
    pub callback: Option<(String, String)>,
    /// How callbacks are retried (default: TRTC's).
    pub callback_retry: CallbackRetry,
    /// Scratch directory for nginx's files and the pushes' logs.
    pub dir: PathBuf,
}

impl StandInConfig {
    /// No application, no credential, TRTC's room-management regions, no push key, no callback.
    pub fn new(dir: &Path) -> Self {
        StandInConfig {
            apps: BTreeMap::new(),
            credentials: BTreeMap::new(),
            regions: ["ap-beijing", "ap-guangzhou", "ap-singapore"]
                .map(String::from)
                .to_vec(),
            push_key: None,
            callback: None,
            callback_retry: CallbackRetry::default(),
            dir: dir.to_path_buf(),
        }
    }

    /// Adds an application and its secret key.
    pub fn app(mut self, sdk_app_id: u64, key: &str) -> Self {
        self.apps.insert(sdk_app_id, key.to_string());
        self
    }

    /// Adds an API credential.
    pub fn credential(mut self, secret_id: &str, secret_key: &str) -> Self {
        self.credentials
            .insert(secret_id.to_string(), secret_key.to_string());
        self
    }

    /// Sets the CSS push key.
    pub fn push_key(mut self, key: &str) -> Self {
        self.push_key = Some(key.to_string());
        self
    }

    /// Sends room events to `url`, signed with `key`.
    pub fn callback(mut self, url: &str, key: &str) -> Self {
        self.callback = Some((url.to_string(), key.to_string()));
        self
    }
}

/// What the server, the pushes and the dispatcher share.
pub(crate) struct Shared {
    world: Mutex<World>,
    checker: Checker,
    push_key: Option<String>,
    dir: PathBuf,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The running stand-in; dropping it stops everything it started.
pub struct TrtcStandIn {
    shared: Arc<Shared>,
    api_port: u16,
    rtmp: RtmpServer,
    callback: Option<(String, String)>,
    first_app: Option<u64>,
    tasks: Vec<tokio::task::AbortHandle>,
}

impl TrtcStandIn {
    /// Starts the API server, the CSS nginx-rtmp and, with a callback, the event sender.
    pub async fn start(config: StandInConfig) -> Result<Self> {
        let spawn_error = |what: &str| {
            let what = what.to_string();
            move |source| TestbedError::Spawn { what, source }
        };
        std::fs::create_dir_all(&config.dir).map_err(file_error(&config.dir))?;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(spawn_error("TRTC stand-in API server"))?;
        let api_port = listener
            .local_addr()
            .map_err(spawn_error("TRTC stand-in API server"))?
            .port();
        let css_dir = config.dir.join("css");
        std::fs::create_dir_all(&css_dir).map_err(file_error(&css_dir))?;
        let on_publish = config
            .push_key
            .as_ref()
            .map(|_| format!("http://127.0.0.1:{api_port}/css/on_publish"));
        let rtmp = RtmpServer::start_with_on_publish(&css_dir, on_publish.as_deref()).await?;

        let (queue, queued) = tokio::sync::mpsc::unbounded_channel();
        let world = World::new(
            config
                .callback
                .as_ref()
                .map(|(_, key)| (key.clone(), queue)),
        );
        let shared = Arc::new(Shared {
            world: Mutex::new(world),
            checker: Checker {
                credentials: config.credentials.clone(),
                apps: config.apps.clone(),
                regions: config.regions.clone(),
                host: Some(format!("127.0.0.1:{api_port}")),
            },
            push_key: config.push_key.clone(),
            dir: config.dir.clone(),
        });

        let mut tasks = vec![tokio::spawn(server::serve(listener, shared.clone())).abort_handle()];
        if let Some((url, _)) = &config.callback {
            tasks.push(
                tokio::spawn(callback::dispatch(
                    shared.clone(),
                    url.clone(),
                    config.callback_retry,
                    queued,
                ))
                .abort_handle(),
            );
        }
        let ticker = shared.clone();
        tasks.push(
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(IDLE_TICK).await;
                    let mut world = ticker.lock();
                    if world.expire_idle() {
                        model::reconcile(&ticker, &mut world);
                    }
                }
            })
            .abort_handle(),
        );
        Ok(TrtcStandIn {
            shared,
            api_port,
            rtmp,
            callback: config.callback.clone(),
            first_app: config.apps.keys().next().copied(),
            tasks,
        })
    }

    /// The API endpoint, `http://127.0.0.1:PORT` (for `TrtcApiConfig::endpoint`).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.api_port)
    }

    /// The API server's port.
    pub fn api_port(&self) -> u16 {
        self.api_port
    }

    /// The CSS push domain, `127.0.0.1:{rtmp port}`.
    pub fn push_domain(&self) -> String {
        format!("127.0.0.1:{}", self.rtmp.rtmp_port)
    }

    /// The CSS play domain: the same server.
    pub fn play_domain(&self) -> String {
        self.push_domain()
    }

    /// `rtmp://{play domain}/live/{stream}`.
    pub fn play_url(&self, stream: &str) -> String {
        self.rtmp.url(stream)
    }

    /// A push URL for `stream` valid until `expires_at` (Unix seconds), signed with the push key
    /// when there is one.
    pub fn push_url(&self, stream: &str, expires_at: u32) -> String {
        match &self.shared.push_key {
            Some(key) => {
                roomrec_api::trtc::push_auth::push_url(&self.push_domain(), stream, key, expires_at)
            }
            None => format!("rtmp://{}/live/{stream}", self.push_domain()),
        }
    }

    /// The CSS nginx-rtmp (its log, its HTTP port with `/stat`).
    pub fn rtmp(&mut self) -> &mut RtmpServer {
        &mut self.rtmp
    }

    /// `user` enters room `room` of `sdk_app_id` as an anchor (101 when the room is new, 103);
    /// already there as an anchor, nothing happens. An agent with that UserId is put out (its
    /// task ends: duplicate user). Call within a tokio runtime.
    pub fn anchor(&self, sdk_app_id: u64, room: impl Into<RoomId>, user: &str) -> Anchor {
        let anchor = Anchor {
            shared: self.shared.clone(),
            sdk_app_id,
            room: room.into(),
            user_id: user.to_string(),
        };
        anchor
            .act(AnchorAction::Enter)
            .expect("entering a room always works");
        anchor
    }

    /// The users in a room, in the order they entered (anchors and agents).
    pub fn room_users(&self, sdk_app_id: u64, room: impl Into<RoomId>) -> Vec<String> {
        let room = room.into();
        self.shared
            .lock()
            .rooms
            .get(&(sdk_app_id, room))
            .map(|r| r.members.iter().map(|m| m.user_id.clone()).collect())
            .unwrap_or_default()
    }

    /// Every relay task started, oldest first.
    pub fn relays(&self) -> Vec<RelayTask> {
        self.shared
            .lock()
            .tasks
            .iter()
            .map(|t| t.info.clone())
            .collect()
    }

    /// One relay task.
    pub fn relay(&self, task_id: &str) -> Option<RelayTask> {
        self.shared
            .lock()
            .tasks
            .iter()
            .find(|t| t.info.task_id == task_id)
            .map(|t| t.info.clone())
    }

    /// Every API request, oldest first.
    pub fn requests(&self) -> Vec<ApiRequest> {
        self.shared.lock().requests.clone()
    }

    /// Every `on_publish` check of the push server, oldest first.
    pub fn publish_checks(&self) -> Vec<PublishCheck> {
        self.shared.lock().publish_checks.clone()
    }

    /// Every room event sent (or being sent) to the callback URL, in the order they happened.
    pub fn events(&self) -> Vec<SentEvent> {
        self.shared.lock().events.clone()
    }

    /// The `Sign` this stand-in would put on `body` (None without a callback).
    pub fn sign(&self, body: &[u8]) -> Option<String> {
        self.callback
            .as_ref()
            .map(|(_, key)| callback::sign(key, body))
    }

    /// Posts `body` once to the callback URL with `Sign: sign` (none when `None`) and the first
    /// application's `SdkAppId`, for tests of receivers (unsigned, replayed or wrongly signed
    /// events). The HTTP status, or why there is none; an error without a callback.
    pub async fn send_raw(
        &self,
        body: &[u8],
        sign: Option<&str>,
    ) -> std::result::Result<u16, String> {
        let Some((url, _)) = &self.callback else {
            return Err("the stand-in has no callback URL".into());
        };
        let client = reqwest::Client::builder()
            .timeout(CallbackRetry::default().timeout)
            .build()
            .map_err(|e| e.to_string())?;
        callback::post(&client, url, self.first_app, sign, body.to_vec()).await
    }
}

impl Drop for TrtcStandIn {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        let mut world = self.shared.lock();
        for (_, push) in world.pushes.drain() {
            push.task.abort();
        }
        for timer in world.timers.drain(..) {
            timer.abort();
        }
    }
}

/// An anchor in a room of the stand-in (see [`TrtcStandIn::anchor`]). Its methods fail when the
/// anchor is no longer in the room (removed, dismissed, left), except [`Anchor::enter`].
#[derive(Clone)]
pub struct Anchor {
    shared: Arc<Shared>,
    sdk_app_id: u64,
    room: RoomId,
    user_id: String,
}

impl std::fmt::Debug for Anchor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Anchor")
            .field("sdk_app_id", &self.sdk_app_id)
            .field("room", &self.room)
            .field("user_id", &self.user_id)
            .finish()
    }
}

impl Anchor {
    fn act(&self, action: AnchorAction) -> Result<()> {
        let mut world = self.shared.lock();
        anchor_action(
            &self.shared,
            &mut world,
            self.sdk_app_id,
            &self.room,
            &self.user_id,
            action,
        )
        .map_err(|message| TestbedError::Command {
            what: "TRTC stand-in anchor".into(),
            message,
        })
    }

    pub fn user_id(&self) -> &str {
        &self.user_id
    }

    pub fn room(&self) -> &RoomId {
        &self.room
    }

    /// Enters the room again (after leaving or being removed); nothing when in it.
    pub fn enter(&self) -> Result<()> {
        self.act(AnchorAction::Enter)
    }

    /// Publishes the camera and microphone (201 for video, 203 for audio); publishing again
    /// replaces the stream. A `duration` ends the publication by itself.
    pub fn publish(&self, spec: StreamSpec) -> Result<()> {
        self.act(AnchorAction::Publish { aux: false, spec })
    }

    /// Publishes a screen share (205).
    pub fn publish_aux(&self, spec: StreamSpec) -> Result<()> {
        self.act(AnchorAction::Publish { aux: true, spec })
    }

    /// Stops the screen share only (206).
    pub fn stop_aux(&self) -> Result<()> {
        self.act(AnchorAction::Stop {
            aux: true,
            publication: None,
        })
    }

    /// Stops publishing everything (202/204, 206).
    pub fn stop_publishing(&self) -> Result<()> {
        self.act(AnchorAction::StopAll)
    }

    /// Leaves the room (104 Reason 1 only; 102 when the room is then empty).
    pub fn leave(&self) -> Result<()> {
        self.act(AnchorAction::Leave)
    }
}
