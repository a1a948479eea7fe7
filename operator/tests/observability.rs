//! The chart's monitoring against the real thing: an operator and the worker pod it starts are
//! scraped by the bed's Prometheus while a job records, then every expression of the Grafana
//! dashboard and of the PrometheusRule must be accepted by Prometheus and name only series it
//! holds; promtool checks the rule groups; the API server validates the monitoring objects
//! against prometheus-operator's CRDs.

/// The parts of `tests/support/` these tests use, and those they build on (each file says
/// what it holds).
mod support {
    pub mod cluster;
    pub mod jobs;
    pub mod kubectl;
    pub mod logs;
    pub mod operator_process;
    pub mod s3;
    pub mod validation;

    pub use self::{
        cluster::*, jobs::*, kubectl::*, logs::*, operator_process::*, s3::*, validation::*,
    };
}

use kube::api::{DeleteParams, PostParams};
use roomrec_testbed::wait_until;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::Duration;
use support::*;

const CHART_MONITORING: [&str; 3] = [
    "templates/servicemonitor.yaml",
    "templates/prometheusrule.yaml",
    "templates/dashboard.yaml",
];
const MONITORING_ON: &str =
    "dashboard.enabled=true,prometheusRule.enabled=true,serviceMonitor.enabled=true";

/// An instant query; Err carries Prometheus' error (a PromQL syntax or type error).
async fn query(promql: &str) -> Result<Vec<Value>, String> {
    let body: Value = reqwest::Client::new()
        .get(format!("{}/api/v1/query", bed().prometheus_url))
        .query(&[("query", promql)])
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    match body["status"].as_str() {
        Some("success") => Ok(body["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()),
        _ => Err(format!("{}: {}", body["errorType"], body["error"])),
    }
}

/// The first sample's value of an instant query (None: no result).
async fn value(promql: &str) -> Option<f64> {
    let result = query(promql).await.ok()?;
    result.first()?["value"][1].as_str()?.parse().ok()
}

/// Every metric name Prometheus holds a series of (over its whole retention).
async fn metric_names() -> BTreeSet<String> {
    let body: Value = reqwest::get(format!(
        "{}/api/v1/label/__name__/values",
        bed().prometheus_url
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    body["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n.as_str().map(str::to_string))
        .collect()
}

/// Grafana's variables as a dashboard query would see them; Err names one left over.
fn substitute(expr: &str) -> Result<String, String> {
    let mut out = expr.to_string();
    for (variable, value) in [
        ("$__rate_interval", "1m"),
        ("$__interval", "1m"),
        ("$__range", "1h"),
        ("${namespace}", ".*"),
        ("$namespace", ".*"),
    ] {
        out = out.replace(variable, value);
    }
    match out.contains('$') {
        true => Err(format!("an unknown variable in {expr:?}")),
        false => Ok(out),
    }
}

/// The metric names an expression reads: roomrec's own and `up`.
fn names_in(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = expr;
    while let Some(at) = rest.find(|c: char| c.is_ascii_alphabetic() || c == '_') {
        let token: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
            .collect();
        let after = rest[at + token.len()..].trim_start();
        // A label value in quotes is no name; `up` counts only as a selector.
        let quoted = rest[..at].ends_with('"');
        if !quoted && (token.starts_with("roomrec_") || (token == "up" && after.starts_with('{'))) {
            names.insert(token.clone());
        }
        rest = &rest[at + token.len()..];
    }
    names
}

/// Panels, nested in rows too.
fn panels(list: &Value) -> Vec<Value> {
    list.as_array()
        .into_iter()
        .flatten()
        .flat_map(|p| {
            let mut all = vec![p.clone()];
            all.extend(panels(&p["panels"]));
            all
        })
        .collect()
}

/// The dashboard's expressions: every panel target's, and each query variable's.
fn dashboard_expressions() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(repo().join("charts/roomrec/files/dashboard.json")).unwrap();
    let dashboard: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(dashboard["uid"], "roomrec");
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    assert!(
        variables
            .iter()
            .any(|v| v["name"] == "datasource" && v["type"] == "datasource"),
        "a datasource variable picks the Prometheus"
    );
    let mut ids = BTreeSet::new();
    let mut exprs = Vec::new();
    for panel in panels(&dashboard["panels"]) {
        let title = panel["title"].as_str().unwrap().to_string();
        assert!(
            ids.insert(panel["id"].as_u64().unwrap()),
            "panel ids repeat: {title}"
        );
        if panel["type"] == "row" {
            continue;
        }
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title} queries nothing");
        for source in [&panel["datasource"]]
            .into_iter()
            .chain(targets.iter().map(|t| &t["datasource"]))
        {
            assert_eq!(
                source["uid"], "${datasource}",
                "{title}: a hard-coded datasource"
            );
        }
        for target in targets {
            exprs.push((title.clone(), target["expr"].as_str().unwrap().to_string()));
        }
    }
    for variable in variables.iter().filter(|v| v["type"] == "query") {
        assert_eq!(variable["datasource"]["uid"], "${datasource}");
        let query = variable["query"]["query"]
            .as_str()
            .or(variable["query"].as_str())
            .unwrap();
        // label_values(SELECTOR, label): the selector is PromQL.
        let selector = query
            .strip_prefix("label_values(")
            .and_then(|q| q.rsplit_once(','))
            .map(|(selector, _)| selector.to_string())
            .unwrap_or_else(|| query.to_string());
        exprs.push((format!("variable {}", variable["name"]), selector));
    }
    exprs
}

/// The rendered PrometheusRule's groups.
fn rule_groups() -> Value {
    let text = helm_template_with(&["templates/prometheusrule.yaml"], &[MONITORING_ON]);
    let rule: Value = serde_yaml::from_str(&text).unwrap();
    assert_eq!(rule["kind"], "PrometheusRule");
    rule["spec"]["groups"].clone()
}

/// GitHub's anchors of the headings of docs/operations.md.
fn runbook_anchors() -> BTreeSet<String> {
    std::fs::read_to_string(repo().join("docs/operations.md"))
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix('#'))
        .map(|heading| {
            heading
                .trim_start_matches('#')
                .trim()
                .to_lowercase()
                .chars()
                .filter(|c| c.is_alphanumeric() || *c == '-' || *c == ' ' || *c == '_')
                .map(|c| if c == ' ' { '-' } else { c })
                .collect()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_and_alert_expression_reads_series_a_real_recording_produced() {
    cluster().await;
    let ns = bed().namespace("obs").await.unwrap();
    s3_secret(&ns).await;
    // The operator's default: each worker pod has a network of its own, so all use one port.
    let worker_port = roomrec_operator::settings::WORKER_METRICS_PORT;
    let op = Operator::start(&ns, &["--worker-metrics-port", &worker_port.to_string()]).await;
    // As the chart's ServiceMonitor and PodMonitor label them.
    bed()
        .add_prometheus_target(
            "roomrec-operator",
            &format!("127.0.0.1:{}", op.metrics_port),
        )
        .unwrap();

    // A job whose Secret is missing stays Pending: the oldest-pending gauge grows, in
    // Prometheus too, and drops to 0 once the job is gone.
    let api = jobs(&ns).await;
    let mut waiting = url_job("waits", &bed().rtmp_url("obs-nobody"), json!({}));
    s3_of(&mut waiting).credentials_secret = Some("absent".into());
    api.create(&PostParams::default(), &waiting).await.unwrap();
    let aged = wait_until(Duration::from_secs(60), || async {
        value("roomrec_oldest_pending_job_age_seconds{job=\"roomrec-operator\"}")
            .await
            .is_some_and(|age| age >= 3.0)
    })
    .await;
    assert!(
        aged.is_ok(),
        "the pending job's age never reached 3 s: {}",
        op.metrics().await
    );
    api.delete("waits", &DeleteParams::default()).await.unwrap();
    let cleared = wait_until(Duration::from_secs(60), || async {
        value("roomrec_oldest_pending_job_age_seconds{job=\"roomrec-operator\"}").await == Some(0.0)
    })
    .await;
    assert!(
        cleared.is_ok(),
        "no pending job, yet: {}",
        op.metrics().await
    );

    // A real recording by a worker pod that serves metrics on the port the operator gave it.
    let key = format!("obs-{ns}");
    let _publisher = publish(&key, None).await;
    let job = url_job(
        "records",
        &bed().rtmp_url(&key),
        json!({"maxDurationSeconds": 10}),
    );
    let created = api.create(&PostParams::default(), &job).await.unwrap();
    // Scraped as the PodMonitor has Prometheus do it: at the worker pod's IP.
    let pod_ip = std::sync::Mutex::new(None);
    let started = wait_until(Duration::from_secs(60), || async {
        let ip = worker_pods(&ns, &created)
            .await
            .into_iter()
            .find_map(|pod| pod.status?.pod_ip);
        let found = ip.is_some();
        *pod_ip.lock().unwrap() = ip;
        found
    })
    .await;
    assert!(
        started.is_ok(),
        "no worker pod with an IP: {}",
        worker_logs(&ns)
    );
    let pod_ip = pod_ip.into_inner().unwrap().unwrap();
    bed()
        .add_prometheus_target("roomrec-worker", &format!("{pod_ip}:{worker_port}"))
        .unwrap();
    let seen_recording = wait_until(Duration::from_secs(90), || async {
        value("max_over_time(roomrec_worker_recording{job=\"roomrec-worker\"}[10m])").await
            == Some(1.0)
    })
    .await;
    assert!(
        seen_recording.is_ok(),
        "Prometheus never saw the worker recording: {:?}\n{}",
        bed().prometheus_url,
        worker_logs(&ns)
    );
    let job = ended_as(&api, "records", "Succeeded", Duration::from_secs(120), &op).await;
    let pod = worker_pods(&ns, &job).await.remove(0);
    let container = &pod.spec.as_ref().unwrap().containers[0];
    let port = &container.ports.as_ref().unwrap()[0];
    assert_eq!(
        (port.name.as_deref(), port.container_port),
        (Some("metrics"), i32::from(worker_port))
    );
    // The operator's counters reach Prometheus too (scraped every second).
    let counted = wait_until(Duration::from_secs(30), || async {
        value("roomrec_jobs_finished_total{phase=\"Succeeded\"}").await == Some(1.0)
            && value("max_over_time(roomrec_worker_recorded_bytes_total[10m])")
                .await
                .is_some_and(|b| b > 0.0)
    })
    .await;
    assert!(counted.is_ok(), "{}", op.metrics().await);

    // Every expression: valid PromQL that names only series Prometheus holds.
    let names = metric_names().await;
    let groups = rule_groups();
    let mut expressions = dashboard_expressions();
    let mut alerts = Vec::new();
    for group in groups.as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            let name = rule["alert"]
                .as_str()
                .or(rule["record"].as_str())
                .unwrap()
                .to_string();
            expressions.push((name.clone(), rule["expr"].as_str().unwrap().to_string()));
            if rule["alert"].is_string() {
                alerts.push((name, rule.clone()));
            }
        }
    }
    assert!(alerts.len() >= 5, "{alerts:?}");
    let mut problems = Vec::new();
    for (place, expr) in &expressions {
        let promql = match substitute(expr) {
            Ok(q) => q,
            Err(e) => {
                problems.push(format!("{place}: {e}"));
                continue;
            }
        };
        if let Err(e) = query(&promql).await {
            problems.push(format!("{place}: Prometheus refuses {promql:?}: {e}"));
        }
        let read = names_in(&promql);
        if read.is_empty() {
            problems.push(format!("{place}: {promql:?} reads no metric"));
        }
        for name in read.difference(&names) {
            problems.push(format!("{place}: no series named {name} (in {promql:?})"));
        }
    }
    assert!(
        problems.is_empty(),
        "{}\n\nseries present: {names:?}",
        problems.join("\n")
    );

    // Healthy now (the operator leads, the job succeeded, the store answered): no alert's
    // condition holds, so none would fire.
    for (name, rule) in &alerts {
        let firing = query(rule["expr"].as_str().unwrap()).await.unwrap();
        assert!(firing.is_empty(), "{name} would fire: {firing:?}");
    }

    // Each alert explains itself and links its runbook section.
    let anchors = runbook_anchors();
    for (name, rule) in &alerts {
        let annotations = &rule["annotations"];
        for key in ["summary", "description", "runbook_url"] {
            assert!(
                annotations[key].as_str().is_some_and(|s| !s.is_empty()),
                "{name} has no {key}"
            );
        }
        let url = annotations["runbook_url"].as_str().unwrap();
        let (page, anchor) = url.split_once('#').unwrap();
        assert!(page.ends_with("docs/operations.md"), "{name}: {url}");
        assert!(
            anchor == name.to_lowercase() && anchors.contains(anchor),
            "{name}: {url} is no section of docs/operations.md"
        );
    }

    // promtool, Prometheus' own checker, on the rule groups as a rule file.
    let file = bed().scratch("observability").unwrap().join("rules.yaml");
    std::fs::write(
        &file,
        serde_yaml::to_string(&json!({ "groups": groups })).unwrap(),
    )
    .unwrap();
    let promtool = roomrec_testbed::binaries::system("promtool").unwrap();
    let checked = std::process::Command::new(promtool)
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        checked.status.success(),
        "promtool check rules: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_monitoring_objects_are_what_prometheus_operator_accepts() {
    cluster().await;
    install_monitoring_crds().await;
    let chart = repo().join("charts/roomrec").display().to_string();
    let lint = helm(&["lint", "--strict", &chart, "--set", MONITORING_ON]);
    assert!(
        lint.status.success(),
        "helm lint: {}",
        String::from_utf8_lossy(&lint.stdout)
    );
    for values in [
        "",
        // Workers without metrics get no PodMonitor; one watched namespace narrows it.
        "worker.metricsPort=0",
        "operator.watchNamespace=rec,serviceMonitor.labels.release=kps,prometheusRule.labels.release=kps",
    ] {
        let set: Vec<&str> = [MONITORING_ON, values]
            .into_iter()
            .filter(|v| !v.is_empty())
            .collect();
        let rendered = helm_template_with(&CHART_MONITORING, &set);
        let kinds: Vec<String> = rendered
            .split("\n---")
            .filter_map(|doc| serde_yaml::from_str::<Value>(doc).ok())
            .filter_map(|doc| doc["kind"].as_str().map(str::to_string))
            .collect();
        assert_eq!(
            kinds.contains(&"PodMonitor".to_string()),
            !values.contains("metricsPort=0"),
            "{values}: {kinds:?}"
        );
        // The API server checks each object against its CRD's schema (a dry run stores
        // nothing; unknown fields are refused).
        let applied = server_dry_run(&rendered);
        assert!(
            applied.status.success(),
            "{values}: {}",
            String::from_utf8_lossy(&applied.stderr)
        );
    }
    // The monitors select what the operator really runs: worker pods by the labels
    // operator/src/worker.rs gives them.
    let rendered = helm_template_with(&["templates/servicemonitor.yaml"], &[MONITORING_ON]);
    let pod_monitor: Value = rendered
        .split("\n---")
        .filter_map(|doc| serde_yaml::from_str::<Value>(doc).ok())
        .find(|doc| doc["kind"] == "PodMonitor")
        .unwrap();
    let mut job = url_job("labels", "rtmp://127.0.0.1/live/x", json!({}));
    job.metadata.uid = Some("0a0a0a0a-0000-0000-0000-000000000000".into());
    job.metadata.namespace = Some("rec".into());
    let person = &roomrec_operator::build::people(&job)[0];
    let validated = roomrec_operator::validate::ValidatedJob::of(&job).unwrap();
    let pod = roomrec_operator::build::pod(
        &job,
        &validated,
        person,
        1,
        &Default::default(),
        &Default::default(),
    );
    let labels = pod.metadata.labels.unwrap();
    for (key, wanted) in pod_monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap()
    {
        assert_eq!(
            labels.get(key).map(String::as_str),
            wanted.as_str(),
            "{key}"
        );
    }
    let port = &pod_monitor["spec"]["podMetricsEndpoints"][0]["port"];
    let ports = pod.spec.unwrap().containers[0].ports.clone().unwrap();
    assert_eq!(ports[0].name.as_deref(), port.as_str());
}
