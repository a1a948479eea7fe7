//! The store's `Operator` from a `StorageConfig`: retries, timeouts, URLs, credentials.
//!
//! Where recordings go, through opendal: Tencent COS (native `cos` service), any S3-compatible
//! store, or a local directory/volume. Credentials come from the environment or from files (a
//! mounted Kubernetes Secret), never from the command line, and are never printed.

use crate::store::cos_multipart::{CosError, CosMultipart};
use crate::store::in_place::InPlace;
use opendal::layers::{RetryEvent, RetryLayer, TimeoutLayer};
use opendal::services::{Cos, Fs, S3};
use opendal::{HttpTransporter, OperationContext, Operator};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Why a storage URL, its credentials or its operator are not usable.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    // The URL or the credentials are wrong, and the message says how to fix them.
    #[error("COS needs a region: pass --region ap-shanghai (or set COS_REGION)")]
    NoRegion,
    #[error(
        "COS bucket {0:?} is not valid: bucket names are BUCKETNAME-APPID, lower-case letters, digits and '-', at most 50 characters"
    )]
    BadCosBucket(String),
    #[error("the storage URL names no bucket: use {example}")]
    NoBucket { example: &'static str },
    #[error(
        "unsupported storage {0:?}: use file:///DIR, cos://BUCKET-APPID/PREFIX or s3://BUCKET/PREFIX"
    )]
    Unsupported(String),
    #[error("the storage directory is empty: use file:///DIR")]
    EmptyDir,
    #[error(transparent)]
    CurrentDir(std::io::Error),
    #[error(
        "credentials directory {:?} must hold the files secretId (or accessKeyId) and secretKey (or secretAccessKey)",
        .0
    )]
    IncompleteCredentialsDir(PathBuf),
    /// One variable of an id/secret pair is set without the other.
    #[error("{set} is set but {unset} is not")]
    HalfCredentials {
        set: &'static str,
        unset: &'static str,
    },
    // Building the operator failed.
    #[error("{}: {source}", dir.display())]
    CreateDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    HttpClient(reqwest::Error),
    #[error(transparent)]
    Service(opendal::Error),
    #[error(transparent)]
    CosParts(Box<CosError>),
}

/// A store the worker records into.
#[derive(Clone)]
pub struct Store {
    pub op: Operator,
    /// COS: part copies for assembling a part's object from its stored chunks.
    pub cos_parts: Option<Arc<CosMultipart>>,
    /// A directory: parts are written into their files in place.
    pub in_place: Option<Arc<InPlace>>,
}

#[derive(Clone, PartialEq)]
pub enum StorageKind {
    Cos {
        bucket: String,
        region: String,
    },
    S3 {
        bucket: String,
        region: String,
        virtual_host: bool,
    },
    Dir(PathBuf),
}

#[derive(Clone)]
pub struct StorageConfig {
    pub kind: StorageKind,
    /// Key prefix inside the bucket or directory, without leading or trailing `/`.
    pub prefix: String,
    /// Overrides the service endpoint (a private COS/S3 endpoint, or a local test server).
    pub endpoint: Option<String>,
    pub credentials: Option<Credentials>,
    /// `host → 127.0.0.1:port` overrides for the HTTP client (like curl's --resolve).
    pub resolve: Vec<(String, std::net::SocketAddr)>,
}

#[derive(Clone, PartialEq)]
pub struct Credentials {
    pub id: String,
    pub secret: String,
    pub token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl std::fmt::Debug for StorageConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageConfig")
            .field("location", &self.describe())
            .field("endpoint", &self.endpoint)
            .field("credentials", &self.credentials.as_ref().map(|c| &c.id))
            .finish()
    }
}

