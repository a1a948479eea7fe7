//! The stand-in's model of TRTC: rooms and their users, relay tasks, and the room events they
//! cause. Everything here runs under the stand-in's one lock; pushes and callbacks run in tasks
//! of their own (`push.rs`, `callback.rs`).

use super::check::{Call, Refusal, RoomId, StartRequest, StreamType};
use super::{Shared, push};
use crate::media::StreamSpec;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Role of an anchor in room events.
pub const ROLE_ANCHOR: u32 = 20;
/// Role of an audience member; relay agents only subscribe, so they enter as audience.
pub const ROLE_AUDIENCE: u32 = 21;
/// TerminalType of the stand-in's anchors (3, iOS, as in Tencent's example callback).
pub const TERMINAL_ANCHOR: u32 = 3;
/// TerminalType of relay agents: Linux (4), they run on Tencent's servers.
pub const TERMINAL_AGENT: u32 = 4;
/// UserType: the native SDK (3, as in Tencent's example callback).
pub const USER_TYPE_NATIVE_SDK: u32 = 3;

/// Room event types (`EventType`).
pub mod event {
    pub const CREATE_ROOM: u32 = 101;
    pub const DISMISS_ROOM: u32 = 102;
    pub const ENTER_ROOM: u32 = 103;
    pub const EXIT_ROOM: u32 = 104;
    pub const START_VIDEO: u32 = 201;
    pub const STOP_VIDEO: u32 = 202;
    pub const START_AUDIO: u32 = 203;
    pub const STOP_AUDIO: u32 = 204;
    pub const START_AUX: u32 = 205;
    pub const STOP_AUX: u32 = 206;
}

/// `Reason` of an exit (104).
pub mod exit_reason {
    /// Left normally (the anchor left, or StopPublishCdnStream ended the agent's task).
    pub const NORMAL: u32 = 1;
    /// Timed out: the agent leaves after `MaxIdleTime` without anyone publishing.
    pub const TIMEOUT: u32 = 2;
    /// Removed by RemoveUser(ByStrRoomId) or DismissRoom(ByStrRoomId).
    pub const REMOVED: u32 = 3;
    /// Force-killed: used for a session ended because the same UserId entered again.
    pub const KICKED: u32 = 5;
}

/// Why a relay task ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EndReason {
    /// StopPublishCdnStream.
    Stopped,
    /// Nobody published in the room for `MaxIdleTime`.
    Idle,
    /// The agent was removed by RemoveUser(ByStrRoomId).
    Removed,
    /// The room was dismissed.
    Dismissed,
    /// Another task (or an anchor) entered with the agent's UserId: TRTC's "duplicate user".
    DuplicateUser,
}

/// A relay task's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RelayState {
    Running,
    Ended(EndReason),
}

/// One push of a relay task to one `PublishCdnUrl`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Push {
    pub url: String,
    pub is_tencent_cdn: bool,
    /// An ffmpeg is pushing to the URL now (CSS may still refuse it: see `failures`).
    pub pushing: bool,
    /// How many times a push to this URL started.
    pub starts: u32,
    /// How many pushes ended without being stopped (refused by the server, connection lost…).
    pub failures: u32,
    /// The last few of those ends, newest last.
    pub last_errors: Vec<String>,
}

/// A StartPublishCdnStream task as the stand-in runs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelayTask {
    pub task_id: String,
    pub sdk_app_id: u64,
    pub room: RoomId,
    pub agent_user_id: String,
    /// The user whose stream is relayed.
    pub user_id: String,
    pub stream_type: StreamType,
    pub max_idle_time: Duration,
    pub pushes: Vec<Push>,
    pub state: RelayState,
    pub started_at: SystemTime,
    pub ended_at: Option<SystemTime>,
}

impl RelayTask {
    pub fn is_running(&self) -> bool {
        self.state == RelayState::Running
    }

    /// The `PublishCdnUrl`s, in the request's order.
    pub fn push_urls(&self) -> Vec<String> {
        self.pushes.iter().map(|p| p.url.clone()).collect()
    }

    /// Why it ended, when it has.
    pub fn end_reason(&self) -> Option<&EndReason> {
        match &self.state {
            RelayState::Running => None,
            RelayState::Ended(reason) => Some(reason),
        }
    }
}

