//! One pod's life on the node: volumes, its network, init containers in order, then the
//! containers, restarts by `restartPolicy`, status written back after every change, and on
//! deletion SIGTERM, the grace period, SIGKILL, a terminal phase and the final delete — the
//! kubelet's contract.

use super::AgentContext;
use super::env;
use super::network::{OwnPort, PodNetwork, Protocol};
use super::sandbox::{BindMount, Sandbox, signal_main, signal_tree};
use super::volumes;
use crate::error::log_tail;
use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, HostIP, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// The kubelet caps termination messages at 4 KiB.
const MAX_TERMINATION_MESSAGE: usize = 4096;
/// FallbackToLogsOnError takes at most this much of the log's tail.
const LOG_FALLBACK_BYTES: usize = 2048;
const LOG_FALLBACK_LINES: usize = 80;
/// Restart back-off: 1 s doubling to this cap (the kubelet's is 10 s to 5 min; tests need less).
const MAX_BACKOFF: Duration = Duration::from_secs(10);

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

/// What `deletion` carries: the grace period once the pod is being deleted.
pub type Deletion = watch::Receiver<Option<i64>>;

pub async fn run(ctx: Arc<AgentContext>, pod: Pod, mut deletion: Deletion) {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let mut life = PodLife::new(ctx.clone(), pod);
    let outcome = life.live(&mut deletion).await;
    if let Err(message) = &outcome {
        tracing::warn!(pod = %name, namespace = %namespace, "pod failed to run: {message}");
    }
    if life.nothing_runs() {
        // A terminal pod's sandbox goes at once, as the kubelet's does; its IP stays in status.
        life.network = None;
    }
    // Terminal (or being deleted): wait for the deletion and finish it, as the kubelet does.
    let grace = loop {
        if let Some(grace) = *deletion.borrow() {
            break grace;
        }
        if deletion.changed().await.is_err() {
            return;
        }
    };
    life.terminate(grace).await;
    life.network = None;
    life.finish_deletion().await;
}

/// A container's exit: (is an init container, index, exit code).
type Exit = (bool, usize, i32);

struct ContainerRun {
    spec: Container,
    status: ContainerStatus,
    pid: Option<u32>,
    log: PathBuf,
    termination_log: PathBuf,
}

/// Kills a container's whole session when its task ends for any reason (even an abort).
struct SessionGuard(u32);
impl Drop for SessionGuard {
    fn drop(&mut self) {
        signal_tree(self.0, libc::SIGKILL);
    }
}

struct PodLife {
    ctx: Arc<AgentContext>,
    pod: Pod,
    api: Api<Pod>,
    dir: PathBuf,
    volumes: BTreeMap<String, PathBuf>,
    /// The pod's network namespace, from volumes set up until the pod is terminal; dropping
    /// it removes it. None before, after, and with `hostNetwork`.
    network: Option<PodNetwork>,
    pod_ip: Option<String>,
    host_ip: String,
    init: Vec<ContainerRun>,
    main: Vec<ContainerRun>,
    phase: &'static str,
    reason: Option<String>,
    message: Option<String>,
    start_time: Time,
    exits: (mpsc::UnboundedSender<Exit>, mpsc::UnboundedReceiver<Exit>),
}

impl PodLife {
    fn new(ctx: Arc<AgentContext>, pod: Pod) -> Self {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let dir = ctx
            .work_dir
            .join("pods")
            .join(format!("{namespace}_{name}_{uid}"));
        let api = Api::namespaced(ctx.client.clone(), &namespace);
        let spec = pod.spec.clone().unwrap_or_default();
        let runs = |containers: Vec<Container>| {
            containers
                .into_iter()
                .map(|c| ContainerRun {
                    status: waiting(&c, "PodInitializing", None),
                    log: dir.join(format!("{}.log", c.name)),
                    termination_log: dir.join(format!("{}.termination-log", c.name)),
                    pid: None,
                    spec: c,
                })
                .collect::<Vec<_>>()
        };
        Self {
            init: runs(spec.init_containers.unwrap_or_default()),
            main: runs(spec.containers),
            network: None,
            pod_ip: None,
            host_ip: ctx.network.gateway().to_string(),
            ctx,
            pod,
            api,
            dir,
            volumes: BTreeMap::new(),
            phase: "Pending",
            reason: None,
            message: None,
            start_time: now(),
            exits: mpsc::unbounded_channel(),
        }
    }

