//! `roomrec-testbed up [--dir DIR]`: starts a test bed and keeps it alive until Ctrl-C, writing
//! `DIR/bed.json` for tests to attach to (`ROOMREC_TESTBED=DIR/bed.json cargo test …`).

use roomrec_testbed::TestBed;
use std::path::PathBuf;

const USAGE: &str = "usage: roomrec-testbed up [--dir DIR]

Starts etcd, kube-apiserver, kube-controller-manager, the node agent, nginx-rtmp, the S3 object
store and Prometheus on loopback, prints how to reach them, and keeps them running until Ctrl-C.
DIR (default: /tmp/roomrec-testbed) holds every file and log; it is emptied first.

Then, in another shell:
  export KUBECONFIG=DIR/kubernetes/kubeconfig ROOMREC_TESTBED=DIR/bed.json
  cargo test --test testbed      # tests attach to this bed instead of starting their own";

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