/// One request to the API server, as the stand-in saw and answered it.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiRequest {
    pub request_id: String,
    /// X-TC-Action ("" when absent).
    pub action: String,
    /// The body as text.
    pub body: String,
    /// The body as JSON, when it is.
    pub params: Option<Value>,
    /// Signature, headers and parameters passed every check.
    pub verified: bool,
    /// The answer: the `Response` fields (without RequestId), or the error.
    pub outcome: Result<Value, Refusal>,
}

impl ApiRequest {
    pub fn refusal(&self) -> Option<&Refusal> {
        self.outcome.as_ref().err()
    }
}

/// One `on_publish` check of the CSS push server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublishCheck {
    /// The stream name (as in the push URL).
    pub stream: String,
    /// Every form field nginx-rtmp sent, decoded.
    pub form: Vec<(String, String)>,
    pub accepted: bool,
    /// Why it was refused.
    pub reason: Option<String>,
}

/// One delivery attempt of a room event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt {
    pub at: SystemTime,
    /// The HTTP status, or why there was none (timeout, connection refused…).
    pub answer: Result<u16, String>,
}

/// Where a room event's delivery stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    Pending,
    /// Answered with HTTP 200.
    Delivered,
    /// Retried for the whole retry period without an HTTP 200.
    GaveUp,
}

/// A room event sent (or being sent) to the callback URL.
#[derive(Clone, Debug, PartialEq)]
pub struct SentEvent {
    pub sdk_app_id: u64,
    pub event_type: u32,
    pub body: Value,
    /// The exact body bytes (as text) the Sign covers; the same on every attempt.
    pub raw: String,
    /// The `Sign` header.
    pub sign: String,
    pub attempts: Vec<Attempt>,
    pub delivery: Delivery,
}

/// What a user publishes: one publication per stream, with an id that changes on every
/// (re)publish so the pushes relaying it restart.
#[derive(Clone, Debug)]
pub(crate) struct Publication {
    pub id: u64,
    pub spec: StreamSpec,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Anchor,
    Agent { task_id: String },
}

#[derive(Clone, Debug)]
pub(crate) struct Member {
    pub user_id: String,
    pub kind: Kind,
    /// Camera and microphone.
    pub main: Option<Publication>,
    /// Screen share.
    pub aux: Option<Publication>,
}

impl Member {
    fn role(&self) -> u32 {
        match self.kind {
            Kind::Anchor => ROLE_ANCHOR,
            Kind::Agent { .. } => ROLE_AUDIENCE,
        }
    }
    fn terminal_type(&self) -> u32 {
        match self.kind {
            Kind::Anchor => TERMINAL_ANCHOR,
            Kind::Agent { .. } => TERMINAL_AGENT,
        }
    }
    fn publishes(&self) -> bool {
        self.main.is_some() || self.aux.is_some()
    }
}

/// A room: its users in the order they entered.
#[derive(Clone, Debug, Default)]
pub(crate) struct Room {
    pub members: Vec<Member>,
}

impl Room {
    pub fn member(&self, user: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.user_id == user)
    }
    fn member_mut(&mut self, user: &str) -> Option<&mut Member> {
        self.members.iter_mut().find(|m| m.user_id == user)
    }
    fn anyone_publishes(&self) -> bool {
        self.members
            .iter()
            .any(|m| m.kind == Kind::Anchor && m.publishes())
    }
}

pub(crate) struct TaskEntry {
    pub info: RelayTask,
    /// A number for file names.
    pub seq: u64,
    /// Since when nobody publishes in the room (None while someone does).
    pub idle_since: Option<Instant>,
}

/// A push that should run: task and URL index, the publication it relays, the URL, the stream,
/// the task's file number.
pub(crate) struct DesiredPush {
    key: (String, usize),
    publication: u64,
    url: String,
    spec: StreamSpec,
    seq: u64,
}

/// A running push: cancelled by dropping `cancel` (its task stops ffmpeg and ends).
pub(crate) struct PushHandle {
    pub publication: u64,
    pub cancel: tokio::sync::watch::Sender<bool>,
    pub task: tokio::task::JoinHandle<()>,
}