impl StorageConfig {
    /// Parses `file:///dir` (or a plain path), `cos://bucket/prefix`, `s3://bucket/prefix`.
    /// `region` is required for COS and defaults to us-east-1 for S3.
    pub fn parse(url: &str, region: Option<&str>) -> Result<Self, StorageError> {
        let (kind, prefix) = if let Some(rest) = url.strip_prefix("cos://") {
            let (bucket, prefix) = split_bucket(rest, "cos://BUCKET-APPID/prefix")?;
            let region = region.ok_or(StorageError::NoRegion)?;
            if !bucket
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                || bucket.len() > 50
            {
                return Err(StorageError::BadCosBucket(bucket));
            }
            (
                StorageKind::Cos {
                    bucket,
                    region: region.to_string(),
                },
                prefix,
            )
        } else if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = split_bucket(rest, "s3://BUCKET/prefix")?;
            let region = region.unwrap_or("us-east-1").to_string();
            (
                StorageKind::S3 {
                    bucket,
                    region,
                    virtual_host: false,
                },
                prefix,
            )
        } else if let Some(path) = url.strip_prefix("file://") {
            (StorageKind::Dir(absolute(path)?), String::new())
        } else if url.contains("://") {
            return Err(StorageError::Unsupported(url.to_string()));
        } else {
            (StorageKind::Dir(absolute(url)?), String::new())
        };
        Ok(Self {
            kind,
            prefix,
            endpoint: None,
            credentials: None,
            resolve: Vec::new(),
        })
    }

    /// Human-readable location, without secrets.
    pub fn describe(&self) -> String {
        match &self.kind {
            StorageKind::Cos { bucket, region } => {
                format!("cos://{bucket}/{} ({region})", self.prefix)
            }
            StorageKind::S3 { bucket, region, .. } => {
                format!("s3://{bucket}/{} ({region})", self.prefix)
            }
            StorageKind::Dir(dir) => format!("file://{}", dir.display()),
        }
    }

    /// The full key of `name` (relative to the prefix).
    pub fn key(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}/{name}", self.prefix)
        }
    }

    /// The canonical URL of an object, as users and the callback see it.
    pub fn url(&self, key: &str) -> String {
        let key = encode_key(key);
        match &self.kind {
            StorageKind::Cos { bucket, region } => {
                format!("https://{bucket}.cos.{region}.myqcloud.com/{key}")
            }
            StorageKind::S3 {
                bucket,
                region,
                virtual_host,
            } => match &self.endpoint {
                Some(endpoint) if !virtual_host => {
                    format!("{}/{bucket}/{key}", endpoint.trim_end_matches('/'))
                }
                Some(endpoint) => {
                    let (scheme, host) = split_endpoint(endpoint);
                    format!("{scheme}://{bucket}.{}/{key}", host.trim_end_matches('/'))
                }
                None => format!("https://{bucket}.s3.{region}.amazonaws.com/{key}"),
            },
            StorageKind::Dir(dir) => format!("file://{}/{key}", dir.display()),
        }
    }

    /// The store's HTTP client. reqwest's default client loads the system's root certificates
    /// as it is built (the bundle and every file in /etc/ssl/certs: about 10 ms of CPU, an
    /// eighth of what a three-minute recording costs the worker). A plain-http endpoint needs
    /// none: its client gets no roots, so it cannot be talked into TLS either.
    fn http_client(&self) -> Result<reqwest::Client, StorageError> {
        let mut client = reqwest::Client::builder();
        if self.endpoint.as_deref().is_some_and(is_plain_http) {
            client = client.tls_certs_only([]);
        }
        for (host, addr) in &self.resolve {
            client = client.resolve(host, *addr);
        }
        client.build().map_err(StorageError::HttpClient)
    }

    /// Builds the operator: retried with backoff, each request bounded in time.
    pub fn operator(&self, retry: &RetryPolicy) -> Result<Operator, StorageError> {
        Ok(self.open(retry)?.op)
    }

    /// The store: its operator and, for COS, the multipart upload with server-side part copies
    /// that opendal's COS service lacks, both on one HTTP client.
    pub fn open(&self, retry: &RetryPolicy) -> Result<Store, StorageError> {
        let transport = match &self.kind {
            StorageKind::Dir(_) => None,
            _ => Some(HttpTransporter::new(
                opendal_http_transport_reqwest::ReqwestTransport::new(self.http_client()?),
            )),
        };
        let cos_parts = match (&self.kind, &transport) {
            (StorageKind::Cos { bucket, region }, Some(transport)) => Some(Arc::new(
                CosMultipart::new(
                    transport.clone(),
                    &self.cos_endpoint(region),
                    bucket,
                    region,
                    self.credentials.as_ref(),
                    retry.clone(),
                )
                .map_err(|e| StorageError::CosParts(Box::new(e)))?,
            )),
            _ => None,
        };
        let in_place = match &self.kind {
            StorageKind::Dir(dir) => Some(Arc::new(InPlace::new(dir.clone()))),
            _ => None,
        };
        Ok(Store {
            op: self.operator_on(retry, transport)?,
            cos_parts,
            in_place,
        })
    }

    fn cos_endpoint(&self, region: &str) -> String {
        self.endpoint
            .clone()
            .unwrap_or_else(|| format!("https://cos.{region}.myqcloud.com"))
    }

    fn operator_on(
        &self,
        retry: &RetryPolicy,
        transport: Option<HttpTransporter>,
    ) -> Result<Operator, StorageError> {
        let credentials = self.credentials.clone();
        let operator = match &self.kind {
            StorageKind::Cos { bucket, region } => {
                let endpoint = self.cos_endpoint(region);
                let mut builder = Cos::default().endpoint(&endpoint).bucket(bucket).root("/");
                if let Some(c) = &credentials {
                    builder = builder
                        .secret_id(&c.id)
                        .secret_key(&c.secret)
                        .disable_config_load();
                    if let Some(token) = &c.token {
                        builder = builder.security_token(token);
                    }
                }
                Operator::new(builder).map_err(StorageError::Service)?
            }
            StorageKind::S3 {
                bucket,
                region,
                virtual_host,
            } => {
                let mut builder = S3::default()
                    .bucket(bucket)
                    .region(region)
                    .root("/")
                    .disable_ec2_metadata();
                if let Some(endpoint) = &self.endpoint {
                    builder = builder.endpoint(endpoint);
                }
                if *virtual_host {
                    builder = builder.enable_virtual_host_style();
                }
                if let Some(c) = &credentials {
                    builder = builder
                        .access_key_id(&c.id)
                        .secret_access_key(&c.secret)
                        .disable_config_load();
                    if let Some(token) = &c.token {
                        builder = builder.session_token(token);
                    }
                }
                Operator::new(builder).map_err(StorageError::Service)?
            }
            StorageKind::Dir(dir) => {
                std::fs::create_dir_all(dir).map_err(|source| StorageError::CreateDir {
                    dir: dir.clone(),
                    source,
                })?;
                Operator::new(Fs::default().root(&dir.to_string_lossy()))
                    .map_err(StorageError::Service)?
            }
        };
        let operator = match transport {
            None => operator,
            Some(transport) => {
                operator.with_context(OperationContext::new().with_http_transport(transport))
            }
        };
        // Timeout inside retry: each attempt gets its own deadline and a hung request is
        // retried (and counted) like a refused one; the other way round one timeout would end
        // the whole retried operation.
        Ok(operator
            .layer(
                TimeoutLayer::new()
                    .with_timeout(retry.request_timeout)
                    .with_io_timeout(retry.request_timeout),
            )
            .layer(
                RetryLayer::new()
                    .with_jitter()
                    .with_min_delay(retry.min_delay)
                    .with_max_delay(retry.max_delay)
                    .with_max_times(retry.max_times)
                    .with_notify(count_retry),
            ))
    }
}

