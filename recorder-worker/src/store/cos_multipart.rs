//! A part's object assembled by COS from the part's stored chunks: COS's multipart upload with
//! Upload Part - Copy, which opendal's COS service does not offer (its writer has no
//! `copy_from`), so the requests are made here.
//!
//! Initiate (`POST /key?uploads`), one Upload Part - Copy per stored chunk (`PUT
//! /key?partNumber=N&uploadId=ID` with `x-cos-copy-source: {bucket}.cos.{region}.myqcloud.com/
//! {chunk key}` and `x-cos-copy-source-range: bytes=0-{len-1}`), one Upload Part for the rest,
//! Complete (`POST /key?uploadId=ID` with the parts' list), or Abort (`DELETE /key?uploadId=ID`).
//! Each request is signed by reqsign-tencent-cos, the signer of opendal's COS service, with the
//! same credentials, and sent through the store's HTTP transport (the same client: endpoint
//! override, `--resolve`, plain http); each attempt is bounded by the request timeout and a
//! failed one retried like opendal's retry layer does (`RetryPolicy`), each retry counted.

use crate::store::storage::{Credentials, RetryPolicy, encode_key};
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{Request, Response, StatusCode};
use opendal::{Buffer, HttpTransporter};
use reqsign_core::{Context, OsEnv, Signer};
use reqsign_tencent_cos::{
    Credential, DefaultCredentialProvider, RequestSigner, StaticCredentialProvider,
};
use std::ops::Range;
use std::time::Duration;

/// Why a request of the multipart upload did not succeed (after its retries).
#[derive(Debug, thiserror::Error)]
pub enum CosError {
    #[error("COS endpoint {0:?} is not a URL with a host")]
    Endpoint(String),
    #[error("{op} {key}: cannot build the request: {source}")]
    Build {
        op: &'static str,
        key: String,
        #[source]
        source: http::Error,
    },
    #[error("{op} {key}: cannot sign the request: {source}")]
    Sign {
        op: &'static str,
        key: String,
        #[source]
        source: Box<reqsign_core::Error>,
    },
    #[error("{op} {key}: {source}")]
    Transport {
        op: &'static str,
        key: String,
        #[source]
        source: Box<opendal::Error>,
    },
    #[error("{op} {key}: no answer within {timeout:?}")]
    Timeout {
        op: &'static str,
        key: String,
        timeout: Duration,
    },
    #[error("{op} {key}: COS answered {status} {code}: {message}")]
    Refused {
        op: &'static str,
        key: String,
        status: u16,
        code: String,
        message: String,
    },
    #[error("{op} {key}: the answer ({status}) holds no {what}")]
    Unreadable {
        op: &'static str,
        key: String,
        status: u16,
        what: &'static str,
    },
}

impl CosError {
    /// Worth another attempt: the store or the way to it had trouble, not the request.
    fn temporary(&self) -> bool {
        match self {
            CosError::Transport { source, .. } => source.is_temporary(),
            CosError::Timeout { .. } | CosError::Unreadable { .. } => true,
            // A 200 with an error in its body is COS failing after it accepted the request.
            CosError::Refused { status, .. } => *status >= 500 || *status == 429 || *status < 300,
            CosError::Endpoint(_) | CosError::Build { .. } | CosError::Sign { .. } => false,
        }
    }
}

/// COS's multipart upload with server-side part copies, for one bucket.
pub struct CosMultipart {
    transport: HttpTransporter,
    signer: Signer<Credential>,
    /// `scheme://{bucket}.{endpoint host}[:port]`, as opendal's COS service addresses the bucket.
    endpoint: String,
    /// Where COS finds a copy source: `{bucket}.cos.{region}.myqcloud.com`.
    source_host: String,
    retry: RetryPolicy,
}

impl std::fmt::Debug for CosMultipart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CosMultipart")
            .field("endpoint", &self.endpoint)
            .field("source_host", &self.source_host)
            .finish_non_exhaustive()
    }
}

/// One part of the upload, as Complete lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    pub number: u32,
    pub etag: String,
}

