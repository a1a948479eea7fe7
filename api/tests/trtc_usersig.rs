//! UserSig (TLSSigAPIv2) against UserSigs made by Tencent's own Python library
//! (`tests/vectors/usersig.json`), round trips of generated ones, and refusal of bad input.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use flate2::Compression;
use flate2::write::ZlibEncoder;
use proptest::prelude::*;
use roomrec_api::trtc::usersig::{
    self, DecodedUserSig, MAX_ENCODED_LEN, MAX_INFLATED_LEN, Room, UserBuf, UserSigError, privilege,
};
use serde::Deserialize;
use std::io::Write;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Vector {
    sdk_app_id: u64,
    secret_key: String,
    user_id: String,
    time: i64,
    expire: i64,
    user_sig: String,
    decoded_json: serde_json::Value,
}

fn vectors() -> Vec<Vector> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/usersig.json");
    let text = std::fs::read_to_string(path).expect("tests/vectors/usersig.json");
    let vectors: Vec<Vector> = serde_json::from_str(&text).expect("usersig.json parses");
    assert!(!vectors.is_empty());
    vectors
}

/// A UserSig wrapping arbitrary bytes as its JSON.
fn wrap(json: &[u8]) -> String {
    let mut encoder = ZlibEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(json).unwrap();
    STANDARD
        .encode(encoder.finish().unwrap())
        .replace('+', "*")
        .replace('/', "-")
        .replace('=', "_")
}

/// The JSON inside a UserSig, as text.
fn unwrap(usersig: &str) -> String {
    let standard = usersig
        .replace('*', "+")
        .replace('-', "/")
        .replace('_', "=");
    let compressed = STANDARD.decode(standard).unwrap();
    let mut out = String::new();
    std::io::Read::read_to_string(
        &mut flate2::read::ZlibDecoder::new(&compressed[..]),
        &mut out,
    )
    .unwrap();
    out
}

#[test]
fn usersig_vectors_verify_at_their_time() {
    for v in vectors() {
        let decoded = usersig::verify(
            &v.user_sig,
            v.sdk_app_id,
            &v.user_id,
            v.secret_key.as_bytes(),
            v.time,
        )
        .unwrap_or_else(|e| panic!("{}: {e}", v.user_id));
        assert_eq!(decoded.sdk_app_id, v.sdk_app_id);
        assert_eq!(decoded.user_id, v.user_id);
        assert_eq!(decoded.issued_at, v.time);
        assert_eq!(decoded.expire_seconds, v.expire);
        assert_eq!(decoded.expires_at(), v.time + v.expire);
        assert_eq!(decoded.userbuf, None);
        // The last valid second is time + expire.
        usersig::verify(
            &v.user_sig,
            v.sdk_app_id,
            &v.user_id,
            v.secret_key.as_bytes(),
            v.time + v.expire,
        )
        .unwrap();
    }
}

#[test]
fn usersig_vectors_decode_to_their_json_without_the_key() {
    for v in vectors() {
        let decoded = usersig::decode(&v.user_sig).unwrap();
        let json = &v.decoded_json;
        assert_eq!(json["TLS.ver"], "2.0");
        assert_eq!(json["TLS.identifier"], decoded.user_id.as_str());
        assert_eq!(json["TLS.sdkappid"], decoded.sdk_app_id);
        assert_eq!(json["TLS.time"], decoded.issued_at);
        assert_eq!(json["TLS.expire"], decoded.expire_seconds);
        assert_eq!(json["TLS.sig"], decoded.sig.as_str());
        assert_eq!(decoded.userbuf_base64, None);
    }
}

