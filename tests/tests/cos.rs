//! opendal's native `cos` service against the COS stand-in (`roomrec_testbed::cos`), which checks
//! every COS signature and keeps the objects in the shared test bed's S3 server.

use opendal::services::Cos;
use opendal::{ErrorKind, Operator};
use roomrec_testbed::cos::{CosStandIn, CosStandInConfig, cos_signature};
use roomrec_testbed::shared;

const BUCKET: &str = "recordings-1250000000";
const SECRET_ID: &str = "AKIDCOSSTANDIN0000000";
const SECRET_KEY: &str = "cos-stand-in-secret-key";

async fn stand_in() -> CosStandIn {
    let bed = shared();
    // versitygw's POSIX backend serves every top-level directory as a bucket.
    let dir = bed.s3_bucket_dir.parent().unwrap().join(BUCKET);
    std::fs::create_dir_all(&dir).unwrap();
    CosStandIn::start(CosStandInConfig {
        secret_id: SECRET_ID.into(),
        secret_key: SECRET_KEY.into(),
        upstream_endpoint: bed.s3_endpoint.clone(),
        upstream_access_key: bed.s3_access_key.clone(),
        upstream_secret_key: bed.s3_secret_key.clone(),
        upstream_region: bed.s3_region.clone(),
        // opendal 0.59.5 does not sign the host header (see the field's doc).
        require_signed_host: false,
    })
    .await
    .unwrap()
}

/// An HTTP client that resolves `{bucket}.localhost` to the stand-in's address.
fn client(standin: &CosStandIn) -> reqwest::Client {
    reqwest::Client::builder()
        .resolve(&standin.host_for(BUCKET), ([127, 0, 0, 1], 0).into())
        .build()
        .unwrap()
}

/// An operator of opendal's `cos` service, talking to the stand-in.
fn operator(standin: &CosStandIn, secret_key: &str) -> Operator {
    opendal::install_default();
    let builder = Cos::default()
        .endpoint(&standin.endpoint())
        .bucket(BUCKET)
        .secret_id(SECRET_ID)
        .secret_key(secret_key)
        .disable_config_load();
    let transport = opendal_http_transport_reqwest::ReqwestTransport::new(client(standin));
    Operator::new(builder).unwrap().with_context(
        opendal::OperationContext::new()
            .with_http_transport(opendal::HttpTransporter::new(transport)),
    )
}

fn object_dir() -> std::path::PathBuf {
    shared().s3_bucket_dir.parent().unwrap().join(BUCKET)
}

#[tokio::test]
async fn cos_service_writes_reads_lists_and_deletes_through_the_stand_in() {
    let standin = stand_in().await;
    let op = operator(&standin, SECRET_KEY);

    op.write("cos-ok/small/hello.txt", "hello, COS")
        .await
        .unwrap();
    assert_eq!(
        op.read("cos-ok/small/hello.txt").await.unwrap().to_vec(),
        b"hello, COS"
    );
    let meta = op.stat("cos-ok/small/hello.txt").await.unwrap();
    assert_eq!(meta.content_length(), 10);
    // Keys are percent-encoded on the wire but signed decoded: spaces, plus signs, non-ASCII.
    let odd = "cos-ok/small/a b+c=ü (1).txt";
    op.write(odd, "odd").await.unwrap();
    assert_eq!(op.read(odd).await.unwrap().to_vec(), b"odd");

    // 12 MiB in 5 MiB chunks: opendal uploads it as a three-part multipart upload.
    let body: Vec<u8> = (0..12u32 << 20).map(|i| (i % 251) as u8).collect();
    let mut writer = op
        .writer_with("cos-ok/big/recording.mp4")
        .chunk(5 << 20)
        .await
        .unwrap();
    for piece in body.chunks(1 << 20) {
        writer.write(piece.to_vec()).await.unwrap();
    }
    writer.close().await.unwrap();
    assert_eq!(
        op.read("cos-ok/big/recording.mp4").await.unwrap().to_vec(),
        body
    );
    assert_eq!(
        std::fs::read(object_dir().join("cos-ok/big/recording.mp4")).unwrap(),
        body,
        "the S3 server holds the same bytes"
    );
    let log = standin.requests();
    let sent = |method: &str, query: &str| {
        log.iter().any(|r| {
            r.method == method
                && r.path == "/cos-ok/big/recording.mp4"
                && r.query.contains(query)
                && (200..300).contains(&r.status)
        })
    };
    assert!(sent("POST", "uploads"), "initiate: {log:#?}");
    let parts = log
        .iter()
        .filter(|r| r.method == "PUT" && r.query.contains("partNumber=") && r.status == 200)
        .count();
    assert_eq!(parts, 3, "{log:#?}");
    assert!(sent("POST", "uploadId="), "complete: {log:#?}");

    let mut listed: Vec<String> = op
        .list_with("cos-ok/")
        .recursive(true)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.path().to_string())
        .filter(|p| !p.ends_with('/'))
        .collect();
    listed.sort();
    assert_eq!(
        listed,
        ["cos-ok/big/recording.mp4", odd, "cos-ok/small/hello.txt"]
    );

    op.delete("cos-ok/small/hello.txt").await.unwrap();
    op.delete("cos-ok/big/recording.mp4").await.unwrap();
    op.delete(odd).await.unwrap();
    let err = op.stat("cos-ok/small/hello.txt").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(!object_dir().join("cos-ok/big/recording.mp4").exists());
}