pub(crate) struct World {
    pub rooms: BTreeMap<(u64, RoomId), Room>,
    pub tasks: Vec<TaskEntry>,
    pub requests: Vec<ApiRequest>,
    pub publish_checks: Vec<PublishCheck>,
    pub events: Vec<SentEvent>,
    pub pushes: HashMap<(String, usize), PushHandle>,
    /// Timers of anchors' publications with a duration.
    pub timers: Vec<tokio::task::AbortHandle>,
    pub next_request: u64,
    pub next_task: u64,
    pub next_publication: u64,
    /// The callback key and the dispatcher's queue, when callbacks are configured.
    pub callback: Option<(String, tokio::sync::mpsc::UnboundedSender<usize>)>,
}

pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

pub(crate) fn unix_now() -> i64 {
    (unix_ms() / 1000) as i64
}

impl World {
    pub fn new(callback: Option<(String, tokio::sync::mpsc::UnboundedSender<usize>)>) -> Self {
        World {
            rooms: BTreeMap::new(),
            tasks: Vec::new(),
            requests: Vec::new(),
            publish_checks: Vec::new(),
            events: Vec::new(),
            pushes: HashMap::new(),
            timers: Vec::new(),
            next_request: 0,
            next_task: 0,
            next_publication: 0,
            callback,
        }
    }

    pub fn request_id(&mut self) -> String {
        self.next_request += 1;
        format!("5f1e0000-7472-7463-8000-{:012x}", self.next_request)
    }

    fn publication(&mut self, spec: StreamSpec) -> Publication {
        self.next_publication += 1;
        Publication {
            id: self.next_publication,
            // The stand-in decides how long a relay pushes; a publication's own end is a timer.
            spec: StreamSpec {
                duration: None,
                ..spec
            },
        }
    }

    pub fn task_mut(&mut self, task_id: &str) -> Option<&mut TaskEntry> {
        self.tasks.iter_mut().find(|t| t.info.task_id == task_id)
    }

    /// Queues a room event for the callback URL (nothing when no callback is configured).
    fn emit(&mut self, app: u64, room: &RoomId, event_type: u32, mut info: Value) {
        let Some((key, queue)) = &self.callback else {
            return;
        };
        let now_ms = unix_ms();
        info["RoomId"] = room.to_json();
        info["EventTs"] = json!(now_ms / 1000);
        info["EventMsTs"] = json!(now_ms);
        let body = json!({
            "EventGroupId": if event_type < 200 { 1 } else { 2 },
            "EventType": event_type,
            "CallbackTs": now_ms,
            "EventInfo": info,
        });
        let raw = body.to_string();
        let sign = super::callback::sign(key, raw.as_bytes());
        self.events.push(SentEvent {
            sdk_app_id: app,
            event_type,
            body,
            raw,
            sign,
            attempts: Vec::new(),
            delivery: Delivery::Pending,
        });
        let _ = queue.send(self.events.len() - 1);
    }

    fn emit_user(&mut self, app: u64, room: &RoomId, event_type: u32, user: &str) {
        self.emit(app, room, event_type, json!({ "UserId": user }));
    }

    fn emit_presence(
        &mut self,
        app: u64,
        room: &RoomId,
        event_type: u32,
        member: &Member,
        reason: u32,
    ) {
        let info = json!({
            "UserId": member.user_id,
            "UniqueId": unix_ms(),
            "Role": member.role(),
            "TerminalType": member.terminal_type(),
            "UserType": USER_TYPE_NATIVE_SDK,
            "Reason": reason,
        });
        self.emit(app, room, event_type, info);
    }

    fn emit_publication_events(
        &mut self,
        app: u64,
        room: &RoomId,
        user: &str,
        publication: &Publication,
        aux: bool,
        start: bool,
    ) {
        let spec = &publication.spec;
        if aux {
            let kind = if start {
                event::START_AUX
            } else {
                event::STOP_AUX
            };
            self.emit_user(app, room, kind, user);
            return;
        }
        if spec.video_codec.is_some() {
            let kind = if start {
                event::START_VIDEO
            } else {
                event::STOP_VIDEO
            };
            self.emit_user(app, room, kind, user);
        }
        if spec.audio_codec.is_some() {
            let kind = if start {
                event::START_AUDIO
            } else {
                event::STOP_AUDIO
            };
            self.emit_user(app, room, kind, user);
        }
    }

