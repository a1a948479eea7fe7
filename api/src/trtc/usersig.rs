//! UserSig (TLSSigAPIv2): the ticket that lets `userId` enter rooms of `sdkAppId` until
//! `time + expire`, optionally carrying a PrivateMapKey `userbuf` (room and privileges).
//!
//! Format, as Tencent's libraries make it:
//!
//! 1. `TLS.sig` = standard base64 of HMAC-SHA256(key, lines), the lines being
//!    `TLS.identifier:{user}\nTLS.sdkappid:{app}\nTLS.time:{t}\nTLS.expire:{e}\n` and, with a
//!    userbuf, `TLS.userbuf:{standard base64 of userbuf}\n`.
//! 2. A JSON object with `TLS.ver` ("2.0"), `TLS.identifier`, `TLS.sdkappid`, `TLS.expire`,
//!    `TLS.time`, optional `TLS.userbuf` and `TLS.sig`.
//! 3. zlib-compressed, standard base64, then `+`→`*`, `/`→`-`, `=`→`_`.
//!
//! [`generate`] writes the JSON exactly as Python's `json.dumps` does in Tencent's Python
//! library (same key order, `", "` and `": "` separators, non-ASCII escaped as `\uXXXX`) and
//! compresses it at zlib's default level 6. The inflated JSON, and so `TLS.sig`, is byte for
//! byte what Tencent's library makes (checked against its vectors in
//! `api/tests/vectors/usersig.json`); the compressed bytes differ, because flate2's Rust deflate
//! (miniz_oxide) and C zlib choose different, equally valid, encodings.
//!
//! [`decode`] and [`verify`] never panic: any input yields a value or a [`UserSigError`]. They
//! refuse input longer than [`MAX_ENCODED_LEN`] and stop inflating past [`MAX_INFLATED_LEN`]
//! (a zlib bomb costs at most that much memory).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use flate2::write::ZlibEncoder;
use flate2::{Compression, Decompress, FlushDecompress, Status};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Map, Value};
use sha2::Sha256;
use std::io::Write;

type HmacSha256 = Hmac<Sha256>;

/// Tencent's libraries' default validity: 180 days.
pub const DEFAULT_EXPIRE_SECONDS: i64 = 180 * 86400;
/// Longest encoded UserSig accepted by [`decode`]/[`verify`] (real ones are under 1 KiB).
pub const MAX_ENCODED_LEN: usize = 8 * 1024;
/// Most bytes [`decode`] inflates before giving up.
pub const MAX_INFLATED_LEN: usize = 64 * 1024;

/// PrivateMapKey privilege bits (`dwPrivilegeMap`).
pub mod privilege {
    /// Create the room.
    pub const CREATE: u32 = 1;
    /// Enter the room.
    pub const ENTER: u32 = 2;
    /// Send audio.
    pub const SEND_AUDIO: u32 = 4;
    /// Receive audio.
    pub const RECEIVE_AUDIO: u32 = 8;
    /// Send video.
    pub const SEND_VIDEO: u32 = 16;
    /// Receive video.
    pub const RECEIVE_VIDEO: u32 = 32;
    /// Send the auxiliary (screen share) stream.
    pub const SEND_AUX: u32 = 64;
    /// Receive the auxiliary (screen share) stream.
    pub const RECEIVE_AUX: u32 = 128;
    /// Every privilege.
    pub const ALL: u32 = 255;

    /// The bits' names, lowest first: ("create", "enter", "send audio", ...); bits above 128
    /// are named `bit N`.
    pub fn names(bits: u32) -> Vec<String> {
        const NAMES: [&str; 8] = [
            "create",
            "enter",
            "send audio",
            "receive audio",
            "send video",
            "receive video",
            "send aux",
            "receive aux",
        ];
        (0..32)
            .filter(|bit| bits & (1 << bit) != 0)
            .map(|bit| match NAMES.get(bit) {
                Some(name) => (*name).to_string(),
                None => format!("bit {bit}"),
            })
            .collect()
    }
}

