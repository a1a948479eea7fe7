//! Cloud Streaming Services (CSS) push authentication: a push domain with authentication
//! accepts `rtmp://{domain}/live/{StreamName}?txSecret={hex}&txTime={HEX}` only when `txTime`
//! (the URL's expiry, Unix seconds in upper-case hex) has not passed and
//! `txSecret = lower-hex MD5(KEY + StreamName + txTime)`. Playback authentication uses the same
//! scheme with the play domain's key.

use md5::{Digest, Md5};

/// Lower-hex MD5(`key` + `stream_name` + `tx_time_hex`), `tx_time_hex` exactly as it appears in
/// the URL.
pub fn tx_secret(key: &str, stream_name: &str, tx_time_hex: &str) -> String {
    let mut md5 = Md5::new();
    md5.update(key.as_bytes());
    md5.update(stream_name.as_bytes());
    md5.update(tx_time_hex.as_bytes());
    hex::encode(md5.finalize())
}

/// `txTime` for an expiry (Unix seconds): upper-case hex, e.g. `5C271099`.
pub fn tx_time_hex(expires_at: u32) -> String {
    format!("{expires_at:X}")
}

/// `rtmp://{domain}/live/{stream_name}?txSecret=...&txTime=...`, valid until `expires_at`.
/// `stream_name` goes into the URL and the hash as given: pass a URL-safe stream id.
pub fn push_url(domain: &str, stream_name: &str, key: &str, expires_at: u32) -> String {
    let tx_time = tx_time_hex(expires_at);
    let secret = tx_secret(key, stream_name, &tx_time);
    format!("rtmp://{domain}/live/{stream_name}?txSecret={secret}&txTime={tx_time}")
}

/// Why CSS refuses a push (or play) URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PushAuthError {
    /// The URL is not `{scheme}://{domain}/{app}/{stream}?...`.
    #[error("not a push URL of the form scheme://domain/app/stream?txSecret=...&txTime=...: {0}")]
    BadUrl(String),
    /// The URL has no txSecret or no txTime.
    #[error("the URL has no {0} parameter")]
    MissingParameter(&'static str),
    /// txTime is not 1 to 8 hex digits.
    #[error("txTime {0:?} is not a hex Unix time")]
    BadTxTime(String),
    /// txTime has passed.
    #[error("the URL expired at {expires_at} (txTime), it is now {now}")]
    Expired { expires_at: i64, now: i64 },
    /// txSecret is not MD5(KEY + StreamName + txTime) with this key.
    #[error("txSecret does not match (another key, stream name or txTime)")]
    SecretMismatch,
}

/// Checks `tx_secret` and `tx_time_hex` for `stream_name` with `key` at `now`.
pub fn verify(
    key: &str,
    stream_name: &str,
    tx_secret_hex: &str,
    tx_time_hex: &str,
    now: i64,
) -> Result<(), PushAuthError> {
    if tx_time_hex.is_empty()
        || tx_time_hex.len() > 8
        || !tx_time_hex.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return Err(PushAuthError::BadTxTime(tx_time_hex.to_string()));
    }
    let expires_at = i64::from(
        u32::from_str_radix(tx_time_hex, 16)
            .map_err(|_| PushAuthError::BadTxTime(tx_time_hex.to_string()))?,
    );
    if now > expires_at {
        return Err(PushAuthError::Expired { expires_at, now });
    }
    let expected = tx_secret(key, stream_name, tx_time_hex);
    if !expected.eq_ignore_ascii_case(tx_secret_hex) {
        return Err(PushAuthError::SecretMismatch);
    }
    Ok(())
}

/// The parts of a push URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushUrl {
    /// `rtmp`, `http`, ...
    pub scheme: String,
    /// The push domain (with `:port` when given).
    pub domain: String,
    /// The application path, `live`.
    pub app: String,
    /// The stream name.
    pub stream_name: String,
    /// txSecret, when present.
    pub tx_secret: Option<String>,
    /// txTime, when present.
    pub tx_time: Option<String>,
}

