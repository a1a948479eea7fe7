//! A test double for Tencent Cloud Object Storage (COS), which cannot run here.
//!
//! `CosStandIn` is an HTTP server on 127.0.0.1 that speaks COS's XML API to clients such as
//! opendal's `cos` service and keeps the objects in the test bed's real S3 server (versitygw).
//! It is as strict as COS about who may ask: every request must carry a valid COS `q-sign`
//! signature (in the `Authorization` header, or in the query string as presigned URLs do):
//!
//! * the bucket comes from a virtual-hosted name `{bucket}.localhost[:port]` (else 400 InvalidURI);
//! * `q-ak` must be the configured SecretId (else 403 InvalidAccessKeyId);
//! * `q-sign-time` and `q-key-time` must cover now (else 403 AccessDenied "Request has expired");
//! * every header in `q-header-list` must be present, and `host` must be among them when
//!   `require_signed_host` is set (Tencent's SDKs sign it; opendal 0.59.5's signer never does, so
//!   tests of opendal turn this off);
//! * every query parameter must be in `q-url-param-list` and every listed one present;
//! * `q-signature` must be the one computed with the SecretKey (else 403 SignatureDoesNotMatch);
//! * a multipart request's `partNumber` must be 1 to 10,000 with an `uploadId`, an Upload Part -
//!   Copy's `x-cos-copy-source` must be `<BucketName-APPID>.cos.<Region>.myqcloud.com/<key>`
//!   and its `x-cos-copy-source-range` `bytes=FIRST-LAST` (else 400 InvalidArgument).
//!
//! Refusals carry COS's error XML. An accepted request is forwarded path-style to the S3 server,
//! re-signed with AWS SigV4 (`x-cos-*` headers renamed to their `x-amz-*` equivalents), and the
//! answer relayed back with `x-amz-*` renamed to `x-cos-*`. Bodies are buffered in memory.
//!
//! [`CosStandIn::misbehave`] turns it into a store that answers badly (see [`Fault`]), as a
//! failing gateway or a store under trouble does.

use crate::error::{Result, TestbedError};
use crate::ports::free_port;
use bytes::Bytes;
use hmac::{Hmac, KeyInit, Mac};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HOST, HeaderName, HeaderValue};
use hyper::{HeaderMap, Method, Request, Response, Uri};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

/// Who may sign requests to the stand-in, and the S3 server it keeps objects in.
#[derive(Clone, Debug)]
pub struct CosStandInConfig {
    pub secret_id: String,
    pub secret_key: String,
    /// Path-style S3 endpoint, e.g. `http://127.0.0.1:PORT`.
    pub upstream_endpoint: String,
    pub upstream_access_key: String,
    pub upstream_secret_key: String,
    pub upstream_region: String,
    /// Refuse a signature whose `q-header-list` lacks `host`. Tencent's SDKs sign the host;
    /// opendal 0.59.5 (reqsign-tencent-cos 3.0.7) signs only the headers it sets, never `host`.
    pub require_signed_host: bool,
}

/// One request as the stand-in saw it, with the status it answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggedRequest {
    pub method: String,
    /// The path as sent (percent-encoded), without the bucket (that is in the host name).
    pub path: String,
    /// The raw query string, empty when there was none.
    pub query: String,
    /// `x-cos-copy-source` and `x-cos-copy-source-range` as sent (a copy, or Upload Part - Copy).
    pub copy_source: Option<String>,
    pub copy_source_range: Option<String>,
    pub status: u16,
}

impl LoggedRequest {
    fn of(method: &Method, uri: &Uri, headers: &HeaderMap, status: u16) -> Self {
        LoggedRequest {
            method: method.to_string(),
            path: uri.path().to_string(),
            query: uri.query().unwrap_or_default().to_string(),
            copy_source: header_str(headers, "x-cos-copy-source"),
            copy_source_range: header_str(headers, "x-cos-copy-source-range"),
            status,
        }
    }

    /// An Upload Part - Copy: a part of a multipart upload copied from another object.
    pub fn is_part_copy(&self) -> bool {
        self.method == "PUT" && self.copy_source.is_some() && self.query.contains("partNumber=")
    }
}

/// Why a request was refused: COS's status, error code and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

/// How a misbehaving store answers every request while the fault lasts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// 500 with a body of random bytes (not COS's error XML); nothing reaches the store.
    Garbage,
    /// The request is carried out, but the answer's body is replaced with random bytes (status
    /// and headers kept): a 200 whose body says nothing a client can read.
    WrongBody,
    /// The request is never answered and its body never read (an upload hangs mid-body).
    Hang,
    /// Every Upload Part - Copy is refused with COS's 500 InternalError; other requests are
    /// answered as COS does (a store whose server-side copies fail).
    FailPartCopies,
}

pub struct CosStandIn {
    pub port: u16,
    log: Arc<Mutex<Vec<LoggedRequest>>>,
    state: Arc<State>,
    /// None while stopped ([`CosStandIn::stop`]).
    server: Option<tokio::task::JoinHandle<()>>,
}

struct State {
    config: CosStandInConfig,
    upstream: reqwest::Url,
    client: reqwest::Client,
    log: Arc<Mutex<Vec<LoggedRequest>>>,
    request_ids: AtomicU64,
    fault: Mutex<Option<Fault>>,
}

