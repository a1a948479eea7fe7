//! The container images. No container engine runs here, so the `Dockerfile` (stages `build`,
//! `operator` and `worker`) cannot be built; what it promises is checked instead: one build of
//! exactly the binaries `cargo metadata` lists, each image copying its own from where cargo puts
//! them, the final user the 65532 the worker pods and the chart run as, each entrypoint the
//! program the node agent runs for that image — and, on the test bed, a worker pod started by
//! the real operator runs as 65532 on a read-only root.

/// The parts of `tests/support/` these tests use, and those they build on (each file says
/// what it holds).
mod support {
    pub mod cluster;
    pub mod jobs;
    pub mod kubectl;
    pub mod logs;
    pub mod operator_process;
    pub mod proc;
    pub mod processes;
    pub mod s3;
    pub mod scene;
    pub mod stored_files;

    pub use self::{
        cluster::*, jobs::*, kubectl::*, proc::*, processes::*, scene::*, stored_files::*,
    };
}

use roomrec_operator::build::{self, Resume, WORKER_UID};
use roomrec_operator::settings::Settings;
use roomrec_testbed::node_agent::image::ImageResolver;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;
use support::*;

/// One instruction, continuation lines joined, comments dropped.
#[derive(Debug)]
struct Instruction {
    keyword: String,
    args: String,
}

#[derive(Debug)]
struct Stage {
    name: Option<String>,
    instructions: Vec<Instruction>,
}

impl Stage {
    fn all<'a>(&'a self, keyword: &str) -> impl Iterator<Item = &'a str> + 'a {
        let keyword = keyword.to_string();
        self.instructions
            .iter()
            .filter(move |i| i.keyword == keyword)
            .map(|i| i.args.as_str())
    }

    fn last(&self, keyword: &str) -> Option<&str> {
        self.all(keyword).last()
    }
}

/// The stages of a Dockerfile (only what these checks read: keywords and their text).
fn stages(path: &Path) -> Vec<Stage> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut instructions = Vec::new();
    let mut pending = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && pending.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(head) => {
                pending.push_str(head);
                pending.push(' ');
            }
            None => {
                pending.push_str(trimmed);
                let (keyword, args) = pending.split_once(' ').unwrap_or((&pending, ""));
                instructions.push(Instruction {
                    keyword: keyword.to_uppercase(),
                    args: args.trim().to_string(),
                });
                pending.clear();
            }
        }
    }
    let mut stages: Vec<Stage> = Vec::new();
    for instruction in instructions {
        if instruction.keyword == "FROM" {
            let words: Vec<&str> = instruction.args.split_whitespace().collect();
            let name = match words.as_slice() {
                [_, as_, name] if as_.eq_ignore_ascii_case("as") => Some(name.to_string()),
                _ => None,
            };
            stages.push(Stage {
                name,
                instructions: Vec::new(),
            });
        } else if let Some(stage) = stages.last_mut() {
            stage.instructions.push(instruction);
        }
    }
    stages
}

/// `["a", "b"]` (exec form) → its words.
fn exec_form(args: &str) -> Vec<String> {
    serde_json::from_str(args).unwrap_or_else(|_| panic!("{args:?} is not in exec (JSON) form"))
}

fn cargo_metadata() -> Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--no-deps", "--locked"])
        .current_dir(repo())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The bin targets cargo metadata lists for `package`.
fn bins_of(metadata: &Value, package: &str) -> BTreeSet<String> {
    let package = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == package)
        .unwrap_or_else(|| panic!("cargo metadata has no package {package}"));
    package["targets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["kind"].as_array().unwrap().iter().any(|k| k == "bin"))
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect()
}

const DOCKERFILE: &str = "Dockerfile";

/// The build stage's `cargo build`, read from the Dockerfile.
struct Build {
    packages: Vec<String>,
    /// `--bin` filters (empty: every bin of the packages).
    bin_filters: BTreeSet<String>,
    flags: BTreeSet<String>,
    /// Where that build puts its binaries, inside the build stage.
    out_dir: PathBuf,
    /// Build-context paths the build stage copies in.
    context_sources: Vec<String>,
}

/// What a final stage ships and runs.
struct Image {
    /// Files copied from the build stage: source → destination.
    shipped: BTreeMap<PathBuf, PathBuf>,
    user: String,
    entrypoint: Vec<String>,
}

fn stage(name: &str) -> Stage {
    stages(&repo().join(DOCKERFILE))
        .into_iter()
        .find(|s| s.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("{DOCKERFILE} has no stage named {name}"))
}