/// Splits `scheme://domain/app/stream?query`.
pub fn parse_url(url: &str) -> Result<PushUrl, PushAuthError> {
    let bad = || PushAuthError::BadUrl(url.to_string());
    let (scheme, rest) = url.split_once("://").ok_or_else(bad)?;
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let mut parts = path.splitn(3, '/');
    let (Some(domain), Some(app), Some(stream_name)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    if scheme.is_empty() || domain.is_empty() || app.is_empty() || stream_name.is_empty() {
        return Err(bad());
    }
    let mut tx_secret = None;
    let mut tx_time = None;
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("txSecret", value)) => tx_secret = Some(value.to_string()),
            Some(("txTime", value)) => tx_time = Some(value.to_string()),
            _ => {}
        }
    }
    Ok(PushUrl {
        scheme: scheme.to_string(),
        domain: domain.to_string(),
        app: app.to_string(),
        stream_name: stream_name.to_string(),
        tx_secret,
        tx_time,
    })
}

/// Checks a whole push URL with `key` at `now`, as an authenticating push domain does; returns
/// its parts.
pub fn verify_url(url: &str, key: &str, now: i64) -> Result<PushUrl, PushAuthError> {
    let parsed = parse_url(url)?;
    let secret = parsed
        .tx_secret
        .as_deref()
        .ok_or(PushAuthError::MissingParameter("txSecret"))?;
    let time = parsed
        .tx_time
        .as_deref()
        .ok_or(PushAuthError::MissingParameter("txTime"))?;
    verify(key, &parsed.stream_name, secret, time, now)?;
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "e12c46f2612d5106e2034781ab261ca3";

    #[test]
    fn tencents_published_example() {
        assert_eq!(
            tx_secret(KEY, "test", "5C271099"),
            "f85a2ab363fe4deaffef9754d79da6fe"
        );
        assert_eq!(tx_time_hex(0x5C27_1099), "5C271099");
        assert_eq!(
            push_url("push.example.com", "test", KEY, 0x5C27_1099),
            "rtmp://push.example.com/live/test?txSecret=f85a2ab363fe4deaffef9754d79da6fe&txTime=5C271099"
        );
    }

    #[test]
    fn verifies_and_refuses() {
        let expiry = 0x5C27_1099;
        let url = push_url("push.example.com", "test", KEY, expiry);
        let parsed = verify_url(&url, KEY, i64::from(expiry)).unwrap();
        assert_eq!(parsed.app, "live");
        assert_eq!(parsed.stream_name, "test");
        assert_eq!(parsed.domain, "push.example.com");
        assert_eq!(
            verify_url(&url, KEY, i64::from(expiry) + 1),
            Err(PushAuthError::Expired {
                expires_at: i64::from(expiry),
                now: i64::from(expiry) + 1
            })
        );
        assert_eq!(
            verify_url(&url, "another key", 0),
            Err(PushAuthError::SecretMismatch)
        );
        let other_stream = url.replace("/live/test?", "/live/test2?");
        assert_eq!(
            verify_url(&other_stream, KEY, 0),
            Err(PushAuthError::SecretMismatch)
        );
        let later = url.replace("txTime=5C271099", "txTime=5C27109A");
        assert_eq!(
            verify_url(&later, KEY, 0),
            Err(PushAuthError::SecretMismatch)
        );
        assert_eq!(
            verify_url("rtmp://push.example.com/live/test?txTime=5C271099", KEY, 0),
            Err(PushAuthError::MissingParameter("txSecret"))
        );
        assert_eq!(
            verify_url("rtmp://push.example.com/live/test?txSecret=ab", KEY, 0),
            Err(PushAuthError::MissingParameter("txTime"))
        );
        assert!(matches!(
            verify(KEY, "test", "x", "ZZ", 0),
            Err(PushAuthError::BadTxTime(_))
        ));
        assert!(matches!(
            verify(KEY, "test", "x", "123456789", 0),
            Err(PushAuthError::BadTxTime(_))
        ));
        assert!(matches!(
            parse_url("push.example.com/live/test"),
            Err(PushAuthError::BadUrl(_))
        ));
        assert!(matches!(
            parse_url("rtmp://push.example.com/live"),
            Err(PushAuthError::BadUrl(_))
        ));
    }

    #[test]
    fn lower_case_tx_time_is_hashed_as_written() {
        // CSS hashes txTime as it appears in the URL: the lower-case spelling is another hash.
        let lower = tx_secret(KEY, "test", "5c271099");
        assert_ne!(lower, "f85a2ab363fe4deaffef9754d79da6fe");
        assert_eq!(verify(KEY, "test", &lower, "5c271099", 0), Ok(()));
    }
}
