//! Smoke tests of the test bed, one per component, against the real thing: each proves the
//! component does what later tests rely on.

use k8s_openapi::api::authentication::v1::TokenReview;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use roomrec_testbed::media::{StreamSpec, ffprobe};
use roomrec_testbed::{BedInfo, shared, wait_until};
use serde_json::json;
use std::time::Duration;

fn bed() -> &'static BedInfo {
    shared()
}

async fn wait_pod<F>(pods: &Api<Pod>, name: &str, timeout: Duration, done: F) -> Pod
where
    F: Fn(&Pod) -> bool,
{
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let pod = pods.get_opt(name).await.ok().flatten();
        if let Some(pod) = pod.as_ref().filter(|p| done(p)) {
            return pod.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "pod {name} did not reach the expected state in {timeout:?}: {:#?}",
            pod.map(|p| p.status)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

fn terminated(pod: &Pod) -> (i32, String) {
    let state = pod
        .status
        .as_ref()
        .unwrap()
        .container_statuses
        .as_ref()
        .unwrap()[0]
        .state
        .clone()
        .unwrap();
    let t = state.terminated.expect("container terminated");
    (t.exit_code, t.message.unwrap_or_default())
}

fn terminal(pod: &Pod) -> bool {
    matches!(phase(pod), "Succeeded" | "Failed")
}

#[tokio::test]
async fn crd_is_established_and_objects_are_validated_by_the_api_server() {
    let client = bed().client().await.unwrap();
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.smoke.roomrec.dev"},
        "spec": {
            "group": "smoke.roomrec.dev",
            "names": {"kind": "Widget", "plural": "widgets", "singular": "widget"},
            "scope": "Namespaced",
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "properties": {"size": {"type": "integer", "minimum": 1}},
                             "x-kubernetes-validations": [{"rule": "self.size <= 10", "message": "spec.size must be at most 10"}]}}}}}]
        }
    }))
    .unwrap();
    roomrec_testbed::crds::apply_crd(&client, &crd)
        .await
        .expect("CRD established");

    let ns = bed().namespace("smoke-crd").await.unwrap();
    let resource =
        ApiResource::from_gvk(&GroupVersionKind::gvk("smoke.roomrec.dev", "v1", "Widget"));
    let widgets: Api<DynamicObject> = Api::namespaced_with(client, &ns, &resource);
    let widget = |size: i64| {
        serde_json::from_value::<DynamicObject>(json!({
            "apiVersion": "smoke.roomrec.dev/v1", "kind": "Widget",
            "metadata": {"name": "w"}, "spec": {"size": size}
        }))
        .unwrap()
    };
    // A fresh CRD can take a moment to be served; retry the first apply briefly.
    let params = PatchParams::apply("testbed-smoke");
    let mut applied = None;
    for _ in 0..50 {
        match widgets.patch("w", &params, &Patch::Apply(&widget(3))).await {
            Ok(w) => {
                applied = Some(w);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    let applied = applied.expect("widget applied");
    assert_eq!(applied.data["spec"]["size"], 3);
    assert_eq!(widgets.get("w").await.unwrap().data["spec"]["size"], 3);

    // The API server, not the client, enforces the schema and the CEL rule.
    let err = widgets
        .patch("w", &params, &Patch::Apply(&widget(0)))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("spec.size"), "{err}");
    let err = widgets
        .patch("w", &params, &Patch::Apply(&widget(11)))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("spec.size must be at most 10"),
        "{err}"
    );
}