fn build() -> Build {
    let build = stage("build");
    let command = build
        .all("RUN")
        .flat_map(|run| run.split("&&"))
        .map(str::split_whitespace)
        .find_map(|mut words| {
            (words.next() == Some("cargo") && words.next() == Some("build"))
                .then(|| words.map(str::to_string).collect::<Vec<_>>())
        })
        .unwrap_or_else(|| panic!("{DOCKERFILE}: the build stage runs no `cargo build`"));
    let mut packages = Vec::new();
    let mut bin_filters = BTreeSet::new();
    let mut flags = BTreeSet::new();
    let mut triple = None;
    let mut words = command.iter();
    while let Some(word) = words.next() {
        match word.as_str() {
            "-p" | "--package" => packages.push(words.next().unwrap().clone()),
            "--bin" => {
                bin_filters.insert(words.next().unwrap().clone());
            }
            "--target" => triple = words.next().cloned(),
            flag => {
                flags.insert(flag.to_string());
            }
        }
    }
    let env_target_dir = build.all("ENV").find_map(|env| {
        env.strip_prefix("CARGO_TARGET_DIR")
            .map(|v| v.trim_start_matches(['=', ' ']).to_string())
    });
    let workdir = build.last("WORKDIR").unwrap_or("/");
    let mut out_dir =
        env_target_dir.map_or_else(|| Path::new(workdir).join("target"), PathBuf::from);
    if let Some(triple) = triple {
        out_dir.push(triple);
    }
    out_dir.push("release");
    let context_sources = build
        .all("COPY")
        .flat_map(|copy| {
            let words: Vec<&str> = copy.split_whitespace().collect();
            assert!(!words[0].starts_with("--"), "{DOCKERFILE}: {copy}");
            words[..words.len() - 1]
                .iter()
                .map(|w| w.to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    Build {
        packages,
        bin_filters,
        flags,
        out_dir,
        context_sources,
    }
}

fn image(name: &str) -> Image {
    let last = stage(name);
    let mut shipped = BTreeMap::new();
    for copy in last.all("COPY") {
        let Some(rest) = copy.strip_prefix("--from=build ") else {
            continue;
        };
        let words: Vec<&str> = rest.split_whitespace().collect();
        let (destination, sources) = words.split_last().unwrap();
        for source in sources {
            let source = PathBuf::from(source);
            let target = if destination.ends_with('/') {
                Path::new(destination).join(source.file_name().unwrap())
            } else {
                PathBuf::from(destination)
            };
            shipped.insert(source, target);
        }
    }
    Image {
        shipped,
        user: last
            .last("USER")
            .unwrap_or_else(|| panic!("{DOCKERFILE}: stage {name} sets no USER"))
            .to_string(),
        entrypoint: exec_form(
            last.last("ENTRYPOINT")
                .unwrap_or_else(|| panic!("{DOCKERFILE}: stage {name} has no ENTRYPOINT")),
        ),
    }
}

/// `.dockerignore` applied to a build-context path (its patterns in order, the last match
/// wins; the forms it uses: `*`, a name, `!name`, `**/name`).
fn docker_ignored(path: &str) -> bool {
    let text = std::fs::read_to_string(repo().join(".dockerignore")).unwrap();
    let mut ignored = false;
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (negated, pattern) = match line.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, line),
        };
        let pattern = pattern.trim_end_matches('/');
        let components: Vec<&str> = path.trim_end_matches('/').split('/').collect();
        let matches = match pattern.strip_prefix("**/") {
            Some(name) => components.contains(&name),
            None => pattern == "*" || components[0] == pattern,
        };
        if matches {
            ignored = !negated;
        }
    }
    ignored
}