/// Why a UserSig (or a userbuf) is refused. Messages never contain the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserSigError {
    /// Longer than the limit, encoded or inflated.
    #[error("UserSig is too large: {what} exceeds {max} bytes")]
    TooLarge { what: &'static str, max: usize },
    /// Not base64 once `*`→`+`, `-`→`/`, `_`→`=` are undone.
    #[error("UserSig is not valid base64 (after undoing *→+, -→/, _→=): {0}")]
    Base64(String),
    /// Not a zlib stream.
    #[error("UserSig does not inflate as zlib: {0}")]
    Zlib(String),
    /// The inflated bytes are not a JSON object.
    #[error("UserSig does not hold a JSON object: {0}")]
    Json(String),
    /// A field the format requires is absent.
    #[error("UserSig has no field {field}")]
    MissingField { field: &'static str },
    /// A field has the wrong JSON type or an out-of-range value.
    #[error("UserSig field {field} is not {expected}")]
    WrongFieldType {
        field: &'static str,
        expected: &'static str,
    },
    /// `TLS.ver` is not "2.0".
    #[error("UserSig version is {found:?}, not \"2.0\" (TLSSigAPIv2)")]
    Version { found: String },
    /// Made for another application.
    #[error("UserSig is for SdkAppId {found}, not SdkAppId {expected}")]
    OtherApp { expected: u64, found: u64 },
    /// Made for another user.
    #[error("UserSig is for user {found:?}, not user {expected:?}")]
    OtherUser { expected: String, found: String },
    /// Past its expiry (`now > time + expire`, or past the userbuf's own expiry).
    #[error("UserSig expired at {expired_at} ({}), it is now {now}", super::tc3::rfc3339_utc(*.expired_at))]
    Expired { expired_at: i64, now: i64 },
    /// The HMAC does not match: another key, or altered content.
    #[error("UserSig signature does not match (made with another key, or altered)")]
    SignatureMismatch,
    /// The userbuf (PrivateMapKey) is malformed or contradicts the UserSig.
    #[error("UserSig userbuf is invalid: {0}")]
    BadUserBuf(String),
}

/// The room a PrivateMapKey is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Room {
    /// An integer room id (userbuf version 0).
    Numeric(u32),
    /// A string room id (userbuf version 1; the numeric room id is then 0).
    Str(String),
}

impl std::fmt::Display for Room {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Room::Numeric(id) => write!(f, "{id}"),
            Room::Str(id) => write!(f, "{id:?}"),
        }
    }
}

/// The PrivateMapKey `userbuf`: who may do what in which room until when. Binary layout (all
/// integers big-endian): `u8 version` (0 numeric room, 1 string room), `u16 len` + account,
/// `u32 sdkAppId`, `u32 roomId` (0 for a string room), `u32 absolute expiry`, `u32 privilege
/// bits`, `u32 account type`, and for a string room `u16 len` + room id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserBuf {
    account: String,
    sdk_app_id: u32,
    room: Room,
    expires_at: u32,
    privilege_map: u32,
    account_type: u32,
}

impl UserBuf {
    /// A userbuf as Tencent's `genPrivateMapKey`/`genPrivateMapKeyWithStringRoomID` make it
    /// (account type 0). `expires_at` is absolute (Unix seconds). The account and a string room
    /// id must be 1 to 65535 bytes.
    pub fn new(
        account: &str,
        sdk_app_id: u32,
        room: Room,
        expires_at: u32,
        privilege_map: u32,
    ) -> Result<Self, UserSigError> {
        if account.is_empty() || account.len() > usize::from(u16::MAX) {
            return Err(UserSigError::BadUserBuf(format!(
                "account must be 1 to 65535 bytes, not {}",
                account.len()
            )));
        }
        if let Room::Str(id) = &room
            && (id.is_empty() || id.len() > usize::from(u16::MAX))
        {
            return Err(UserSigError::BadUserBuf(format!(
                "string room id must be 1 to 65535 bytes, not {}",
                id.len()
            )));
        }
        Ok(UserBuf {
            account: account.to_string(),
            sdk_app_id,
            room,
            expires_at,
            privilege_map,
            account_type: 0,
        })
    }