#[tokio::test]
async fn pod_runs_to_succeeded_with_env_volumes_and_service_account() {
    let bed = bed();
    let client = bed.client().await.unwrap();
    let ns = bed.namespace("smoke-pod").await.unwrap();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    secrets
        .create(&PostParams::default(), &serde_json::from_value(json!({
            "metadata": {"name": "creds"}, "stringData": {"key": "s3cr3t", "file.txt": "from-secret-volume"}
        })).unwrap())
        .await
        .unwrap();
    config_maps
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "settings"}, "data": {"mode": "02"}
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let script = r#"set -e
echo "$GREETING" "$SECRET_KEY" "$MODE" "$POD_NAME" "$POD_NAMESPACE" "$(cat /etc/creds/file.txt)" > /dev/termination-log
echo scratch > /scratch/probe && cat /scratch/probe >> /dev/termination-log
cat /var/run/secrets/kubernetes.io/serviceaccount/token > /scratch/token
cp /scratch/token /out/token
echo "ran with $(id -u)" "$ARGUMENT""#;
    let out = bed.scratch(&format!("{ns}-out")).unwrap();
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "env-and-volumes", "labels": {"app": "smoke"}},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{
                "name": "main", "image": "docker.io/library/busybox:1.36",
                "command": ["sh", "-c", script],
                "args": ["$(GREETING)"],
                "env": [
                    {"name": "GREETING", "value": "hello"},
                    {"name": "ARGUMENT", "value": "arg-$(GREETING)"},
                    {"name": "SECRET_KEY", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "key"}}},
                    {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "mode"}}},
                    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}
                ],
                "volumeMounts": [
                    {"name": "creds", "mountPath": "/etc/creds", "readOnly": true},
                    {"name": "scratch", "mountPath": "/scratch"},
                    {"name": "out", "mountPath": "/out"}
                ]
            }],
            "volumes": [
                {"name": "creds", "secret": {"secretName": "creds"}},
                {"name": "scratch", "emptyDir": {}},
                {"name": "out", "hostPath": {"path": out}}
            ]
        }
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let pod = wait_pod(&pods, "env-and-volumes", Duration::from_secs(60), terminal).await;
    assert_eq!(phase(&pod), "Succeeded", "{:#?}", pod.status);
    let (code, message) = terminated(&pod);
    assert_eq!(code, 0);
    assert_eq!(
        message,
        format!("hello s3cr3t 02 env-and-volumes {ns} from-secret-volume\nscratch\n")
    );
    assert_eq!(
        pod.spec.as_ref().unwrap().node_name.as_deref(),
        Some("local")
    );

    // The projected service-account token is a real one, minted for this pod.
    let token = std::fs::read_to_string(out.join("token")).unwrap();
    let reviews: Api<TokenReview> = Api::all(client.clone());
    let review: TokenReview = serde_json::from_value(json!({"spec": {"token": token}})).unwrap();
    let review = reviews
        .create(&PostParams::default(), &review)
        .await
        .unwrap();
    let status = review.status.unwrap();
    assert_eq!(status.authenticated, Some(true), "{status:?}");
    assert_eq!(
        status.user.unwrap().username.unwrap(),
        format!("system:serviceaccount:{ns}:default")
    );

    // A hardened pod: non-root user, read-only root filesystem, a writable emptyDir.
    let hardened: Pod = serde_json::from_value(json!({
        "metadata": {"name": "hardened"},
        "spec": {
            "restartPolicy": "Never",
            "securityContext": {"runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532, "fsGroup": 65532},
            "containers": [{
                "name": "main", "image": "busybox",
                "command": ["sh", "-c", "id -u > /dev/termination-log; if touch /usr/roomrec-probe 2>/dev/null; then echo root-writable; else echo root-readonly; fi >> /dev/termination-log; echo ok > /work/x && echo work-writable >> /dev/termination-log"],
                "securityContext": {"readOnlyRootFilesystem": true, "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}},
                "volumeMounts": [{"name": "work", "mountPath": "/work"}]
            }],
            "volumes": [{"name": "work", "emptyDir": {}}]
        }
    }))
    .unwrap();
    pods.create(&PostParams::default(), &hardened)
        .await
        .unwrap();
    let pod = wait_pod(&pods, "hardened", Duration::from_secs(60), terminal).await;
    assert_eq!(
        terminated(&pod).1,
        "65532\nroot-readonly\nwork-writable\n",
        "{:#?}",
        pod.status
    );
}

#[tokio::test]
async fn failing_pod_reports_exit_code_and_message() {
    let client = bed().client().await.unwrap();
    let ns = bed().namespace("smoke-fail").await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client, &ns);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "fails"},
        "spec": {"restartPolicy": "Never", "containers": [{
            "name": "main", "image": "busybox",
            "command": ["sh", "-c", "echo 'no such stream: rtmp://x' >&2; exit 3"],
            "terminationMessagePolicy": "FallbackToLogsOnError"
        }]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let pod = wait_pod(&pods, "fails", Duration::from_secs(60), terminal).await;
    assert_eq!(phase(&pod), "Failed");
    assert_eq!(
        terminated(&pod),
        (3, "no such stream: rtmp://x".to_string())
    );

    // An image with no local binary fails with a message that says what to do.
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "no-binary"},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "example.com/not-installed:1"}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let pod = wait_pod(&pods, "no-binary", Duration::from_secs(60), terminal).await;
    assert_eq!(phase(&pod), "Failed");
    let message = pod.status.unwrap().message.unwrap_or_default();
    assert!(message.contains("ROOMREC_NODE_PATH"), "{message}");
}

