//! The heritage request: the serverless recording template's JSON body, parsed and checked
//! field by field so that any refusal names the one field to fix (`CosConfig.Bucket`, …).
//!
//! Field names are PascalCase and case-sensitive; a field the template did not have is refused
//! (a misspelt optional field would otherwise be dropped in silence), and so is a value of
//! another JSON type (`"RoomId": "43474"`). As in the template, an empty string or `null` in an
//! optional field counts as absent, and so does `RoomId: 0` beside a `StrRoomId`.

use super::error::HeritageError;
use super::rules;
use roomrec_api::Mode;
use roomrec_api::trtc::tc3::Secret;
use roomrec_api::trtc::usersig::{self, UserSigError};
use serde_json::{Map, Value};

/// The request's fields, in the template's documented order.
pub const FIELDS: [&str; 8] = [
    "SdkAppId",
    "RoomId",
    "StrRoomId",
    "UserId",
    "UserSig",
    "CosConfig",
    "Callback",
    "Mode",
];
/// The fields of `CosConfig`.
pub const COS_FIELDS: [&str; 5] = ["SecretId", "SecretKey", "Region", "Bucket", "Path"];
/// The field a refusal of the whole body names (not JSON, not an object, too large).
pub const BODY: &str = "Body";
/// The heritage codes `Mode` takes (MP3, MP4 video, MP4 audio and video).
const MODES: [&str; 3] = ["00", "01", "02"];

/// The room: TRTC's numeric room id, or a string room id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Room {
    Number(u64),
    Text(String),
}

/// A checked heritage request. Secret values (`UserSig`, `CosConfig.SecretKey`) print as `***`.
#[derive(Debug, Clone, PartialEq)]
pub struct HeritageRequest {
    pub sdk_app_id: u64,
    pub room: Room,
    /// The recording identity (the template's recorder joined the room as this UserId).
    pub user_id: String,
    pub user_sig: Secret,
    pub cos: CosConfig,
    pub callback: Option<String>,
    pub mode: Mode,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CosConfig {
    pub region: String,
    pub bucket: String,
    pub path: String,
    /// None: the deployment's own storage credentials (the template's execution role).
    pub keys: Option<CosKeys>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CosKeys {
    pub secret_id: Secret,
    pub secret_key: Secret,
}

/// Parses and checks a request body. `now` (Unix seconds) decides whether the UserSig has
/// expired; its signature is checked later, where the application's key is known.
pub fn parse(body: &[u8], now: i64) -> Result<HeritageRequest, HeritageError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        HeritageError::invalid(
            BODY,
            format!("is not JSON ({e}): send the request as a JSON object"),
        )
    })?;
    let top = Fields::of(&value, BODY, "", &FIELDS)?;

    let sdk_app_id = top.required_integer("SdkAppId")?;
    top.check("SdkAppId", rules::sdk_app_id(sdk_app_id))?;
    let str_room_id = top.optional_string("StrRoomId")?;
    if let Some(id) = str_room_id {
        top.check("StrRoomId", rules::str_room_id(id))?;
    }
    let room = match (top.optional_integer("RoomId")?, str_room_id) {
        // The template read RoomId as "given" only when it was not 0.
        (Some(0), Some(text)) | (None, Some(text)) => Room::Text(text.to_string()),
        (Some(id), _) => {
            top.check("RoomId", rules::room_id(id))?;
            Room::Number(id)
        }
        (None, None) => {
            return Err(HeritageError::invalid(
                "RoomId",
                "is required: send RoomId (a number, 1 to 4294967294) or StrRoomId (a string)",
            ));
        }
    };
    let user_id = top.required_string("UserId")?;
    top.check("UserId", rules::user_id(user_id))?;
    let user_sig = top.required_string("UserSig")?;
    check_user_sig_claims(user_sig, sdk_app_id, user_id, now)
        .map_err(|e| HeritageError::invalid("UserSig", user_sig_advice(&e, user_id)))?;

    let cos = Fields::of(
        top.required("CosConfig")?,
        "CosConfig",
        "CosConfig.",
        &COS_FIELDS,
    )?;
    let region = cos.required_string("Region")?;
    cos.check("Region", rules::cos_region(region))?;
    let bucket = cos.required_string("Bucket")?;
    cos.check("Bucket", rules::cos_bucket(bucket))?;
    let path = cos.required_string("Path")?;
    cos.check("Path", rules::cos_path(path))?;
    let keys = match (
        cos.optional_string("SecretId")?,
        cos.optional_string("SecretKey")?,
    ) {
        (None, None) => None,
        (Some(_), None) => return Err(cos.missing("SecretKey", "with SecretId")),
        (None, Some(_)) => return Err(cos.missing("SecretId", "with SecretKey")),
        (Some(id), Some(key)) => {
            cos.check("SecretId", credential(id))?;
            cos.check("SecretKey", credential(key))?;
            Some(CosKeys {
                secret_id: Secret::new(id),
                secret_key: Secret::new(key),
            })
        }
    };

    let callback = top.optional_string("Callback")?;
    if let Some(url) = callback {
        top.check("Callback", rules::http_url(url))?;
    }
    let mode = match top.optional_string("Mode")? {
        None => Mode::AudioMp3,
        Some(code) if MODES.contains(&code) => code.parse().expect("a heritage code parses"),
        Some(_) => {
            return Err(HeritageError::invalid(
                "Mode",
                "must be \"00\" (MP3, the default), \"01\" (MP4 video) or \"02\" (MP4 audio and video)",
            ));
        }
    };
    Ok(HeritageRequest {
        sdk_app_id,
        room,
        user_id: user_id.to_string(),
        user_sig: Secret::new(user_sig),
        cos: CosConfig {
            region: region.to_string(),
            bucket: bucket.to_string(),
            path: path.to_string(),
            keys,
        },
        callback: callback.map(str::to_string),
        mode,
    })
}