    /// `user` enters the room (101 first when the room is new, then 103).
    fn enter(&mut self, app: u64, room: &RoomId, member: Member) {
        let key = (app, room.clone());
        let new_room = !self.rooms.contains_key(&key);
        if new_room {
            self.emit_user(app, room, event::CREATE_ROOM, &member.user_id.clone());
        }
        self.emit_presence(app, room, event::ENTER_ROOM, &member, 1);
        self.rooms.entry(key).or_default().members.push(member);
    }

    /// `user` leaves the room with `reason` (104 only: no stop events for what it published).
    /// The room is not dismissed here: see [`World::dismiss_if_empty`].
    fn exit(&mut self, app: u64, room: &RoomId, user: &str, reason: u32) -> Option<Member> {
        let members = &mut self.rooms.get_mut(&(app, room.clone()))?.members;
        let index = members.iter().position(|m| m.user_id == user)?;
        let member = members.remove(index);
        self.emit_presence(app, room, event::EXIT_ROOM, &member, reason);
        Some(member)
    }

    /// The last user left: the room ends (102).
    fn dismiss_if_empty(&mut self, app: u64, room: &RoomId) {
        let key = (app, room.clone());
        if self.rooms.get(&key).is_some_and(|r| r.members.is_empty()) {
            self.rooms.remove(&key);
            self.emit(app, room, event::DISMISS_ROOM, json!({}));
        }
    }

    /// Ends a running task: its agent leaves the room with `exit_reason` (104).
    fn end_task(&mut self, task_id: &str, reason: EndReason, exit_reason: u32) {
        let Some(task) = self.task_mut(task_id) else {
            return;
        };
        if !task.info.is_running() {
            return;
        }
        task.info.state = RelayState::Ended(reason);
        task.info.ended_at = Some(SystemTime::now());
        task.idle_since = None;
        let (app, room, agent) = (
            task.info.sdk_app_id,
            task.info.room.clone(),
            task.info.agent_user_id.clone(),
        );
        let is_this_agent = self
            .rooms
            .get(&(app, room.clone()))
            .and_then(|r| r.member(&agent))
            .is_some_and(|m| {
                m.kind
                    == Kind::Agent {
                        task_id: task_id.to_string(),
                    }
            });
        if is_this_agent {
            self.exit(app, &room, &agent, exit_reason);
        }
    }

    /// Recomputes, for every running task, since when its room is idle.
    fn update_idle(&mut self) {
        let now = Instant::now();
        for task in self.tasks.iter_mut().filter(|t| t.info.is_running()) {
            let publishing = self
                .rooms
                .get(&(task.info.sdk_app_id, task.info.room.clone()))
                .is_some_and(Room::anyone_publishes);
            if publishing {
                task.idle_since = None;
            } else if task.idle_since.is_none() {
                task.idle_since = Some(now);
            }
        }
    }

    /// Ends the tasks whose room has been idle for their `MaxIdleTime` (104 Reason 2).
    pub fn expire_idle(&mut self) -> bool {
        let now = Instant::now();
        let expired: Vec<String> = self
            .tasks
            .iter()
            .filter(|t| t.info.is_running())
            .filter(|t| {
                t.idle_since
                    .is_some_and(|since| now.duration_since(since) >= t.info.max_idle_time)
            })
            .map(|t| t.info.task_id.clone())
            .collect();
        for task_id in &expired {
            let (app, room) = {
                let task = self.task_mut(task_id).expect("listed above");
                (task.info.sdk_app_id, task.info.room.clone())
            };
            self.end_task(task_id, EndReason::Idle, exit_reason::TIMEOUT);
            self.dismiss_if_empty(app, &room);
        }
        !expired.is_empty()
    }

    /// The pushes that should run now: per running task and URL, the publication it relays.
    fn desired_pushes(&self) -> Vec<DesiredPush> {
        let mut out = Vec::new();
        for task in self.tasks.iter().filter(|t| t.info.is_running()) {
            let info = &task.info;
            let Some(room) = self.rooms.get(&(info.sdk_app_id, info.room.clone())) else {
                continue;
            };
            let Some(member) = room.member(&info.user_id) else {
                continue;
            };
            if member.kind != Kind::Anchor {
                continue;
            }
            let publication = match info.stream_type {
                StreamType::Camera => &member.main,
                StreamType::Screen => &member.aux,
            };
            let Some(publication) = publication else {
                continue;
            };
            for (index, push) in info.pushes.iter().enumerate() {
                out.push(DesiredPush {
                    key: (info.task_id.clone(), index),
                    publication: publication.id,
                    url: push.url.clone(),
                    spec: publication.spec.clone(),
                    seq: task.seq,
                });
            }
        }
        out
    }
}

