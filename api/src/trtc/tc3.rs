//! TC3-HMAC-SHA256, the signature of Tencent Cloud API 3.0 requests (the TRTC server API among
//! them): a [`Tc3Signer`] that makes the headers of a request, and [`verify`], the server's side,
//! for stand-ins of Tencent's cloud API in tests.
//!
//! ```text
//! CanonicalRequest = "POST\n/\n\n" + "content-type:{ct}\nhost:{host}\n" + "\n" + "content-type;host\n" + hex(sha256(body))
//! StringToSign     = "TC3-HMAC-SHA256\n{timestamp}\n{date}/{service}/tc3_request\n" + hex(sha256(CanonicalRequest))
//! kDate = HMAC("TC3"+secretKey, date); kService = HMAC(kDate, service); kSigning = HMAC(kService, "tc3_request")
//! Authorization: TC3-HMAC-SHA256 Credential={secretId}/{date}/{service}/tc3_request, SignedHeaders=content-type;host, Signature={hex(HMAC(kSigning, StringToSign))}
//! ```
//!
//! `date` is the UTC date of the timestamp. Canonical header values are trimmed and lower-cased,
//! as Tencent's documents say.

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// The algorithm name that starts every Authorization header.
pub const ALGORITHM: &str = "TC3-HMAC-SHA256";
/// The Content-Type the signer sends (JSON bodies).
pub const CONTENT_TYPE: &str = "application/json";
/// Most clock skew between X-TC-Timestamp and the server's clock that Tencent accepts.
pub const MAX_SKEW_SECONDS: i64 = 300;

/// A credential (SecretId, SecretKey, ...) whose `Debug` prints `***`, so it cannot leak into
/// logs or error messages by accident. It has no `Display`; [`Secret::expose`] gives the text.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a credential.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The credential itself: use only to sign or send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Secret(value.to_string())
    }
}

/// Signs API 3.0 requests of one service and version with one credential.
#[derive(Debug, Clone)]
pub struct Tc3Signer {
    secret_id: Secret,
    secret_key: Secret,
    service: String,
    host: String,
    version: String,
    region: Option<String>,
    language: Option<String>,
}

impl Tc3Signer {
    /// A signer for `service` (e.g. "trtc") at `host` (e.g. "trtc.tencentcloudapi.com", with
    /// ":port" when not the default) and API `version` (e.g. "2019-07-22").
    pub fn new(
        secret_id: Secret,
        secret_key: Secret,
        service: &str,
        host: &str,
        version: &str,
    ) -> Self {
        Tc3Signer {
            secret_id,
            secret_key,
            service: service.to_string(),
            host: host.to_string(),
            version: version.to_string(),
            region: None,
            language: None,
        }
    }

    /// Sends `X-TC-Region` (e.g. "ap-guangzhou").
    pub fn with_region(mut self, region: &str) -> Self {
        self.region = Some(region.to_string());
        self
    }

    /// Sends `X-TC-Language` ("zh-CN" or "en-US").
    pub fn with_language(mut self, language: &str) -> Self {
        self.language = Some(language.to_string());
        self
    }

    /// The host the signature covers.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The headers of a POST to "/" with these exact `body` bytes, signed at `timestamp` (Unix
    /// seconds): Authorization, Content-Type, Host, X-TC-Action, X-TC-Timestamp, X-TC-Version,
    /// X-TC-Region and X-TC-Language when set, in that order.
    pub fn sign(&self, action: &str, timestamp: i64, body: &[u8]) -> Vec<(&'static str, String)> {
        let date = utc_date(timestamp);
        let canonical = canonical_request(
            "POST",
            "/",
            "",
            &[("content-type", CONTENT_TYPE), ("host", &self.host)],
            body,
        );
        let to_sign = string_to_sign(timestamp, &date, &self.service, &canonical);
        let signature = signature(self.secret_key.expose(), &date, &self.service, &to_sign);
        let authorization = format!(
            "{ALGORITHM} Credential={}/{date}/{}/tc3_request, SignedHeaders=content-type;host, Signature={signature}",
            self.secret_id.expose(),
            self.service
        );
        let mut headers = vec![
            ("Authorization", authorization),
            ("Content-Type", CONTENT_TYPE.to_string()),
            ("Host", self.host.clone()),
            ("X-TC-Action", action.to_string()),
            ("X-TC-Timestamp", timestamp.to_string()),
            ("X-TC-Version", self.version.clone()),
        ];
        if let Some(region) = &self.region {
            headers.push(("X-TC-Region", region.clone()));
        }
        if let Some(language) = &self.language {
            headers.push(("X-TC-Language", language.clone()));
        }
        headers
    }
}

