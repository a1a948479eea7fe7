//! Who publishes in a room, from TRTC's media events: 201/202 camera on/off, 203/204
//! microphone on/off, 205/206 screen share on/off, and 104 (an exit sends only 104, so it turns
//! everything of that user off). A person is publishing while any of their tracks is on; each
//! time they start again is a new session, which a worker records.
//!
//! Every track keeps the time (EventMsTs) of the event that set it, so an older event — TRTC
//! retries a failed callback for a minute, beside newer ones — never undoes a newer one, and the
//! same event twice changes nothing.
//!
//! [`Presence`] keeps the same for every room the operator hears of, in memory: TRTC sends no
//! event for someone who was already publishing, so a job created later learns of them here.

use jiff::Timestamp;
use roomrec_api::crd::{RoomPerson, TrackState, TrtcSource};
use roomrec_api::relay::StreamKind;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

pub const EXIT_ROOM: u32 = 104;
pub const VIDEO_START: u32 = 201;
pub const VIDEO_STOP: u32 = 202;
pub const AUDIO_START: u32 = 203;
pub const AUDIO_STOP: u32 = 204;
pub const SCREEN_START: u32 = 205;
pub const SCREEN_STOP: u32 = 206;

/// A room's people, by person key (`{userId}`, `{userId}/aux`).
pub type People = BTreeMap<String, RoomPerson>;

/// The person key of a user's stream.
pub fn person_key(user_id: &str, stream: StreamKind) -> String {
    match stream {
        StreamKind::Main => user_id.to_string(),
        StreamKind::Aux => format!("{user_id}/aux"),
    }
}

/// Whether an event type says something about who publishes.
pub fn is_presence_event(event_type: u32) -> bool {
    matches!(event_type, EXIT_ROOM | VIDEO_START..=SCREEN_STOP)
}

/// One media event: (stream, track, on) for each track it sets.
fn tracks_of(event_type: u32) -> &'static [(StreamKind, &'static str, bool)] {
    match event_type {
        VIDEO_START => &[(StreamKind::Main, "video", true)],
        VIDEO_STOP => &[(StreamKind::Main, "video", false)],
        AUDIO_START => &[(StreamKind::Main, "audio", true)],
        AUDIO_STOP => &[(StreamKind::Main, "audio", false)],
        SCREEN_START => &[(StreamKind::Aux, "screen", true)],
        SCREEN_STOP => &[(StreamKind::Aux, "screen", false)],
        EXIT_ROOM => &[
            (StreamKind::Main, "video", false),
            (StreamKind::Main, "audio", false),
            (StreamKind::Aux, "screen", false),
        ],
        _ => &[],
    }
}

/// Applies one event of `user_id` at `at_ms` to `people`, for the streams `wanted` accepts;
/// whether anything changed. Someone seen first by a stop (or an exit) is not added: they never
/// published as far as we know.
pub fn apply(
    people: &mut People,
    event_type: u32,
    user_id: &str,
    at_ms: i64,
    wanted: impl Fn(&str, StreamKind) -> bool,
) -> bool {
    let mut changed = false;
    for &(stream, track, on) in tracks_of(event_type) {
        if !wanted(user_id, stream) {
            continue;
        }
        let key = person_key(user_id, stream);
        if !people.contains_key(&key) {
            if !on {
                continue;
            }
            let index = people.values().map(|p| p.index + 1).max().unwrap_or(0);
            people.insert(
                key.clone(),
                RoomPerson {
                    index,
                    user_id: user_id.to_string(),
                    stream,
                    ..RoomPerson::default()
                },
            );
            changed = true;
        }
        let person = people.get_mut(&key).expect("just ensured");
        if person.tracks.get(track).is_some_and(|t| t.at_ms >= at_ms) {
            continue;
        }
        person.tracks.insert(
            track.to_string(),
            TrackState {
                publishing: on,
                at_ms,
            },
        );
        changed = true;
        let publishing = person.tracks.values().any(|t| t.publishing);
        if publishing != person.publishing {
            let at = Timestamp::from_millisecond(at_ms)
                .map(|t| t.to_string())
                .ok();
            person.publishing = publishing;
            if publishing {
                person.session += 1;
                person.since = at;
            } else {
                person.stopped_at = at;
            }
        }
    }
    changed
}