/// Brings the pushes in line with the rooms: starts the ones a publication now feeds, stops the
/// ones nobody feeds any more (or whose publication was replaced); and restarts idle clocks.
pub(crate) fn reconcile(shared: &std::sync::Arc<Shared>, world: &mut World) {
    world.update_idle();
    let desired = world.desired_pushes();
    let wanted: HashMap<(String, usize), u64> = desired
        .iter()
        .map(|push| (push.key.clone(), push.publication))
        .collect();
    let stale: Vec<(String, usize)> = world
        .pushes
        .iter()
        .filter(|(key, handle)| wanted.get(*key) != Some(&handle.publication))
        .map(|(key, _)| key.clone())
        .collect();
    for key in stale {
        if let Some(handle) = world.pushes.remove(&key) {
            let _ = handle.cancel.send(true);
        }
    }
    for DesiredPush {
        key,
        publication,
        url,
        spec,
        seq,
    } in desired
    {
        if world.pushes.contains_key(&key) {
            continue;
        }
        let (cancel, cancelled) = tokio::sync::watch::channel(false);
        let log = shared.dir.join(format!("push-{seq}-{}.log", key.1));
        let task = tokio::spawn(push::run(
            shared.clone(),
            key.clone(),
            url,
            spec,
            log,
            cancelled,
        ));
        world.pushes.insert(
            key,
            PushHandle {
                publication,
                cancel,
                task,
            },
        );
    }
}

fn new_task_id(seq: u64) -> String {
    // Tencent's TaskIds are opaque base64-like strings; these are unique per stand-in.
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!("-StandIn{seq:04}x{nanos:08x}..")
}

/// Applies a checked API call; the answer's fields (without RequestId) or Tencent's error.
pub(crate) fn apply(
    shared: &std::sync::Arc<Shared>,
    world: &mut World,
    call: Call,
) -> Result<Value, Refusal> {
    let answer = match call {
        Call::Start(start) => start_task(world, start),
        Call::Stop {
            sdk_app_id,
            task_id,
        } => stop_task(world, sdk_app_id, &task_id),
        Call::RemoveUser {
            sdk_app_id,
            room,
            user_ids,
        } => remove_users(world, sdk_app_id, &room, &user_ids),
        Call::DismissRoom { sdk_app_id, room } => dismiss_room(world, sdk_app_id, &room),
    };
    reconcile(shared, world);
    answer
}

