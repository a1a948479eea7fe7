//! The Helm chart against the real thing: `helm lint --strict`, the default and the maximal
//! values rendered and accepted by the API server (server-side dry run) and by
//! values.schema.json, and the chart installed with `helm install` into the test bed: its
//! Deployment's pod (run by the node agent from the binary cargo built, as the chart's
//! ServiceAccount, non-root with a read-only root) records a job whose mode, idle timeout and
//! storage all come from the chart's worker defaults; requests outside its RBAC are refused.

/// The parts of `tests/support/` these tests use, and those they build on (each file says
/// what it holds).
mod support {
    pub mod cluster;
    pub mod jobs;
    pub mod kubectl;
    pub mod logs;
    pub mod proc;
    pub mod processes;
    pub mod s3;
    pub mod stored_files;
    pub mod validation;

    pub use self::{
        cluster::*, jobs::*, kubectl::*, logs::*, proc::*, processes::*, s3::*, stored_files::*,
        validation::*,
    };
}

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use roomrec_api::crd::RecordingJob;
use roomrec_testbed::wait_until;
use serde_json::json;
use std::process::Output;
use std::time::Duration;
use support::*;

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn chart() -> String {
    repo().join("charts/roomrec").display().to_string()
}

/// The chart's operator, run by the node agent as a pod of the Deployment in `namespace`.
struct OperatorPod {
    namespace: String,
}

impl OperatorLog for OperatorPod {
    fn log_text(&self) -> String {
        let text: String = container_logs(&self.namespace, "operator")
            .into_iter()
            .map(|(_, text)| text)
            .collect();
        tail(&text, 6000)
    }
}

/// `http://{pod IP}:{port metrics}/readyz` of the chart's operator pod, once it has an IP.
async fn operator_readyz(pods: &Api<Pod>) -> Option<String> {
    pods.list(&Default::default())
        .await
        .ok()?
        .items
        .into_iter()
        .find_map(|pod| {
            let container = pod
                .spec?
                .containers
                .into_iter()
                .find(|c| c.name == "operator")?;
            let port = container
                .ports?
                .into_iter()
                .find(|p| p.name.as_deref() == Some("metrics"))?
                .container_port;
            let ip = pod.status?.pod_ip?;
            Some(format!("http://{ip}:{port}/readyz"))
        })
}

/// How a process really runs: (real uid, real gid, root filesystem read-only), from /proc.
fn process_identity(pid: i32) -> (u32, u32, bool) {
    let first_id = |key: &str| -> u32 {
        proc_status(pid, key)
            .split_whitespace()
            .next()
            .and_then(|id| id.parse().ok())
            .unwrap_or_else(|| panic!("no {key} id in /proc/{pid}/status"))
    };
    let root_read_only = mount_options(pid)
        .get("/")
        .is_some_and(|options| options.iter().any(|o| o == "ro"));
    (first_id("Uid"), first_id("Gid"), root_read_only)
}

#[test]
fn helm_lint_strict_passes_for_default_and_maximal_values() {
    let chart = chart();
    let maximal = format!("{chart}/ci/maximal-values.yaml");
    for extra in [vec![], vec!["--values", maximal.as_str()]] {
        let mut args = vec!["lint", "--strict", &chart, "--kube-version", "1.37.2"];
        args.extend(&extra);
        let out = helm(&args);
        assert!(out.status.success(), "helm lint {extra:?}: {}", text(&out));
    }
}