#[tokio::test]
async fn job_controller_creates_pods_that_run() {
    let client = bed().client().await.unwrap();
    let ns = bed().namespace("smoke-job").await.unwrap();
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    let job: Job = serde_json::from_value(json!({
        "metadata": {"name": "once"},
        "spec": {"backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never", "containers": [{
            "name": "main", "image": "busybox", "command": ["sh", "-c", "echo job ran"]
        }]}}}
    }))
    .unwrap();
    jobs.create(&PostParams::default(), &job).await.unwrap();
    wait_until(Duration::from_secs(90), || async {
        jobs.get("once")
            .await
            .ok()
            .and_then(|j| j.status)
            .and_then(|s| s.succeeded)
            == Some(1)
    })
    .await
    .expect("the Job succeeds through its pod");
    let pods: Api<Pod> = Api::namespaced(client, &ns);
    let list = pods.list(&Default::default()).await.unwrap();
    let pod = list.items.iter().find(|p| {
        p.metadata
            .labels
            .as_ref()
            .is_some_and(|l| l.get("job-name").map(String::as_str) == Some("once"))
    });
    let pod = pod.expect("the job controller created a pod");
    assert_eq!(
        pod.metadata.owner_references.as_ref().unwrap()[0].kind,
        "Job"
    );
}

#[tokio::test]
async fn deleting_an_owner_garbage_collects_and_terminates_its_pod() {
    let bed = bed();
    let client = bed.client().await.unwrap();
    let ns = bed.namespace("smoke-gc").await.unwrap();
    let owners: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let owner = owners
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "owner"}})).unwrap(),
        )
        .await
        .unwrap();
    let out = bed.scratch(&format!("{ns}-out")).unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "owned", "ownerReferences": [{
            "apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid.unwrap()
        }]},
        "spec": {
            "terminationGracePeriodSeconds": 5,
            "containers": [{
                "name": "main", "image": "busybox",
                "command": ["sh", "-c", "trap 'echo got-sigterm > /out/signal; exit 0' TERM; echo started > /out/started; while true; do sleep 0.1; done"],
                "volumeMounts": [{"name": "out", "mountPath": "/out"}]
            }],
            "volumes": [{"name": "out", "hostPath": {"path": out}}]
        }
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let running = wait_pod(&pods, "owned", Duration::from_secs(60), |p| {
        phase(p) == "Running"
    })
    .await;
    let pid: i32 = running.status.unwrap().container_statuses.unwrap()[0]
        .container_id
        .as_deref()
        .unwrap()
        .trim_start_matches("local://")
        .parse()
        .unwrap();
    wait_until(Duration::from_secs(10), || async {
        out.join("started").exists()
    })
    .await
    .unwrap();

    owners
        .delete("owner", &DeleteParams::background())
        .await
        .unwrap();
    wait_until(Duration::from_secs(60), || async {
        pods.get_opt("owned").await.unwrap().is_none()
    })
    .await
    .expect("the garbage collector deletes the owned pod and the node agent finishes it");
    assert_eq!(
        std::fs::read_to_string(out.join("signal")).unwrap(),
        "got-sigterm\n"
    );
    // SAFETY: kill with signal 0 only checks that the process exists.
    let alive = unsafe { libc::kill(pid, 0) } == 0;
    assert!(!alive, "the container's process {pid} is gone");
}

#[tokio::test]
async fn deleted_pod_ignoring_sigterm_is_killed_after_its_grace_period() {
    let client = bed().client().await.unwrap();
    let ns = bed().namespace("smoke-kill").await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client, &ns);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "stubborn"},
        "spec": {"terminationGracePeriodSeconds": 2, "containers": [{
            "name": "main", "image": "busybox",
            "command": ["sh", "-c", "trap '' TERM; while true; do sleep 0.1; done"]
        }]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    wait_pod(&pods, "stubborn", Duration::from_secs(60), |p| {
        phase(p) == "Running"
    })
    .await;
    let started = std::time::Instant::now();
    pods.delete("stubborn", &DeleteParams::default())
        .await
        .unwrap();
    wait_until(Duration::from_secs(30), || async {
        pods.get_opt("stubborn").await.unwrap().is_none()
    })
    .await
    .expect("the pod is gone after SIGKILL");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2),
        "SIGKILL came only after the grace period ({took:?})"
    );
}