#[test]
fn one_release_build_of_exactly_the_binaries_cargo_metadata_lists() {
    let metadata = cargo_metadata();
    let build = build();
    assert_eq!(
        build.packages,
        ["roomrec-operator", "roomrec-worker"],
        "{DOCKERFILE}: cargo build -p"
    );
    for flag in ["--release", "--locked"] {
        assert!(
            build.flags.contains(flag),
            "{DOCKERFILE}: cargo build without {flag}"
        );
    }
    let bins: BTreeSet<String> = build
        .packages
        .iter()
        .flat_map(|p| bins_of(&metadata, p))
        .collect();
    let built = if build.bin_filters.is_empty() {
        bins.clone()
    } else {
        build.bin_filters.clone()
    };
    assert_eq!(
        built, bins,
        "{DOCKERFILE} must build exactly the binaries cargo metadata lists for its packages"
    );

    // Cargo reads every workspace member, so the build stage needs each one, and the
    // .dockerignore must let them through.
    let root = repo();
    let mut needed = vec!["Cargo.toml".to_string(), "Cargo.lock".to_string()];
    for member in metadata["workspace_members"].as_array().unwrap() {
        let package = metadata["packages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["id"] == *member)
            .unwrap();
        let manifest = PathBuf::from(package["manifest_path"].as_str().unwrap());
        let dir = manifest.parent().unwrap().strip_prefix(&root).unwrap();
        needed.push(dir.to_str().unwrap().to_string());
    }
    for path in &needed {
        assert!(
            build.context_sources.contains(path),
            "{DOCKERFILE}: the build stage does not copy {path} (copies {:?})",
            build.context_sources
        );
        assert!(!docker_ignored(path), ".dockerignore leaves out {path}");
    }
    assert!(
        docker_ignored("target") && docker_ignored("operator/target") && docker_ignored(".git"),
        ".dockerignore must keep target directories and .git out of the build context"
    );
}

/// Stage `name` ships every binary of `package` from where the build put it and runs the
/// package's own binary.
fn assert_ships(name: &str, package: &str) {
    let (build, image) = (build(), image(name));
    assert!(build.packages.iter().any(|p| p == package));
    let expected: BTreeSet<PathBuf> = bins_of(&cargo_metadata(), package)
        .iter()
        .map(|b| build.out_dir.join(b))
        .collect();
    let copied: BTreeSet<PathBuf> = image.shipped.keys().cloned().collect();
    assert_eq!(
        copied, expected,
        "stage {name} must copy every {package} binary from where `cargo build --release` puts it"
    );
    let entrypoint = PathBuf::from(&image.entrypoint[0]);
    assert!(
        image.shipped.get(&build.out_dir.join(package)) == Some(&entrypoint),
        "stage {name}: the entrypoint {entrypoint:?} is not the {package} binary copied from the build: {:?}",
        image.shipped
    );
}

#[test]
fn the_operator_image_ships_the_operators_binaries_and_runs_the_operator() {
    assert_ships("operator", "roomrec-operator");
}

#[test]
fn the_worker_image_ships_the_workers_binary_and_runs_the_worker() {
    assert_ships("worker", "roomrec-worker");
}

fn job() -> roomrec_api::crd::RecordingJob {
    serde_json::from_value(json!({
        "apiVersion": "roomrec.dev/v1alpha1",
        "kind": "RecordingJob",
        "metadata": {"name": "cam", "namespace": "school", "uid": "0b7c3f5e-1111-2222-3333-444455556666"},
        "spec": {
            "source": {"url": "rtmp://live.example.com/live/cam"},
            "mode": "AudioMp3",
            "idleTimeoutSeconds": 300,
            "storage": {"s3": {"bucket": "recordings"}},
        },
    }))
    .unwrap()
}

/// `USER 65532:65532` or `USER 65532` → (uid, gid).
fn user_ids(user: &str) -> (i64, i64) {
    let (uid, gid) = user.split_once(':').unwrap_or((user, user));
    let parse = |id: &str| {
        id.parse::<i64>()
            .unwrap_or_else(|_| panic!("USER {user}: numeric ids, so runAsNonRoot can be enforced"))
    };
    (parse(uid), parse(gid))
}

/// The chart's operator Deployment, rendered with default values.
fn chart_deployment() -> Value {
    serde_yaml::from_str(&helm_template(&["templates/deployment.yaml"])).unwrap()
}

fn worker_pod() -> k8s_openapi::api::core::v1::Pod {
    let job = job();
    build::pod(
        &job,
        &roomrec_operator::validate::ValidatedJob::of(&job).unwrap(),
        &build::people(&job)[0],
        1,
        &Resume::default(),
        &Settings::default(),
    )
}

#[test]
fn the_images_run_as_the_uid_their_pods_ask_for() {
    let context = worker_pod().spec.unwrap().security_context.unwrap();
    let worker_asks = (context.run_as_user.unwrap(), context.run_as_group.unwrap());
    assert_eq!(worker_asks, (WORKER_UID, WORKER_UID));
    assert_eq!(
        user_ids(&image("worker").user),
        worker_asks,
        "{DOCKERFILE}: the worker's USER differs from the worker pods' runAsUser/runAsGroup"
    );

    let deployment = chart_deployment();
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let operator = user_ids(&image("operator").user);
    for (what, context) in [
        ("pod", &pod["securityContext"]),
        ("container", &container["securityContext"]),
    ] {
        let asks = (
            context["runAsUser"].as_i64().unwrap(),
            context["runAsGroup"].as_i64().unwrap(),
        );
        assert_eq!(
            operator, asks,
            "{DOCKERFILE}: the operator's USER differs from the chart Deployment's {what} securityContext"
        );
    }
}

/// The node agent's rule for a container without `command`, with only the file named like the
/// image's entrypoint on its search path: it must pick exactly that file.
fn assert_node_agent_runs_the_entrypoint(stage: &str, images: &[String]) {
    let entrypoint = image(stage).entrypoint;
    let dir = tempfile::tempdir().unwrap();
    let program = dir
        .path()
        .join(Path::new(&entrypoint[0]).file_name().unwrap());
    std::fs::write(&program, "").unwrap();
    let resolver = ImageResolver {
        images: Default::default(),
        search_path: vec![dir.path().to_path_buf()],
    };
    for image in images {
        assert_eq!(
            resolver.program(image, None),
            Ok(program.clone()),
            "the node agent runs another program for {image} than the {stage} image's entrypoint {entrypoint:?}"
        );
    }
}

#[test]
fn each_images_entrypoint_is_what_the_node_agent_runs_for_it() {
    // The worker pods and the chart's Deployment give no `command`, so the image's entrypoint
    // runs: the worker's with `record`.
    let pod = worker_pod();
    let worker = &pod.spec.unwrap().containers[0];
    assert_eq!(worker.command, None);
    assert_eq!(worker.args.as_deref(), Some(&["record".to_string()][..]));
    let deployment = chart_deployment();
    let operator = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(operator.get("command"), None);

    let env = |name: &str| {
        operator["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .and_then(|e| e["value"].as_str())
            .unwrap_or_else(|| panic!("the chart's Deployment sets no {name}"))
            .to_string()
    };
    assert_node_agent_runs_the_entrypoint(
        "worker",
        &[
            Settings::default().worker_image,
            worker.image.clone().unwrap(),
            env("ROOMREC_WORKER_IMAGE"),
        ],
    );
    assert_node_agent_runs_the_entrypoint(
        "operator",
        &[operator["image"].as_str().unwrap().to_string()],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_pod_runs_as_65532_on_a_read_only_root() {
    // Kept whole until the end: dropping the scene stops its operator and publisher.
    let scene = scene("hardened", "hardened", json!({"maxDurationSeconds": 8})).await;
    let (api, op) = (&scene.api, &scene.op);
    // Any durable media will do: the point is a worker caught while it records.
    let job = wait_recording_bytes(api, "hardened", 0.5, op).await;
    let pod = job.status.clone().unwrap().worker_pod.unwrap();
    let pid = worker_pid(&pod).expect("the worker process");

    let uid = WORKER_UID.to_string();
    for key in ["Uid", "Gid"] {
        let ids: Vec<String> = proc_status(pid, key)
            .split_whitespace()
            .map(str::to_string)
            .collect();
        assert_eq!(ids, [uid.as_str(); 4], "{key} (real, effective, saved, fs)");
    }
    assert_eq!(proc_status(pid, "CapEff"), "0000000000000000");
    assert_eq!(proc_status(pid, "NoNewPrivs"), "1");

    let mounts = mount_options(pid);
    let options = |point: &str| {
        mounts
            .get(point)
            .unwrap_or_else(|| panic!("no mount at {point}: {mounts:?}"))
            .clone()
    };
    assert!(options("/").contains(&"ro".into()), "/: {:?}", options("/"));
    for scratch in ["/tmp", "/var/spool/roomrec"] {
        assert!(
            options(scratch).contains(&"rw".into()),
            "{scratch}: {:?}",
            options(scratch)
        );
    }

    // Even root cannot create a file through the worker's root: the mount itself is read-only.
    let probe = PathBuf::from(format!("/proc/{pid}/root/roomrec-write-probe"));
    let written = std::fs::write(&probe, b"x");
    if written.is_ok() {
        let _ = std::fs::remove_file(&probe);
    }
    assert_eq!(
        written.map_err(|e| e.raw_os_error()),
        Err(Some(libc::EROFS)),
        "writing to the worker's / must fail with EROFS"
    );

    let job = ended_as(api, "hardened", "Succeeded", Duration::from_secs(90), op).await;
    assert_files_play(&job, &["h264", "aac"]);
}