impl CosMultipart {
    /// For `bucket` in `region` at `endpoint` (the service endpoint, without the bucket);
    /// `credentials` None means the ambient identity opendal's COS service would use.
    pub fn new(
        transport: HttpTransporter,
        endpoint: &str,
        bucket: &str,
        region: &str,
        credentials: Option<&Credentials>,
        retry: RetryPolicy,
    ) -> Result<Self, CosError> {
        let endpoint = bucket_endpoint(endpoint, bucket)?;
        let context = Context::new()
            .with_file_read(reqsign_file_read_tokio::TokioFileRead)
            .with_http_send(transport.clone())
            .with_env(OsEnv);
        let signer = match credentials {
            Some(c) => {
                let provider = match &c.token {
                    Some(token) => {
                        StaticCredentialProvider::with_security_token(&c.id, &c.secret, token)
                    }
                    None => StaticCredentialProvider::new(&c.id, &c.secret),
                };
                Signer::new(context, provider, RequestSigner::new())
            }
            None => Signer::new(
                context,
                DefaultCredentialProvider::new(),
                RequestSigner::new(),
            ),
        };
        Ok(Self {
            transport,
            signer,
            endpoint,
            source_host: format!("{bucket}.cos.{region}.myqcloud.com"),
            retry,
        })
    }

    fn url(&self, key: &str, query: &str) -> String {
        format!("{}/{}?{query}", self.endpoint, encode_key(key))
    }

    /// Initiate Multipart Upload: the new upload's id.
    pub async fn initiate(&self, key: &str, content_type: &str) -> Result<String, CosError> {
        let op = "InitiateMultipartUpload";
        self.call(
            op,
            key,
            || {
                Request::post(self.url(key, "uploads"))
                    .header(CONTENT_TYPE, content_type)
                    .body(Buffer::new())
            },
            |status, _, body| {
                xml_field(body, "UploadId").ok_or_else(|| unreadable(op, key, status, "UploadId"))
            },
        )
        .await
    }

    /// Upload Part - Copy: part `number` is bytes `range` of the object `source`.
    pub async fn copy_part(
        &self,
        key: &str,
        upload_id: &str,
        number: u32,
        source: &str,
        range: Range<u64>,
    ) -> Result<Part, CosError> {
        let op = "UploadPartCopy";
        let copy_source = format!("{}/{}", self.source_host, encode_key(source));
        let copy_range = format!("bytes={}-{}", range.start, range.end - 1);
        let etag = self
            .call(
                op,
                key,
                || {
                    Request::put(self.part_url(key, upload_id, number))
                        .header("x-cos-copy-source", &copy_source)
                        .header("x-cos-copy-source-range", &copy_range)
                        .body(Buffer::new())
                },
                // COS may answer 200 and still fail the copy: then the body is an error, not
                // a CopyPartResult with the part's ETag.
                |status, _, body| {
                    xml_field(body, "ETag").ok_or_else(|| unreadable(op, key, status, "ETag"))
                },
            )
            .await?;
        Ok(Part { number, etag })
    }

