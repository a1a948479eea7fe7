//! TC3-HMAC-SHA256 against a request signed by Tencent's Python SDK (`tests/vectors/tc3.json`),
//! and the verifier's refusals.

use roomrec_api::trtc::tc3::{self, IncomingRequest, Secret, Tc3Error, Tc3Signer};
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Vector {
    timestamp: i64,
    action: String,
    region: String,
    secret_id: String,
    secret_key: String,
    body: String,
    headers: BTreeMap<String, String>,
}

fn vectors() -> Vec<Vector> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/tc3.json");
    let text = std::fs::read_to_string(path).expect("tests/vectors/tc3.json");
    let vectors: Vec<Vector> = serde_json::from_str(&text).expect("tc3.json parses");
    assert!(!vectors.is_empty());
    vectors
}

fn signer(v: &Vector) -> Tc3Signer {
    let mut signer = Tc3Signer::new(
        Secret::new(&v.secret_id),
        Secret::new(&v.secret_key),
        "trtc",
        &v.headers["Host"],
        &v.headers["X-TC-Version"],
    )
    .with_region(&v.region);
    if let Some(language) = v.headers.get("X-TC-Language") {
        signer = signer.with_language(language);
    }
    signer
}

fn owned(headers: &[(&str, String)]) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(n, v)| (n.to_string(), v.clone()))
        .collect()
}

fn check(
    v: &Vector,
    headers: &[(String, String)],
    body: &[u8],
    now: i64,
) -> Result<tc3::VerifiedRequest, Tc3Error> {
    let request = IncomingRequest {
        method: "POST",
        path: "/",
        query: "",
        headers,
        body,
    };
    tc3::verify(
        &request,
        "trtc",
        |id| (id == v.secret_id).then(|| Secret::new(&v.secret_key)),
        now,
    )
}

#[test]
fn tc3_vector_authorization_reproduced_byte_for_byte() {
    for v in vectors() {
        let headers = signer(&v).sign(&v.action, v.timestamp, v.body.as_bytes());
        let made: BTreeMap<String, String> = headers
            .iter()
            .map(|(n, value)| (n.to_string(), value.clone()))
            .collect();
        assert_eq!(made["Authorization"], v.headers["Authorization"]);
        assert_eq!(made, v.headers);
        assert_eq!(headers[0].0, "Authorization");
    }
}

#[test]
fn tc3_vector_headers_verify() {
    for v in vectors() {
        let headers: Vec<(String, String)> = v.headers.clone().into_iter().collect();
        let verified = check(&v, &headers, v.body.as_bytes(), v.timestamp).unwrap();
        assert_eq!(verified.secret_id, v.secret_id);
        assert_eq!(verified.action, v.action);
        assert_eq!(verified.version, "2019-07-22");
        assert_eq!(verified.timestamp, v.timestamp);
        assert_eq!(verified.region.as_deref(), Some(v.region.as_str()));
        assert_eq!(verified.language.as_deref(), Some("zh-CN"));
        // Header names in any case.
        let lower: Vec<(String, String)> = headers
            .iter()
            .map(|(n, value)| (n.to_ascii_lowercase(), value.clone()))
            .collect();
        check(&v, &lower, v.body.as_bytes(), v.timestamp).unwrap();
    }
}

#[test]
fn tc3_clock_skew_over_five_minutes_is_refused() {
    for v in vectors() {
        let headers: Vec<(String, String)> = v.headers.clone().into_iter().collect();
        let body = v.body.as_bytes();
        check(&v, &headers, body, v.timestamp + 300).unwrap();
        check(&v, &headers, body, v.timestamp - 300).unwrap();
        for now in [v.timestamp + 301, v.timestamp - 301] {
            let err = check(&v, &headers, body, now).unwrap_err();
            assert_eq!(
                err,
                Tc3Error::SignatureExpire {
                    timestamp: v.timestamp,
                    now,
                    skew: 301
                }
            );
            assert_eq!(err.code(), "AuthFailure.SignatureExpire");
        }
    }
}