impl State {
    fn record(&self, request: LoggedRequest) {
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(request);
    }
}

impl CosStandIn {
    pub async fn start(config: CosStandInConfig) -> Result<Self> {
        let port = free_port();
        let upstream =
            reqwest::Url::parse(&config.upstream_endpoint).map_err(|e| TestbedError::Command {
                what: "COS stand-in".into(),
                message: format!("upstream endpoint {}: {e}", config.upstream_endpoint),
            })?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let state = Arc::new(State {
            config,
            upstream,
            client: reqwest::Client::builder().build()?,
            log: log.clone(),
            request_ids: AtomicU64::new(1),
            fault: Mutex::new(None),
        });
        let mut stand_in = Self {
            port,
            log,
            state,
            server: None,
        };
        stand_in.restart().await?;
        Ok(stand_in)
    }

    /// Goes down as a crashed or unreachable COS endpoint does: open connections are cut and
    /// new ones refused, until [`CosStandIn::restart`].
    pub fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }

    /// Serves again on the same port (the objects are still in the S3 server).
    pub async fn restart(&mut self) -> Result<()> {
        self.stop();
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .map_err(|source| TestbedError::Spawn {
                what: "COS stand-in".into(),
                source,
            })?;
        let state = self.state.clone();
        self.server = Some(tokio::spawn(async move {
            // Connections live in this set, so aborting the accept loop ends them too.
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                let state = state.clone();
                connections.spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(handle(&state, request).await) }
                    });
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .await;
                });
                while connections.try_join_next().is_some() {}
            }
        }));
        Ok(())
    }

    /// Answers every request from now on as `fault` says (None: as COS does).
    pub fn misbehave(&self, fault: Option<Fault>) {
        *self.state.fault.lock().unwrap_or_else(|e| e.into_inner()) = fault;
    }

    /// The endpoint to give a COS client; it prefixes the bucket to the host itself.
    pub fn endpoint(&self) -> String {
        format!("http://localhost:{}", self.port)
    }

    /// The host name a client sends for `bucket`; it must resolve to 127.0.0.1.
    pub fn host_for(&self, bucket: &str) -> String {
        format!("{bucket}.localhost")
    }

    /// Every request answered so far, oldest first.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for CosStandIn {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn handle(state: &State, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let fault = *state.fault.lock().unwrap_or_else(|e| e.into_inner());
    match fault {
        Some(Fault::Hang) => std::future::pending().await,
        Some(Fault::FailPartCopies) => {
            let seen = LoggedRequest::of(request.method(), request.uri(), request.headers(), 500);
            if seen.is_part_copy() {
                state.record(seen);
                let refusal = internal("the copy failed (FailPartCopies)".into());
                return error_response(&refusal, request.uri().path(), "cos-stand-in-fault");
            }
        }
        Some(Fault::Garbage) => {
            state.record(LoggedRequest::of(
                request.method(),
                request.uri(),
                request.headers(),
                500,
            ));
            let mut response = Response::new(Full::new(random_bytes()));
            *response.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
            return response;
        }
        Some(Fault::WrongBody) => {
            let response = answer(state, request).await;
            let (mut parts, _) = response.into_parts();
            let body = random_bytes();
            parts
                .headers
                .insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
            return Response::from_parts(parts, Full::new(body));
        }
        None => {}
    }
    answer(state, request).await
}

/// 64 to 1087 bytes of noise, different on every call.
fn random_bytes() -> Bytes {
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let digest = Sha256::digest(seed.to_le_bytes());
    let len = 64 + usize::from(digest[0]) * 4;
    Bytes::from(
        (0..len)
            .map(|i| digest[i % digest.len()] ^ (i as u8).wrapping_mul(31))
            .collect::<Vec<u8>>(),
    )
}

/// The answer COS would give.
async fn answer(state: &State, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    let request_id = format!(
        "cos-stand-in-{:08}",
        state.request_ids.fetch_add(1, Ordering::Relaxed)
    );
    let host = header_str(&parts.headers, HOST.as_str()).unwrap_or_default();
    let resource = format!("{host}{}", parts.uri.path());
    let outcome = match bucket_of(&host) {
        None => Err(Refusal {
            status: 400,
            code: "InvalidURI",
            message: format!("host {host:?} is not {{bucket}}.localhost"),
        }),
        Some(bucket) => match verify(
            &state.config,
            unix_now(),
            &parts.method,
            &parts.uri,
            &parts.headers,
        ) {
            Err(refusal) => Err(refusal),
            Ok(()) => match check_request(&parts.method, &parts.uri, &parts.headers).map(|()| body)
            {
                Err(refusal) => Err(refusal),
                Ok(body) => match body.collect().await {
                    Err(e) => Err(internal(format!("reading the request body: {e}"))),
                    Ok(body) => forward(state, bucket, &parts, body.to_bytes())
                        .await
                        .map_err(|e| internal(format!("upstream S3 server: {e}"))),
                },
            },
        },
    };
    let mut response =
        outcome.unwrap_or_else(|refusal| error_response(&refusal, &resource, &request_id));
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-cos-request-id", value);
    }
    state.record(LoggedRequest::of(
        &parts.method,
        &parts.uri,
        &parts.headers,
        response.status().as_u16(),
    ));
    response
}