#[tokio::test]
async fn a_wrong_secret_key_is_refused_and_leaves_nothing_behind() {
    let standin = stand_in().await;
    let good = operator(&standin, SECRET_KEY);
    good.write("cos-refused/kept.txt", "kept").await.unwrap();
    let bad = operator(&standin, "not-the-secret-key");

    let denied = |err: opendal::Error| assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    denied(
        bad.write("cos-refused/small.txt", "nope")
            .await
            .unwrap_err(),
    );
    let big = vec![7u8; 12 << 20];
    let refused = async {
        let mut writer = bad
            .writer_with("cos-refused/big.mp4")
            .chunk(5 << 20)
            .await?;
        writer.write(big).await?;
        writer.close().await
    };
    denied(refused.await.unwrap_err());
    denied(bad.read("cos-refused/kept.txt").await.unwrap_err());
    denied(bad.list("cos-refused/").await.unwrap_err());
    denied(bad.delete("cos-refused/kept.txt").await.unwrap_err());

    // Every request signed with the wrong key was refused here, so none reached the S3 server.
    let log = standin.requests();
    assert!(log.len() >= 6, "{log:#?}");
    assert!(log[1..].iter().all(|r| r.status == 403), "{log:#?}");
    let dir = object_dir().join("cos-refused");
    let mut left: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(
        left,
        ["kept.txt"],
        "only the object written with the right key"
    );
    assert_eq!(
        good.read("cos-refused/kept.txt").await.unwrap().to_vec(),
        b"kept"
    );
    // No multipart upload was begun for the refused big write.
    let (status, uploads) = signed_get(&standin, "/", "uploads").await;
    assert_eq!(status, 200, "{uploads}");
    assert!(!uploads.contains("cos-refused/big.mp4"), "{uploads}");
    good.delete("cos-refused/kept.txt").await.unwrap();
}

#[tokio::test]
async fn unsigned_requests_get_cos_error_xml() {
    let standin = stand_in().await;
    let url = format!(
        "http://{}:{}/cos-unsigned/x.txt",
        standin.host_for(BUCKET),
        standin.port
    );
    let response = client(&standin).put(url).body("nope").send().await.unwrap();
    assert_eq!(response.status().as_u16(), 403);
    assert_eq!(response.headers()["content-type"], "application/xml");
    let body = response.text().await.unwrap();
    assert!(
        body.starts_with("<?xml version='1.0' encoding='utf-8' ?><Error><Code>AccessDenied</Code>"),
        "{body}"
    );
    assert!(body.contains("<RequestId>"), "{body}");
    assert!(!object_dir().join("cos-unsigned").exists());

    // A host that names no bucket is not COS's.
    let other = reqwest::Client::new()
        .get(format!("{}/x.txt", standin.endpoint()))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status().as_u16(), 400);
    assert!(
        other
            .text()
            .await
            .unwrap()
            .contains("<Code>InvalidURI</Code>")
    );
}

/// A GET signed by hand with `cos_signature` (host signed, every parameter listed).
async fn signed_get(standin: &CosStandIn, path: &str, query: &str) -> (u16, String) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let key_time = format!("{};{}", now - 60, now + 600);
    let host = format!("{}:{}", standin.host_for(BUCKET), standin.port);
    let params: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k.to_string(), v.to_string())
        })
        .collect();
    let param_list: Vec<&str> = params.iter().map(|(k, _)| k.as_str()).collect();
    let headers = [("host".to_string(), host.clone())];
    let signature = cos_signature(SECRET_KEY, &key_time, "GET", path, &params, &headers);
    let authorization = format!(
        "q-sign-algorithm=sha1&q-ak={SECRET_ID}&q-sign-time={key_time}&q-key-time={key_time}\
         &q-header-list=host&q-url-param-list={}&q-signature={signature}",
        param_list.join(";")
    );
    let response = client(standin)
        .get(format!("http://{host}{path}?{query}"))
        .header("authorization", authorization)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}