/// Python's `json.dumps` keeps the dict's insertion order (ver, identifier, sdkappid, expire,
/// time, sig) with ", " and ": " separators, and `generate` writes that same JSON text, byte for
/// byte, so the HMAC and `TLS.sig` are Tencent's too. The compressed bytes are not: Tencent's
/// strings come from C zlib's deflate (Python's `zlib.compress`, level 6), flate2's Rust backend
/// (miniz_oxide) makes another, equally valid, deflate stream of the same JSON at the same level
/// (linking C zlib into the workspace just for this was not worth it). So the test compares
/// what any verifier reads: the inflated JSON text, exactly, and `TLS.sig`.
#[test]
fn usersig_vectors_reproduced_exactly_up_to_zlib() {
    for v in vectors() {
        let made = usersig::generate(
            v.sdk_app_id,
            &v.user_id,
            v.secret_key.as_bytes(),
            v.time,
            v.expire,
            None,
        );
        let expected_json = unwrap(&v.user_sig);
        assert_eq!(unwrap(&made), expected_json, "{}", v.user_id);
        let decoded: serde_json::Value = serde_json::from_str(&expected_json).unwrap();
        assert_eq!(decoded, v.decoded_json);
        assert_eq!(
            usersig::decode(&made).unwrap(),
            usersig::decode(&v.user_sig).unwrap()
        );
        assert_eq!(
            usersig::decode(&made).unwrap().sig,
            v.decoded_json["TLS.sig"]
        );
    }
}

#[test]
fn usersig_vectors_refused_when_expired() {
    for v in vectors() {
        let now = v.time + v.expire + 1;
        let err = usersig::verify(
            &v.user_sig,
            v.sdk_app_id,
            &v.user_id,
            v.secret_key.as_bytes(),
            now,
        )
        .unwrap_err();
        assert_eq!(
            err,
            UserSigError::Expired {
                expired_at: v.time + v.expire,
                now
            }
        );
        assert!(err.to_string().contains("expired"), "{err}");
    }
}

#[test]
fn usersig_vectors_refused_with_another_key_user_or_app() {
    for v in vectors() {
        let key = v.secret_key.as_bytes();
        let mut other_key = v.secret_key.clone().into_bytes();
        other_key[0] ^= 1;
        assert_eq!(
            usersig::verify(&v.user_sig, v.sdk_app_id, &v.user_id, &other_key, v.time),
            Err(UserSigError::SignatureMismatch)
        );
        assert_eq!(
            usersig::verify(&v.user_sig, v.sdk_app_id, "someone_else", key, v.time),
            Err(UserSigError::OtherUser {
                expected: "someone_else".into(),
                found: v.user_id.clone()
            })
        );
        assert_eq!(
            usersig::verify(&v.user_sig, v.sdk_app_id + 1, &v.user_id, key, v.time),
            Err(UserSigError::OtherApp {
                expected: v.sdk_app_id + 1,
                found: v.sdk_app_id
            })
        );
        let message = usersig::verify(&v.user_sig, 1400999999, &v.user_id, key, v.time)
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("1400999999") && message.contains(&v.sdk_app_id.to_string()),
            "{message}"
        );
        assert!(!message.contains(&v.secret_key));
    }
}

#[test]
fn usersig_altered_fields_fail_the_signature() {
    let v = &vectors()[0];
    let json = unwrap(&v.user_sig);
    // A longer validity, same signature: the HMAC no longer matches.
    let altered = json.replace("\"TLS.expire\": 86400", "\"TLS.expire\": 864000");
    assert_ne!(altered, json);
    assert_eq!(
        usersig::verify(
            &wrap(altered.as_bytes()),
            v.sdk_app_id,
            &v.user_id,
            v.secret_key.as_bytes(),
            v.time
        ),
        Err(UserSigError::SignatureMismatch)
    );
    // Compact JSON in another key order verifies: order and spacing do not matter.
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    let compact = serde_json::to_string(&value).unwrap();
    assert_ne!(compact, json);
    usersig::verify(
        &wrap(compact.as_bytes()),
        v.sdk_app_id,
        &v.user_id,
        v.secret_key.as_bytes(),
        v.time,
    )
    .unwrap();
}

const KEY: &[u8] = b"5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e";