#[test]
fn tc3_wrong_key_altered_body_or_host_fail_the_signature() {
    for v in vectors() {
        let headers: Vec<(String, String)> = v.headers.clone().into_iter().collect();
        let request = IncomingRequest {
            method: "POST",
            path: "/",
            query: "",
            headers: &headers,
            body: v.body.as_bytes(),
        };
        let err = tc3::verify(
            &request,
            "trtc",
            |_| Some(Secret::new("another key")),
            v.timestamp,
        )
        .unwrap_err();
        assert_eq!(err, Tc3Error::SignatureFailure);
        assert_eq!(err.code(), "AuthFailure.SignatureFailure");

        let altered = v.body.replace("43474", "43475");
        assert_eq!(
            check(&v, &headers, altered.as_bytes(), v.timestamp),
            Err(Tc3Error::SignatureFailure)
        );
        let mut other_host = headers.clone();
        for (name, value) in &mut other_host {
            if name == "Host" {
                *value = "trtc.ap-guangzhou.tencentcloudapi.com".into();
            }
        }
        assert_eq!(
            check(&v, &other_host, v.body.as_bytes(), v.timestamp),
            Err(Tc3Error::SignatureFailure)
        );
        // The method and path are signed too.
        let get = IncomingRequest {
            method: "GET",
            ..request
        };
        assert_eq!(
            tc3::verify(
                &get,
                "trtc",
                |_| Some(Secret::new(&v.secret_key)),
                v.timestamp
            ),
            Err(Tc3Error::SignatureFailure)
        );
    }
}

#[test]
fn tc3_unknown_secret_id_is_refused_without_naming_it() {
    for v in vectors() {
        let headers: Vec<(String, String)> = v.headers.clone().into_iter().collect();
        let request = IncomingRequest {
            method: "POST",
            path: "/",
            query: "",
            headers: &headers,
            body: v.body.as_bytes(),
        };
        let err = tc3::verify(&request, "trtc", |_| None, v.timestamp).unwrap_err();
        assert_eq!(err, Tc3Error::SecretIdNotFound);
        assert_eq!(err.code(), "AuthFailure.SecretIdNotFound");
        assert!(!err.to_string().contains(&v.secret_id));
        assert!(!format!("{err:?}").contains(&v.secret_id));
    }
}

fn with_authorization(v: &Vector, authorization: &str) -> Vec<(String, String)> {
    v.headers
        .clone()
        .into_iter()
        .map(|(n, value)| {
            if n == "Authorization" {
                (n, authorization.to_string())
            } else {
                (n, value)
            }
        })
        .collect()
}

#[test]
fn tc3_malformed_authorization_is_refused() {
    for v in vectors() {
        let good = &v.headers["Authorization"];
        let signature = good.rsplit_once("Signature=").unwrap().1;
        let cases = [
            good.replace("TC3-HMAC-SHA256 ", "TC3-HMAC-SHA1 "),
            good.replace("Credential=", "Credentials="),
            good.replace(", SignedHeaders=content-type;host", ""),
            good.replace(", Signature=", ", Sig="),
            good.replace("/2025-11-24/", "/2025-11-25/"),
            good.replace("/trtc/", "/cvm/"),
            good.replace("/tc3_request", "/tc2_request"),
            good.replace("/trtc/tc3_request", "/tc3_request"),
            good.replace("SignedHeaders=content-type;host", "SignedHeaders=host"),
            good.replace(
                "SignedHeaders=content-type;host",
                "SignedHeaders=Content-Type;Host",
            ),
            good.replace(signature, &signature[..63]),
            good.replace(signature, &signature.to_ascii_uppercase()),
            format!("{good}, Signature={signature}"),
            String::new(),
            "TC3-HMAC-SHA256".into(),
        ];
        for authorization in cases {
            let headers = with_authorization(&v, &authorization);
            let err = check(&v, &headers, v.body.as_bytes(), v.timestamp).unwrap_err();
            assert!(
                matches!(err, Tc3Error::InvalidAuthorization(_)),
                "{authorization:?}: {err}"
            );
            assert_eq!(err.code(), "AuthFailure.InvalidAuthorization");
        }
        // The scope's date must be the UTC date of X-TC-Timestamp, and say so.
        let headers = with_authorization(&v, &good.replace("/2025-11-24/", "/2025-11-23/"));
        let err = check(&v, &headers, v.body.as_bytes(), v.timestamp).unwrap_err();
        assert!(err.to_string().contains("2025-11-24"), "{err}");
        // Extra signed headers are allowed when present and signed.
        let signed_more = good.replace(
            "SignedHeaders=content-type;host",
            "SignedHeaders=content-type;host;x-tc-action",
        );
        let headers = with_authorization(&v, &signed_more);
        assert_eq!(
            check(&v, &headers, v.body.as_bytes(), v.timestamp),
            Err(Tc3Error::SignatureFailure)
        );
        let signed_missing = good.replace(
            "SignedHeaders=content-type;host",
            "SignedHeaders=content-type;host;x-tc-token",
        );
        let headers = with_authorization(&v, &signed_missing);
        assert_eq!(
            check(&v, &headers, v.body.as_bytes(), v.timestamp),
            Err(Tc3Error::MissingHeader("x-tc-token".into()))
        );
    }
}