/// What can be checked of a UserSig without the application's key: its format, application,
/// user and expiry. `usersig::verify` checks those before the signature, so with no key at
/// hand a signature mismatch is all that may remain (it is checked where the key is known).
fn check_user_sig_claims(
    sig: &str,
    sdk_app_id: u64,
    user_id: &str,
    now: i64,
) -> Result<(), UserSigError> {
    match usersig::verify(sig, sdk_app_id, user_id, &[], now) {
        Ok(_) | Err(UserSigError::SignatureMismatch) => Ok(()),
        Err(e) => Err(e),
    }
}

/// A refused UserSig's message with the fix (the error itself never holds the UserSig).
pub fn user_sig_advice(error: &UserSigError, user_id: &str) -> String {
    format!("{error}: send a current UserSig of UserId {user_id:?} made with the application's key")
}

/// A SecretId or SecretKey: printable ASCII without spaces, as Tencent Cloud issues them.
fn credential(value: &str) -> Result<(), String> {
    if (1..=256).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        Err("must be 1 to 256 printable characters without spaces".into())
    }
}

/// One JSON object of the request, its fields looked up by name and refused naming
/// `{prefix}{name}`.
struct Fields<'a> {
    map: &'a Map<String, Value>,
    prefix: &'static str,
}

impl<'a> Fields<'a> {
    /// `value` as an object holding only `known` fields.
    fn of(
        value: &'a Value,
        field: &str,
        prefix: &'static str,
        known: &[&str],
    ) -> Result<Self, HeritageError> {
        let Value::Object(map) = value else {
            return Err(HeritageError::invalid(
                field,
                format!("must be a JSON object, not {}", kind(value)),
            ));
        };
        if let Some(unknown) = map.keys().find(|k| !known.contains(&k.as_str())) {
            let hint = known
                .iter()
                .find(|k| k.eq_ignore_ascii_case(unknown))
                .map(|k| format!(" (names are case-sensitive: {k})"))
                .unwrap_or_default();
            return Err(HeritageError::invalid(
                format!("{prefix}{unknown}"),
                format!(
                    "is not a field of the heritage request{hint}; the fields here are {}",
                    known.join(", ")
                ),
            ));
        }
        Ok(Fields { map, prefix })
    }