    /// The account (user id) it is for.
    pub fn account(&self) -> &str {
        &self.account
    }
    /// The application it is for.
    pub fn sdk_app_id(&self) -> u32 {
        self.sdk_app_id
    }
    /// The room it is for.
    pub fn room(&self) -> &Room {
        &self.room
    }
    /// Absolute expiry, Unix seconds.
    pub fn expires_at(&self) -> u32 {
        self.expires_at
    }
    /// Privilege bits (see [`privilege`]).
    pub fn privilege_map(&self) -> u32 {
        self.privilege_map
    }
    /// Account type (0 in everything Tencent's libraries make).
    pub fn account_type(&self) -> u32 {
        self.account_type
    }
    /// 0 for a numeric room, 1 for a string room.
    pub fn version(&self) -> u8 {
        match self.room {
            Room::Numeric(_) => 0,
            Room::Str(_) => 1,
        }
    }

    /// The binary userbuf.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32 + self.account.len());
        out.push(self.version());
        // Lengths were checked by `new`/`decode`: both fit in u16.
        out.extend_from_slice(&(self.account.len() as u16).to_be_bytes());
        out.extend_from_slice(self.account.as_bytes());
        out.extend_from_slice(&self.sdk_app_id.to_be_bytes());
        let room_id = match self.room {
            Room::Numeric(id) => id,
            Room::Str(_) => 0,
        };
        out.extend_from_slice(&room_id.to_be_bytes());
        out.extend_from_slice(&self.expires_at.to_be_bytes());
        out.extend_from_slice(&self.privilege_map.to_be_bytes());
        out.extend_from_slice(&self.account_type.to_be_bytes());
        if let Room::Str(id) = &self.room {
            out.extend_from_slice(&(id.len() as u16).to_be_bytes());
            out.extend_from_slice(id.as_bytes());
        }
        out
    }

    /// Parses a binary userbuf; refuses unknown versions, truncation and trailing bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, UserSigError> {
        let mut reader = Reader { bytes, at: 0 };
        let version = reader.u8("version")?;
        if version > 1 {
            return Err(UserSigError::BadUserBuf(format!(
                "version {version} is neither 0 (numeric room) nor 1 (string room)"
            )));
        }
        let account = reader.string("account")?;
        if account.is_empty() {
            return Err(UserSigError::BadUserBuf("empty account".into()));
        }
        let sdk_app_id = reader.u32("sdkAppId")?;
        let room_id = reader.u32("roomId")?;
        let expires_at = reader.u32("expiry time")?;
        let privilege_map = reader.u32("privilege map")?;
        let account_type = reader.u32("account type")?;
        let room = if version == 1 {
            let id = reader.string("string room id")?;
            if id.is_empty() {
                return Err(UserSigError::BadUserBuf("empty string room id".into()));
            }
            if room_id != 0 {
                return Err(UserSigError::BadUserBuf(format!(
                    "string room {id:?} with numeric room id {room_id} (must be 0)"
                )));
            }
            Room::Str(id)
        } else {
            Room::Numeric(room_id)
        };
        if reader.at != bytes.len() {
            return Err(UserSigError::BadUserBuf(format!(
                "{} trailing bytes",
                bytes.len() - reader.at
            )));
        }
        Ok(UserBuf {
            account,
            sdk_app_id,
            room,
            expires_at,
            privilege_map,
            account_type,
        })
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize, what: &str) -> Result<&[u8], UserSigError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|end| *end <= self.bytes.len());
        let Some(end) = end else {
            return Err(UserSigError::BadUserBuf(format!("truncated in the {what}")));
        };
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }
    fn u8(&mut self, what: &str) -> Result<u8, UserSigError> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &str) -> Result<u16, UserSigError> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self, what: &str) -> Result<u32, UserSigError> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn string(&mut self, what: &str) -> Result<String, UserSigError> {
        let len = self.u16(what)?;
        let bytes = self.take(usize::from(len), what)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| UserSigError::BadUserBuf(format!("the {what} is not UTF-8")))
    }
}

/// What a UserSig holds, read without the key ([`decode`]) or checked ([`verify`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedUserSig {
    /// `TLS.sdkappid`.
    pub sdk_app_id: u64,
    /// `TLS.identifier`.
    pub user_id: String,
    /// `TLS.time`: when it was made, Unix seconds.
    pub issued_at: i64,
    /// `TLS.expire`: seconds of validity after `issued_at`.
    pub expire_seconds: i64,
    /// `TLS.userbuf` exactly as written (standard base64; the HMAC covers this text).
    pub userbuf_base64: Option<String>,
    /// `TLS.userbuf`, parsed.
    pub userbuf: Option<UserBuf>,
    /// `TLS.sig`: standard base64 of the HMAC-SHA256.
    pub sig: String,
}