#[tokio::test]
async fn rtmp_stream_is_readable_with_the_published_codecs() {
    let bed = bed();
    let url = bed.rtmp_url("smoke-camera");
    let _publisher = bed
        .publish("smoke-camera", &StreamSpec::default())
        .await
        .unwrap();
    let probe = tokio::task::spawn_blocking(move || ffprobe(&url, Duration::from_secs(15)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(probe.codec("video"), Some("h264"), "{:#?}", probe.raw);
    assert_eq!(probe.codec("audio"), Some("aac"), "{:#?}", probe.raw);
    let video = probe.raw["streams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["codec_type"] == "video")
        .unwrap();
    assert_eq!(
        (video["width"].as_u64(), video["height"].as_u64()),
        (Some(1280), Some(720))
    );
}

#[tokio::test]
async fn object_store_accepts_signed_requests_and_refuses_others() {
    use opendal::{ErrorKind, Operator, services::S3};
    opendal::install_default();
    let bed = bed();
    let operator = |secret: &str| {
        Operator::new(
            S3::default()
                .endpoint(&bed.s3_endpoint)
                .region(&bed.s3_region)
                .bucket(&bed.s3_bucket)
                .access_key_id(&bed.s3_access_key)
                .secret_access_key(secret)
                .disable_config_load()
                .disable_ec2_metadata(),
        )
        .unwrap()
    };
    let good = operator(&bed.s3_secret_key);
    let key = "smoke/signed.bin";
    let body: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    // Large enough for a multipart upload with 1 MiB chunks.
    let mut writer = good.writer_with(key).chunk(1 << 20).await.unwrap();
    writer.write(body.clone()).await.unwrap();
    writer.close().await.unwrap();
    assert_eq!(good.read(key).await.unwrap().to_vec(), body);
    assert_eq!(std::fs::read(bed.s3_bucket_dir.join(key)).unwrap(), body);

    let unsigned = reqwest::Client::new()
        .put(format!(
            "{}/{}/smoke/unsigned.txt",
            bed.s3_endpoint, bed.s3_bucket
        ))
        .body("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status().as_u16(), 403, "unsigned PUT refused");
    let unsigned_get = reqwest::get(format!("{}/{}/{key}", bed.s3_endpoint, bed.s3_bucket))
        .await
        .unwrap();
    assert_eq!(unsigned_get.status().as_u16(), 403, "unsigned GET refused");

    let bad = operator("not-the-secret");
    let err = bad.write("smoke/bad.txt", "nope").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    assert!(!bed.s3_bucket_dir.join("smoke/bad.txt").exists());
}

#[tokio::test]
async fn prometheus_scrapes_a_target() {
    let bed = bed();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let server = tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut request = [0u8; 4096];
                let _ = socket.read(&mut request).await;
                let body = "# TYPE roomrec_smoke_total counter\nroomrec_smoke_total 42\n";
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    bed.add_prometheus_target("smoke", &address).unwrap();
    let client = reqwest::Client::new();
    let query = |q: &'static str| {
        let client = client.clone();
        let url = format!("{}/api/v1/query", bed.prometheus_url);
        async move {
            let body: serde_json::Value = client
                .get(url)
                .query(&[("query", q)])
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            body["data"]["result"][0]["value"][1]
                .as_str()
                .map(str::to_owned)
        }
    };
    wait_until(Duration::from_secs(60), || async {
        query("roomrec_smoke_total{job=\"smoke\"}").await.as_deref() == Some("42")
    })
    .await
    .expect("Prometheus scraped the target");
    assert_eq!(query("up{job=\"smoke\"}").await.as_deref(), Some("1"));
    server.abort();
}

/// Each pod serves this on 0.0.0.0:9090 (as every worker serves /metrics), after asking the
/// host's TCP and UDP services on 127.0.0.1 who it is and connecting to its own port over
/// loopback. Its UDP sockets are connected: they take answers from 127.0.0.1:port only.
const POD_SERVER: &str = r#"
import os, socket
name, ip = os.environ["POD_NAME"], os.environ["POD_IP"]
own = socket.socket()  # no SO_REUSEADDR: a second 0.0.0.0:9090 in one namespace is refused
own.bind(("0.0.0.0", 9090))
own.listen()
host = socket.create_connection(("127.0.0.1", int(os.environ["HOST_PORT"])), timeout=20)
host.sendall(name.encode() + b"\n")
said = host.makefile().readline().strip()
said_udp = []
for port in os.environ["UDP_PORTS"].split(","):
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.settimeout(20)
    udp.connect(("127.0.0.1", int(port)))
    udp.send(name.encode())
    said_udp.append(udp.recv(100).decode())
me = socket.create_connection(("127.0.0.1", 9090), timeout=20)
itself, _ = own.accept()
itself.close(); me.close()
print("serving", flush=True)
while True:
    conn, _ = own.accept()
    conn.sendall(f"{name} {ip} host-said:{said} udp-said:{'|'.join(said_udp)} self:ok\n".encode())
    conn.close()
"#;

/// The pod's log, to show why it failed.
fn pod_log(pod: &Pod) -> String {
    let meta = &pod.metadata;
    let dir = bed().dir.join("node/pods").join(format!(
        "{}_{}_{}",
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default(),
        meta.uid.as_deref().unwrap_or_default()
    ));
    std::fs::read_to_string(dir.join("main.log")).unwrap_or_default()
}

async fn read_line(address: &str) -> std::io::Result<String> {
    use tokio::io::AsyncBufReadExt;
    let stream = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect(address),
    )
    .await??;
    let mut line = String::new();
    tokio::io::BufReader::new(stream)
        .read_line(&mut line)
        .await?;
    Ok(line.trim().to_string())
}

#[tokio::test]
async fn pods_bind_the_same_port_each_at_its_own_ip_and_reach_the_hosts_loopback() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let client = bed().client().await.unwrap();
    let ns = bed().namespace("smoke-net").await.unwrap();
    // A service of the host on 127.0.0.1, as the bed's are: it tells each caller its address.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host_port = listener.local_addr().unwrap().port();
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel();
    // And two UDP services that answer from the socket they were sent to: one on 127.0.0.1,
    // one on every address (its answers leave from the address the route picks).
    let mut udp_ports = Vec::new();
    let mut udp_servers = Vec::new();
    for address in ["127.0.0.1:0", "0.0.0.0:0"] {
        let socket = tokio::net::UdpSocket::bind(address).await.unwrap();
        udp_ports.push(socket.local_addr().unwrap().port().to_string());
        udp_servers.push(tokio::spawn(async move {
            let mut buffer = [0u8; 100];
            while let Ok((_, peer)) = socket.recv_from(&mut buffer).await {
                let answer = format!("seen {}", peer.ip());
                let _ = socket.send_to(answer.as_bytes(), peer).await;
            }
        }));
    }
    let server = tokio::spawn(async move {
        while let Ok((socket, peer)) = listener.accept().await {
            let seen = seen_tx.clone();
            tokio::spawn(async move {
                let (read, mut write) = socket.into_split();
                let mut name = String::new();
                let _ = tokio::io::BufReader::new(read).read_line(&mut name).await;
                let _ = write
                    .write_all(format!("seen {}\n", peer.ip()).as_bytes())
                    .await;
                let _ = seen.send((name.trim().to_string(), peer.ip().to_string()));
            });
        }
    });

    let pods: Api<Pod> = Api::namespaced(client, &ns);
    for name in ["net-a", "net-b"] {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {
                "restartPolicy": "Never",
                "terminationGracePeriodSeconds": 1,
                "containers": [{
                    "name": "main", "image": "python", "command": ["python3", "-c", POD_SERVER],
                    "ports": [{"name": "metrics", "containerPort": 9090}],
                    "env": [
                        {"name": "HOST_PORT", "value": host_port.to_string()},
                        {"name": "UDP_PORTS", "value": udp_ports.join(",")},
                        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}
                    ]
                }]
            }
        }))
        .unwrap();
        pods.create(&PostParams::default(), &pod).await.unwrap();
    }
    let mut ips = Vec::new();
    for name in ["net-a", "net-b"] {
        let pod = wait_pod(&pods, name, Duration::from_secs(60), |p| {
            terminal(p) || pod_log(p).contains("serving")
        })
        .await;
        assert_eq!(
            phase(&pod),
            "Running",
            "{name} is not serving: {}\n{:#?}",
            pod_log(&pod),
            pod.status
        );
        let status = pod.status.unwrap();
        let ip = status.pod_ip.clone().expect("a pod IP");
        assert_eq!(status.pod_ips.unwrap()[0].ip, ip, "podIPs holds the pod IP");
        let host_ip = status.host_ip.expect("a host IP");
        assert!(
            ip != "127.0.0.1" && ip != host_ip,
            "{name} has an address of its own: {ip}, host {host_ip}"
        );
        ips.push(ip);
    }
    assert_ne!(ips[0], ips[1], "each pod has its own IP");

    // From the host, each pod answers at its IP: with its name, the IP its downward API gave
    // it, what the host's loopback services saw as its address (the pod's IP, over TCP and to
    // both UDP sockets), and that its own declared port on 127.0.0.1 is its own.
    for (name, ip) in ["net-a", "net-b"].into_iter().zip(&ips) {
        let answer = read_line(&format!("{ip}:9090")).await.unwrap();
        assert_eq!(
            answer,
            format!("{name} {ip} host-said:seen {ip} udp-said:seen {ip}|seen {ip} self:ok")
        );
    }
    let mut seen = vec![seen_rx.recv().await.unwrap(), seen_rx.recv().await.unwrap()];
    seen.sort();
    assert_eq!(
        seen,
        vec![
            ("net-a".to_string(), ips[0].clone()),
            ("net-b".to_string(), ips[1].clone())
        ]
    );

    // Deleted, each pod's veth is removed and its address answers no more.
    for name in ["net-a", "net-b"] {
        pods.delete(name, &DeleteParams::default()).await.unwrap();
    }
    for name in ["net-a", "net-b"] {
        wait_until(Duration::from_secs(30), || async {
            pods.get_opt(name).await.unwrap().is_none()
        })
        .await
        .expect("the pod is deleted");
    }
    for ip in &ips {
        let veth = roomrec_testbed::node_agent::network::host_veth_of(ip.parse().unwrap());
        assert!(!link_exists(&veth), "{veth} of {ip} is gone");
        assert!(
            read_line(&format!("{ip}:9090")).await.is_err(),
            "{ip} answers no more"
        );
    }
    server.abort();
    udp_servers.iter().for_each(|s| s.abort());
}