#[test]
fn usersig_generated_round_trip_without_userbuf() {
    let sig = usersig::generate(1400000000, "recorder_bot_1", KEY, 1_764_000_000, 600, None);
    let decoded = usersig::verify(&sig, 1400000000, "recorder_bot_1", KEY, 1_764_000_300).unwrap();
    assert_eq!(
        decoded,
        DecodedUserSig {
            sdk_app_id: 1400000000,
            user_id: "recorder_bot_1".into(),
            issued_at: 1_764_000_000,
            expire_seconds: 600,
            userbuf_base64: None,
            userbuf: None,
            sig: decoded.sig.clone(),
        }
    );
    assert_eq!(usersig::decode(&sig).unwrap(), decoded);
    assert!(
        unwrap(&sig).starts_with("{\"TLS.ver\": \"2.0\", \"TLS.identifier\": \"recorder_bot_1\", ")
    );
}

#[test]
fn usersig_generated_round_trip_with_numeric_room_userbuf() {
    let at = 1_764_000_000;
    let userbuf = UserBuf::new(
        "recorder_bot_1",
        1400000000,
        Room::Numeric(43474),
        (at + 3600) as u32,
        privilege::ENTER | privilege::RECEIVE_AUDIO | privilege::RECEIVE_VIDEO,
    )
    .unwrap();
    let sig = usersig::generate(1400000000, "recorder_bot_1", KEY, at, 3600, Some(&userbuf));
    let decoded = usersig::verify(&sig, 1400000000, "recorder_bot_1", KEY, at).unwrap();
    let got = decoded.userbuf.clone().unwrap();
    assert_eq!(got, userbuf);
    assert_eq!(got.version(), 0);
    assert_eq!(got.room(), &Room::Numeric(43474));
    assert_eq!(got.privilege_map(), 2 | 8 | 32);
    assert_eq!(got.expires_at(), (at + 3600) as u32);
    assert_eq!(got.account_type(), 0);
    assert_eq!(
        decoded.userbuf_base64.as_deref(),
        Some(STANDARD.encode(userbuf.encode()).as_str())
    );
    assert_eq!(usersig::decode(&sig).unwrap(), decoded);
    // Python's order: ..., "TLS.time", "TLS.userbuf", "TLS.sig".
    let json = unwrap(&sig);
    let time = json.find("\"TLS.time\"").unwrap();
    let buf = json.find("\"TLS.userbuf\"").unwrap();
    let sig_at = json.find("\"TLS.sig\"").unwrap();
    assert!(time < buf && buf < sig_at, "{json}");
    // Removing the userbuf breaks the signature.
    let mut value: serde_json::Value = serde_json::from_str(&json).unwrap();
    value.as_object_mut().unwrap().remove("TLS.userbuf");
    assert_eq!(
        usersig::verify(
            &wrap(value.to_string().as_bytes()),
            1400000000,
            "recorder_bot_1",
            KEY,
            at
        ),
        Err(UserSigError::SignatureMismatch)
    );
}

#[test]
fn usersig_generated_round_trip_with_string_room_userbuf() {
    let at = 1_764_000_000;
    let userbuf = UserBuf::new(
        "student-07",
        1400000000,
        Room::Str("class-42".into()),
        (at + 60) as u32,
        privilege::ALL,
    )
    .unwrap();
    let sig = usersig::generate(1400000000, "student-07", KEY, at, 60, Some(&userbuf));
    let decoded = usersig::verify(&sig, 1400000000, "student-07", KEY, at + 60).unwrap();
    let got = decoded.userbuf.unwrap();
    assert_eq!(got.version(), 1);
    assert_eq!(got.room(), &Room::Str("class-42".into()));
    assert_eq!(got.privilege_map(), 255);
    assert_eq!(got.account(), "student-07");
    assert_eq!(got.sdk_app_id(), 1400000000);
    assert!(matches!(
        usersig::verify(&sig, 1400000000, "student-07", KEY, at + 61),
        Err(UserSigError::Expired { .. })
    ));
}