impl DecodedUserSig {
    /// `issued_at + expire_seconds` (saturating): the last second it is valid.
    pub fn expires_at(&self) -> i64 {
        self.issued_at.saturating_add(self.expire_seconds)
    }
}

/// Makes a UserSig for `user_id` of `sdk_app_id` at `issued_at`, valid `expire_seconds`, with
/// an optional PrivateMapKey userbuf. `key` is the application's secret key (its UTF-8 bytes).
pub fn generate(
    sdk_app_id: u64,
    user_id: &str,
    key: &[u8],
    issued_at: i64,
    expire_seconds: i64,
    userbuf: Option<&UserBuf>,
) -> String {
    let userbuf_base64 = userbuf.map(|userbuf| STANDARD.encode(userbuf.encode()));
    let sig = STANDARD.encode(hmac(
        key,
        sdk_app_id,
        user_id,
        issued_at,
        expire_seconds,
        userbuf_base64.as_deref(),
    ));
    // Python's json.dumps(m) of the dict in the order Tencent's library fills it.
    let mut json = format!(
        "{{\"TLS.ver\": \"2.0\", \"TLS.identifier\": {}, \"TLS.sdkappid\": {sdk_app_id}, \
         \"TLS.expire\": {expire_seconds}, \"TLS.time\": {issued_at}",
        python_json_string(user_id)
    );
    if let Some(userbuf) = &userbuf_base64 {
        json.push_str(&format!(", \"TLS.userbuf\": \"{userbuf}\""));
    }
    json.push_str(&format!(", \"TLS.sig\": \"{sig}\"}}"));
    let mut encoder = ZlibEncoder::new(Vec::new(), Compression::new(6));
    encoder
        .write_all(json.as_bytes())
        .and_then(|()| encoder.finish())
        .map(|compressed| to_url_base64(&STANDARD.encode(compressed)))
        .expect("compressing into memory cannot fail")
}

/// Reads a UserSig without checking its signature (no key needed), e.g. to compare it with a
/// job before anything starts.
pub fn decode(usersig: &str) -> Result<DecodedUserSig, UserSigError> {
    if usersig.len() > MAX_ENCODED_LEN {
        return Err(UserSigError::TooLarge {
            what: "the encoded UserSig",
            max: MAX_ENCODED_LEN,
        });
    }
    let standard: String = usersig
        .chars()
        .map(|c| match c {
            '*' => '+',
            '-' => '/',
            '_' => '=',
            c => c,
        })
        .collect();
    let compressed = STANDARD
        .decode(standard.as_bytes())
        .map_err(|e| UserSigError::Base64(e.to_string()))?;
    let json = inflate(&compressed)?;
    let object: Map<String, Value> =
        serde_json::from_slice(&json).map_err(|e| UserSigError::Json(e.to_string()))?;

    let version = string_field(&object, "TLS.ver")?;
    if version != "2.0" {
        return Err(UserSigError::Version {
            found: version.to_string(),
        });
    }
    let user_id = string_field(&object, "TLS.identifier")?.to_string();
    let sdk_app_id =
        field(&object, "TLS.sdkappid")?
            .as_u64()
            .ok_or(UserSigError::WrongFieldType {
                field: "TLS.sdkappid",
                expected: "a non-negative integer",
            })?;
    let issued_at = int_field(&object, "TLS.time")?;
    let expire_seconds = int_field(&object, "TLS.expire")?;
    let sig = string_field(&object, "TLS.sig")?.to_string();
    let (userbuf_base64, userbuf) = match object.get("TLS.userbuf") {
        None => (None, None),
        Some(Value::String(text)) => {
            let bytes = STANDARD.decode(text.as_bytes()).map_err(|e| {
                UserSigError::BadUserBuf(format!("TLS.userbuf is not standard base64: {e}"))
            })?;
            (Some(text.clone()), Some(UserBuf::decode(&bytes)?))
        }
        Some(_) => {
            return Err(UserSigError::WrongFieldType {
                field: "TLS.userbuf",
                expected: "a string",
            });
        }
    };
    Ok(DecodedUserSig {
        sdk_app_id,
        user_id,
        issued_at,
        expire_seconds,
        userbuf_base64,
        userbuf,
        sig,
    })
}