fn start_task(world: &mut World, start: StartRequest) -> Result<Value, Refusal> {
    if start.with_transcoding {
        return Err(Refusal::new(
            "UnsupportedOperation",
            "the TRTC stand-in relays pass-through only (WithTranscoding 0)",
        ));
    }
    let Some(subscription) = start.subscription else {
        return Err(Refusal::new(
            "MissingParameter",
            "SingleSubscribeParams is required with WithTranscoding 0",
        ));
    };
    if subscription.room != start.room {
        return Err(Refusal::new(
            "UnsupportedOperation",
            format!(
                "the TRTC stand-in relays users of the task's own room only: UserInfo room {} is not room {}",
                subscription.room, start.room
            ),
        ));
    }
    let app = start.sdk_app_id;
    let agent = start.agent_user_id.clone();
    if agent == subscription.user_id {
        return Err(Refusal::new(
            "InvalidParameter",
            format!(
                "AgentParams.UserId {agent:?} is the subscribed user: the agent needs a UserId of its own"
            ),
        ));
    }
    if let Some(member) = world
        .rooms
        .get(&(app, start.room.clone()))
        .and_then(|r| r.member(&agent))
        && member.kind == Kind::Anchor
    {
        return Err(Refusal::new(
            "FailedOperation",
            format!(
                "AgentParams.UserId {agent:?} is in room {} as a user already: an agent needs a UserId nobody else uses",
                start.room
            ),
        ));
    }
    // One UserId, one session per application: the agent's earlier task ends (its agent is
    // kicked out) as the new one enters.
    let earlier: Vec<(String, RoomId)> = world
        .tasks
        .iter()
        .filter(|t| {
            t.info.is_running() && t.info.sdk_app_id == app && t.info.agent_user_id == agent
        })
        .map(|t| (t.info.task_id.clone(), t.info.room.clone()))
        .collect();
    for (task_id, _) in &earlier {
        world.end_task(task_id, EndReason::DuplicateUser, exit_reason::KICKED);
    }

    world.next_task += 1;
    let seq = world.next_task;
    let task_id = new_task_id(seq);
    let info = RelayTask {
        task_id: task_id.clone(),
        sdk_app_id: app,
        room: start.room.clone(),
        agent_user_id: agent.clone(),
        user_id: subscription.user_id,
        stream_type: subscription.stream_type,
        max_idle_time: Duration::from_secs(u64::from(start.max_idle_time)),
        pushes: start
            .publish_cdn
            .into_iter()
            .map(|cdn| Push {
                url: cdn.url,
                is_tencent_cdn: cdn.is_tencent_cdn,
                pushing: false,
                starts: 0,
                failures: 0,
                last_errors: Vec::new(),
            })
            .collect(),
        state: RelayState::Running,
        started_at: SystemTime::now(),
        ended_at: None,
    };
    world.tasks.push(TaskEntry {
        info,
        seq,
        idle_since: None,
    });
    world.enter(
        app,
        &start.room,
        Member {
            user_id: agent,
            kind: Kind::Agent {
                task_id: task_id.clone(),
            },
            main: None,
            aux: None,
        },
    );
    for (_, room) in earlier {
        world.dismiss_if_empty(app, &room);
    }
    Ok(json!({ "TaskId": task_id }))
}

fn stop_task(world: &mut World, app: u64, task_id: &str) -> Result<Value, Refusal> {
    let running = world
        .tasks
        .iter()
        .find(|t| t.info.task_id == task_id && t.info.sdk_app_id == app)
        .filter(|t| t.info.is_running())
        .map(|t| t.info.room.clone());
    // Tencent lists ResourceNotFound among StopPublishCdnStream's errors: a task that never
    // existed or has ended already.
    let Some(room) = running else {
        return Err(Refusal::new(
            "ResourceNotFound",
            format!("TaskId {task_id:?} is not a running relay task of SdkAppId {app}"),
        ));
    };
    world.end_task(task_id, EndReason::Stopped, exit_reason::NORMAL);
    world.dismiss_if_empty(app, &room);
    Ok(json!({ "TaskId": task_id }))
}

fn room_not_exist(app: u64, room: &RoomId) -> Refusal {
    Refusal::new(
        "FailedOperation.RoomNotExist",
        format!("room {room} of SdkAppId {app} does not exist (nobody is in it)"),
    )
}

fn remove_users(
    world: &mut World,
    app: u64,
    room: &RoomId,
    user_ids: &[String],
) -> Result<Value, Refusal> {
    if !world.rooms.contains_key(&(app, room.clone())) {
        return Err(room_not_exist(app, room));
    }
    for user in user_ids {
        let kind = world
            .rooms
            .get(&(app, room.clone()))
            .and_then(|r| r.member(user))
            .map(|m| m.kind.clone());
        match kind {
            Some(Kind::Agent { task_id }) => {
                world.end_task(&task_id, EndReason::Removed, exit_reason::REMOVED);
            }
            Some(Kind::Anchor) => {
                world.exit(app, room, user, exit_reason::REMOVED);
            }
            None => {}
        }
    }
    world.dismiss_if_empty(app, room);
    Ok(json!({}))
}

fn dismiss_room(world: &mut World, app: u64, room: &RoomId) -> Result<Value, Refusal> {
    let Some(members) = world
        .rooms
        .get(&(app, room.clone()))
        .map(|r| r.members.clone())
    else {
        return Err(room_not_exist(app, room));
    };
    // Everyone is put out of the room (104 Reason 3 each), then the room ends (102).
    for member in members {
        match member.kind {
            Kind::Agent { task_id } => {
                world.end_task(&task_id, EndReason::Dismissed, exit_reason::REMOVED);
            }
            Kind::Anchor => {
                world.exit(app, room, &member.user_id, exit_reason::REMOVED);
            }
        }
    }
    world.dismiss_if_empty(app, room);
    Ok(json!({}))
}