/// What COS refuses in a signed request before it looks at any object: a multipart request's
/// part number (1 to 10,000) and upload id, and the form of a copy source and its range.
pub fn check_request(method: &Method, uri: &Uri, headers: &HeaderMap) -> Result<(), Refusal> {
    let invalid = |code, message: String| Refusal {
        status: 400,
        code,
        message,
    };
    let params = query_pairs(uri.query().unwrap_or_default());
    let param = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v);
    if let Some(number) = param("partNumber") {
        if !number
            .parse::<u32>()
            .is_ok_and(|n| (1..=10_000).contains(&n))
        {
            return Err(invalid(
                "InvalidArgument",
                format!("partNumber {number:?} is not a number from 1 to 10000"),
            ));
        }
        if param("uploadId").is_none_or(|id| id.is_empty()) {
            return Err(invalid(
                "InvalidArgument",
                "a part of a multipart upload needs its uploadId".into(),
            ));
        }
    }
    let source = header_str(headers, "x-cos-copy-source");
    let range = header_str(headers, "x-cos-copy-source-range");
    if range.is_some() && source.is_none() {
        return Err(invalid(
            "InvalidArgument",
            "x-cos-copy-source-range without x-cos-copy-source".into(),
        ));
    }
    let Some(source) = source else {
        return Ok(());
    };
    if *method != Method::PUT {
        return Err(invalid(
            "InvalidRequest",
            format!("x-cos-copy-source on a {method} request"),
        ));
    }
    // Upload Part - Copy names its source as COS documents it, by the source bucket's host
    // name; a plain copy may also give `/bucket/key` (as opendal's COS service does).
    let part_copy = param("partNumber").is_some();
    if !(copy_source_host_form(&source) || (!part_copy && source.starts_with('/'))) {
        return Err(invalid(
            "InvalidArgument",
            format!(
                "x-cos-copy-source {source:?} is not <BucketName-APPID>.cos.<Region>.myqcloud.com/<ObjectKey>"
            ),
        ));
    }
    if let Some(range) = range {
        let bounds = range
            .strip_prefix("bytes=")
            .and_then(|r| r.split_once('-'))
            .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)));
        if !part_copy || bounds.is_none_or(|(first, last)| first > last) {
            return Err(invalid(
                "InvalidArgument",
                format!("x-cos-copy-source-range {range:?} is not bytes=FIRST-LAST of a part copy"),
            ));
        }
    }
    Ok(())
}

/// `{bucket}-{appid}.cos.{region}.myqcloud.com/{key}`, the key percent-encoded and not empty.
fn copy_source_host_form(source: &str) -> bool {
    let Some((host, key)) = source.split_once('/') else {
        return false;
    };
    let label = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    let bucket_ok = |bucket: &str| {
        bucket.rsplit_once('-').is_some_and(|(name, appid)| {
            label(name) && !appid.is_empty() && appid.bytes().all(|b| b.is_ascii_digit())
        })
    };
    let host_ok = host
        .strip_suffix(".myqcloud.com")
        .and_then(|rest| rest.split_once(".cos."))
        .is_some_and(|(bucket, region)| bucket_ok(bucket) && label(region));
    let key_ok = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.~/%".contains(&b))
        && percent_decode_str(key).decode_utf8().is_ok();
    host_ok && key_ok
}

fn internal(message: String) -> Refusal {
    Refusal {
        status: 500,
        code: "InternalError",
        message,
    }
}

/// `{bucket}.localhost[:port]` → bucket; bucket names are `[a-z0-9-]` as in COS.
fn bucket_of(host: &str) -> Option<&str> {
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    let bucket = name.strip_suffix(".localhost")?;
    let valid = bucket
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    (!bucket.is_empty() && valid).then_some(bucket)
}

fn error_response(refusal: &Refusal, resource: &str, request_id: &str) -> Response<Full<Bytes>> {
    let body = format!(
        "<?xml version='1.0' encoding='utf-8' ?><Error><Code>{}</Code><Message>{}</Message>\
         <Resource>{}</Resource><RequestId>{}</RequestId></Error>",
        refusal.code,
        xml_escape(&refusal.message),
        xml_escape(resource),
        xml_escape(request_id)
    );
    Response::builder()
        .status(refusal.status)
        .header(CONTENT_TYPE, "application/xml")
        .body(Full::new(Bytes::from(body)))
        .expect("a static status and header are valid")
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&apos;")
        .replace('"', "&quot;")
}

// ---- COS signature ----

/// COS's encoding for signed keys and values: everything but `A-Za-z0-9-_.~` as `%XX`.
const COS_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');
/// The seven fields of a COS signature, as they appear in `Authorization` or a presigned URL.
const SIGN_FIELDS: [&str; 7] = [
    "q-sign-algorithm",
    "q-ak",
    "q-sign-time",
    "q-key-time",
    "q-header-list",
    "q-url-param-list",
    "q-signature",
];