/// The canonical request: method, URI, query, `name:value\n` per signed header (names and
/// values lower-cased and trimmed, in the given order), a blank line, the signed header names
/// joined by `;`, and the hex SHA-256 of the body.
pub fn canonical_request(
    method: &str,
    uri: &str,
    query: &str,
    signed_headers: &[(&str, &str)],
    body: &[u8],
) -> String {
    let mut out = format!("{method}\n{uri}\n{query}\n");
    for (name, value) in signed_headers {
        out.push_str(&name.trim().to_ascii_lowercase());
        out.push(':');
        out.push_str(&value.trim().to_ascii_lowercase());
        out.push('\n');
    }
    out.push('\n');
    let names: Vec<String> = signed_headers
        .iter()
        .map(|(name, _)| name.trim().to_ascii_lowercase())
        .collect();
    out.push_str(&names.join(";"));
    out.push('\n');
    out.push_str(&hex::encode(Sha256::digest(body)));
    out
}

/// The string to sign.
pub fn string_to_sign(
    timestamp: i64,
    date: &str,
    service: &str,
    canonical_request: &str,
) -> String {
    format!(
        "{ALGORITHM}\n{timestamp}\n{date}/{service}/tc3_request\n{}",
        hex::encode(Sha256::digest(canonical_request.as_bytes()))
    )
}

/// Lower-hex signature of `string_to_sign` with the key derived from `secret_key`, `date` and
/// `service`.
pub fn signature(secret_key: &str, date: &str, service: &str, string_to_sign: &str) -> String {
    let k_date = hmac(format!("TC3{secret_key}").as_bytes(), date.as_bytes());
    let k_service = hmac(&k_date, service.as_bytes());
    let k_signing = hmac(&k_service, b"tc3_request");
    hex::encode(hmac(&k_signing, string_to_sign.as_bytes()))
}

fn hmac(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

/// Why a request's TC3 signature is refused. [`Tc3Error::code`] gives Tencent's error code.
/// Messages never contain a SecretId or SecretKey.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Tc3Error {
    /// A required header is absent (Authorization, X-TC-Action, X-TC-Version, X-TC-Timestamp,
    /// or a header the signature names).
    #[error("MissingParameter: the request has no {0} header")]
    MissingHeader(String),
    /// X-TC-Timestamp is not Unix seconds.
    #[error("InvalidParameter: X-TC-Timestamp {0:?} is not a Unix time in seconds")]
    BadTimestamp(String),
    /// Authorization is not `TC3-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...`,
    /// or its credential scope or signed headers are wrong.
    #[error("AuthFailure.InvalidAuthorization: {0}")]
    InvalidAuthorization(String),
    /// X-TC-Timestamp is more than five minutes from the server's clock.
    #[error(
        "AuthFailure.SignatureExpire: X-TC-Timestamp {timestamp} is {skew} s from the server's clock {now} (at most {MAX_SKEW_SECONDS} s)"
    )]
    SignatureExpire { timestamp: i64, now: i64, skew: i64 },
    /// No secret key is known for the SecretId.
    #[error("AuthFailure.SecretIdNotFound: the SecretId is not found")]
    SecretIdNotFound,
    /// The signature does not match (another key, or the request was altered).
    #[error("AuthFailure.SignatureFailure: the signature does not match the request")]
    SignatureFailure,
}

impl Tc3Error {
    /// Tencent's error code for this failure.
    pub fn code(&self) -> &'static str {
        match self {
            Tc3Error::MissingHeader(_) => "MissingParameter",
            Tc3Error::BadTimestamp(_) => "InvalidParameter",
            Tc3Error::InvalidAuthorization(_) => "AuthFailure.InvalidAuthorization",
            Tc3Error::SignatureExpire { .. } => "AuthFailure.SignatureExpire",
            Tc3Error::SecretIdNotFound => "AuthFailure.SecretIdNotFound",
            Tc3Error::SignatureFailure => "AuthFailure.SignatureFailure",
        }
    }
}