#[test]
fn a_typo_in_values_fails_at_install_and_names_the_key() {
    for (set, expected) in [
        ("operator.replica=2", "'replica' not allowed"),
        ("worker.defaults.mode=Mp3", "worker/defaults/mode"),
        ("operator.logFormat=yaml", "operator/logFormat"),
        ("worker.spoolLimit=lots", "worker/spoolLimit"),
        (
            "operator.replicas=2,operator.leaderElection.enabled=false",
            "needs operator.leaderElection.enabled=true",
        ),
        (
            "operator.watchNamespace=recordings,operator.secretNamespaces={team-a}",
            "leave operator.secretNamespaces empty",
        ),
        (
            "worker.overrides.allowedImages={registry.example.com/a:1'}",
            "worker/overrides/allowedImages/0",
        ),
    ] {
        let out = helm_template_output(&["--set", set]);
        assert!(!out.status.success(), "--set {set} was accepted");
        assert!(
            text(&out).contains(expected),
            "--set {set}: expected {expected:?} in {}",
            text(&out)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chart_renders_what_the_api_server_accepts() {
    cluster().await;
    install_monitoring_crds().await;
    // The maximal values watch this namespace (its Role lives there).
    let _ = kubectl(&["create", "namespace", "recordings"], None);
    let maximal = repo().join("charts/roomrec/ci/maximal-values.yaml");
    let maximal = maximal.to_str().unwrap();
    for values in [
        vec![],
        vec!["--set", "crds.keep=false"],
        vec!["--set", "crds.install=false"],
        vec!["--values", maximal],
    ] {
        let out = helm_template_output(&values);
        assert!(out.status.success(), "{values:?}: {}", text(&out));
        let rendered = String::from_utf8(out.stdout).unwrap();
        assert_eq!(
            rendered.contains("kind: CustomResourceDefinition"),
            !values.contains(&"crds.install=false"),
            "crds.install decides whether the CRD is rendered"
        );
        assert_eq!(
            rendered.contains("helm.sh/resource-policy: keep"),
            values.is_empty(),
            "crds.keep (default true) keeps the CRD on uninstall"
        );
        if values.contains(&maximal) {
            for kind in [
                "Deployment",
                "Service",
                "PodDisruptionBudget",
                "NetworkPolicy",
                "ConfigMap",
                "ServiceMonitor",
                "PodMonitor",
                "PrometheusRule",
                "ValidatingAdmissionPolicy",
                "ValidatingAdmissionPolicyBinding",
            ] {
                assert!(
                    rendered.contains(&format!("\nkind: {kind}\n")),
                    "maximal values render a {kind}"
                );
            }
        }
        // The API server validates every object (a server-side dry run changes nothing),
        // the prometheus-operator kinds against that project's CRDs.
        let applied = server_dry_run(&rendered);
        assert!(
            applied.status.success(),
            "{values:?}: {}",
            String::from_utf8_lossy(&applied.stderr)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_installed_chart_records_with_its_own_service_account() {
    cluster().await;
    let ns = bed().namespace("chart").await.unwrap();
    s3_secret(&ns).await;
    // Ports as the chart sets them (each pod has a network of its own). The worker defaults
    // are the bed's store, so the job below names no storage.
    let values = json!({
        "crds": {"install": false},
        "operator": {
            "image": {"tag": "e2e"},
            "watchNamespace": ns,
            "leaderElection": {"leaseSeconds": 6},
            "logLevel": "info,roomrec_operator=debug",
            "retryBackoffSeconds": 1,
        },
        "worker": {
            "image": {"tag": "e2e"},
            "terminationGracePeriodSeconds": 25,
            "defaults": {
                "mode": "AudioVideoMp4",
                "idleTimeoutSeconds": 30,
                "storage": {"s3": {
                    "endpoint": bed().s3_endpoint,
                    "bucket": bed().s3_bucket,
                    "region": bed().s3_region,
                    "path": format!("chart/{ns}"),
                    "credentialsSecret": "s3-keys",
                }},
            },
        },
    });
    let values_file = bed().scratch("chart").unwrap().join(format!("{ns}.yaml"));
    std::fs::write(&values_file, serde_yaml::to_string(&values).unwrap()).unwrap();
    let chart = chart();
    let install = helm(&[
        "install",
        &ns,
        &chart,
        "--namespace",
        &ns,
        "--values",
        values_file.to_str().unwrap(),
    ]);
    assert!(install.status.success(), "helm install: {}", text(&install));
    assert!(
        text(&install).contains("kubectl -n") && text(&install).contains("rollout status"),
        "NOTES.txt tells the next command: {}",
        text(&install)
    );

    // The Deployment's pod leads (/readyz at its IP, on its port `metrics`), under the chart's
    // securityContext.
    let op = OperatorPod {
        namespace: ns.clone(),
    };
    let pods: Api<Pod> = Api::namespaced(bed().client().await.unwrap(), &ns);
    let leading = wait_until(Duration::from_secs(60), || async {
        let Some(ready) = operator_readyz(&pods).await else {
            return false;
        };
        reqwest::get(&ready)
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;
    assert!(
        leading.is_ok(),
        "the chart's operator did not lead within 60 s: {}",
        op.log_text()
    );
    let pod_name = format!("POD_NAMESPACE={ns}");
    let pid = pid_of("roomrec-operator", &pod_name).expect("the operator's process");
    assert_eq!(
        process_identity(pid),
        (65532, 65532, true),
        "the operator runs as 65532:65532 with a read-only root"
    );

    // A job with a source only: mode, idle timeout and storage come from the chart.
    let key = format!("chart-{ns}");
    let _publisher = publish(&key, None).await;
    let api: Api<RecordingJob> = jobs(&ns).await;
    let job: RecordingJob = serde_json::from_value(json!({
        "apiVersion": "roomrec.dev/v1alpha1",
        "kind": "RecordingJob",
        "metadata": {"name": "defaults"},
        "spec": {"source": {"url": bed().rtmp_url(&key)}, "maxDurationSeconds": 8},
    }))
    .unwrap();
    api.create(&PostParams::default(), &job).await.unwrap();
    let job = ended_as(&api, "defaults", "Succeeded", Duration::from_secs(120), &op).await;
    let spec = serde_json::to_value(&job.spec).unwrap();
    assert_eq!(spec["mode"], "AudioVideoMp4", "{spec}");
    assert_eq!(spec["idleTimeoutSeconds"], 30, "{spec}");
    assert_eq!(
        spec["storage"]["s3"]["path"],
        format!("chart/{ns}"),
        "{spec}"
    );
    let seconds = assert_files_play(&job, &["h264", "aac"]);
    assert!((seconds - 8.0).abs() < 1.5, "recorded {seconds} s of 8");

    // Outside the chart's grant: refused (impersonating the installed ServiceAccount).
    let account = format!("system:serviceaccount:{ns}:{ns}-roomrec-operator");
    let can = |verb: &str, resource: &str, namespace: &str| {
        let out = kubectl(
            &[
                "auth", "can-i", verb, resource, "-n", namespace, "--as", &account,
            ],
            None,
        );
        String::from_utf8_lossy(&out.stdout).trim() == "yes"
    };
    for (verb, resource, namespace, allowed) in [
        ("get", "secrets", ns.as_str(), true),
        ("list", "secrets", ns.as_str(), false),
        ("create", "pods", ns.as_str(), true),
        ("update", "pods", ns.as_str(), false),
        ("patch", "recordingjobs.roomrec.dev", ns.as_str(), true),
        ("delete", "recordingjobs.roomrec.dev", ns.as_str(), false),
        ("create", "deployments.apps", ns.as_str(), false),
        ("update", "leases.coordination.k8s.io", ns.as_str(), true),
        ("update", "leases.coordination.k8s.io", "kube-system", false),
        ("list", "nodes", ns.as_str(), false),
        // operator.watchNamespace makes the grant a Role in that namespace only.
        ("get", "secrets", "default", false),
        ("create", "pods", "default", false),
    ] {
        assert_eq!(
            can(verb, resource, namespace),
            allowed,
            "can {account} {verb} {resource} in {namespace}"
        );
    }

    let uninstall = helm(&["uninstall", &ns, "--namespace", &ns, "--wait"]);
    assert!(uninstall.status.success(), "{}", text(&uninstall));
    let gone = wait_until(Duration::from_secs(60), || async {
        pid_of("roomrec-operator", &pod_name).is_none()
    })
    .await;
    assert!(gone.is_ok(), "the operator still runs after helm uninstall");
}

/// The values a heritage install sets besides its template (the chart checks them together).
const HERITAGE: [&str; 5] = [
    "heritage.enabled=true",
    "heritage.tokenSecret.name=heritage-token",
    "heritage.template.playDomain=play.example.com",
    "trtc.events.enabled=true",
    "trtc.events.keySecret.name=trtc-callback",
];

/// The rendered objects of `yaml` (a `helm template` output), as JSON.
fn objects(yaml: &str) -> Vec<serde_json::Value> {
    use serde::Deserialize;
    serde_yaml::Deserializer::from_str(yaml)
        .filter_map(|document| serde_json::Value::deserialize(document).ok())
        .filter(|object| object.is_object())
        .collect()
}

fn object<'a>(objects: &'a [serde_json::Value], kind: &str, name: &str) -> &'a serde_json::Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} rendered"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heritage_values_render_a_namespaced_grant_a_template_the_operator_accepts_and_an_ingress()
{
    cluster().await;
    // The maximal values: the template reaches the operator as JSON it accepts, the port is
    // opened in the container, the Service and the NetworkPolicy.
    let maximal = repo().join("charts/roomrec/ci/maximal-values.yaml");
    let out = helm_template_output(&["--values", maximal.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let rendered = objects(&String::from_utf8(out.stdout).unwrap());
    let deployment = object(&rendered, "Deployment", "e2e-roomrec-operator");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let env = |name: &str| -> String {
        container["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .and_then(|e| e["value"].as_str())
            .unwrap_or_else(|| panic!("no {name} in the operator's environment"))
            .to_string()
    };
    let template = roomrec_operator::heritage::Template::parse(&env("ROOMREC_HERITAGE_TEMPLATE"))
        .unwrap_or_else(|e| panic!("the operator refuses the chart's template: {e}"));
    assert_eq!(template.relay, roomrec_api::crd::RelayMode::Start);
    assert_eq!(template.whole_room.max_people, Some(16));
    assert_eq!(env("ROOMREC_HERITAGE_NAMESPACE"), "recordings");
    assert_eq!(env("ROOMREC_HERITAGE_ADDRESS"), "0.0.0.0:8444");
    assert_eq!(
        env("ROOMREC_HERITAGE_TOKEN_FILE"),
        "/var/run/secrets/roomrec/heritage/token"
    );
    assert!(
        container["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "heritage" && p["containerPort"] == 8444)
    );
    let service = object(&rendered, "Service", "e2e-roomrec-operator");
    assert!(
        service["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "heritage" && p["targetPort"] == "heritage")
    );
    let policy = object(&rendered, "NetworkPolicy", "e2e-roomrec-operator");
    assert!(
        policy["spec"]["ingress"]
            .to_string()
            .contains("\"port\":\"heritage\""),
        "{policy}"
    );
    // The grant is a Role in the heritage namespace with exactly what the API does.
    let role = object(&rendered, "Role", "e2e-roomrec-heritage");
    assert_eq!(role["metadata"]["namespace"], "recordings");
    assert_eq!(
        role["rules"],
        json!([
            {"apiGroups": ["roomrec.dev"], "resources": ["recordingjobs"],
             "verbs": ["create", "get", "list", "patch", "delete"]},
            {"apiGroups": [""], "resources": ["secrets"],
             "verbs": ["create", "get", "patch", "delete"]},
        ])
    );
    assert!(
        rendered
            .iter()
            .filter(|o| o["kind"] == "ClusterRole")
            .all(|o| !o["rules"]
                .to_string()
                .contains("\"create\",\"get\",\"list\"")),
        "a cluster-wide heritage grant"
    );

    // Applied for a namespace: the operator's ServiceAccount may do that there, nowhere else.
    let ns = bed().namespace("heritage-rbac").await.unwrap();
    let mut set = HERITAGE.to_vec();
    let namespace = format!("heritage.namespace={ns}");
    set.push(&namespace);
    kubectl_apply(&helm_template_with(&["templates/rbac.yaml"], &set));
    let account = format!("system:serviceaccount:{SYSTEM_NAMESPACE}:e2e-roomrec-operator");
    for (verb, resource, namespace, allowed) in [
        ("create", "recordingjobs.roomrec.dev", ns.as_str(), true),
        ("delete", "recordingjobs.roomrec.dev", ns.as_str(), true),
        ("create", "secrets", ns.as_str(), true),
        ("delete", "secrets", ns.as_str(), true),
        ("list", "secrets", ns.as_str(), false),
        ("create", "recordingjobs.roomrec.dev", "default", false),
        ("delete", "recordingjobs.roomrec.dev", "default", false),
        ("create", "secrets", "default", false),
    ] {
        let out = kubectl(
            &[
                "auth", "can-i", verb, resource, "-n", namespace, "--as", &account,
            ],
            None,
        );
        let can = String::from_utf8_lossy(&out.stdout).trim() == "yes";
        assert_eq!(
            can, allowed,
            "can {account} {verb} {resource} in {namespace}"
        );
    }

    // Mistakes are named at install.
    let install = |extra: &[&'static str]| -> Vec<&'static str> {
        HERITAGE.iter().chain(extra).copied().collect()
    };
    for (values, expected) in [
        (
            vec!["heritage.enabled=true"],
            "heritage.enabled needs trtc.events.enabled=true",
        ),
        (
            install(&["heritage.template.relay=begin"]),
            "heritage/template/relay",
        ),
        (
            install(&["heritage.template.playdomain=p"]),
            "'playdomain' not allowed",
        ),
        (
            install(&[
                "operator.watchNamespace=recordings",
                "heritage.namespace=elsewhere",
            ]),
            "heritage jobs would never run",
        ),
    ] {
        let args: Vec<&str> = values.iter().flat_map(|v| ["--set", v]).collect();
        let out = helm_template_output(&args);
        assert!(!out.status.success(), "{values:?} was accepted");
        assert!(text(&out).contains(expected), "{values:?}: {}", text(&out));
    }

    // examples/heritage-ingress.yaml routes to that port of the chart's Service for release
    // `roomrec`, and the API server accepts it.
    let example = std::fs::read_to_string(repo().join("examples/heritage-ingress.yaml")).unwrap();
    let ingress = &objects(&example)[0];
    let backend = &ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"];
    let chart = chart();
    let mut args = vec![
        "template",
        "roomrec",
        &chart,
        "--namespace",
        "roomrec-system",
        "--kube-version",
        "1.37.2",
        "--show-only",
        "templates/service.yaml",
    ];
    for value in HERITAGE {
        args.extend(["--set", value]);
    }
    let out = helm(&args);
    assert!(out.status.success(), "{}", text(&out));
    let service = &objects(&String::from_utf8(out.stdout).unwrap())[0];
    assert_eq!(backend["name"], service["metadata"]["name"]);
    assert_eq!(ingress["metadata"]["namespace"], "roomrec-system");
    assert!(
        service["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == backend["port"]["name"])
    );
    assert!(ingress["spec"]["tls"].is_array(), "TLS at the Ingress");
    let applied = server_dry_run(&example);
    assert!(
        applied.status.success(),
        "{}",
        String::from_utf8_lossy(&applied.stderr)
    );
}

/// `kubectl` as `user` (impersonated by the bed's admin): Ok, or Err with what it printed.
fn kubectl_as(user: &str, args: &[&str], stdin: Option<&str>) -> Result<(), String> {
    let mut all = vec!["--as", user];
    all.extend(args);
    let out = kubectl(&all, stdin);
    if out.status.success() {
        Ok(())
    } else {
        Err(text(&out))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_requester_who_may_create_pods_may_choose_the_worker_image_or_service_account() {
    cluster().await;
    let ns = bed().namespace("overrides-policy").await.unwrap();
    // Two users of the namespace: alice may manage RecordingJobs only, bob may create pods too.
    let grant = |role: &str, verbs: &str, resource: &str, users: &[&str]| {
        let role_args = [
            "create",
            "role",
            role,
            "-n",
            &ns,
            "--verb",
            verbs,
            "--resource",
            resource,
        ];
        let mut binding_args = vec!["create", "rolebinding", role, "-n", &ns, "--role", role];
        for user in users {
            binding_args.extend(["--user", user]);
        }
        for args in [&role_args[..], &binding_args] {
            let out = kubectl(args, None);
            assert!(out.status.success(), "kubectl {args:?}: {}", text(&out));
        }
    };
    grant(
        "recordingjob-editor",
        "create,get,list,patch,update",
        "recordingjobs.roomrec.dev",
        &["alice", "bob"],
    );
    grant("pod-creator", "create", "pods", &["bob"]);
    // The chart's policy, bound to this namespace (as operator.watchNamespace binds it).
    let watch = format!("operator.watchNamespace={ns}");
    let policy = |allow_account: &str| {
        helm_template_with(
            &["templates/admissionpolicy.yaml"],
            &[
                &watch,
                "worker.overrides.allowedImages={registry.example.com/roomrec/*}",
                &format!("worker.overrides.allowServiceAccount={allow_account}"),
            ],
        )
    };
    kubectl_apply(&policy("true"));
    let job = |name: &str, worker: serde_json::Value| {
        json!({
            "apiVersion": "roomrec.dev/v1alpha1", "kind": "RecordingJob",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"source": {"url": "rtmp://127.0.0.1/live/cam"}, "worker": worker},
        })
        .to_string()
    };
    let create = |user: &str, name: &str, worker: serde_json::Value, dry_run: bool| {
        let mut args = vec!["create", "-f", "-"];
        if dry_run {
            args.push("--dry-run=server");
        }
        kubectl_as(user, &args, Some(&job(name, worker)))
    };
    let allowed_image = json!({"image": "registry.example.com/roomrec/roomrec-worker:debug"});
    let account = json!({"serviceAccountName": "recorder"});
    let not_a_pod_creator = "alice may not create pods there, so may not set them";
    // Policies take effect once the API server's informer has them. (A misspelt field in an
    // expression would be an error at each request, so every request below would be refused;
    // the bed runs no kube-controller-manager type-checking controller to warn earlier.)
    let active = wait_until(Duration::from_secs(30), || async {
        create("alice", "probe", allowed_image.clone(), true)
            .is_err_and(|e| e.contains(not_a_pod_creator))
    })
    .await;
    assert!(active.is_ok(), "the policy never refused alice");

    // alice may record, with the chart's own worker image too, but choose no other image or
    // ServiceAccount: that would run a pod she may not create.
    let deployment = helm_template_with(&["templates/deployment.yaml"], &[]);
    let chart_image = objects(&deployment)[0]["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "ROOMREC_WORKER_IMAGE")
        .unwrap()["value"]
        .clone();
    create("alice", "plain", json!({}), false).unwrap();
    create("alice", "chart-image", json!({"image": chart_image}), false).unwrap();
    for (name, worker) in [
        ("alice-image", allowed_image.clone()),
        ("alice-account", account.clone()),
    ] {
        let refused = create("alice", name, worker, false).unwrap_err();
        assert!(
            refused
                .contains("spec.worker.image and spec.worker.serviceAccountName choose what runs")
                && refused.contains(not_a_pod_creator),
            "{name}: {refused}"
        );
    }
    // bob may create pods: both are his to choose, within what the chart allows.
    create("bob", "bob-image", allowed_image.clone(), false).unwrap();
    create("bob", "bob-account", account.clone(), false).unwrap();
    let refused = create(
        "bob",
        "bob-miner",
        json!({"image": "evil.example.com/miner:1"}),
        false,
    )
    .unwrap_err();
    assert!(
        refused.contains(
            "spec.worker.image evil.example.com/miner:1 is not an image this operator may run"
        ) && refused.contains("worker.overrides.allowedImages"),
        "{refused}"
    );
    // alice may stop bob's job (the image it keeps is not hers to answer for), not change it.
    let patch = |body: &str| {
        kubectl_as(
            "alice",
            &[
                "patch",
                "-n",
                &ns,
                "recordingjobs.roomrec.dev",
                "bob-image",
                "--type",
                "merge",
                "-p",
                body,
            ],
            None,
        )
    };
    patch(r#"{"spec": {"stop": true}}"#).unwrap();
    let refused = patch(
        r#"{"spec": {"worker": {"image": "registry.example.com/roomrec/roomrec-worker:2"}}}"#,
    )
    .unwrap_err();
    assert!(refused.contains(not_a_pod_creator), "{refused}");

    // With worker.overrides.allowServiceAccount off, not even bob may choose one.
    kubectl_apply(&policy("false"));
    let account_off = wait_until(Duration::from_secs(30), || async {
        create("bob", "bob-account-2", account.clone(), true).is_err_and(|e| {
            e.contains("spec.worker.serviceAccountName is not allowed by this operator")
                && e.contains("worker.overrides.allowServiceAccount=true")
        })
    })
    .await;
    assert!(
        account_off.is_ok(),
        "{:?}",
        create("bob", "bob-account-2", account.clone(), true)
    );
}