/// An endpoint's scheme and the rest; one without a scheme is https.
fn split_endpoint(endpoint: &str) -> (&str, &str) {
    endpoint.split_once("://").unwrap_or(("https", endpoint))
}

fn is_plain_http(endpoint: &str) -> bool {
    split_endpoint(endpoint).0.eq_ignore_ascii_case("http")
}

/// Counts each retry for `roomrec_worker_upload_retries_total` and logs it, as opendal's
/// default notifier would.
fn count_retry(event: RetryEvent<'_>) {
    crate::shared::metrics::metrics().upload_retries.inc();
    tracing::warn!(
        operation = ?event.op,
        attempt = event.attempt,
        after = ?event.retry_after,
        "store request failed, retrying: {}",
        event.err
    );
}

/// How hard one request is retried before the caller sees the error.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub max_times: usize,
    pub min_delay: Duration,
    pub max_delay: Duration,
    pub request_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_times: 4,
            min_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(4),
            request_timeout: Duration::from_secs(60),
        }
    }
}

fn split_bucket(rest: &str, example: &'static str) -> Result<(String, String), StorageError> {
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(StorageError::NoBucket { example });
    }
    Ok((bucket.to_string(), prefix.trim_matches('/').to_string()))
}

fn absolute(path: &str) -> Result<PathBuf, StorageError> {
    let path = Path::new(path);
    if path.as_os_str().is_empty() {
        return Err(StorageError::EmptyDir);
    }
    Ok(if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(StorageError::CurrentDir)?
            .join(path)
    })
}