    fn restart_policy(&self) -> &str {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.as_deref())
            .unwrap_or("Always")
    }

    /// Runs the pod until it is terminal (Ok) or cannot start (Err, pod marked Failed), or
    /// until a deletion arrives (Ok; the caller terminates it).
    async fn live(&mut self, deletion: &mut Deletion) -> Result<(), String> {
        std::fs::create_dir_all(&self.dir).map_err(|e| format!("{}: {e}", self.dir.display()))?;
        for run in self.main.iter_mut() {
            run.status = waiting(&run.spec, "ContainerCreating", None);
        }
        self.report().await;

        // Volumes: retried until they can be set up, as the kubelet retries FailedMount.
        loop {
            match volumes::materialize(&self.ctx.client, &self.pod, &self.dir.join("volumes")).await
            {
                Ok(v) => {
                    self.volumes = v;
                    break;
                }
                Err(message) => {
                    for run in self.main.iter_mut() {
                        run.status = waiting(&run.spec, "ContainerCreating", Some(message.clone()));
                    }
                    self.report().await;
                    if wait_or_deleted(deletion, Duration::from_secs(2)).await {
                        return Ok(());
                    }
                }
            }
        }

        // The sandbox's network, retried like a volume (the kubelet's FailedCreatePodSandBox).
        while let Err(message) = self.create_network().await {
            for run in self.main.iter_mut() {
                run.status = waiting(&run.spec, "ContainerCreating", Some(message.clone()));
            }
            self.report().await;
            if wait_or_deleted(deletion, Duration::from_secs(2)).await {
                return Ok(());
            }
        }

        let deadline = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.active_deadline_seconds)
            .map(|s| tokio::time::Instant::now() + Duration::from_secs(s as u64));

        // Init containers, one at a time, each to success.
        for index in 0..self.init.len() {
            loop {
                if let Err(message) = self.start(true, index).await {
                    return self.fail_to_start(true, index, message).await;
                }
                self.report().await;
                let code = tokio::select! {
                    exit = self.exits.1.recv() => exit.map(|(_, _, code)| code).unwrap_or(-1),
                    _ = deleted(deletion) => return Ok(()),
                };
                self.record_exit(true, index, code);
                if code == 0 {
                    break;
                }
                if self.restart_policy() == "Never" {
                    self.phase = "Failed";
                    self.report().await;
                    return Ok(());
                }
                self.report().await;
                if self.back_off(true, index, deletion).await {
                    return Ok(());
                }
            }
        }

        for index in 0..self.main.len() {
            if let Err(message) = self.start(false, index).await {
                return self.fail_to_start(false, index, message).await;
            }
        }
        self.phase = "Running";
        self.report().await;

        let mut restarts: Vec<Option<tokio::time::Instant>> = vec![None; self.main.len()];
        loop {
            let next_restart = restarts.iter().flatten().min().copied();
            tokio::select! {
                exit = self.exits.1.recv() => {
                    let Some((_, index, code)) = exit else { return Ok(()) };
                    self.record_exit(false, index, code);
                    let restart = match self.restart_policy() {
                        "Always" => true,
                        "OnFailure" => code != 0,
                        _ => false,
                    };
                    if restart {
                        let delay = backoff(self.main[index].status.restart_count);
                        restarts[index] = Some(tokio::time::Instant::now() + delay);
                        self.main[index].status.state = Some(ContainerState {
                            waiting: Some(ContainerStateWaiting {
                                reason: Some("CrashLoopBackOff".into()),
                                message: Some(format!("back-off {}s restarting failed container={}", delay.as_secs(), self.main[index].spec.name)),
                            }),
                            ..Default::default()
                        });
                    }
                    if self.main.iter().zip(&restarts).all(|(r, pending)| r.pid.is_none() && pending.is_none()) {
                        let failed = self.main.iter().any(|r| exit_code(&r.status) != Some(0));
                        self.phase = if failed { "Failed" } else { "Succeeded" };
                        self.report().await;
                        return Ok(());
                    }
                    self.report().await;
                }
                _ = sleep_until(next_restart) => {
                    let now = tokio::time::Instant::now();
                    for (index, pending) in restarts.iter_mut().enumerate() {
                        if pending.is_some_and(|at| at <= now) {
                            *pending = None;
                            self.main[index].status.restart_count += 1;
                            if let Err(message) = self.start(false, index).await {
                                return self.fail_to_start(false, index, message).await;
                            }
                        }
                    }
                    self.report().await;
                }
                _ = sleep_until(deadline) => {
                    let grace = self.pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds).unwrap_or(30);
                    self.kill_all(grace).await;
                    self.phase = "Failed";
                    self.reason = Some("DeadlineExceeded".into());
                    self.message = Some("Pod was active on the node longer than the specified deadline".into());
                    self.report().await;
                    return Ok(());
                }
                _ = deleted(deletion) => return Ok(()),
            }
        }
    }

    /// Gives the pod its network namespace (or the host's, with `hostNetwork`) and writes its
    /// addresses into the agent's copy of the pod, for the downward API.
    async fn create_network(&mut self) -> Result<(), String> {
        let host_network = self.ctx.shared_network
            || self.pod.spec.as_ref().and_then(|s| s.host_network) == Some(true);
        let ip = if host_network {
            self.host_ip.clone()
        } else {
            let network = self.ctx.network.clone();
            let own = own_ports(&self.pod);
            let created =
                tokio::task::spawn_blocking(move || PodNetwork::create(&network, &own)).await;
            let pod_network = created
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("Failed to create pod sandbox: {e}"))?;
            let ip = pod_network.ip().to_string();
            self.network = Some(pod_network);
            ip
        };
        let status = self.pod.status.get_or_insert_default();
        status.pod_ip = Some(ip.clone());
        status.pod_ips = Some(vec![PodIP { ip: ip.clone() }]);
        status.host_ip = Some(self.host_ip.clone());
        status.host_ips = Some(vec![HostIP {
            ip: self.host_ip.clone(),
        }]);
        self.pod_ip = Some(ip);
        Ok(())
    }

    fn nothing_runs(&self) -> bool {
        self.init.iter().chain(&self.main).all(|r| r.pid.is_none())
    }

    /// Starts container `index`; its exit arrives on `self.exits`.
    async fn start(&mut self, init: bool, index: usize) -> Result<(), String> {
        let ctx = self.ctx.clone();
        let pod = self.pod.clone();
        let spec_security = pod.spec.as_ref().and_then(|s| s.security_context.clone());
        let run = if init {
            &mut self.init[index]
        } else {
            &mut self.main[index]
        };
        let container = run.spec.clone();
        let env = env::resolve(&ctx.client, &pod, &container, &ctx.service_env).await?;
        let expand = |items: &Option<Vec<String>>| -> Vec<String> {
            items
                .iter()
                .flatten()
                .map(|s| env::expand(s, &env))
                .collect()
        };
        let command = expand(&container.command);
        let mut args = expand(&container.args);
        let image = container.image.clone().unwrap_or_default();
        let program = ctx
            .images
            .program(&image, command.first().map(String::as_str))?;
        if command.len() > 1 {
            let mut all = command[1..].to_vec();
            all.append(&mut args);
            args = all;
        }

        let security = container.security_context.clone().unwrap_or_default();
        let user = security
            .run_as_user
            .or(spec_security.as_ref().and_then(|s| s.run_as_user));
        let group = security
            .run_as_group
            .or(spec_security.as_ref().and_then(|s| s.run_as_group));
        let non_root = security
            .run_as_non_root
            .or(spec_security.as_ref().and_then(|s| s.run_as_non_root));
        if non_root == Some(true) && user.unwrap_or(0) == 0 {
            // The kubelet refuses when the image's user is root; the node agent has no image,
            // so it asks for an explicit non-zero runAsUser.
            return Err("container has runAsNonRoot and image will run as root (the node agent needs an explicit non-zero runAsUser)".into());
        }
        let mut supplemental: Vec<u32> = spec_security
            .as_ref()
            .and_then(|s| s.supplemental_groups.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|g| g as u32)
            .collect();
        if let Some(fs_group) = spec_security.as_ref().and_then(|s| s.fs_group) {
            supplemental.push(fs_group as u32);
        }

        let mut mounts = Vec::new();
        for mount in container.volume_mounts.iter().flatten() {
            let source = self.volumes.get(&mount.name).ok_or_else(|| {
                format!("volumeMount {:?} names no volume of the pod", mount.name)
            })?;
            let source = match &mount.sub_path {
                Some(sub) if !sub.is_empty() => source.join(sub),
                _ => source.clone(),
            };
            // As the kubelet: a readOnly claim is read-only in every container that mounts it.
            let claim_read_only = self
                .pod
                .spec
                .as_ref()
                .and_then(|s| s.volumes.as_ref())
                .and_then(|v| v.iter().find(|v| v.name == mount.name))
                .and_then(|v| v.persistent_volume_claim.as_ref())
                .is_some_and(|c| c.read_only == Some(true));
            mounts.push(BindMount {
                source,
                target: PathBuf::from(&mount.mount_path),
                read_only: mount.read_only == Some(true) || claim_read_only,
            });
        }
        std::fs::write(&run.termination_log, b"").map_err(|e| e.to_string())?;
        set_world_writable(&run.termination_log);
        mounts.push(BindMount {
            source: run.termination_log.clone(),
            target: PathBuf::from(
                container
                    .termination_message_path
                    .as_deref()
                    .unwrap_or("/dev/termination-log"),
            ),
            read_only: false,
        });

        let sandbox = Sandbox {
            program,
            args,
            env,
            working_dir: container.working_dir.as_ref().map(PathBuf::from),
            mounts,
            read_only_root: security.read_only_root_filesystem == Some(true),
            user: user.map(|u| u as u32),
            group: group.map(|g| g as u32),
            supplemental_groups: supplemental,
            no_new_privileges: security.allow_privilege_escalation == Some(false),
            netns: self.network.as_ref().map(PodNetwork::netns_fd),
            log: run.log.clone(),
        };
        let mut child = sandbox
            .spawn()
            .map_err(|e| format!("failed to start {}: {e}", sandbox.program.display()))?;
        let pid = child.id().unwrap_or_default();
        run.pid = Some(pid);
        run.status.state = Some(ContainerState {
            running: Some(ContainerStateRunning {
                started_at: Some(now()),
            }),
            ..Default::default()
        });
        run.status.ready = !init;
        run.status.started = Some(true);
        run.status.container_id = Some(format!("local://{pid}"));
        let exits = self.exits.0.clone();
        tokio::spawn(async move {
            let _session = SessionGuard(pid);
            let status = child.wait().await;
            let code = match status {
                Ok(s) => s.code().unwrap_or_else(|| {
                    use std::os::unix::process::ExitStatusExt;
                    128 + s.signal().unwrap_or(9)
                }),
                Err(_) => 255,
            };
            let _ = exits.send((init, index, code));
        });
        Ok(())
    }

    fn record_exit(&mut self, init: bool, index: usize, code: i32) {
        let run = if init {
            &mut self.init[index]
        } else {
            &mut self.main[index]
        };
        run.pid = None;
        let started_at = run
            .status
            .state
            .as_ref()
            .and_then(|s| s.running.as_ref())
            .and_then(|r| r.started_at.clone());
        let fallback =
            run.spec.termination_message_policy.as_deref() == Some("FallbackToLogsOnError");
        let mut message = read_capped(&run.termination_log, MAX_TERMINATION_MESSAGE);
        if message.is_empty() && fallback && code != 0 {
            message = log_tail(&run.log, LOG_FALLBACK_LINES, LOG_FALLBACK_BYTES);
        }
        let terminated = ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: code,
                reason: Some(if code == 0 { "Completed" } else { "Error" }.into()),
                message: (!message.is_empty()).then_some(message),
                started_at,
                finished_at: Some(now()),
                container_id: run.status.container_id.clone(),
                ..Default::default()
            }),
            ..Default::default()
        };
        run.status.last_state = run
            .status
            .state
            .replace(terminated)
            .filter(|s| s.terminated.is_some())
            .or(run.status.last_state.take());
        run.status.ready = false;
        run.status.started = Some(false);
    }

    async fn back_off(&mut self, init: bool, index: usize, deletion: &mut Deletion) -> bool {
        let run = if init {
            &mut self.init[index]
        } else {
            &mut self.main[index]
        };
        let delay = backoff(run.status.restart_count);
        run.status.restart_count += 1;
        wait_or_deleted(deletion, delay).await
    }

    async fn fail_to_start(
        &mut self,
        init: bool,
        index: usize,
        message: String,
    ) -> Result<(), String> {
        let run = if init {
            &mut self.init[index]
        } else {
            &mut self.main[index]
        };
        run.status = waiting(&run.spec, "CreateContainerError", Some(message.clone()));
        self.phase = "Failed";
        self.message = Some(message.clone());
        self.report().await;
        Err(message)
    }

    /// SIGTERM to every running container, SIGKILL after `grace` seconds.
    async fn kill_all(&mut self, grace: i64) {
        let running: Vec<u32> = self
            .init
            .iter()
            .chain(&self.main)
            .filter_map(|r| r.pid)
            .collect();
        for pid in &running {
            signal_main(*pid, libc::SIGTERM);
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(grace.max(0) as u64);
        while self.init.iter().chain(&self.main).any(|r| r.pid.is_some()) {
            tokio::select! {
                exit = self.exits.1.recv() => {
                    let Some((init, index, code)) = exit else { break };
                    self.record_exit(init, index, code);
                }
                _ = tokio::time::sleep_until(deadline) => {
                    for pid in self.init.iter().chain(&self.main).filter_map(|r| r.pid) {
                        signal_tree(pid, libc::SIGKILL);
                    }
                }
            }
        }
    }

    /// Deletion: stop what runs, settle a terminal phase (as the kubelet does since 1.27).
    async fn terminate(&mut self, grace: i64) {
        self.kill_all(grace).await;
        if self.phase != "Succeeded" && self.phase != "Failed" {
            let all_ok =
                !self.main.is_empty() && self.main.iter().all(|r| exit_code(&r.status) == Some(0));
            self.phase = if all_ok { "Succeeded" } else { "Failed" };
            for run in self.init.iter_mut().chain(self.main.iter_mut()) {
                if run
                    .status
                    .state
                    .as_ref()
                    .is_some_and(|s| s.waiting.is_some())
                {
                    run.status.state = Some(ContainerState {
                        terminated: Some(ContainerStateTerminated {
                            exit_code: 137,
                            reason: Some("ContainerStatusUnknown".into()),
                            message: Some("The container could not be located when the pod was deleted.  The container used to be Running".into()),
                            ..Default::default()
                        }),
                        ..Default::default()
                    });
                }
            }
        }
        self.report().await;
    }

    async fn finish_deletion(&self) {
        let name = self.pod.metadata.name.clone().unwrap_or_default();
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: self.pod.metadata.uid.clone(),
                resource_version: None,
            }),
            ..Default::default()
        };
        if let Err(e) = self.api.delete(&name, &params).await {
            tracing::debug!(pod = %name, "final delete: {e}");
        }
        let _ = std::fs::remove_dir_all(self.dir.join("volumes"));
    }

    fn status(&self) -> PodStatus {
        let ready = self.phase == "Running" && self.main.iter().all(|r| r.status.ready);
        let initialized = self.init.iter().all(|r| exit_code(&r.status) == Some(0));
        let condition = |type_: &str, ok: bool| PodCondition {
            type_: type_.into(),
            status: if ok { "True" } else { "False" }.into(),
            last_transition_time: Some(self.start_time.clone()),
            ..Default::default()
        };
        PodStatus {
            phase: Some(self.phase.into()),
            reason: self.reason.clone(),
            message: self.message.clone(),
            host_ip: Some(self.host_ip.clone()),
            host_ips: Some(vec![HostIP {
                ip: self.host_ip.clone(),
            }]),
            pod_ip: self.pod_ip.clone(),
            pod_ips: self.pod_ip.clone().map(|ip| vec![PodIP { ip }]),
            start_time: Some(self.start_time.clone()),
            conditions: Some(vec![
                condition("PodReadyToStartContainers", self.pod_ip.is_some()),
                condition("Initialized", initialized),
                condition("Ready", ready),
                condition("ContainersReady", ready),
                condition("PodScheduled", true),
            ]),
            init_container_statuses: (!self.init.is_empty())
                .then(|| self.init.iter().map(|r| r.status.clone()).collect()),
            container_statuses: Some(self.main.iter().map(|r| r.status.clone()).collect()),
            ..Default::default()
        }
    }

    async fn report(&self) {
        let name = self.pod.metadata.name.clone().unwrap_or_default();
        let patch = serde_json::json!({ "status": self.status() });
        if let Err(e) = self
            .api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            tracing::debug!(pod = %name, "status update: {e}");
        }
    }
}