/// Whether this machine has a network interface named `name`.
fn link_exists(name: &str) -> bool {
    std::process::Command::new("ip")
        .args(["link", "show", name])
        .stderr(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap()
        .success()
}

/// The interface index of link `name`, and the handle of the nftables table `ip name`: what
/// identifies a bed's bridge and table even after another bed reuses the name.
fn bridge_and_table_ids(name: &str) -> (Option<u64>, Option<u64>) {
    let json = |program: &str, args: &[&str]| -> serde_json::Value {
        let out = std::process::Command::new(program)
            .args(args)
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or_default()
    };
    let links = json("ip", &["-j", "link", "show"]);
    let link = links
        .as_array()
        .into_iter()
        .flatten()
        .find(|l| l["ifname"] == name);
    let tables = json("nft", &["-j", "list", "tables"]);
    let table = tables["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| &t["table"])
        .find(|t| t["family"] == "ip" && t["name"] == name);
    (
        link.and_then(|l| l["ifindex"].as_u64()),
        table.and_then(|t| t["handle"].as_u64()),
    )
}

#[tokio::test]
async fn a_crashed_beds_network_is_removed_by_the_next_node_agent() {
    // Free ports are only unique within a process: the other process's bed starts once this
    // one's shared bed holds its ports, so the two cannot pick the same.
    let _ = bed();
    // A bed in a process of its own, with a pod, killed with SIGKILL: nothing of it runs
    // its cleanup.
    let dir = tempfile::tempdir().unwrap();
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut crashed = tokio::process::Command::new(env!("CARGO_BIN_EXE_roomrec-testbed"))
        .args(["up", "--dir"])
        .arg(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(log.reopen().unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let info_path = dir.path().join("bed.json");
    let started = wait_until(Duration::from_secs(120), || async { info_path.exists() }).await;
    assert!(
        started.is_ok(),
        "the bed in the other process did not start: {}",
        std::fs::read_to_string(log.path()).unwrap_or_default()
    );
    let info = roomrec_testbed::bed::attach(&info_path).unwrap();
    let pods: Api<Pod> = Api::namespaced(info.client().await.unwrap(), "default");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "crashes"},
        "spec": {"containers": [{"name": "main", "image": "sleep", "command": ["sleep", "300"]}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let pod = wait_pod(&pods, "crashes", Duration::from_secs(60), |p| {
        phase(p) == "Running"
    })
    .await;
    let status = pod.status.unwrap();
    let pod_ip: std::net::Ipv4Addr = status.pod_ip.unwrap().parse().unwrap();
    let gateway: std::net::Ipv4Addr = status.host_ip.unwrap().parse().unwrap();
    let bridge = roomrec_testbed::node_agent::network::bridge_of(gateway);
    let veth = roomrec_testbed::node_agent::network::host_veth_of(pod_ip);
    assert!(link_exists(&veth), "the pod's veth {veth}");
    crashed.start_kill().unwrap();
    crashed.wait().await.unwrap();

    // The kernel removes the pod's namespace and veth (its processes died with the agent and
    // nothing else holds it); the bridge and the table stay behind.
    wait_until(Duration::from_secs(10), || async { !link_exists(&veth) })
        .await
        .expect("the crashed pod's veth went with its namespace");
    let (link, table) = bridge_and_table_ids(&bridge);
    assert!(
        link.is_some() && table.is_some(),
        "a crash leaves {bridge} and its table behind"
    );

    // The next node agent to start removes them (it may then claim the same name afresh).
    let next = roomrec_testbed::TestBed::start().await.unwrap();
    let (link_after, table_after) = bridge_and_table_ids(&bridge);
    assert_ne!(
        link_after, link,
        "the crashed bed's bridge {bridge} is gone"
    );
    assert_ne!(
        table_after, table,
        "the crashed bed's table {bridge} is gone"
    );
    drop(next);
}

#[test]
fn a_panicking_test_leaves_no_process_or_file_behind() {
    use roomrec_testbed::TestBed;
    use std::sync::{Arc, Mutex};
    let seen: Arc<Mutex<(Vec<u32>, std::path::PathBuf)>> = Default::default();
    let record = seen.clone();
    type Ids = (Option<u64>, Option<u64>);
    let network_seen: Arc<Mutex<Option<(String, Ids)>>> = Default::default();
    let network = network_seen.clone();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        runtime.block_on(async move {
            let mut bed = TestBed::start().await.unwrap();
            let cp = &bed.control_plane;
            let pids = [
                cp.etcd.pid(),
                cp.apiserver.pid(),
                cp.controller_manager.pid(),
                bed.rtmp.process().pid(),
                bed.object_store.pid(),
                bed.prometheus.process().pid(),
            ];
            *record.lock().unwrap() = (pids.into_iter().flatten().collect(), bed.info.dir.clone());
            let bridge = roomrec_testbed::node_agent::network::bridge_of(bed.node_agent.host_ip());
            *network.lock().unwrap() = Some((bridge.clone(), bridge_and_table_ids(&bridge)));
            panic!("a test fails half-way");
        })
    }));
    assert!(outcome.is_err());
    // Unwinding has dropped the bed: on this same thread, so not the parent-death signal's work.
    let (pids, dir) = seen.lock().unwrap().clone();
    assert_eq!(pids.len(), 6);
    for pid in pids {
        // SAFETY: signal 0 only asks whether the process exists.
        assert_ne!(
            unsafe { libc::kill(pid as i32, 0) },
            0,
            "process {pid} still runs"
        );
    }
    assert!(!dir.exists(), "{} was removed", dir.display());
    // The pod network: its bridge and table are gone (what has the name now is not them).
    let (bridge, (link, table)) = network_seen.lock().unwrap().clone().unwrap();
    assert!(link.is_some() && table.is_some(), "{bridge} existed");
    let (link_after, table_after) = bridge_and_table_ids(&bridge);
    assert_ne!(link_after, link, "{bridge} was removed");
    assert_ne!(table_after, table, "table {bridge} was removed");
}