/// A request as a server received it.
#[derive(Debug, Clone, Copy)]
pub struct IncomingRequest<'a> {
    /// "POST".
    pub method: &'a str,
    /// The path, "/".
    pub path: &'a str,
    /// The query string without `?` ("" for POST).
    pub query: &'a str,
    /// Every header (names in any case).
    pub headers: &'a [(String, String)],
    /// The exact body bytes.
    pub body: &'a [u8],
}

/// What a verified request says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedRequest {
    /// The SecretId that signed it.
    pub secret_id: String,
    /// X-TC-Action.
    pub action: String,
    /// X-TC-Version.
    pub version: String,
    /// X-TC-Timestamp.
    pub timestamp: i64,
    /// X-TC-Region, when sent.
    pub region: Option<String>,
    /// X-TC-Language, when sent.
    pub language: Option<String>,
}

/// Checks a request's TC3-HMAC-SHA256 signature as Tencent's API gateway does: the
/// Authorization format, the credential scope (`{UTC date of X-TC-Timestamp}/{service}/
/// tc3_request`), the signed headers (content-type and host at least), clock skew (more than
/// five minutes is refused), the SecretId (`secret_key_of` looks it up) and the signature.
pub fn verify(
    request: &IncomingRequest<'_>,
    service: &str,
    secret_key_of: impl Fn(&str) -> Option<Secret>,
    now: i64,
) -> Result<VerifiedRequest, Tc3Error> {
    let header = |name: &str| {
        request
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    let required = |name: &str| header(name).ok_or_else(|| Tc3Error::MissingHeader(name.into()));

    let authorization = required("Authorization")?;
    let action = required("X-TC-Action")?;
    let version = required("X-TC-Version")?;
    let timestamp_text = required("X-TC-Timestamp")?;
    let timestamp: i64 = timestamp_text
        .trim()
        .parse()
        .ok()
        .filter(|t| *t >= 0)
        .ok_or_else(|| Tc3Error::BadTimestamp(timestamp_text.to_string()))?;

    let parsed = parse_authorization(authorization)?;
    let date = utc_date(timestamp);
    if parsed.date != date {
        return Err(Tc3Error::InvalidAuthorization(format!(
            "the credential scope's date {:?} is not {date}, the UTC date of X-TC-Timestamp {timestamp}",
            parsed.date
        )));
    }
    if parsed.service != service {
        return Err(Tc3Error::InvalidAuthorization(format!(
            "the credential scope's service {:?} is not {service:?}",
            parsed.service
        )));
    }
    if parsed.terminator != "tc3_request" {
        return Err(Tc3Error::InvalidAuthorization(format!(
            "the credential scope ends in {:?}, not \"tc3_request\"",
            parsed.terminator
        )));
    }
    for needed in ["content-type", "host"] {
        if !parsed.signed_headers.iter().any(|h| h == needed) {
            return Err(Tc3Error::InvalidAuthorization(format!(
                "SignedHeaders {:?} does not include {needed}",
                parsed.signed_headers.join(";")
            )));
        }
    }
    let mut signed = Vec::with_capacity(parsed.signed_headers.len());
    for name in &parsed.signed_headers {
        let value = header(name).ok_or_else(|| Tc3Error::MissingHeader(name.clone()))?;
        signed.push((name.as_str(), value));
    }

    let skew = now.saturating_sub(timestamp).saturating_abs();
    if skew > MAX_SKEW_SECONDS {
        return Err(Tc3Error::SignatureExpire {
            timestamp,
            now,
            skew,
        });
    }
    let secret_key = secret_key_of(parsed.secret_id).ok_or(Tc3Error::SecretIdNotFound)?;

    let canonical = canonical_request(
        request.method,
        request.path,
        request.query,
        &signed,
        request.body,
    );
    let to_sign = string_to_sign(timestamp, &date, service, &canonical);
    let expected = signature(secret_key.expose(), &date, service, &to_sign);
    if !constant_time_eq(expected.as_bytes(), parsed.signature.as_bytes()) {
        return Err(Tc3Error::SignatureFailure);
    }
    Ok(VerifiedRequest {
        secret_id: parsed.secret_id.to_string(),
        action: action.to_string(),
        version: version.to_string(),
        timestamp,
        region: header("X-TC-Region").map(str::to_string),
        language: header("X-TC-Language").map(str::to_string),
    })
}

struct Authorization<'a> {
    secret_id: &'a str,
    date: &'a str,
    service: &'a str,
    terminator: &'a str,
    signed_headers: Vec<String>,
    signature: &'a str,
}