fn waiting(container: &Container, reason: &str, message: Option<String>) -> ContainerStatus {
    ContainerStatus {
        name: container.name.clone(),
        image: container.image.clone().unwrap_or_default(),
        image_id: format!("local://{}", container.image.clone().unwrap_or_default()),
        ready: false,
        restart_count: 0,
        started: Some(false),
        state: Some(ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(reason.into()),
                message,
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The ports the pod's containers declare: its own, also on 127.0.0.1 (see `network`).
fn own_ports(pod: &Pod) -> Vec<OwnPort> {
    let spec = pod.spec.as_ref();
    spec.into_iter()
        .flat_map(|s| {
            s.containers
                .iter()
                .chain(s.init_containers.iter().flatten())
        })
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let port = u16::try_from(p.container_port).ok()?;
            let protocol = match p.protocol.as_deref().unwrap_or("TCP") {
                "TCP" => Protocol::Tcp,
                "UDP" => Protocol::Udp,
                _ => return None,
            };
            Some(OwnPort { protocol, port })
        })
        .collect()
}

fn exit_code(status: &ContainerStatus) -> Option<i32> {
    status
        .state
        .as_ref()?
        .terminated
        .as_ref()
        .map(|t| t.exit_code)
}

fn backoff(restarts: i32) -> Duration {
    Duration::from_secs(1u64 << restarts.clamp(0, 4)).min(MAX_BACKOFF)
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Resolves once the pod is being deleted.
async fn deleted(deletion: &mut Deletion) {
    loop {
        if deletion.borrow().is_some() {
            return;
        }
        if deletion.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Sleeps `delay`; true if the pod began deleting meanwhile.
async fn wait_or_deleted(deletion: &mut Deletion, delay: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(delay) => false,
        _ = deleted(deletion) => true,
    }
}

fn read_capped(path: &Path, max: usize) -> String {
    let bytes = std::fs::read(path).unwrap_or_default();
    let mut end = bytes.len().min(max);
    while end > 0 && std::str::from_utf8(&bytes[..end]).is_err() {
        end -= 1;
    }
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// A non-root container must be able to write its termination message.
fn set_world_writable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap() {
        assert_eq!(backoff(0), Duration::from_secs(1));
        assert_eq!(backoff(1), Duration::from_secs(2));
        assert_eq!(backoff(3), Duration::from_secs(8));
        assert_eq!(backoff(9), MAX_BACKOFF);
    }

    #[test]
    fn log_tail_keeps_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("c.log");
        let text: String = (0..200).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&log, text).unwrap();
        let tail = log_tail(&log, LOG_FALLBACK_LINES, LOG_FALLBACK_BYTES);
        assert!(tail.ends_with("line 199"));
        assert!(!tail.contains("line 119\n"));
        assert!(tail.len() <= LOG_FALLBACK_BYTES);
    }
}