    /// Upload Part: part `number` is `data` (not copied: the buffer's pieces are sent as they are).
    pub async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: u32,
        data: Buffer,
    ) -> Result<Part, CosError> {
        let op = "UploadPart";
        let etag = self
            .call(
                op,
                key,
                || {
                    Request::put(self.part_url(key, upload_id, number))
                        .header(CONTENT_LENGTH, data.len())
                        .body(data.clone())
                },
                |status, response: &Response<Buffer>, _| {
                    response
                        .headers()
                        .get(http::header::ETAG)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string)
                        .ok_or_else(|| unreadable(op, key, status, "ETag header"))
                },
            )
            .await?;
        Ok(Part { number, etag })
    }

    fn part_url(&self, key: &str, upload_id: &str, number: u32) -> String {
        self.url(
            key,
            &format!("partNumber={number}&uploadId={}", encode_key(upload_id)),
        )
    }

    /// Complete Multipart Upload: the object is `parts`, in order.
    pub async fn complete(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[Part],
    ) -> Result<(), CosError> {
        let op = "CompleteMultipartUpload";
        let body = complete_body(parts);
        self.call(
            op,
            key,
            || {
                Request::post(self.url(key, &format!("uploadId={}", encode_key(upload_id))))
                    .header(CONTENT_LENGTH, body.len())
                    .header(CONTENT_TYPE, "application/xml")
                    .body(Buffer::from(body.clone()))
            },
            // As with a copy, a 200 whose body is not the result is a failure.
            |status, _, body| {
                body.contains("CompleteMultipartUploadResult")
                    .then_some(())
                    .ok_or_else(|| unreadable(op, key, status, "CompleteMultipartUploadResult"))
            },
        )
        .await
    }

    /// Abort Multipart Upload: the copied and uploaded parts are dropped.
    pub async fn abort(&self, key: &str, upload_id: &str) -> Result<(), CosError> {
        self.call(
            "AbortMultipartUpload",
            key,
            || {
                Request::delete(self.url(key, &format!("uploadId={}", encode_key(upload_id))))
                    .body(Buffer::new())
            },
            |_, _, _| Ok(()),
        )
        .await
    }

    /// Sends the request `build` makes until it succeeds and `read` accepts the answer, or the
    /// retry policy gives up; each attempt is signed afresh and bounded by the request timeout.
    async fn call<T>(
        &self,
        op: &'static str,
        key: &str,
        build: impl Fn() -> http::Result<Request<Buffer>>,
        read: impl Fn(u16, &Response<Buffer>, &str) -> Result<T, CosError>,
    ) -> Result<T, CosError> {
        let mut attempt = 0;
        loop {
            let outcome = tokio::time::timeout(self.retry.request_timeout, async {
                let request = build().map_err(|source| CosError::Build {
                    op,
                    key: key.to_string(),
                    source,
                })?;
                let (mut head, body) = request.into_parts();
                self.signer
                    .sign(&mut head, None)
                    .await
                    .map_err(|source| CosError::Sign {
                        op,
                        key: key.to_string(),
                        source: Box::new(source),
                    })?;
                let response = self
                    .transport
                    .send(Request::from_parts(head, body))
                    .await
                    .map_err(|source| CosError::Transport {
                        op,
                        key: key.to_string(),
                        source: Box::new(source),
                    })?;
                let status = response.status();
                let text = String::from_utf8_lossy(&response.body().to_bytes()).into_owned();
                if !status.is_success() || text.contains("<Error>") {
                    return Err(refused(op, key, status, &text));
                }
                read(status.as_u16(), &response, &text)
            })
            .await
            .unwrap_or_else(|_| {
                Err(CosError::Timeout {
                    op,
                    key: key.to_string(),
                    timeout: self.retry.request_timeout,
                })
            });
            match outcome {
                Err(e) if e.temporary() && attempt < self.retry.max_times => {
                    attempt += 1;
                    let delay = backoff(&self.retry, attempt);
                    crate::shared::metrics::metrics().upload_retries.inc();
                    tracing::warn!(operation = op, attempt, after = ?delay, "store request failed, retrying: {e}");
                    tokio::time::sleep(delay).await;
                }
                outcome => return outcome,
            }
        }
    }
}

fn unreadable(op: &'static str, key: &str, status: u16, what: &'static str) -> CosError {
    CosError::Unreadable {
        op,
        key: key.to_string(),
        status,
        what,
    }
}

fn refused(op: &'static str, key: &str, status: StatusCode, body: &str) -> CosError {
    CosError::Refused {
        op,
        key: key.to_string(),
        status: status.as_u16(),
        code: xml_field(body, "Code").unwrap_or_default(),
        message: xml_field(body, "Message").unwrap_or_default(),
    }
}

/// The delay before retry `attempt` (1, 2, …): doubling from the minimum up to the maximum,
/// with up to as much again of jitter, as opendal's retry layer does with `with_jitter`.
fn backoff(retry: &RetryPolicy, attempt: usize) -> Duration {
    let doubled = retry
        .min_delay
        .saturating_mul(1 << attempt.saturating_sub(1).min(16))
        .min(retry.max_delay);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    doubled + doubled.mul_f64(f64::from(nanos % 1000) / 1000.0)
}