/// Percent-encodes each path segment of a key (keeps `/`).
pub(crate) fn encode_key(key: &str) -> String {
    use percent_encoding::utf8_percent_encode;
    key.split('/')
        .map(|s| utf8_percent_encode(s, roomrec_api::relay::URL_UNRESERVED).to_string())
        .collect::<Vec<_>>()
        .join("/")
}

/// Reads credentials: a directory of files (a mounted Secret: `secretId`/`accessKeyId`,
/// `secretKey`/`secretAccessKey`, optional `sessionToken`/`securityToken`), else the
/// environment (`COS_SECRET_ID`/`COS_SECRET_KEY`, `TENCENTCLOUD_SECRET_ID`/…, or
/// `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`/`AWS_SESSION_TOKEN`). None means ambient identity.
pub fn load_credentials(
    kind: &StorageKind,
    dir: Option<&Path>,
) -> Result<Option<Credentials>, StorageError> {
    if let Some(dir) = dir {
        let read = |names: &[&str]| -> Option<String> {
            names
                .iter()
                .find_map(|n| std::fs::read_to_string(dir.join(n)).ok())
                .map(|s| s.trim().to_string())
        };
        let id = read(&["secretId", "accessKeyId", "SecretId", "access-key-id"]);
        let secret = read(&[
            "secretKey",
            "secretAccessKey",
            "SecretKey",
            "secret-access-key",
        ]);
        return match (id, secret) {
            (Some(id), Some(secret)) => Ok(Some(Credentials {
                id,
                secret,
                token: read(&["sessionToken", "securityToken", "token"]),
            })),
            _ => Err(StorageError::IncompleteCredentialsDir(dir.to_path_buf())),
        };
    }
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let pairs: &[(&str, &str, &str)] = match kind {
        StorageKind::Cos { .. } => &[
            ("COS_SECRET_ID", "COS_SECRET_KEY", "COS_SECURITY_TOKEN"),
            (
                "TENCENTCLOUD_SECRET_ID",
                "TENCENTCLOUD_SECRET_KEY",
                "TENCENTCLOUD_SECURITY_TOKEN",
            ),
        ],
        StorageKind::S3 { .. } => &[(
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
        )],
        StorageKind::Dir(_) => &[],
    };
    for (id, secret, token) in pairs {
        match (env(id), env(secret)) {
            (Some(i), Some(s)) => {
                return Ok(Some(Credentials {
                    id: i,
                    secret: s,
                    token: env(token),
                }));
            }
            (Some(_), None) => {
                return Err(StorageError::HalfCredentials {
                    set: id,
                    unset: secret,
                });
            }
            (None, Some(_)) => {
                return Err(StorageError::HalfCredentials {
                    set: secret,
                    unset: id,
                });
            }
            _ => {}
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_plain_http_endpoint_goes_without_root_certificates() {
        assert!(is_plain_http("http://127.0.0.1:9000"));
        assert!(is_plain_http("HTTP://minio.internal"));
        assert!(!is_plain_http("https://cos.ap-shanghai.myqcloud.com"));
        assert!(!is_plain_http("http:/x"));
        assert!(!is_plain_http("http"));
    }

    #[test]
    fn parses_storage_urls() {
        let cos =
            StorageConfig::parse("cos://class-1250000000/trtc/", Some("ap-shanghai")).unwrap();
        assert!(
            cos.kind
                == StorageKind::Cos {
                    bucket: "class-1250000000".into(),
                    region: "ap-shanghai".into()
                }
        );
        assert_eq!(cos.prefix, "trtc");
        assert_eq!(
            cos.url(&cos.key("1400000000_43474_alice_20251124T160000Z_part0001.mp4")),
            "https://class-1250000000.cos.ap-shanghai.myqcloud.com/trtc/1400000000_43474_alice_20251124T160000Z_part0001.mp4"
        );
        let e = StorageConfig::parse("cos://b-1/x", None).unwrap_err();
        assert!(matches!(e, StorageError::NoRegion) && e.to_string().contains("--region"));
        let e = StorageConfig::parse("cos://Bad_Bucket/x", Some("r")).unwrap_err();
        assert!(e.to_string().contains("BUCKETNAME-APPID"), "{e}");

        let mut s3 = StorageConfig::parse("s3://recordings/a/b", None).unwrap();
        assert_eq!(s3.key("x y.mp4"), "a/b/x y.mp4");
        assert_eq!(
            s3.url("a/x y.mp4"),
            "https://recordings.s3.us-east-1.amazonaws.com/a/x%20y.mp4"
        );
        s3.endpoint = Some("http://127.0.0.1:9000/".into());
        assert_eq!(
            s3.url("a/k.mp4"),
            "http://127.0.0.1:9000/recordings/a/k.mp4"
        );

        let dir = StorageConfig::parse("file:///var/rec", None).unwrap();
        assert_eq!(dir.url("k.mp3"), "file:///var/rec/k.mp3");
        let e = StorageConfig::parse("gs://x", None).unwrap_err();
        assert!(e.to_string().contains("cos://"), "{e}");
        let e = StorageConfig::parse("s3:///x", None).unwrap_err();
        assert!(e.to_string().contains("no bucket"), "{e}");
    }

    #[test]
    fn credentials_never_show_in_debug_output() {
        let mut c = StorageConfig::parse("s3://b/p", None).unwrap();
        c.credentials = Some(Credentials {
            id: "AKID".into(),
            secret: "TOPSECRET".into(),
            token: None,
        });
        let text = format!("{c:?}");
        assert!(!text.contains("TOPSECRET"), "{text}");
        assert!(format!("{:?}", c.credentials.unwrap()).contains("<redacted>"));
    }

    #[test]
    fn credentials_from_a_mounted_secret_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("secretId"), "AKID\n").unwrap();
        std::fs::write(dir.path().join("secretKey"), "KEY\n").unwrap();
        let kind = StorageKind::Cos {
            bucket: "b-1".into(),
            region: "r".into(),
        };
        let c = load_credentials(&kind, Some(dir.path())).unwrap().unwrap();
        assert_eq!((c.id.as_str(), c.secret.as_str()), ("AKID", "KEY"));
        std::fs::remove_file(dir.path().join("secretKey")).unwrap();
        let e = load_credentials(&kind, Some(dir.path())).unwrap_err();
        assert!(e.to_string().contains("secretKey"), "{e}");
    }
}
