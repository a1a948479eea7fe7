//! `roomrec-testbed up [--dir DIR]`: starts a test bed and keeps it alive until Ctrl-C, writing
//! `DIR/bed.json` for tests to attach to (`ROOMREC_TESTBED=DIR/bed.json cargo test …`).
//! `roomrec-testbed cos --bed DIR/bed.json`: a COS stand-in in front of that bed's S3 server
//! (for `make bench`), its address and keys printed as one JSON line.

use roomrec_testbed::TestBed;
use std::path::PathBuf;

const USAGE: &str = "usage: roomrec-testbed up [--dir DIR]
       roomrec-testbed cos --bed DIR/bed.json

Starts etcd, kube-apiserver, kube-controller-manager, the node agent, nginx-rtmp, the S3 object
store and Prometheus on loopback, prints how to reach them, and keeps them running until Ctrl-C.
DIR (default: /tmp/roomrec-testbed) holds every file and log; it is emptied first.

Then, in another shell:
  export KUBECONFIG=DIR/kubernetes/kubeconfig ROOMREC_TESTBED=DIR/bed.json
  cargo test --test testbed      # tests attach to this bed instead of starting their own

`cos` serves a COS stand-in (Tencent COS's XML API and signatures, objects kept in the bed's S3
server, bucket recordings-1250000000) until Ctrl-C, and prints one JSON line: port, endpoint,
bucket, region, secretId, secretKey. A COS client reaches the bucket at
http://recordings-1250000000.localhost:PORT (resolve it to 127.0.0.1).";

/// The COS stand-in's bucket and key pair for `roomrec-testbed cos`.
const COS_BUCKET: &str = "recordings-1250000000";
const COS_REGION: &str = "ap-shanghai";
const COS_SECRET_ID: &str = "AKIDTESTBEDCOS000000";
const COS_SECRET_KEY: &str = "testbed-cos-secret";

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = match args.as_slice() {
        [cmd, flag, bed] if cmd == "cos" && flag == "--bed" => return cos(bed).await,
        [cmd] if cmd == "up" => PathBuf::from("/tmp/roomrec-testbed"),
        [cmd, flag, dir] if cmd == "up" && flag == "--dir" => PathBuf::from(dir),
        [flag] if flag == "--help" || flag == "-h" => {
            println!("{USAGE}");
            return std::process::ExitCode::SUCCESS;
        }
        _ => {
            eprintln!("{USAGE}");
            return std::process::ExitCode::from(2);
        }
    };
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("roomrec-testbed: cannot create {}: {e}", dir.display());
        return std::process::ExitCode::FAILURE;
    }
    let bed = match TestBed::start_in(&dir).await {
        Ok(bed) => bed,
        Err(e) => {
            eprintln!("roomrec-testbed: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let info_path = dir.join("bed.json");
    if let Err(e) = bed.write_info(&info_path) {
        eprintln!("roomrec-testbed: {e}");
        return std::process::ExitCode::FAILURE;
    }
    let i = &bed.info;
    println!(
        "test bed up in {dir}
  kubernetes   export KUBECONFIG={kubeconfig}
  rtmp         rtmp://127.0.0.1:{rtmp}/live/KEY   (HLS: rtmp://…/hls/KEY → http://127.0.0.1:{http}/hls/KEY.m3u8)
  s3           {s3} bucket={bucket} access={ak} secret={sk} region={region}
  prometheus   {prom}
  pods         {pods}, the node at {node} (bridge {bridge}; pods reach its 127.0.0.1)
  attach tests export ROOMREC_TESTBED={info}
Ctrl-C (or SIGTERM) stops everything.",
        dir = dir.display(),
        kubeconfig = i.kubeconfig.display(),
        rtmp = i.rtmp_port,
        http = i.rtmp_http_port,
        s3 = i.s3_endpoint,
        bucket = i.s3_bucket,
        ak = i.s3_access_key,
        sk = i.s3_secret_key,
        region = i.s3_region,
        prom = i.prometheus_url,
        pods = bed.node_agent.pod_subnet(),
        node = bed.node_agent.host_ip(),
        bridge = roomrec_testbed::node_agent::network::bridge_of(bed.node_agent.host_ip()),
        info = info_path.display(),
    );
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match terminate.as_mut() { Some(s) => { s.recv().await; } None => std::future::pending().await } } => {}
    }
    eprintln!("stopping the test bed");
    drop(bed);
    std::process::ExitCode::SUCCESS
}

/// `roomrec-testbed cos --bed BED_JSON`: a COS stand-in in front of a running bed's S3 server.
async fn cos(bed: &str) -> std::process::ExitCode {
    let info = match roomrec_testbed::bed::attach(std::path::Path::new(bed)) {
        Ok(info) => info,
        Err(e) => {
            eprintln!("roomrec-testbed: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    // versitygw keeps a bucket as a directory beside the bed's own bucket.
    if let Some(buckets) = info.s3_bucket_dir.parent()
        && let Err(e) = std::fs::create_dir_all(buckets.join(COS_BUCKET))
    {
        eprintln!("roomrec-testbed: cannot create the COS bucket: {e}");
        return std::process::ExitCode::FAILURE;
    }
    let stand_in =
        match roomrec_testbed::cos::CosStandIn::start(roomrec_testbed::cos::CosStandInConfig {
            secret_id: COS_SECRET_ID.into(),
            secret_key: COS_SECRET_KEY.into(),
            upstream_endpoint: info.s3_endpoint.clone(),
            upstream_access_key: info.s3_access_key.clone(),
            upstream_secret_key: info.s3_secret_key.clone(),
            upstream_region: info.s3_region.clone(),
            // opendal's COS signer does not sign Host.
            require_signed_host: false,
        })
        .await
        {
            Ok(stand_in) => stand_in,
            Err(e) => {
                eprintln!("roomrec-testbed: {e}");
                return std::process::ExitCode::FAILURE;
            }
        };
    println!(
        "{}",
        serde_json::json!({
            "port": stand_in.port,
            "endpoint": stand_in.endpoint(),
            "bucket": COS_BUCKET,
            "region": COS_REGION,
            "secretId": COS_SECRET_ID,
            "secretKey": COS_SECRET_KEY,
        })
    );
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match terminate.as_mut() { Some(s) => { s.recv().await; } None => std::future::pending().await } } => {}
    }
    drop(stand_in);
    std::process::ExitCode::SUCCESS
}