#[test]
fn tc3_extra_signed_headers_verify_when_signed_so() {
    // As Tencent's documented example: content-type;host;x-tc-action, the action lower-cased.
    let v = &vectors()[0];
    let date = tc3::utc_date(v.timestamp);
    let canonical = tc3::canonical_request(
        "POST",
        "/",
        "",
        &[
            ("content-type", "application/json"),
            ("host", "trtc.tencentcloudapi.com"),
            ("x-tc-action", "RemoveUser"),
        ],
        v.body.as_bytes(),
    );
    assert!(canonical.contains("x-tc-action:removeuser\n"));
    let to_sign = tc3::string_to_sign(v.timestamp, &date, "trtc", &canonical);
    let signature = tc3::signature(&v.secret_key, &date, "trtc", &to_sign);
    let authorization = format!(
        "TC3-HMAC-SHA256 Credential={}/{date}/trtc/tc3_request, SignedHeaders=content-type;host;x-tc-action, Signature={signature}",
        v.secret_id
    );
    let headers = with_authorization(v, &authorization);
    check(v, &headers, v.body.as_bytes(), v.timestamp).unwrap();
}

#[test]
fn tc3_missing_headers_are_named() {
    for v in vectors() {
        for missing in [
            "Authorization",
            "X-TC-Action",
            "X-TC-Version",
            "X-TC-Timestamp",
            "Host",
        ] {
            let headers: Vec<(String, String)> = v
                .headers
                .clone()
                .into_iter()
                .filter(|(n, _)| n != missing)
                .collect();
            let err = check(&v, &headers, v.body.as_bytes(), v.timestamp).unwrap_err();
            assert!(
                matches!(&err, Tc3Error::MissingHeader(name) if name.eq_ignore_ascii_case(missing)),
                "{missing}: {err}"
            );
            assert_eq!(err.code(), "MissingParameter");
        }
        let mut headers: Vec<(String, String)> = v.headers.clone().into_iter().collect();
        for (name, value) in &mut headers {
            if name == "X-TC-Timestamp" {
                *value = "yesterday".into();
            }
        }
        assert_eq!(
            check(&v, &headers, v.body.as_bytes(), v.timestamp),
            Err(Tc3Error::BadTimestamp("yesterday".into()))
        );
    }
}

#[test]
fn tc3_signed_requests_round_trip_and_hide_secrets() {
    let signer = Tc3Signer::new(
        Secret::new("AKIDtest"),
        Secret::new("topsecretkey"),
        "trtc",
        "127.0.0.1:8443",
        "2019-07-22",
    )
    .with_region("ap-singapore");
    let body = br#"{"SdkAppId":1400000000,"TaskId":"t-1"}"#;
    let headers = owned(&signer.sign("StopPublishCdnStream", 1_700_000_000, body));
    let names: Vec<&str> = headers.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "Authorization",
            "Content-Type",
            "Host",
            "X-TC-Action",
            "X-TC-Timestamp",
            "X-TC-Version",
            "X-TC-Region"
        ]
    );
    let request = IncomingRequest {
        method: "POST",
        path: "/",
        query: "",
        headers: &headers,
        body,
    };
    let lookup = |id: &str| (id == "AKIDtest").then(|| Secret::new("topsecretkey"));
    let verified = tc3::verify(&request, "trtc", lookup, 1_700_000_100).unwrap();
    assert_eq!(verified.action, "StopPublishCdnStream");
    assert_eq!(verified.region.as_deref(), Some("ap-singapore"));
    assert_eq!(verified.language, None);
    assert!(!format!("{signer:?}").contains("topsecretkey"));
    assert!(!format!("{signer:?}").contains("AKIDtest"));
}