/// The COS `q-signature` of a request, signed with `secret_key` for `key_time` (`start;end`).
/// `path` is the decoded request path; `params` and `headers` are the signed ones, as sent.
pub fn cos_signature(
    secret_key: &str,
    key_time: &str,
    method: &str,
    path: &str,
    params: &[(String, String)],
    headers: &[(String, String)],
) -> String {
    signature(
        secret_key, key_time, key_time, method, path, params, headers,
    )
}

/// The COS algorithm with q-key-time (for SignKey) and q-sign-time (in StringToSign) apart, as
/// COS's documentation has them; its SDKs always send the two equal.
fn signature(
    secret_key: &str,
    key_time: &str,
    sign_time: &str,
    method: &str,
    path: &str,
    params: &[(String, String)],
    headers: &[(String, String)],
) -> String {
    let sign_key = hex::encode(hmac_sha1(secret_key.as_bytes(), key_time.as_bytes()));
    let http_string = format!(
        "{}\n{path}\n{}\n{}\n",
        method.to_lowercase(),
        cos_pairs(params),
        cos_pairs(headers)
    );
    let string_to_sign = format!(
        "sha1\n{sign_time}\n{}\n",
        hex::encode(Sha1::digest(http_string.as_bytes()))
    );
    hex::encode(hmac_sha1(sign_key.as_bytes(), string_to_sign.as_bytes()))
}

/// `k=v&…` with keys lower-cased, both encoded, sorted by key.
fn cos_pairs(pairs: &[(String, String)]) -> String {
    let mut encoded: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| (cos_encode(&k.to_lowercase()), cos_encode(v)))
        .collect();
    encoded.sort();
    let joined: Vec<String> = encoded.iter().map(|(k, v)| format!("{k}={v}")).collect();
    joined.join("&")
}

fn cos_encode(text: &str) -> String {
    utf8_percent_encode(text, COS_ENCODE).to_string()
}