#[test]
fn usersig_userbuf_must_match_the_usersig() {
    let at = 1_764_000_000;
    // A userbuf for another account, or that expires before the UserSig, is refused.
    let other = UserBuf::new(
        "someone",
        1400000000,
        Room::Numeric(1),
        (at + 600) as u32,
        255,
    )
    .unwrap();
    let sig = usersig::generate(1400000000, "me", KEY, at, 600, Some(&other));
    assert!(matches!(
        usersig::verify(&sig, 1400000000, "me", KEY, at),
        Err(UserSigError::BadUserBuf(m)) if m.contains("someone")
    ));
    let other_app =
        UserBuf::new("me", 1400000001, Room::Numeric(1), (at + 600) as u32, 255).unwrap();
    let sig = usersig::generate(1400000000, "me", KEY, at, 600, Some(&other_app));
    assert!(matches!(
        usersig::verify(&sig, 1400000000, "me", KEY, at),
        Err(UserSigError::BadUserBuf(m)) if m.contains("1400000001")
    ));
    let short = UserBuf::new("me", 1400000000, Room::Numeric(1), (at + 10) as u32, 255).unwrap();
    let sig = usersig::generate(1400000000, "me", KEY, at, 600, Some(&short));
    usersig::verify(&sig, 1400000000, "me", KEY, at + 10).unwrap();
    assert_eq!(
        usersig::verify(&sig, 1400000000, "me", KEY, at + 11),
        Err(UserSigError::Expired {
            expired_at: at + 10,
            now: at + 11
        })
    );
}

