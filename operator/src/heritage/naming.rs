//! How a heritage recording is named and found again. The job's name comes from a hash of the
//! recording (SdkAppId, room, UserId) and a sequence number, `heritage-{16 hex}-{n}`, so two
//! requests for the same recording at once try to create the same object and the API server's
//! create decides (the loser reads the winner's request id). `n` grows only past recordings of
//! that room and identity that have finished. Labels hold the request id, the recording's hash
//! and each Idempotency-Key's hash (values are never put in a label, only hashes).

use super::error::HeritageError;
use super::request::{HeritageRequest, Room};
use sha2::{Digest, Sha256};

/// The request id (the `x-scf-reqid` answered).
pub const REQUEST_ID: &str = "heritage.roomrec.dev/request-id";
/// The recording's hash: jobs of the same SdkAppId, room and UserId share it.
pub const RECORDING: &str = "heritage.roomrec.dev/recording";
/// Followed by an Idempotency-Key's hash; one label per key a job answered.
const KEY_PREFIX: &str = "heritage.roomrec.dev/key-";
/// The longest Idempotency-Key taken.
const MAX_KEY_LEN: usize = 255;

/// 64 bits of SHA-256 in hex: far from colliding among one deployment's recordings.
fn short_hash(text: &str) -> String {
    hex::encode(&Sha256::digest(text.as_bytes())[..8])
}

/// The recording's hash: a numeric room and a string room of the same digits are two rooms.
pub fn recording_hash(request: &HeritageRequest) -> String {
    let room = match &request.room {
        Room::Number(id) => format!("number:{id}"),
        Room::Text(id) => format!("text:{id}"),
    };
    short_hash(&format!(
        "{}\n{room}\n{}",
        request.sdk_app_id, request.user_id
    ))
}

/// The label a job carries for an Idempotency-Key (its value is always "true").
pub fn key_label(key: &str) -> String {
    format!("{KEY_PREFIX}{}", short_hash(key))
}

/// The `n`th job of a recording.
pub fn job_name(recording: &str, sequence: u32) -> String {
    format!("heritage-{recording}-{sequence}")
}

/// The sequence number of a job of `recording`, from its name.
pub fn sequence_of(name: &str, recording: &str) -> Option<u32> {
    name.strip_prefix(&format!("heritage-{recording}-"))?
        .parse()
        .ok()
}

/// The `Idempotency-Key` header: none, or 1 to 255 visible ASCII characters.
pub fn idempotency_key(header: Option<&[u8]>) -> Result<Option<String>, HeritageError> {
    let Some(bytes) = header else {
        return Ok(None);
    };
    if bytes.is_empty() || bytes.len() > MAX_KEY_LEN || !bytes.iter().all(u8::is_ascii_graphic) {
        return Err(HeritageError::invalid(
            "Idempotency-Key",
            format!("must be 1 to {MAX_KEY_LEN} visible ASCII characters, e.g. a UUID"),
        ));
    }
    Ok(Some(String::from_utf8_lossy(bytes).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::super::request::{CosConfig, HeritageRequest};
    use super::*;
    use roomrec_api::Mode;
    use roomrec_api::trtc::tc3::Secret;

    fn request(room: Room, user_id: &str) -> HeritageRequest {
        HeritageRequest {
            sdk_app_id: 1400000000,
            room,
            user_id: user_id.into(),
            user_sig: Secret::new("sig"),
            cos: CosConfig {
                region: "ap-shanghai".into(),
                bucket: "b-1".into(),
                path: String::new(),
                keys: None,
            },
            callback: None,
            mode: Mode::AudioMp3,
        }
    }

    #[test]
    fn a_recording_is_its_app_room_and_identity_and_names_fit_kubernetes() {
        let a = recording_hash(&request(Room::Number(43474), "rec"));
        assert_eq!(a, recording_hash(&request(Room::Number(43474), "rec")));
        assert_ne!(
            a,
            recording_hash(&request(Room::Text("43474".into()), "rec"))
        );
        assert_ne!(a, recording_hash(&request(Room::Number(43474), "rec2")));
        let name = job_name(&a, 12);
        assert_eq!(name.len(), "heritage-".len() + 16 + 3);
        assert_eq!(sequence_of(&name, &a), Some(12));
        assert_eq!(sequence_of("heritage-other-1", &a), None);
        assert!(key_label("k").len() <= "heritage.roomrec.dev/".len() + 63);
    }

    #[test]
    fn an_idempotency_key_is_visible_ascii_of_bounded_length() {
        assert_eq!(idempotency_key(None).unwrap(), None);
        assert_eq!(
            idempotency_key(Some(b"order-7")).unwrap().as_deref(),
            Some("order-7")
        );
        for bad in [&b""[..], b"two words", b"caf\xc3\xa9", &[b'k'; 256]] {
            assert!(idempotency_key(Some(bad)).is_err(), "{bad:?}");
        }
    }
}
