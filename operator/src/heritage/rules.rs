//! The limits the RecordingJob CRD's CEL rules and schema put on the fields a heritage request
//! or the heritage template fills in (`api/src/crd.rs`), checked before anything is created, so
//! a client hears which of its fields is wrong instead of the job's. Each returns what the
//! value must be, with an example: the caller names the field.

pub const SDK_APP_IDS: std::ops::RangeInclusive<u64> = 1_400_000_000..=1_699_999_999;
pub const ROOM_IDS: std::ops::RangeInclusive<u64> = 1..=4_294_967_294;

fn within(value: &str, max: usize) -> Result<(), String> {
    if value.chars().count() > max {
        return Err(format!("must be at most {max} characters"));
    }
    Ok(())
}

pub fn sdk_app_id(value: u64) -> Result<(), String> {
    if SDK_APP_IDS.contains(&value) {
        Ok(())
    } else {
        Err("must be a TRTC SdkAppId, 1400000000 to 1699999999".into())
    }
}

pub fn room_id(value: u64) -> Result<(), String> {
    if ROOM_IDS.contains(&value) {
        Ok(())
    } else {
        Err("must be a TRTC room number, 1 to 4294967294 (or send StrRoomId)".into())
    }
}

/// `^[A-Za-z0-9 !#$%&()+\-:;<=.>?@\[\]^_{}|~,]{1,64}$`.
pub fn str_room_id(value: &str) -> Result<(), String> {
    const SYMBOLS: &str = " !#$%&()+-:;<=.>?@[]^_{}|~,";
    let count = value.chars().count();
    if (1..=64).contains(&count)
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || SYMBOLS.contains(c))
    {
        Ok(())
    } else {
        Err(format!(
            "must be 1 to 64 letters, digits and the symbols TRTC allows ({SYMBOLS:?})"
        ))
    }
}

/// `^[A-Za-z0-9_-]{1,32}$`: a TRTC user id.
pub fn user_id(value: &str) -> Result<(), String> {
    if (1..=32).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        Ok(())
    } else {
        Err("must be 1 to 32 letters, digits, '_' or '-' (a TRTC UserId)".into())
    }
}

/// `^[A-Za-z0-9.-]+(:[0-9]{1,5})?$`, at most 253: a host name with an optional port.
pub fn domain(value: &str) -> Result<(), String> {
    let (host, port) = match value.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (value, None),
    };
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
    let port_ok =
        port.is_none_or(|p| (1..=5).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()));
    if host_ok && port_ok && value.len() <= 253 {
        Ok(())
    } else {
        Err("must be a host name (optionally with :port), without a scheme or path, e.g. play.example.com".into())
    }
}

/// `^[a-z]+-[a-z]+(-[a-z0-9]+)*$`, at most 64: a COS region.
pub fn cos_region(value: &str) -> Result<(), String> {
    let parts: Vec<&str> = value.split('-').collect();
    let letters = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase());
    let ok = parts.len() >= 2
        && letters(parts[0])
        && letters(parts[1])
        && parts[2..].iter().all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        });
    if ok && value.len() <= 64 {
        Ok(())
    } else {
        Err("must be a COS region such as ap-shanghai".into())
    }
}

/// `^[a-z0-9][a-z0-9-]*-[0-9]+$`, at most 64: a COS bucket with its APPID.
pub fn cos_bucket(value: &str) -> Result<(), String> {
    let ok = value.len() <= 64
        && value
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && value.rsplit_once('-').is_some_and(|(name, app)| {
            !name.is_empty() && !app.is_empty() && app.bytes().all(|b| b.is_ascii_digit())
        });
    if ok {
        Ok(())
    } else {
        Err("must be the full bucket name ending in the APPID, e.g. test-1250000000".into())
    }
}

/// The storage folder: at most 512 characters, no control characters (they cannot be in an
/// object key a URL names).
pub fn cos_path(value: &str) -> Result<(), String> {
    within(value, 512)?;
    if value.chars().any(char::is_control) {
        return Err("must not hold control characters".into());
    }
    Ok(())
}

/// `^https?://[^/]+`, at most 2048: where a callback goes.
pub fn http_url(value: &str) -> Result<(), String> {
    within(value, 2048)?;
    let host = value
        .strip_prefix("https://")
        .or_else(|| value.strip_prefix("http://"));
    match host {
        Some(rest) if !rest.is_empty() && !rest.starts_with('/') => Ok(()),
        _ => Err("must be an http:// or https:// URL with a host".into()),
    }
}

/// `^https?://[^/]+/?$`, at most 512: a service endpoint.
pub fn endpoint(value: &str) -> Result<(), String> {
    within(value, 512)?;
    let host = value
        .strip_prefix("https://")
        .or_else(|| value.strip_prefix("http://"))
        .map(|rest| rest.strip_suffix('/').unwrap_or(rest));
    match host {
        Some(host) if !host.is_empty() && !host.contains('/') => Ok(()),
        _ => Err("must be http(s)://host[:port], e.g. https://cos.ap-shanghai.myqcloud.com".into()),
    }
}

/// A Secret's name or key, as the CRD's `SecretKeyRef` takes them: 1 to 253 characters.
pub fn secret_part(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("must not be empty".into());
    }
    within(value, 253)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_crd_patterns_accept_and_refuse_what_cel_does() {
        assert!(str_room_id("math-7 [a]").is_ok());
        assert!(str_room_id("").is_err());
        assert!(str_room_id("a/b").is_err());
        assert!(str_room_id(&"x".repeat(65)).is_err());
        assert!(user_id("user_55952145").is_ok());
        assert!(user_id("user 1").is_err());
        assert!(user_id(&"u".repeat(33)).is_err());
        assert!(domain("play.example.com").is_ok());
        assert!(domain("127.0.0.1:1935").is_ok());
        assert!(domain("rtmp://play.example.com").is_err());
        assert!(domain("play.example.com:").is_err());
        assert!(domain("play.example.com/live").is_err());
        assert!(cos_region("ap-shanghai").is_ok());
        assert!(cos_region("ap-shanghai-fsi2").is_ok());
        assert!(cos_region("Ap-shanghai").is_err());
        assert!(cos_region("shanghai").is_err());
        assert!(cos_region("ap-shanghai-").is_err());
        assert!(cos_bucket("test-123456789").is_ok());
        assert!(cos_bucket("test").is_err());
        assert!(cos_bucket("-test-1").is_err());
        assert!(cos_bucket("Test-1").is_err());
        assert!(cos_bucket("test-12a").is_err());
        assert!(http_url("https://lms.example.com/hooks").is_ok());
        assert!(http_url("ftp://lms.example.com").is_err());
        assert!(http_url("https:///hooks").is_err());
        assert!(endpoint("http://localhost:9000/").is_ok());
        assert!(endpoint("http://localhost:9000/cos").is_err());
        assert!(cos_path("/trtc").is_ok());
        assert!(cos_path("/a\nb").is_err());
        assert!(sdk_app_id(1_400_000_000).is_ok());
        assert!(sdk_app_id(1_399_999_999).is_err());
        assert!(room_id(0).is_err());
        assert!(room_id(4_294_967_295).is_err());
    }
}