fn hmac_sha1(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha1>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// Checks a request's COS signature as COS does; `now` is in Unix seconds.
pub fn verify(
    config: &CosStandInConfig,
    now: u64,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<(), Refusal> {
    let deny = |code, message: String| Refusal {
        status: 403,
        code,
        message,
    };
    let mut params = query_pairs(uri.query().unwrap_or_default());
    // The signature is in Authorization, or else in the query string (presigned URLs); there its
    // own fields and the security token are not among the signed parameters.
    let fields: Vec<(String, String)> = match header_str(headers, AUTHORIZATION.as_str()) {
        Some(authorization) => query_pairs(&authorization),
        None => {
            let (sign, rest) = params.into_iter().partition(|(k, _)| {
                SIGN_FIELDS.contains(&k.as_str()) || k == "x-cos-security-token"
            });
            params = rest;
            sign
        }
    };
    let field = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let Some(given) = field("q-signature") else {
        return Err(deny("AccessDenied", "Access Denied.".into()));
    };
    let (
        Some("sha1"),
        Some(ak),
        Some(sign_time),
        Some(key_time),
        Some(header_list),
        Some(param_list),
    ) = (
        field("q-sign-algorithm"),
        field("q-ak"),
        field("q-sign-time"),
        field("q-key-time"),
        field("q-header-list"),
        field("q-url-param-list"),
    )
    else {
        return Err(deny(
            "AccessDenied",
            "the COS signature lacks a field or is not sha1".into(),
        ));
    };
    if ak != config.secret_id {
        return Err(deny(
            "InvalidAccessKeyId",
            "The Access Key Id you provided does not exist in our records.".into(),
        ));
    }
    for window in [sign_time, key_time] {
        let covers_now = window
            .split_once(';')
            .and_then(|(start, end)| Some((start.parse::<u64>().ok()?, end.parse::<u64>().ok()?)))
            .is_some_and(|(start, end)| start <= now && now <= end);
        if !covers_now {
            return Err(deny("AccessDenied", "Request has expired".into()));
        }
    }

    let list = |names: &str| -> Vec<String> {
        names
            .split(';')
            .filter(|n| !n.is_empty())
            .map(str::to_lowercase)
            .collect()
    };
    let signed_headers = list(header_list);
    if config.require_signed_host && !signed_headers.iter().any(|h| h == "host") {
        return Err(deny(
            "AccessDenied",
            "the host header must be signed".into(),
        ));
    }
    let mut header_pairs = Vec::new();
    for name in &signed_headers {
        let Some(value) = header_str(headers, name) else {
            return Err(deny(
                "AccessDenied",
                format!("header {name} is in q-header-list but not in the request"),
            ));
        };
        header_pairs.push((name.clone(), value));
    }
    // COS wants every parameter signed: the list must name exactly the request's parameters.
    let signed_params = list(param_list);
    for (key, _) in &params {
        if !signed_params.contains(&cos_encode(&key.to_lowercase())) {
            return Err(deny(
                "AccessDenied",
                format!("query parameter {key} is not in q-url-param-list"),
            ));
        }
    }
    for name in &signed_params {
        if !params
            .iter()
            .any(|(k, _)| cos_encode(&k.to_lowercase()) == *name)
        {
            return Err(deny(
                "AccessDenied",
                format!("q-url-param-list names {name}, which the request does not have"),
            ));
        }
    }

    let path = percent_decode_str(uri.path()).decode_utf8_lossy();
    let expected = signature(
        &config.secret_key,
        key_time,
        sign_time,
        method.as_str(),
        &path,
        &params,
        &header_pairs,
    );
    if expected != given {
        return Err(deny(
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided. \
             Check your key and signing method."
                .into(),
        ));
    }
    Ok(())
}

/// `a=1&b&c=%20` → decoded pairs; `+` stays a plus, as COS's signers treat it.
fn query_pairs(query: &str) -> Vec<(String, String)> {
    let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn header_str(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs()
}

// ---- forwarding to S3 with SigV4 ----

/// AWS's URI encoding: only unreserved characters stay; the path keeps its slashes.
const AWS_ENCODE: &AsciiSet = COS_ENCODE;
const AWS_PATH_ENCODE: &AsciiSet = &COS_ENCODE.remove(b'/');

/// The S3 name of a COS request header, or None when it is not forwarded.
fn upstream_header(name: &str) -> Option<String> {
    const SAME: [&str; 6] = [
        "content-type",
        "content-md5",
        "range",
        "cache-control",
        "content-disposition",
        "content-encoding",
    ];
    const RENAMED: [&str; 9] = [
        "copy-source",
        "copy-source-if-match",
        "copy-source-if-none-match",
        "copy-source-if-modified-since",
        "copy-source-if-unmodified-since",
        "copy-source-range",
        "metadata-directive",
        "tagging",
        "tagging-directive",
    ];
    if SAME.contains(&name) || name.starts_with("if-") {
        return Some(name.to_string());
    }
    let cos = name.strip_prefix("x-cos-")?;
    (cos.starts_with("meta-") || RENAMED.contains(&cos)).then(|| format!("x-amz-{cos}"))
}

/// COS names a copy source `{bucket}.{cos host}/{key}` or `/{bucket}/{key}`; S3 wants the latter.
fn upstream_copy_source(value: &str) -> String {
    if value.starts_with('/') {
        return value.to_string();
    }
    let (host, key) = value.split_once('/').unwrap_or((value, ""));
    let bucket = host.split('.').next().unwrap_or(host);
    format!("/{bucket}/{key}")
}

async fn forward(
    state: &State,
    bucket: &str,
    parts: &hyper::http::request::Parts,
    body: Bytes,
) -> std::result::Result<Response<Full<Bytes>>, reqwest::Error> {
    let config = &state.config;
    let decoded = percent_decode_str(parts.uri.path()).decode_utf8_lossy();
    let path = match decoded.as_ref() {
        "/" => format!("/{bucket}"),
        key => format!("/{bucket}{}", utf8_percent_encode(key, AWS_PATH_ENCODE)),
    };
    // The query as S3 needs it: the request's own parameters (no COS signature), canonical.
    let mut params: Vec<(String, String)> = query_pairs(parts.uri.query().unwrap_or_default())
        .into_iter()
        .filter(|(k, _)| !SIGN_FIELDS.contains(&k.as_str()) && k != "x-cos-security-token")
        .map(|(k, v)| {
            let encode = |s: &str| utf8_percent_encode(s, AWS_ENCODE).to_string();
            (encode(&k), encode(&v))
        })
        .collect();
    params.sort();
    let query: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let query = query.join("&");

    let mut headers: Vec<(String, String)> = Vec::new();
    for (name, value) in &parts.headers {
        if let Some(upstream) = upstream_header(name.as_str()) {
            let value = String::from_utf8_lossy(value.as_bytes()).trim().to_string();
            let value = match upstream.as_str() {
                "x-amz-copy-source" => upstream_copy_source(&value),
                _ => value,
            };
            headers.push((upstream, value));
        }
    }
    // COS's conditional create; the S3 server answers a lost race 412 where COS says 409
    // FileAlreadyExists, and opendal's COS service takes both as ConditionNotMatch.
    if header_str(&parts.headers, "x-cos-forbid-overwrite").is_some_and(|v| v == "true") {
        headers.push(("if-none-match".into(), "*".into()));
    }
    let upstream = &state.upstream;
    let host = match upstream.port() {
        Some(port) => format!("{}:{port}", upstream.host_str().unwrap_or_default()),
        None => upstream.host_str().unwrap_or_default().to_string(),
    };
    let payload_hash = hex::encode(Sha256::digest(&body));
    let amz_date = amz_date(unix_now());
    headers.push(("host".into(), host));
    headers.push(("x-amz-content-sha256".into(), payload_hash.clone()));
    headers.push(("x-amz-date".into(), amz_date.clone()));
    let authorization = sigv4_authorization(
        &SigV4 {
            access_key: &config.upstream_access_key,
            secret_key: &config.upstream_secret_key,
            region: &config.upstream_region,
            amz_date: &amz_date,
        },
        parts.method.as_str(),
        &path,
        &query,
        &headers,
        &payload_hash,
    );

    let mut url = format!("{}{path}", config.upstream_endpoint.trim_end_matches('/'));
    if !query.is_empty() {
        url.push('?');
        url.push_str(&query);
    }
    let mut upstream_request = state.client.request(parts.method.clone(), url);
    for (name, value) in headers.iter().filter(|(n, _)| n != "host") {
        upstream_request = upstream_request.header(name, value);
    }
    upstream_request = upstream_request.header(AUTHORIZATION, authorization);
    // reqwest sets Content-Length from the buffered body, which is what the client sent.
    if !body.is_empty() || parts.headers.contains_key(CONTENT_LENGTH) {
        upstream_request = upstream_request.body(body);
    }
    let upstream_response = upstream_request.send().await?;

    let mut response = Response::builder().status(upstream_response.status().as_u16());
    for (name, value) in upstream_response.headers() {
        let name = name.as_str();
        let relayed = match name.strip_prefix("x-amz-") {
            Some(rest) => format!("x-cos-{rest}"),
            None => name.to_string(),
        };
        let kept = name.starts_with("x-amz-")
            || [
                "etag",
                "content-type",
                "content-length",
                "content-range",
                "last-modified",
                "accept-ranges",
            ]
            .contains(&name);
        if let (true, Ok(relayed)) = (kept, HeaderName::from_bytes(relayed.as_bytes())) {
            response = response.header(relayed, value.as_bytes());
        }
    }
    let body = upstream_response.bytes().await?;
    Ok(response
        .body(Full::new(body))
        .unwrap_or_else(|e| error_response(&internal(e.to_string()), "", "")))
}

struct SigV4<'a> {
    access_key: &'a str,
    secret_key: &'a str,
    region: &'a str,
    /// `YYYYMMDDTHHMMSSZ`
    amz_date: &'a str,
}

/// The `Authorization` value for an S3 request; `path` and `query` are already canonical and
/// `headers` are all the headers to sign (lower-case names).
fn sigv4_authorization(
    key: &SigV4,
    method: &str,
    path: &str,
    query: &str,
    headers: &[(String, String)],
    payload_hash: &str,
) -> String {
    let mut headers = headers.to_vec();
    headers.sort();
    let canonical_headers: String = headers.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let signed_headers: Vec<&str> = headers.iter().map(|(k, _)| k.as_str()).collect();
    let signed_headers = signed_headers.join(";");
    let canonical_request =
        format!("{method}\n{path}\n{query}\n{canonical_headers}\n{signed_headers}\n{payload_hash}");
    let date = &key.amz_date[..8];
    let scope = format!("{date}/{}/s3/aws4_request", key.region);
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{}\n{scope}\n{}",
        key.amz_date,
        hex::encode(Sha256::digest(canonical_request.as_bytes()))
    );
    let mut signing_key = format!("AWS4{}", key.secret_key).into_bytes();
    for part in [date, key.region, "s3", "aws4_request"] {
        signing_key = hmac_sha256(&signing_key, part.as_bytes());
    }
    let signature = hex::encode(hmac_sha256(&signing_key, string_to_sign.as_bytes()));
    format!(
        "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
        key.access_key
    )
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// Unix seconds → `YYYYMMDDTHHMMSSZ` (UTC), by the days-to-civil algorithm.
fn amz_date(unix: u64) -> String {
    let (days, secs) = (unix / 86_400, unix % 86_400);
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/vectors/cos-sign.json");

    fn pairs(object: &serde_json::Value) -> Vec<(String, String)> {
        object
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
            .collect()
    }

    fn field<'a>(authorization: &'a str, name: &str) -> &'a str {
        authorization
            .split('&')
            .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
            .unwrap()
    }

    #[test]
    fn cos_signature_reproduces_the_sdk_vectors() {
        let text = std::fs::read_to_string(VECTORS).unwrap_or_else(|e| panic!("{VECTORS}: {e}"));
        let vectors: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
        assert_eq!(vectors.len(), 2);
        for v in &vectors {
            let authorization = v["authorization"].as_str().unwrap();
            let signature = cos_signature(
                v["secretKey"].as_str().unwrap(),
                field(authorization, "q-key-time"),
                v["method"].as_str().unwrap(),
                v["path"].as_str().unwrap(),
                &pairs(&v["params"]),
                &pairs(&v["headers"]),
            );
            assert_eq!(signature, field(authorization, "q-signature"), "{v}");
        }
    }

    fn config() -> CosStandInConfig {
        CosStandInConfig {
            secret_id: "AKIDEXAMPLE1234567890".into(),
            secret_key: "bLcPnl88WU30VY57ipRhSePfPdOfSruK".into(),
            upstream_endpoint: "http://127.0.0.1:1".into(),
            upstream_access_key: String::new(),
            upstream_secret_key: String::new(),
            upstream_region: String::new(),
            require_signed_host: true,
        }
    }

    const NOW: u64 = 1_764_000_000;

    /// A request signed like COS's SDK: host and content-length signed, over `params`.
    fn signed(uri: &str, params: &[(&str, &str)], key_time: &str) -> (Uri, HeaderMap) {
        signed_with(uri, params, key_time, &["content-length", "host"])
    }

    /// A POST with Host and Content-Length, signed over `params` and the headers `signing`.
    fn signed_with(
        uri: &str,
        params: &[(&str, &str)],
        key_time: &str,
        signing: &[&str],
    ) -> (Uri, HeaderMap) {
        let uri: Uri = uri.parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(HOST, "test-1250000000.localhost:9000".parse().unwrap());
        headers.insert(CONTENT_LENGTH, "0".parse().unwrap());
        let header_pairs: Vec<(String, String)> = signing
            .iter()
            .map(|name| (name.to_string(), header_str(&headers, name).unwrap()))
            .collect();
        let param_pairs: Vec<(String, String)> = params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let param_list: Vec<&str> = params.iter().map(|(k, _)| *k).collect();
        let signature = cos_signature(
            &config().secret_key,
            key_time,
            "POST",
            &percent_decode_str(uri.path()).decode_utf8_lossy(),
            &param_pairs,
            &header_pairs,
        );
        let authorization = format!(
            "q-sign-algorithm=sha1&q-ak=AKIDEXAMPLE1234567890&q-sign-time={key_time}&q-key-time={key_time}\
             &q-header-list={}&q-url-param-list={}&q-signature={signature}",
            signing.join(";"),
            param_list.join(";")
        );
        headers.insert(AUTHORIZATION, authorization.parse().unwrap());
        (uri, headers)
    }

    fn check(uri: &Uri, headers: &HeaderMap) -> Result<(), Refusal> {
        verify(&config(), NOW, &Method::POST, uri, headers)
    }

    #[test]
    fn a_correctly_signed_request_passes() {
        let (uri, headers) = signed(
            "/a%20b/c.mp4?uploads",
            &[("uploads", "")],
            "1763999940;1764003600",
        );
        assert_eq!(check(&uri, &headers), Ok(()));
    }

    #[test]
    fn a_tampered_signature_is_refused() {
        let (uri, mut headers) = signed(
            "/a.mp4?uploads",
            &[("uploads", "")],
            "1763999940;1764003600",
        );
        let tampered = headers[AUTHORIZATION]
            .to_str()
            .unwrap()
            .replace("q-signature=", "q-signature=0");
        headers.insert(
            AUTHORIZATION,
            tampered[..tampered.len() - 1].parse().unwrap(),
        );
        assert_eq!(
            check(&uri, &headers).unwrap_err().code,
            "SignatureDoesNotMatch"
        );
        // Signed for another path: the same signature does not fit.
        let (_, headers) = signed(
            "/a.mp4?uploads",
            &[("uploads", "")],
            "1763999940;1764003600",
        );
        let other: Uri = "/b.mp4?uploads".parse().unwrap();
        assert_eq!(
            check(&other, &headers).unwrap_err().code,
            "SignatureDoesNotMatch"
        );
        // Signed with another key.
        let mut wrong = config();
        wrong.secret_key = "not-the-key".into();
        let refusal = verify(&wrong, NOW, &Method::POST, &uri, &headers).unwrap_err();
        assert_eq!(
            (refusal.status, refusal.code),
            (403, "SignatureDoesNotMatch")
        );
    }

    #[test]
    fn an_expired_time_window_is_refused() {
        let (uri, headers) = signed(
            "/a.mp4?uploads",
            &[("uploads", "")],
            "1763990000;1763999999",
        );
        let refusal = check(&uri, &headers).unwrap_err();
        assert_eq!(
            (refusal.status, refusal.code, refusal.message.as_str()),
            (403, "AccessDenied", "Request has expired")
        );
    }

    #[test]
    fn an_unsigned_query_parameter_is_refused() {
        let (_, headers) = signed(
            "/a.mp4?uploads",
            &[("uploads", "")],
            "1763999940;1764003600",
        );
        let added: Uri = "/a.mp4?uploads&prefix=x".parse().unwrap();
        let refusal = check(&added, &headers).unwrap_err();
        assert_eq!((refusal.status, refusal.code), (403, "AccessDenied"));
        assert!(refusal.message.contains("prefix"), "{refusal:?}");
        // A listed parameter that the request lacks is refused too.
        let dropped: Uri = "/a.mp4".parse().unwrap();
        assert_eq!(check(&dropped, &headers).unwrap_err().code, "AccessDenied");
    }

    #[test]
    fn an_unknown_key_a_missing_signature_and_a_missing_header_are_refused() {
        let (uri, headers) = signed("/a.mp4", &[], "1763999940;1764003600");
        let mut other = config();
        other.secret_id = "AKIDOTHER".into();
        let refusal = verify(&other, NOW, &Method::POST, &uri, &headers).unwrap_err();
        assert_eq!(refusal.code, "InvalidAccessKeyId");
        assert_eq!(
            check(&uri, &HeaderMap::new()).unwrap_err().code,
            "AccessDenied"
        );
        // A signed header the request does not carry.
        let mut missing = headers.clone();
        missing.remove(CONTENT_LENGTH);
        let refusal = check(&uri, &missing).unwrap_err();
        assert!(refusal.message.contains("content-length"), "{refusal:?}");
    }

    #[test]
    fn an_unsigned_host_is_refused_when_required() {
        let (uri, headers) =
            signed_with("/a.mp4", &[], "1763999940;1764003600", &["content-length"]);
        let refusal = check(&uri, &headers).unwrap_err();
        assert_eq!(
            (refusal.code, refusal.message.as_str()),
            ("AccessDenied", "the host header must be signed")
        );
        // opendal's signer leaves the host out; with the check off, its signatures still count.
        let lenient = CosStandInConfig {
            require_signed_host: false,
            ..config()
        };
        assert_eq!(verify(&lenient, NOW, &Method::POST, &uri, &headers), Ok(()));
    }

    #[test]
    fn a_presigned_url_passes_without_its_own_fields_being_signed() {
        let (uri, headers) = signed(
            "/a.mp4?uploads",
            &[("uploads", "")],
            "1763999940;1764003600",
        );
        let authorization = headers[AUTHORIZATION].to_str().unwrap().replace(';', "%3B");
        let presigned: Uri = format!("{}?uploads&{authorization}", uri.path())
            .parse()
            .unwrap();
        let mut without = headers.clone();
        without.remove(AUTHORIZATION);
        assert_eq!(check(&presigned, &without), Ok(()));
    }

    #[test]
    fn sigv4_matches_the_aws_get_object_example() {
        // AWS's documented example (GET /test.txt with a Range header, 2013-05-24).
        let empty = hex::encode(Sha256::digest(b""));
        let headers = [
            ("host", "examplebucket.s3.amazonaws.com"),
            ("range", "bytes=0-9"),
            ("x-amz-content-sha256", empty.as_str()),
            ("x-amz-date", "20130524T000000Z"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let key = SigV4 {
            access_key: "AKIAIOSFODNN7EXAMPLE",
            secret_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            region: "us-east-1",
            amz_date: "20130524T000000Z",
        };
        let authorization = sigv4_authorization(&key, "GET", "/test.txt", "", &headers, &empty);
        assert!(
            authorization.ends_with(
                "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
            ),
            "{authorization}"
        );
        assert_eq!(amz_date(1_369_353_600), "20130524T000000Z");
        assert_eq!(amz_date(1_764_000_300), "20251124T160500Z");
    }

    #[test]
    fn part_numbers_upload_ids_and_copy_sources_are_checked_as_cos_does() {
        let check = |method: Method, uri: &str, copy: Option<(&str, Option<&str>)>| {
            let mut headers = HeaderMap::new();
            if let Some((source, range)) = copy {
                headers.insert("x-cos-copy-source", source.parse().unwrap());
                if let Some(range) = range {
                    headers.insert("x-cos-copy-source-range", range.parse().unwrap());
                }
            }
            check_request(&method, &uri.parse().unwrap(), &headers).map_err(|r| r.code)
        };
        let source = "recordings-1250000000.cos.ap-shanghai.myqcloud.com/a/.j/00001.chunk";
        let part = "/a/k.mp4?partNumber=2&uploadId=1585130821cbb7df1d";
        assert_eq!(
            check(Method::PUT, part, Some((source, Some("bytes=0-5242879")))),
            Ok(())
        );
        assert_eq!(check(Method::PUT, part, None), Ok(()));
        for bad in [
            "/a/k.mp4?partNumber=0&uploadId=x",
            "/a/k.mp4?partNumber=10001&uploadId=x",
            "/a/k.mp4?partNumber=one&uploadId=x",
            "/a/k.mp4?partNumber=1",
            "/a/k.mp4?partNumber=1&uploadId=",
        ] {
            assert_eq!(
                check(Method::PUT, bad, None),
                Err("InvalidArgument"),
                "{bad}"
            );
        }
        for bad_source in [
            "/recordings-1250000000/a/.j/00001.chunk",
            "recordings.cos.ap-shanghai.myqcloud.com/a/x",
            "recordings-1250000000.cos.ap-shanghai.example.com/a/x",
            "recordings-1250000000.ap-shanghai.myqcloud.com/a/x",
            "recordings-1250000000.cos.ap-shanghai.myqcloud.com/",
            "recordings-1250000000.cos.ap-shanghai.myqcloud.com/a b",
        ] {
            assert_eq!(
                check(Method::PUT, part, Some((bad_source, None))),
                Err("InvalidArgument"),
                "{bad_source}"
            );
        }
        for bad_range in ["bytes=5-4", "0-9", "bytes=0-", "bytes=a-b"] {
            assert_eq!(
                check(Method::PUT, part, Some((source, Some(bad_range)))),
                Err("InvalidArgument"),
                "{bad_range}"
            );
        }
        // A whole-object copy may name its source path-style, and has no range.
        assert_eq!(
            check(
                Method::PUT,
                "/b.mp4",
                Some(("/recordings-1250000000/a.mp4", None))
            ),
            Ok(())
        );
        assert_eq!(
            check(Method::PUT, "/b.mp4", Some((source, Some("bytes=0-1")))),
            Err("InvalidArgument")
        );
        assert_eq!(
            check(Method::POST, "/b.mp4", Some((source, None))),
            Err("InvalidRequest")
        );
    }

    #[test]
    fn hosts_name_buckets() {
        assert_eq!(
            bucket_of("recordings-1250000000.localhost:8080"),
            Some("recordings-1250000000")
        );
        assert_eq!(bucket_of("b.localhost"), Some("b"));
        assert_eq!(bucket_of("localhost:8080"), None);
        assert_eq!(bucket_of("b.example.com"), None);
        assert_eq!(
            upstream_copy_source("b-1.cos.ap-shanghai.myqcloud.com/k/x"),
            "/b-1/k/x"
        );
        assert_eq!(
            upstream_header("x-cos-meta-owner").as_deref(),
            Some("x-amz-meta-owner")
        );
        assert_eq!(upstream_header("x-cos-security-token"), None);
    }
}