/// Whether a job keeps track of this user's stream: a whole room's cameras (and screen
/// shares when it asks), or the named people's stream.
pub fn wanted(trtc: &TrtcSource, user: &str, stream: StreamKind) -> bool {
    match &trtc.whole_room {
        Some(whole_room) => stream == StreamKind::Main || whole_room.screen_share,
        None => stream == trtc.stream && trtc.record.iter().any(|u| u == user),
    }
}

/// Adds the `remembered` publishers the job does not know yet (each after the job's own
/// people in the order of first publishing, so the indexes stay unique); whether any was added.
/// Someone the job knows keeps the job's record: it is at least as new as the memory's.
pub fn merge_remembered(people: &mut People, remembered: People) -> bool {
    let first = people.values().map(|p| p.index + 1).max().unwrap_or(0);
    let mut fresh: Vec<(String, RoomPerson)> = remembered
        .into_iter()
        .filter(|(key, _)| !people.contains_key(key))
        .collect();
    fresh.sort_by_key(|(key, p)| (p.index, key.clone()));
    let added = !fresh.is_empty();
    for (index, (key, mut person)) in (first..).zip(fresh) {
        person.index = index;
        people.insert(key, person);
    }
    added
}

/// The rooms remembered at most; beyond it, rooms where nobody publishes are forgotten first.
const MAX_ROOMS: usize = 10_000;

/// Every room's people, as far as this operator process has heard (see the module's note).
#[derive(Default)]
pub struct Presence {
    rooms: Mutex<HashMap<(u64, String), People>>,
}

impl Presence {
    pub fn record(&self, sdk_app_id: u64, room: &str, event_type: u32, user: &str, at_ms: i64) {
        let mut rooms = self.rooms.lock().expect("presence lock");
        let key = (sdk_app_id, room.to_string());
        if !rooms.contains_key(&key) && rooms.len() >= MAX_ROOMS {
            rooms.retain(|_, people| people.values().any(|p| p.publishing));
            if rooms.len() >= MAX_ROOMS {
                return;
            }
        }
        let people = rooms.entry(key).or_default();
        apply(people, event_type, user, at_ms, |_, _| true);
    }

    /// A dismissed room has nobody in it.
    pub fn forget(&self, sdk_app_id: u64, room: &str) {
        let mut rooms = self.rooms.lock().expect("presence lock");
        rooms.remove(&(sdk_app_id, room.to_string()));
    }