    fn path(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    fn check(&self, name: &str, verdict: Result<(), String>) -> Result<(), HeritageError> {
        verdict.map_err(|message| HeritageError::invalid(self.path(name), message))
    }

    fn missing(&self, name: &str, why: &str) -> HeritageError {
        HeritageError::invalid(self.path(name), format!("is required {why}"))
    }

    /// The value, `None` when absent or `null`.
    fn get(&self, name: &str) -> Option<&'a Value> {
        self.map.get(name).filter(|v| !v.is_null())
    }

    fn required(&self, name: &str) -> Result<&'a Value, HeritageError> {
        self.get(name).ok_or_else(|| self.missing(name, ""))
    }

    fn optional_integer(&self, name: &str) -> Result<Option<u64>, HeritageError> {
        self.get(name)
            .map(|value| match value {
                Value::Number(n) => n.as_u64().ok_or_else(|| {
                    HeritageError::invalid(
                        self.path(name),
                        format!("must be a whole number, not {n}"),
                    )
                }),
                other => Err(HeritageError::invalid(
                    self.path(name),
                    format!("must be a JSON number, not {}", kind(other)),
                )),
            })
            .transpose()
    }

    fn required_integer(&self, name: &str) -> Result<u64, HeritageError> {
        self.optional_integer(name)?
            .ok_or_else(|| self.missing(name, ""))
    }

    /// A string; `""` counts as absent.
    fn optional_string(&self, name: &str) -> Result<Option<&'a str>, HeritageError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str()).filter(|s| !s.is_empty())),
            Some(other) => Err(HeritageError::invalid(
                self.path(name),
                format!("must be a JSON string, not {}", kind(other)),
            )),
        }
    }

    fn required_string(&self, name: &str) -> Result<&'a str, HeritageError> {
        self.optional_string(name)?
            .ok_or_else(|| self.missing(name, "(a non-empty string)"))
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "true or false",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    pub const APP: u64 = 1400000000;
    pub const APP_KEY: &[u8] = b"5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e";
    pub const NOW: i64 = 1_780_000_000;

    pub fn sig(user: &str) -> String {
        usersig::generate(APP, user, APP_KEY, NOW - 60, 86400, None)
    }

    /// The template's documented sample, with a real UserSig.
    pub fn sample() -> Value {
        json!({
            "SdkAppId": 1400000000u64,
            "RoomId": 43474,
            "UserId": "user_55952145",
            "Mode": "02",
            "UserSig": sig("user_55952145"),
            "CosConfig": {"Region": "ap-shanghai", "Bucket": "test-123456789", "Path": "/trtc"}
        })
    }

    fn parsed(value: &Value) -> Result<HeritageRequest, HeritageError> {
        parse(value.to_string().as_bytes(), NOW)
    }

    fn refused_field(value: &Value) -> String {
        match parsed(value) {
            Err(HeritageError::Invalid { field, .. }) => field,
            other => panic!("not refused naming a field: {other:?}"),
        }
    }

    fn with(edits: &[(&str, Value)]) -> Value {
        let mut value = sample();
        for (path, v) in edits {
            match path.split_once('.') {
                Some((outer, inner)) => value[outer][inner] = v.clone(),
                None => value[*path] = v.clone(),
            }
        }
        value
    }

    fn without(field: &str) -> Value {
        let mut value = sample();
        match field.split_once('.') {
            Some((outer, inner)) => value[outer].as_object_mut().unwrap().remove(inner),
            None => value.as_object_mut().unwrap().remove(field),
        };
        value
    }

    #[test]
    fn the_templates_sample_parses_with_mode_02_and_the_deployments_keys() {
        let request = parsed(&sample()).unwrap();
        assert_eq!(request.sdk_app_id, APP);
        assert_eq!(request.room, Room::Number(43474));
        assert_eq!(request.user_id, "user_55952145");
        assert_eq!(request.mode, Mode::AudioVideoMp4);
        assert_eq!(request.cos.bucket, "test-123456789");
        assert_eq!(request.cos.path, "/trtc");
        assert_eq!(request.cos.keys, None);
        assert_eq!(request.callback, None);
    }

    #[test]
    fn mode_defaults_to_00_and_takes_only_the_heritage_codes() {
        assert_eq!(parsed(&without("Mode")).unwrap().mode, Mode::AudioMp3);
        assert_eq!(
            parsed(&with(&[("Mode", json!(""))])).unwrap().mode,
            Mode::AudioMp3
        );
        assert_eq!(
            parsed(&with(&[("Mode", json!("01"))])).unwrap().mode,
            Mode::VideoMp4
        );
        for bad in [json!("03"), json!("AudioMp3"), json!(2)] {
            assert_eq!(refused_field(&with(&[("Mode", bad)])), "Mode");
        }
    }

    #[test]
    fn room_id_wins_over_str_room_id_and_one_of_them_is_required() {
        let both = with(&[("StrRoomId", json!("math-7"))]);
        assert_eq!(parsed(&both).unwrap().room, Room::Number(43474));
        let text = with(&[("RoomId", json!(null)), ("StrRoomId", json!("math-7"))]);
        assert_eq!(parsed(&text).unwrap().room, Room::Text("math-7".into()));
        let zero = with(&[("RoomId", json!(0)), ("StrRoomId", json!("math-7"))]);
        assert_eq!(parsed(&zero).unwrap().room, Room::Text("math-7".into()));
        assert_eq!(refused_field(&without("RoomId")), "RoomId");
        assert_eq!(refused_field(&with(&[("RoomId", json!(0))])), "RoomId");
    }

    #[test]
    fn each_fields_refusal_names_that_field() {
        let cases: Vec<(&str, Value)> = vec![
            ("SdkAppId", without("SdkAppId")),
            ("SdkAppId", with(&[("SdkAppId", json!(1300000000))])),
            ("SdkAppId", with(&[("SdkAppId", json!(1400000000.5))])),
            ("RoomId", with(&[("RoomId", json!(4294967295u64))])),
            ("RoomId", with(&[("RoomId", json!(-1))])),
            ("StrRoomId", with(&[("StrRoomId", json!("a/b"))])),
            ("UserId", without("UserId")),
            ("UserId", with(&[("UserId", json!("user 1"))])),
            ("UserSig", without("UserSig")),
            ("UserSig", with(&[("UserSig", json!("not-a-usersig"))])),
            ("UserSig", with(&[("UserSig", json!(sig("someone_else")))])),
            ("CosConfig", without("CosConfig")),
            ("CosConfig", with(&[("CosConfig", json!("ap-shanghai"))])),
            ("CosConfig.Region", without("CosConfig.Region")),
            (
                "CosConfig.Region",
                with(&[("CosConfig.Region", json!("Shanghai"))]),
            ),
            ("CosConfig.Bucket", without("CosConfig.Bucket")),
            (
                "CosConfig.Bucket",
                with(&[("CosConfig.Bucket", json!("test"))]),
            ),
            ("CosConfig.Path", without("CosConfig.Path")),
            (
                "CosConfig.Path",
                with(&[("CosConfig.Path", json!("/a\u{7}"))]),
            ),
            (
                "CosConfig.SecretKey",
                with(&[("CosConfig.SecretId", json!("AKIDx"))]),
            ),
            (
                "CosConfig.SecretId",
                with(&[("CosConfig.SecretKey", json!("k"))]),
            ),
            (
                "Callback",
                with(&[("Callback", json!("lms.example.com/hook"))]),
            ),
        ];
        for (field, request) in cases {
            assert_eq!(refused_field(&request), field, "{request}");
        }
    }

    #[test]
    fn a_usersig_of_another_app_or_expired_is_refused_naming_usersig() {
        let other_app = usersig::generate(APP + 1, "user_55952145", APP_KEY, NOW, 86400, None);
        let expired = usersig::generate(APP, "user_55952145", APP_KEY, NOW - 7200, 3600, None);
        for sig in [other_app, expired] {
            match parsed(&with(&[("UserSig", json!(sig))])) {
                Err(HeritageError::Invalid { field, message }) => {
                    assert_eq!(field, "UserSig");
                    assert!(!message.contains(&sig), "the message holds the UserSig");
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn unknown_fields_and_wrong_types_are_refused_naming_them() {
        assert_eq!(refused_field(&with(&[("Region", json!("x"))])), "Region");
        assert_eq!(
            refused_field(&with(&[("CosConfig.Endpoint", json!("x"))])),
            "CosConfig.Endpoint"
        );
        match parsed(&with(&[("sdkAppId", json!(1))])) {
            Err(HeritageError::Invalid { field, message }) => {
                assert_eq!(field, "sdkAppId");
                assert!(message.contains("case-sensitive: SdkAppId"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            refused_field(&with(&[("SdkAppId", json!("1400000000"))])),
            "SdkAppId"
        );
        assert_eq!(
            refused_field(&with(&[("RoomId", json!("43474"))])),
            "RoomId"
        );
        assert_eq!(
            refused_field(&with(&[("UserId", json!(55952145))])),
            "UserId"
        );
        assert_eq!(
            refused_field(&with(&[("Callback", json!(true))])),
            "Callback"
        );
        for body in [&b"{"[..], b"", b"[]", b"\"SdkAppId\"", b"\xff\xfe"] {
            match parse(body, NOW) {
                Err(HeritageError::Invalid { field, .. }) => assert_eq!(field, BODY),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn secret_values_never_show_in_debug_output() {
        let request = parsed(&with(&[
            ("CosConfig.SecretId", json!("AKIDEXAMPLE")),
            ("CosConfig.SecretKey", json!("very-secret-key")),
        ]))
        .unwrap();
        let text = format!("{request:?}");
        assert!(!text.contains("very-secret-key") && !text.contains(request.user_sig.expose()));
    }

    /// Any JSON value: scalars, and arrays and objects of them, the objects often keyed by
    /// the request's own field names.
    fn any_json() -> impl Strategy<Value = Value> {
        let key = prop_oneof![
            proptest::sample::select(FIELDS.to_vec()).prop_map(str::to_string),
            proptest::sample::select(COS_FIELDS.to_vec()).prop_map(str::to_string),
            "[A-Za-z]{0,10}",
        ];
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            ".{0,40}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 48, 8, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::btree_map(key.clone(), inner, 0..9)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// The request's fields with a prefix, the body, or a key the input itself holds.
    fn nameable(field: &str, input: &Value) -> bool {
        let known = field == BODY
            || FIELDS.contains(&field)
            || field
                .strip_prefix("CosConfig.")
                .is_some_and(|f| COS_FIELDS.contains(&f));
        let held = |v: &Value| v.as_object().is_some_and(|o| o.contains_key(field));
        let nested = field.split_once('.').is_some_and(|(outer, inner)| {
            input
                .get(outer)
                .and_then(Value::as_object)
                .is_some_and(|o| o.contains_key(inner))
        });
        known || held(input) || nested
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn any_json_value_parses_or_is_refused_naming_a_field(value in any_json()) {
            match parse(value.to_string().as_bytes(), NOW) {
                Ok(_) => {}
                Err(HeritageError::Invalid { field, .. }) => {
                    prop_assert!(nameable(&field, &value), "{field:?} for {value}");
                }
                Err(other) => prop_assert!(false, "not a field error: {other:?}"),
            }
        }

        #[test]
        fn any_bytes_parse_or_are_refused_naming_a_field(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            match parse(&body, NOW) {
                Ok(_) => {}
                Err(HeritageError::Invalid { field, .. }) => {
                    let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    prop_assert!(nameable(&field, &value), "{field:?}");
                }
                Err(other) => prop_assert!(false, "not a field error: {other:?}"),
            }
        }

        /// The sample with one field replaced by anything: it still parses, or the refusal
        /// names that field (or the UserSig, which no longer matches a changed app or user).
        #[test]
        fn one_field_replaced_is_the_field_refused(
            field in proptest::sample::select(FIELDS.to_vec()),
            replacement in any_json(),
        ) {
            let mut value = sample();
            value[field] = replacement;
            match parse(value.to_string().as_bytes(), NOW) {
                Ok(_) => {}
                Err(HeritageError::Invalid { field: named, .. }) => {
                    let sig_follows = matches!(field, "SdkAppId" | "UserId") && named == "UserSig";
                    prop_assert!(
                        named == field || named.starts_with(&format!("{field}.")) || sig_follows,
                        "{field} replaced, {named} named: {value}"
                    );
                }
                Err(other) => prop_assert!(false, "not a field error: {other:?}"),
            }
        }
    }
}