/// Checks a UserSig as TRTC does: format, application, user, expiry (`now > time + expire` is
/// expired), then the HMAC with `key`. With a userbuf, its account and application must be the
/// UserSig's and its own expiry must not have passed either.
pub fn verify(
    usersig: &str,
    sdk_app_id: u64,
    user_id: &str,
    key: &[u8],
    now: i64,
) -> Result<DecodedUserSig, UserSigError> {
    let decoded = decode(usersig)?;
    if decoded.sdk_app_id != sdk_app_id {
        return Err(UserSigError::OtherApp {
            expected: sdk_app_id,
            found: decoded.sdk_app_id,
        });
    }
    if decoded.user_id != user_id {
        return Err(UserSigError::OtherUser {
            expected: user_id.to_string(),
            found: decoded.user_id,
        });
    }
    if now > decoded.expires_at() {
        return Err(UserSigError::Expired {
            expired_at: decoded.expires_at(),
            now,
        });
    }
    let claimed = STANDARD
        .decode(decoded.sig.as_bytes())
        .map_err(|_| UserSigError::SignatureMismatch)?;
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(
        sign_content(
            decoded.sdk_app_id,
            &decoded.user_id,
            decoded.issued_at,
            decoded.expire_seconds,
            decoded.userbuf_base64.as_deref(),
        )
        .as_bytes(),
    );
    mac.verify_slice(&claimed)
        .map_err(|_| UserSigError::SignatureMismatch)?;
    if let Some(userbuf) = &decoded.userbuf {
        if userbuf.account != decoded.user_id {
            return Err(UserSigError::BadUserBuf(format!(
                "it is for account {:?}, the UserSig for user {:?}",
                userbuf.account, decoded.user_id
            )));
        }
        if u64::from(userbuf.sdk_app_id) != decoded.sdk_app_id {
            return Err(UserSigError::BadUserBuf(format!(
                "it is for SdkAppId {}, the UserSig for SdkAppId {}",
                userbuf.sdk_app_id, decoded.sdk_app_id
            )));
        }
        if now > i64::from(userbuf.expires_at) {
            return Err(UserSigError::Expired {
                expired_at: i64::from(userbuf.expires_at),
                now,
            });
        }
    }
    Ok(decoded)
}

/// The text the HMAC covers.
fn sign_content(
    sdk_app_id: u64,
    user_id: &str,
    issued_at: i64,
    expire_seconds: i64,
    userbuf_base64: Option<&str>,
) -> String {
    let mut content = format!(
        "TLS.identifier:{user_id}\nTLS.sdkappid:{sdk_app_id}\nTLS.time:{issued_at}\nTLS.expire:{expire_seconds}\n"
    );
    if let Some(userbuf) = userbuf_base64 {
        content.push_str(&format!("TLS.userbuf:{userbuf}\n"));
    }
    content
}

fn hmac(
    key: &[u8],
    sdk_app_id: u64,
    user_id: &str,
    issued_at: i64,
    expire_seconds: i64,
    userbuf_base64: Option<&str>,
) -> Vec<u8> {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(
        sign_content(
            sdk_app_id,
            user_id,
            issued_at,
            expire_seconds,
            userbuf_base64,
        )
        .as_bytes(),
    );
    mac.finalize().into_bytes().to_vec()
}

fn inflate(compressed: &[u8]) -> Result<Vec<u8>, UserSigError> {
    let too_large = UserSigError::TooLarge {
        what: "the inflated UserSig",
        max: MAX_INFLATED_LEN,
    };
    let mut inflater = Decompress::new(true);
    let mut out = Vec::with_capacity(
        compressed
            .len()
            .saturating_mul(4)
            .clamp(256, MAX_INFLATED_LEN + 1),
    );
    loop {
        let consumed = usize::try_from(inflater.total_in()).unwrap_or(usize::MAX);
        let produced = out.len();
        let rest = compressed.get(consumed..).unwrap_or_default();
        let status = inflater
            .decompress_vec(rest, &mut out, FlushDecompress::None)
            .map_err(|e| UserSigError::Zlib(e.to_string()))?;
        if out.len() > MAX_INFLATED_LEN {
            return Err(too_large);
        }
        if status == Status::StreamEnd {
            break;
        }
        if out.len() == out.capacity() {
            // Grow, but never past one byte over the limit.
            let target = out.capacity().saturating_mul(2).min(MAX_INFLATED_LEN + 1);
            if target <= out.len() {
                return Err(too_large);
            }
            out.reserve_exact(target - out.len());
        } else if inflater.total_in() as usize == consumed && out.len() == produced {
            return Err(UserSigError::Zlib("the zlib stream is truncated".into()));
        }
    }
    let consumed = inflater.total_in();
    if consumed != compressed.len() as u64 {
        return Err(UserSigError::Zlib(format!(
            "{} bytes after the end of the zlib stream",
            (compressed.len() as u64).saturating_sub(consumed)
        )));
    }
    Ok(out)
}