/// `scheme://{bucket}.{host}[:port]` from the service endpoint, as opendal's COS service makes
/// it (a bucket already leading the host is not repeated; no scheme means https).
fn bucket_endpoint(endpoint: &str, bucket: &str) -> Result<String, CosError> {
    let bad = || CosError::Endpoint(endpoint.to_string());
    let uri: http::Uri = endpoint.parse().map_err(|_| bad())?;
    let host = uri.host().ok_or_else(bad)?;
    let host = host.strip_prefix(&format!("{bucket}.")).unwrap_or(host);
    let scheme = uri.scheme_str().unwrap_or("https");
    Ok(match uri.port_u16() {
        Some(port) => format!("{scheme}://{bucket}.{host}:{port}"),
        None => format!("{scheme}://{bucket}.{host}"),
    })
}

/// The text of the first `<name>` element, its entities decoded.
fn xml_field(xml: &str, name: &str) -> Option<String> {
    let start = xml.find(&format!("<{name}>"))? + name.len() + 2;
    let len = xml[start..].find(&format!("</{name}>"))?;
    Some(
        xml[start..start + len]
            .replace("&quot;", "\"")
            .replace("&#34;", "\"")
            .replace("&apos;", "'")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&"),
    )
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn complete_body(parts: &[Part]) -> String {
    let mut body = String::from("<CompleteMultipartUpload>");
    for part in parts {
        body.push_str(&format!(
            "<Part><PartNumber>{}</PartNumber><ETag>{}</ETag></Part>",
            part.number,
            xml_escape(&part.etag)
        ));
    }
    body.push_str("</CompleteMultipartUpload>");
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_leads_the_endpoint_host_once() {
        assert_eq!(
            bucket_endpoint("https://cos.ap-shanghai.myqcloud.com", "b-1250000000").unwrap(),
            "https://b-1250000000.cos.ap-shanghai.myqcloud.com"
        );
        assert_eq!(
            bucket_endpoint("http://localhost:9000", "b-1").unwrap(),
            "http://b-1.localhost:9000"
        );
        assert_eq!(
            bucket_endpoint("https://b-1.cos.internal:8443/", "b-1").unwrap(),
            "https://b-1.cos.internal:8443"
        );
        assert!(bucket_endpoint("/no/host", "b-1").is_err());
    }

    #[test]
    fn answers_are_read_and_the_part_list_written_as_cos_documents_them() {
        let copied = "<CopyPartResult><ETag>&quot;5e1c0f4d&quot;</ETag><LastModified>x</LastModified></CopyPartResult>";
        assert_eq!(xml_field(copied, "ETag").as_deref(), Some("\"5e1c0f4d\""));
        let initiated = "<InitiateMultipartUploadResult><Bucket>b</Bucket><Key>k</Key><UploadId>1585130821cbb7df1d</UploadId></InitiateMultipartUploadResult>";
        assert_eq!(
            xml_field(initiated, "UploadId").as_deref(),
            Some("1585130821cbb7df1d")
        );
        assert_eq!(xml_field("garbage", "ETag"), None);
        let parts = [
            Part {
                number: 1,
                etag: "\"a\"".into(),
            },
            Part {
                number: 2,
                etag: "\"b\"".into(),
            },
        ];
        assert_eq!(
            complete_body(&parts),
            "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>&quot;a&quot;</ETag></Part>\
             <Part><PartNumber>2</PartNumber><ETag>&quot;b&quot;</ETag></Part></CompleteMultipartUpload>"
        );
    }

    #[test]
    fn retries_back_off_from_the_minimum_to_the_maximum() {
        let retry = RetryPolicy::default();
        for attempt in 1..10 {
            let delay = backoff(&retry, attempt);
            let base = retry
                .min_delay
                .saturating_mul(1 << (attempt - 1))
                .min(retry.max_delay);
            assert!(delay >= base && delay <= base * 2, "{attempt}: {delay:?}");
        }
    }

    #[test]
    fn only_trouble_on_the_way_or_in_the_store_is_retried() {
        let refused = |status| CosError::Refused {
            op: "UploadPartCopy",
            key: "k".into(),
            status,
            code: String::new(),
            message: String::new(),
        };
        assert!(refused(503).temporary() && refused(500).temporary() && refused(429).temporary());
        assert!(!refused(403).temporary() && !refused(404).temporary());
        assert!(unreadable("UploadPartCopy", "k", 200, "ETag").temporary());
    }
}