fn parse_authorization(text: &str) -> Result<Authorization<'_>, Tc3Error> {
    let invalid = |why: &str| Tc3Error::InvalidAuthorization(why.to_string());
    let rest = text
        .strip_prefix(ALGORITHM)
        .and_then(|rest| rest.strip_prefix(' '))
        .ok_or_else(|| invalid("Authorization does not start with \"TC3-HMAC-SHA256 \""))?;
    let mut credential = None;
    let mut signed_headers = None;
    let mut signature = None;
    for part in rest.split(',') {
        let part = part.trim();
        let (key, value) = part
            .split_once('=')
            .ok_or_else(|| invalid("Authorization has a part without '='"))?;
        let slot = match key {
            "Credential" => &mut credential,
            "SignedHeaders" => &mut signed_headers,
            "Signature" => &mut signature,
            _ => {
                return Err(invalid(
                    "Authorization has a part other than Credential, SignedHeaders, Signature",
                ));
            }
        };
        if slot.replace(value).is_some() {
            return Err(invalid("Authorization repeats a part"));
        }
    }
    let credential = credential.ok_or_else(|| invalid("Authorization has no Credential"))?;
    let signed_headers =
        signed_headers.ok_or_else(|| invalid("Authorization has no SignedHeaders"))?;
    let signature = signature.ok_or_else(|| invalid("Authorization has no Signature"))?;

    let scope: Vec<&str> = credential.split('/').collect();
    let [secret_id, date, service, terminator] = scope[..] else {
        return Err(invalid(
            "Credential is not {SecretId}/{date}/{service}/tc3_request",
        ));
    };
    if secret_id.is_empty() {
        return Err(invalid("Credential has an empty SecretId"));
    }
    if signature.len() != 64
        || !signature
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(invalid("Signature is not 64 lower-case hex digits"));
    }
    let signed_headers: Vec<String> = signed_headers.split(';').map(str::to_string).collect();
    if signed_headers
        .iter()
        .any(|h| h.is_empty() || *h != h.to_ascii_lowercase())
    {
        return Err(invalid(
            "SignedHeaders must be lower-case header names joined by ';'",
        ));
    }
    Ok(Authorization {
        secret_id,
        date,
        service,
        terminator,
        signed_headers,
        signature,
    })
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The UTC date (`yyyy-mm-dd`) of a Unix time, as the credential scope needs it.
pub fn utc_date(timestamp: i64) -> String {
    let (year, month, day) = civil_from_days(timestamp.div_euclid(86_400));
    format!("{year:04}-{month:02}-{day:02}")
}

/// A Unix time as RFC 3339 in UTC (`2025-11-24T16:00:00Z`).
pub fn rfc3339_utc(timestamp: i64) -> String {
    let seconds = timestamp.rem_euclid(86_400);
    format!(
        "{}T{:02}:{:02}:{:02}Z",
        utc_date(timestamp),
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(utc_date(0), "1970-01-01");
        assert_eq!(utc_date(1_764_000_000), "2025-11-24");
        assert_eq!(utc_date(951_782_400), "2000-02-29");
        assert_eq!(utc_date(-1), "1969-12-31");
        assert_eq!(rfc3339_utc(1_764_000_000), "2025-11-24T16:00:00Z");
        assert_eq!(rfc3339_utc(4_102_444_799), "2099-12-31T23:59:59Z");
        // Extremes do not panic.
        let _ = rfc3339_utc(i64::MAX);
        let _ = rfc3339_utc(i64::MIN);
    }

    #[test]
    fn secret_debug_is_masked() {
        let secret = Secret::new("Gu5t9xGARNpq86cd98joQYCN3EXAMPLE");
        assert_eq!(format!("{secret:?}"), "***");
        let signer = Tc3Signer::new(
            Secret::new("AKIDsecretid"),
            secret,
            "trtc",
            "trtc.tencentcloudapi.com",
            "2019-07-22",
        );
        let debug = format!("{signer:?}");
        assert!(!debug.contains("Gu5t9x") && !debug.contains("AKIDsecretid"));
    }
}