fn field<'a>(
    object: &'a Map<String, Value>,
    name: &'static str,
) -> Result<&'a Value, UserSigError> {
    object
        .get(name)
        .ok_or(UserSigError::MissingField { field: name })
}

fn string_field<'a>(
    object: &'a Map<String, Value>,
    name: &'static str,
) -> Result<&'a str, UserSigError> {
    field(object, name)?
        .as_str()
        .ok_or(UserSigError::WrongFieldType {
            field: name,
            expected: "a string",
        })
}

fn int_field(object: &Map<String, Value>, name: &'static str) -> Result<i64, UserSigError> {
    field(object, name)?
        .as_i64()
        .ok_or(UserSigError::WrongFieldType {
            field: name,
            expected: "an integer",
        })
}

fn to_url_base64(standard: &str) -> String {
    standard
        .chars()
        .map(|c| match c {
            '+' => '*',
            '/' => '-',
            '=' => '_',
            c => c,
        })
        .collect()
}

/// A JSON string as Python's `json.dumps` (ensure_ascii) writes it.
fn python_json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if c.is_ascii() && !c.is_ascii_control() => out.push(c),
            c => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_json_string_escapes_like_json_dumps() {
        // json.dumps('a"b\\c\n\x01é😀\x7f') in Python 3.
        assert_eq!(
            python_json_string("a\"b\\c\n\u{1}é😀\u{7f}"),
            r#""a\"b\\c\n\u0001\u00e9\ud83d\ude00\u007f""#
        );
    }

    #[test]
    fn userbuf_layout_numeric_room() {
        let userbuf = UserBuf::new("ab", 0x01020304, Room::Numeric(0x0a0b0c0d), 7, 255).unwrap();
        assert_eq!(
            userbuf.encode(),
            [
                0, 0, 2, b'a', b'b', 1, 2, 3, 4, 0x0a, 0x0b, 0x0c, 0x0d, 0, 0, 0, 7, 0, 0, 0, 255,
                0, 0, 0, 0
            ]
        );
        assert_eq!(UserBuf::decode(&userbuf.encode()).unwrap(), userbuf);
    }

    #[test]
    fn userbuf_layout_string_room() {
        let userbuf = UserBuf::new("u", 1, Room::Str("r1".into()), 2, 3).unwrap();
        assert_eq!(
            userbuf.encode(),
            [
                1, 0, 1, b'u', 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 0, 0, 2,
                b'r', b'1'
            ]
        );
        assert_eq!(UserBuf::decode(&userbuf.encode()).unwrap(), userbuf);
    }

    #[test]
    fn userbuf_refuses_bad_bytes() {
        let good = UserBuf::new("u", 1, Room::Str("r".into()), 2, 3)
            .unwrap()
            .encode();
        for cut in 0..good.len() {
            assert!(matches!(
                UserBuf::decode(&good[..cut]),
                Err(UserSigError::BadUserBuf(_))
            ));
        }
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(UserBuf::decode(&trailing).is_err());
        let mut version = good.clone();
        version[0] = 2;
        assert!(UserBuf::decode(&version).is_err());
        assert!(UserBuf::new("", 1, Room::Numeric(1), 1, 1).is_err());
        assert!(UserBuf::new("u", 1, Room::Str(String::new()), 1, 1).is_err());
    }

    #[test]
    fn privilege_names() {
        assert_eq!(privilege::names(0), Vec::<String>::new());
        assert_eq!(privilege::names(2 | 8), ["enter", "receive audio"]);
        assert_eq!(privilege::names(privilege::ALL).len(), 8);
        assert_eq!(privilege::names(1 << 9), ["bit 9"]);
    }
}