/// What an anchor does (the test-facing [`super::Anchor`] calls these).
pub(crate) enum AnchorAction {
    Enter,
    Publish { aux: bool, spec: StreamSpec },
    Stop { aux: bool, publication: Option<u64> },
    StopAll,
    Leave,
}

/// Applies an anchor's action; an error when the anchor is not in the room (removed,
/// dismissed or left) and the action needs it to be.
pub(crate) fn anchor_action(
    shared: &std::sync::Arc<Shared>,
    world: &mut World,
    app: u64,
    room: &RoomId,
    user: &str,
    action: AnchorAction,
) -> Result<(), String> {
    let key = (app, room.clone());
    let current = world
        .rooms
        .get(&key)
        .and_then(|r| r.member(user))
        .map(|m| m.kind.clone());
    let result = match (action, current) {
        (AnchorAction::Enter, Some(Kind::Anchor)) => Ok(()),
        (AnchorAction::Enter, other) => {
            // The same UserId entering again ends the earlier session (an agent's task ends).
            if let Some(Kind::Agent { task_id }) = other {
                world.end_task(&task_id, EndReason::DuplicateUser, exit_reason::KICKED);
            }
            world.enter(
                app,
                room,
                Member {
                    user_id: user.to_string(),
                    kind: Kind::Anchor,
                    main: None,
                    aux: None,
                },
            );
            Ok(())
        }
        (AnchorAction::Publish { aux, spec }, Some(Kind::Anchor)) => {
            let publication = world.publication(spec.clone());
            let previous = {
                let member = world
                    .rooms
                    .get_mut(&key)
                    .and_then(|r| r.member_mut(user))
                    .expect("checked above");
                let slot = if aux {
                    &mut member.aux
                } else {
                    &mut member.main
                };
                slot.replace(publication.clone())
            };
            if let Some(previous) = previous {
                world.emit_publication_events(app, room, user, &previous, aux, false);
            }
            world.emit_publication_events(app, room, user, &publication, aux, true);
            if let Some(duration) = spec.duration {
                // The publication ends by itself, like an ffmpeg with `-t`.
                let shared = shared.clone();
                let (room, user, id) = (room.clone(), user.to_string(), publication.id);
                let timer = tokio::spawn(async move {
                    tokio::time::sleep(duration).await;
                    let mut world = shared.lock();
                    let stop = AnchorAction::Stop {
                        aux,
                        publication: Some(id),
                    };
                    let _ = anchor_action(&shared, &mut world, app, &room, &user, stop);
                });
                world.timers.push(timer.abort_handle());
            }
            Ok(())
        }
        (AnchorAction::Stop { aux, publication }, Some(Kind::Anchor)) => {
            let member = world
                .rooms
                .get_mut(&key)
                .and_then(|r| r.member_mut(user))
                .expect("checked above");
            let slot = if aux {
                &mut member.aux
            } else {
                &mut member.main
            };
            let matches = match (&slot, publication) {
                (Some(current), Some(id)) => current.id == id,
                (Some(_), None) => true,
                (None, _) => false,
            };
            if matches && let Some(stopped) = slot.take() {
                world.emit_publication_events(app, room, user, &stopped, aux, false);
            }
            Ok(())
        }
        (AnchorAction::StopAll, Some(Kind::Anchor)) => {
            let member = world
                .rooms
                .get_mut(&key)
                .and_then(|r| r.member_mut(user))
                .expect("checked above");
            let (main, aux) = (member.main.take(), member.aux.take());
            if let Some(main) = main {
                world.emit_publication_events(app, room, user, &main, false, false);
            }
            if let Some(aux) = aux {
                world.emit_publication_events(app, room, user, &aux, true, false);
            }
            Ok(())
        }
        (AnchorAction::Leave, Some(Kind::Anchor)) => {
            world.exit(app, room, user, exit_reason::NORMAL);
            world.dismiss_if_empty(app, room);
            Ok(())
        }
        (_, _) => Err(format!(
            "{user:?} is not in room {room} of SdkAppId {app} as an anchor (removed, dismissed, or left)"
        )),
    };
    reconcile(shared, world);
    result
}
