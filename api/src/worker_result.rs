//! How a worker ended, as it leaves it in its pod's termination message and the operator reads
//! it back: one type, written by one side and read by the other. The kubelet keeps at most
//! 4 KiB; the message is cut to fit well within it.

use crate::state::{FileState, StopReason};
use serde::{Deserialize, Serialize};

/// Most characters of the message kept.
pub const MESSAGE_CHARS: usize = 1000;
/// Most bytes of the message once escaped in JSON (control characters take 6 bytes each), so
/// the whole result stays far below the kubelet's 4096.
const MESSAGE_JSON_BYTES: usize = 2048;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerResult {
    /// succeeded: every part stored; failed: nothing recorded or a part failed.
    pub status: FileState,
    pub stop_reason: StopReason,
    #[serde(default)]
    pub message: String,
    /// Whether running the worker again could help.
    #[serde(default = "yes")]
    pub retryable: bool,
    #[serde(default)]
    pub parts: usize,
    #[serde(default)]
    pub bytes: u64,
    #[serde(default)]
    pub duration_seconds: f64,
}

fn yes() -> bool {
    true
}

impl WorkerResult {
    /// The worker failed before recording anything (bad usage, unusable storage).
    pub fn failed_at_start(message: &str, retryable: bool) -> Self {
        Self {
            status: FileState::Failed,
            stop_reason: StopReason::Failed,
            message: truncate(message),
            retryable,
            parts: 0,
            bytes: 0,
            duration_seconds: 0.0,
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("the worker result serializes")
    }

    /// The result in a termination message, if it is one (a crashed worker leaves its log's
    /// tail there instead).
    pub fn parse(message: &str) -> Option<Self> {
        serde_json::from_str(message.trim()).ok()
    }
}

/// At most `MESSAGE_CHARS` characters and `MESSAGE_JSON_BYTES` escaped bytes, cut on a
/// character boundary and marked with "…" when cut.
pub fn truncate(message: &str) -> String {
    let fits = message.chars().count() <= MESSAGE_CHARS
        && message.chars().map(json_len).sum::<usize>() <= MESSAGE_JSON_BYTES;
    if fits {
        return message.to_string();
    }
    let ellipsis = '…';
    let (mut chars, mut bytes) = (1, ellipsis.len_utf8());
    let mut cut = String::new();
    for c in message.chars() {
        if chars + 1 > MESSAGE_CHARS || bytes + json_len(c) > MESSAGE_JSON_BYTES {
            break;
        }
        chars += 1;
        bytes += json_len(c);
        cut.push(c);
    }
    cut.push(ellipsis);
    cut
}

/// Bytes `c` takes inside a JSON string as serde_json writes it.
fn json_len(c: char) -> usize {
    match c {
        '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
        c if (c as u32) < 0x20 => 6,
        c => c.len_utf8(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_10_kib_message_is_cut_to_1000_chars_and_the_whole_stays_under_4_kib() {
        for unit in ["x", "é", "语", "🎥", "\u{1}", "\"", "ab\n"] {
            let long = unit.repeat(10 * 1024 / unit.len() + 1);
            let t = WorkerResult::failed_at_start(&long, false);
            assert!(t.message.chars().count() <= MESSAGE_CHARS, "{unit:?}");
            assert!(t.message.ends_with('…'), "{unit:?}");
            assert!(long.starts_with(t.message.trim_end_matches('…')));
            let json = t.to_json();
            assert!(json.len() < 4096, "{unit:?}: {} bytes", json.len());
            let back: serde_json::Value = serde_json::from_str(&json).unwrap();
            assert_eq!(back["message"], t.message);
            assert_eq!(back["retryable"], false);
            assert_eq!(back["stopReason"], "failed");
            assert_eq!(back["status"], "failed");
            assert_eq!(WorkerResult::parse(&json), Some(t));
        }
        let plain = "x".repeat(10 * 1024);
        assert_eq!(truncate(&plain).chars().count(), MESSAGE_CHARS);
    }

    #[test]
    fn short_messages_are_kept_whole() {
        assert_eq!(truncate(""), "");
        assert_eq!(
            truncate("the bucket does not exist"),
            "the bucket does not exist"
        );
        let exact = "y".repeat(MESSAGE_CHARS);
        assert_eq!(truncate(&exact), exact);
        let over = "y".repeat(MESSAGE_CHARS + 1);
        assert_eq!(truncate(&over).chars().count(), MESSAGE_CHARS);
    }

    #[test]
    fn a_log_tail_is_not_a_result_and_missing_fields_take_their_defaults() {
        assert_eq!(WorkerResult::parse("panicked at src/main.rs"), None);
        let r =
            WorkerResult::parse(r#"{"status":"succeeded","stopReason":"idle-timeout"}"#).unwrap();
        assert_eq!(r.stop_reason, StopReason::IdleTimeout);
        assert!(r.retryable && r.message.is_empty());
    }

    use proptest::prelude::*;

    /// A termination message as a broken or hostile worker might leave it: the result's keys
    /// with values of any JSON type.
    fn result_like() -> impl Strategy<Value = serde_json::Value> {
        let value = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<f64>().prop_map(|f| serde_json::json!(f)),
            prop_oneof![
                Just("succeeded".to_string()),
                Just("failed".to_string()),
                Just("idle-timeout".to_string()),
                ".{0,30}"
            ]
            .prop_map(serde_json::Value::from),
        ];
        proptest::collection::btree_map(
            prop_oneof![
                Just("status".to_string()),
                Just("stopReason".to_string()),
                Just("message".to_string()),
                Just("retryable".to_string()),
                Just("parts".to_string()),
                Just("bytes".to_string()),
                Just("durationSeconds".to_string()),
                "[a-zA-Z]{1,10}"
            ],
            value,
            0..8,
        )
        .prop_map(|m| serde_json::Value::Object(m.into_iter().collect()))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn any_termination_message_parses_to_a_result_or_to_nothing(s in ".{0,600}") {
            // A log tail, noise, a cut-off result: never a panic.
            let _ = WorkerResult::parse(&s);
        }

        #[test]
        fn a_result_is_read_only_when_its_status_and_stop_reason_are_known(v in result_like()) {
            let parsed = WorkerResult::parse(&v.to_string());
            let known = |key: &str| v.get(key).and_then(|x| x.as_str()).is_some_and(|x| {
                serde_json::from_value::<FileState>(x.into()).is_ok()
                    || serde_json::from_value::<StopReason>(x.into()).is_ok()
            });
            if parsed.is_some() {
                prop_assert!(known("status") && known("stopReason"), "{v}");
            }
        }

        #[test]
        fn any_message_is_cut_within_its_bounds_on_a_character_boundary(s in "\\PC{0,3000}") {
            let cut = truncate(&s);
            prop_assert!(cut.chars().count() <= MESSAGE_CHARS);
            prop_assert!(serde_json::to_string(&cut).unwrap().len() <= MESSAGE_JSON_BYTES + 2);
            prop_assert!(s.starts_with(cut.trim_end_matches('…')) || cut == s);
        }
    }
}