    /// Who publishes in the room now.
    pub fn publishing(&self, sdk_app_id: u64, room: &str) -> People {
        let rooms = self.rooms.lock().expect("presence lock");
        rooms
            .get(&(sdk_app_id, room.to_string()))
            .map(|people| {
                people
                    .iter()
                    .filter(|(_, p)| p.publishing)
                    .map(|(k, p)| (k.clone(), p.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(_: &str, _: StreamKind) -> bool {
        true
    }

    #[test]
    fn a_person_publishes_while_any_track_is_on_and_each_return_is_a_new_session() {
        let mut people = People::new();
        assert!(apply(&mut people, AUDIO_START, "alice", 1_000, all));
        assert!(apply(&mut people, VIDEO_START, "alice", 1_100, all));
        let alice = &people["alice"];
        assert!(alice.publishing);
        assert_eq!((alice.index, alice.session), (0, 1));
        // The camera off: still publishing (the microphone is on).
        assert!(apply(&mut people, VIDEO_STOP, "alice", 2_000, all));
        assert!(people["alice"].publishing);
        // An exit turns everything off, once.
        assert!(apply(&mut people, EXIT_ROOM, "alice", 3_000, all));
        assert!(!people["alice"].publishing);
        assert_eq!(
            people["alice"].stopped_at.as_deref(),
            Some("1970-01-01T00:00:03Z")
        );
        assert!(!apply(&mut people, EXIT_ROOM, "alice", 3_000, all));
        // Back again: a second session, the same index.
        assert!(apply(&mut people, AUDIO_START, "alice", 4_000, all));
        assert_eq!((people["alice"].index, people["alice"].session), (0, 2));
        // Bob is the second person; his screen share is a person of its own.
        apply(&mut people, VIDEO_START, "bob", 4_100, all);
        apply(&mut people, SCREEN_START, "bob", 4_200, all);
        assert_eq!(people["bob"].index, 1);
        assert_eq!(people["bob/aux"].index, 2);
        assert_eq!(people["bob/aux"].stream, StreamKind::Aux);
    }

    #[test]
    fn late_and_repeated_events_change_nothing() {
        let mut people = People::new();
        apply(&mut people, VIDEO_START, "alice", 1_000, all);
        apply(&mut people, VIDEO_STOP, "alice", 3_000, all);
        let before = people.clone();
        // A retried start from before the stop arrives late.
        assert!(!apply(&mut people, VIDEO_START, "alice", 1_000, all));
        assert!(!apply(&mut people, VIDEO_START, "alice", 2_000, all));
        assert_eq!(people, before);
        // A stop for someone never seen publishing adds nobody.
        assert!(!apply(&mut people, AUDIO_STOP, "carol", 5_000, all));
        assert!(!apply(&mut people, EXIT_ROOM, "carol", 5_000, all));
        assert!(!people.contains_key("carol"));
    }

    #[test]
    fn only_wanted_streams_are_kept() {
        let mut people = People::new();
        let main_only = |_: &str, stream: StreamKind| stream == StreamKind::Main;
        assert!(!apply(&mut people, SCREEN_START, "alice", 1_000, main_only));
        let named = |user: &str, _: StreamKind| user == "alice";
        assert!(!apply(&mut people, VIDEO_START, "mallory", 1_000, named));
        assert!(people.is_empty());
    }

    #[test]
    fn remembered_publishers_join_after_the_jobs_own_people() {
        let mut job = People::new();
        apply(&mut job, VIDEO_START, "bob", 2_000, all);
        let mut memory = People::new();
        apply(&mut memory, VIDEO_START, "alice", 1_000, all);
        apply(&mut memory, VIDEO_START, "bob", 1_500, all);
        apply(&mut memory, VIDEO_START, "carol", 1_800, all);
        assert!(merge_remembered(&mut job, memory.clone()));
        let order: Vec<(&str, u32)> = job.iter().map(|(k, p)| (k.as_str(), p.index)).collect();
        assert_eq!(order, [("alice", 1), ("bob", 0), ("carol", 2)]);
        // Bob's own record is kept; a second merge adds nobody.
        assert_eq!(job["bob"].since.as_deref(), Some("1970-01-01T00:00:02Z"));
        assert!(!merge_remembered(&mut job, memory));
    }

    #[test]
    fn the_memory_answers_who_publishes_and_forgets_dismissed_rooms() {
        let presence = Presence::default();
        presence.record(1400000000, "43474", VIDEO_START, "alice", 1_000);
        presence.record(1400000000, "43474", VIDEO_START, "bob", 1_000);
        presence.record(1400000000, "43474", VIDEO_STOP, "bob", 2_000);
        let now = presence.publishing(1400000000, "43474");
        assert_eq!(now.keys().collect::<Vec<_>>(), ["alice"]);
        assert!(presence.publishing(1400000001, "43474").is_empty());
        presence.forget(1400000000, "43474");
        assert!(presence.publishing(1400000000, "43474").is_empty());
    }
}