#[test]
fn usersig_non_ascii_user_is_escaped_like_python() {
    let sig = usersig::generate(1, "用户\"1", KEY, 0, 10, None);
    assert!(unwrap(&sig).contains(r#""TLS.identifier": "\u7528\u6237\"1""#));
    usersig::verify(&sig, 1, "用户\"1", KEY, 0).unwrap();
}

#[test]
fn usersig_malformed_inputs_give_typed_errors() {
    use UserSigError::*;
    assert!(matches!(usersig::decode(""), Err(Zlib(_))));
    assert!(matches!(usersig::decode("not base64!"), Err(Base64(_))));
    assert!(matches!(
        usersig::decode("eJyrVgrxCdYrSy1SslJQMt"),
        Err(Base64(_) | Zlib(_))
    ));
    assert!(matches!(usersig::decode("AAAA"), Err(Zlib(_))));
    assert!(matches!(usersig::decode(&wrap(b"not json")), Err(Json(_))));
    assert!(matches!(usersig::decode(&wrap(b"[1,2]")), Err(Json(_))));
    assert_eq!(
        usersig::decode(&wrap(b"{}")),
        Err(MissingField { field: "TLS.ver" })
    );
    assert_eq!(
        usersig::decode(&wrap(br#"{"TLS.ver": "1.0"}"#)),
        Err(Version {
            found: "1.0".into()
        })
    );
    assert_eq!(
        usersig::decode(&wrap(br#"{"TLS.ver": 2}"#)),
        Err(WrongFieldType {
            field: "TLS.ver",
            expected: "a string"
        })
    );
    let base = r#""TLS.ver": "2.0", "TLS.identifier": "u", "TLS.sdkappid": 1, "TLS.expire": 1, "TLS.time": 1, "TLS.sig": "AAAA""#;
    usersig::decode(&wrap(format!("{{{base}}}").as_bytes())).unwrap();
    for (field, bad, expected) in [
        ("TLS.identifier", "1", "a string"),
        ("TLS.sdkappid", "\"1\"", "a non-negative integer"),
        ("TLS.sdkappid", "-1", "a non-negative integer"),
        ("TLS.expire", "1.5", "an integer"),
        ("TLS.time", "null", "an integer"),
        ("TLS.sig", "[]", "a string"),
        ("TLS.userbuf", "7", "a string"),
    ] {
        let mut value: serde_json::Value = serde_json::from_str(&format!("{{{base}}}")).unwrap();
        value[field] = serde_json::from_str(bad).unwrap();
        let text = value.to_string();
        let err = usersig::decode(&wrap(text.as_bytes())).unwrap_err();
        assert_eq!(err, WrongFieldType { field, expected }, "{text}");
        assert!(err.to_string().contains(field));
    }
    // serde_json refuses numbers out of f64's range: a JSON error, not a panic.
    let huge_time = format!("{{{base}}}").replace("\"TLS.time\": 1", "\"TLS.time\": 1e400");
    assert!(matches!(
        usersig::decode(&wrap(huge_time.as_bytes())),
        Err(Json(_))
    ));
    // Integers beyond i64 are the wrong type.
    let big_time =
        format!("{{{base}}}").replace("\"TLS.time\": 1", "\"TLS.time\": 99999999999999999999");
    assert_eq!(
        usersig::decode(&wrap(big_time.as_bytes())),
        Err(WrongFieldType {
            field: "TLS.time",
            expected: "an integer"
        })
    );
    for field in [
        "TLS.identifier",
        "TLS.sdkappid",
        "TLS.expire",
        "TLS.time",
        "TLS.sig",
    ] {
        let mut value: serde_json::Value = serde_json::from_str(&format!("{{{base}}}")).unwrap();
        value.as_object_mut().unwrap().remove(field);
        assert_eq!(
            usersig::decode(&wrap(value.to_string().as_bytes())),
            Err(MissingField { field })
        );
    }
    let bad_userbuf = format!("{{{base}, \"TLS.userbuf\": \"AAAA\"}}");
    assert!(matches!(
        usersig::decode(&wrap(bad_userbuf.as_bytes())),
        Err(BadUserBuf(_))
    ));
    let not_base64 = format!("{{{base}, \"TLS.userbuf\": \"!!\"}}");
    assert!(matches!(
        usersig::decode(&wrap(not_base64.as_bytes())),
        Err(BadUserBuf(_))
    ));
    // A signature that is not base64 is a mismatch, not a panic.
    let bad_sig = base.replace("\"AAAA\"", "\"%%%\"");
    assert_eq!(
        usersig::verify(&wrap(format!("{{{bad_sig}}}").as_bytes()), 1, "u", KEY, 1),
        Err(SignatureMismatch)
    );
    // time + expire overflowing i64 does not panic.
    let huge = base.replace(
        "\"TLS.expire\": 1",
        &format!("\"TLS.expire\": {}", i64::MAX),
    );
    assert_eq!(
        usersig::verify(
            &wrap(format!("{{{huge}}}").as_bytes()),
            1,
            "u",
            KEY,
            i64::MAX
        ),
        Err(SignatureMismatch)
    );
}

#[test]
fn usersig_trailing_bytes_after_the_zlib_stream_are_refused() {
    let v = &vectors()[0];
    let standard = v
        .user_sig
        .replace('*', "+")
        .replace('-', "/")
        .replace('_', "=");
    let mut compressed = STANDARD.decode(standard).unwrap();
    compressed.extend_from_slice(b"junk");
    let sig = STANDARD
        .encode(compressed)
        .replace('+', "*")
        .replace('/', "-")
        .replace('=', "_");
    assert!(matches!(usersig::decode(&sig), Err(UserSigError::Zlib(_))));
}

#[test]
fn usersig_too_large_inputs_are_refused() {
    let long = "A".repeat(MAX_ENCODED_LEN + 1);
    assert!(matches!(
        usersig::decode(&long),
        Err(UserSigError::TooLarge { max, .. }) if max == MAX_ENCODED_LEN
    ));
    // A zlib bomb: a few hundred bytes that inflate to 1 MiB.
    let bomb = wrap(&vec![b' '; 1 << 20]);
    assert!(bomb.len() < MAX_ENCODED_LEN, "{}", bomb.len());
    assert_eq!(
        usersig::decode(&bomb),
        Err(UserSigError::TooLarge {
            what: "the inflated UserSig",
            max: MAX_INFLATED_LEN
        })
    );
    // Exactly at the limit is fine as far as inflating goes (then it is not JSON).
    assert!(matches!(
        usersig::decode(&wrap(&vec![b' '; MAX_INFLATED_LEN])),
        Err(UserSigError::Json(_))
    ));
}

fn any_usersig_error(result: Result<DecodedUserSig, UserSigError>) {
    if let Err(e) = result {
        // Every error has a message.
        assert!(!e.to_string().is_empty());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn usersig_decode_and_verify_never_panic_on_strings(s in ".{0,400}") {
        any_usersig_error(usersig::decode(&s));
        any_usersig_error(usersig::verify(&s, 1400000000, "u", KEY, 0));
    }

    #[test]
    fn usersig_decode_and_verify_never_panic_on_base64ish(s in "[A-Za-z0-9*_-]{0,400}") {
        any_usersig_error(usersig::decode(&s));
        any_usersig_error(usersig::verify(&s, 1400000000, "u", KEY, 0));
    }

    #[test]
    fn usersig_decode_and_verify_never_panic_on_arbitrary_compressed_bytes(
        bytes in proptest::collection::vec(any::<u8>(), 0..600)
    ) {
        let sig = wrap(&bytes);
        any_usersig_error(usersig::decode(&sig));
        any_usersig_error(usersig::verify(&sig, 1400000000, "u", KEY, 0));
        let raw = STANDARD.encode(&bytes).replace('+', "*").replace('/', "-").replace('=', "_");
        any_usersig_error(usersig::decode(&raw));
        let lossy = String::from_utf8_lossy(&bytes);
        any_usersig_error(usersig::decode(&lossy));
    }

    #[test]
    fn usersig_decode_never_panics_on_json_like_objects(
        ver in prop_oneof![Just("\"2.0\"".to_string()), ".{0,8}"],
        identifier in ".{0,20}",
        numbers in proptest::collection::vec(prop_oneof![
            any::<i64>().prop_map(|n| n.to_string()),
            any::<u64>().prop_map(|n| n.to_string()),
            any::<f64>().prop_map(|n| n.to_string()),
            ".{0,6}",
        ], 3),
        userbuf in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..80)),
    ) {
        let mut json = format!(
            "{{\"TLS.ver\": {ver}, \"TLS.identifier\": {}, \"TLS.sdkappid\": {}, \"TLS.expire\": {}, \"TLS.time\": {}, \"TLS.sig\": \"AAAA\"",
            serde_json::Value::String(identifier.clone()), numbers[0], numbers[1], numbers[2]
        );
        if let Some(userbuf) = &userbuf {
            json.push_str(&format!(", \"TLS.userbuf\": \"{}\"", STANDARD.encode(userbuf)));
        }
        json.push('}');
        let sig = wrap(json.as_bytes());
        any_usersig_error(usersig::decode(&sig));
        any_usersig_error(usersig::verify(&sig, 1400000000, &identifier, KEY, i64::MAX));
        if let Some(userbuf) = &userbuf {
            let _ = UserBuf::decode(userbuf);
        }
    }

    #[test]
    fn usersig_generated_always_verifies(
        app in 1u64..=u32::MAX as u64,
        user in "[A-Za-z0-9_-]{1,32}",
        at in 0i64..4_000_000_000,
        expire in 1i64..=400_000_000,
        room in proptest::option::of(prop_oneof![
            any::<u32>().prop_map(Room::Numeric),
            "[A-Za-z0-9_-]{1,64}".prop_map(Room::Str),
        ]),
        privileges in any::<u32>(),
        key in proptest::collection::vec(any::<u8>(), 0..80),
    ) {
        let userbuf = room.map(|room| {
            UserBuf::new(&user, app as u32, room, (at + expire).min(u32::MAX as i64) as u32, privileges).unwrap()
        });
        let sig = usersig::generate(app, &user, &key, at, expire, userbuf.as_ref());
        let decoded = usersig::verify(&sig, app, &user, &key, at).unwrap();
        prop_assert_eq!(&decoded.userbuf, &userbuf);
        prop_assert_eq!(decoded.expires_at(), at + expire);
        prop_assert_eq!(usersig::decode(&sig).unwrap(), decoded);
    }
}
