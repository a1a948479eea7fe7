//! The node agent: the one stand-in of the test bed, doing the kubelet's job for a node named
//! `local`. It registers the node, binds pending pods to it (there is no scheduler), gives each
//! pod a network namespace of its own (see `network`), runs its containers as local processes
//! (see `sandbox` and `image`), and reports status back.

mod env;
pub mod image;
pub mod network;
mod pod;
mod sandbox;
mod volumes;

use crate::error::Result;
use futures::StreamExt;
use image::ImageResolver;
use k8s_openapi::api::core::v1::{Binding, Node, ObjectReference, Pod};
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use network::Network;
use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub const NODE_NAME: &str = "local";

pub struct NodeAgentConfig {
    pub node_name: String,
    /// Pod sandboxes and container logs: `{work_dir}/pods/{ns}_{name}_{uid}/{container}.log`.
    pub work_dir: PathBuf,
    /// Port of the API server on 127.0.0.1, given to containers as KUBERNETES_SERVICE_*.
    pub api_port: u16,
    pub images: ImageResolver,
}

pub(crate) struct AgentContext {
    pub client: Client,
    pub work_dir: PathBuf,
    pub images: ImageResolver,
    pub service_env: Vec<(String, String)>,
    pub network: Arc<Network>,
    /// Every pod in the node's network namespace, as with `hostNetwork` (see
    /// `SHARED_NETWORK_VAR`).
    pub shared_network: bool,
}

/// Set to `1`, every pod runs in the node's network namespace as if it asked for
/// `hostNetwork`: for `make bench`'s burst of 1,000 pods, more than a bed's /24 pod network
/// holds. Pods that bind a port then collide, as they did before pods had networks of their own.
pub const SHARED_NETWORK_VAR: &str = "ROOMREC_NODE_SHARED_NETWORK";

/// Runs until dropped; dropping it kills every container it started and removes the pod
/// network.
pub struct NodeAgent {
    task: JoinHandle<()>,
    network: Arc<Network>,
}

impl NodeAgent {
    pub async fn start(client: Client, config: NodeAgentConfig) -> Result<Self> {
        std::fs::create_dir_all(config.work_dir.join("pods"))
            .map_err(crate::error::file_error(&config.work_dir))?;
        let network = tokio::task::spawn_blocking(Network::start)
            .await
            .expect("setting up the pod network does not panic")?;
        let network = Arc::new(network);
        register_node(&client, &config.node_name, network.gateway()).await?;
        let port = config.api_port.to_string();
        let service_env = vec![
            (
                "PATH".to_string(),
                std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into()),
            ),
            // 127.0.0.1 in a pod reaches the node's loopback (see `network`), and it is a name
            // the API server's certificate holds.
            ("KUBERNETES_SERVICE_HOST".into(), "127.0.0.1".into()),
            ("KUBERNETES_SERVICE_PORT".into(), port.clone()),
            ("KUBERNETES_SERVICE_PORT_HTTPS".into(), port.clone()),
            ("KUBERNETES_PORT".into(), format!("tcp://127.0.0.1:{port}")),
        ];
        let ctx = Arc::new(AgentContext {
            client: client.clone(),
            work_dir: config.work_dir,
            images: config.images,
            service_env,
            network: network.clone(),
            shared_network: std::env::var(SHARED_NETWORK_VAR).is_ok_and(|v| v == "1"),
        });
        let task = tokio::spawn(run(ctx, config.node_name));
        Ok(Self { task, network })
    }

    /// The node's address on the pod network: every pod's `hostIP`, reachable from pods.
    pub fn host_ip(&self) -> Ipv4Addr {
        self.network.gateway()
    }

    /// The pod network, `198.18.N.0/24`.
    pub fn pod_subnet(&self) -> String {
        self.network.subnet()
    }
}

impl Drop for NodeAgent {
    fn drop(&mut self) {
        self.task.abort();
        // Now, not when the aborted pod tasks are dropped (the runtime does that later).
        self.network.stop();
    }
}

/// Creates or refreshes the Node object, Ready, with this machine's capacity.
async fn register_node(client: &Client, name: &str, address: Ipv4Addr) -> Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let labels = BTreeMap::from([
        ("kubernetes.io/hostname".to_string(), name.to_string()),
        ("kubernetes.io/os".to_string(), "linux".to_string()),
        (
            "kubernetes.io/arch".to_string(),
            std::env::consts::ARCH
                .replace("x86_64", "amd64")
                .replace("aarch64", "arm64"),
        ),
    ]);
    let node = Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(labels),
            ..Default::default()
        },
        ..Default::default()
    };
    let params = PatchParams::apply("roomrec-node-agent").force();
    nodes.patch(name, &params, &Patch::Apply(&node)).await?;

    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let capacity =
        serde_json::json!({ "cpu": cpus.to_string(), "memory": memory_total(), "pods": "250" });
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let status = serde_json::json!({
        "status": {
            "capacity": capacity,
            "allocatable": capacity,
            "addresses": [{"type": "InternalIP", "address": address.to_string()}, {"type": "Hostname", "address": name}],
            "conditions": [{
                "type": "Ready", "status": "True", "reason": "KubeletReady",
                "message": "roomrec node agent is posting ready status",
                "lastHeartbeatTime": now, "lastTransitionTime": now
            }],
            "nodeInfo": {
                "machineID": "roomrec-testbed", "systemUUID": "roomrec-testbed", "bootID": "roomrec-testbed",
                "kernelVersion": "", "osImage": "roomrec test bed", "containerRuntimeVersion": "local://processes",
                "kubeletVersion": "roomrec-node-agent", "kubeProxyVersion": "",
                "operatingSystem": "linux", "architecture": std::env::consts::ARCH
            }
        }
    });
    nodes
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await?;
    Ok(())
}

fn memory_total() -> String {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .map(str::to_owned)
        })
        .and_then(|l| l.split_whitespace().nth(1).map(|kb| format!("{kb}Ki")))
        .unwrap_or_else(|| "8Gi".into())
}

struct PodHandle {
    deletion: watch::Sender<Option<i64>>,
    task: JoinHandle<()>,
}

impl Drop for PodHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run(ctx: Arc<AgentContext>, node_name: String) {
    let pods: Api<Pod> = Api::all(ctx.client.clone());
    let mut handles: HashMap<String, PodHandle> = HashMap::new();
    let mut unschedulable_reported: std::collections::HashSet<String> = Default::default();
    let mut events = std::pin::pin!(watcher::watcher(pods, watcher::Config::default()));
    while let Some(event) = events.next().await {
        let pod = match event {
            Ok(Event::Apply(pod)) | Ok(Event::InitApply(pod)) => pod,
            Ok(Event::Delete(pod)) => {
                if let Some(uid) = pod.metadata.uid {
                    handles.remove(&uid);
                }
                continue;
            }
            Ok(_) => continue,
            Err(e) => {
                tracing::debug!("node agent watch: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                continue;
            }
        };
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let bound_to = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        let deleting = pod.metadata.deletion_timestamp.is_some();
        let grace = pod.metadata.deletion_grace_period_seconds.unwrap_or(30);
        match bound_to {
            None if !deleting => {
                if let Err(message) = bind(&ctx.client, &pod, &node_name).await
                    && unschedulable_reported.insert(uid.clone())
                {
                    report_unschedulable(&ctx.client, &pod, &message).await;
                }
            }
            Some(node) if node == node_name => {
                if let Some(handle) = handles.get(&uid) {
                    if deleting {
                        handle.deletion.send_replace(Some(grace));
                    }
                    continue;
                }
                let phase = pod
                    .status
                    .as_ref()
                    .and_then(|s| s.phase.clone())
                    .unwrap_or_default();
                let fresh = phase.is_empty() || phase == "Pending";
                if !fresh && !deleting {
                    // Terminal, or Running under an agent that is gone (a restarted agent
                    // cannot adopt processes): nothing to run.
                    continue;
                }
                if deleting && !fresh {
                    force_delete(&ctx.client, &pod).await;
                    continue;
                }
                let (tx, rx) = watch::channel(deleting.then_some(grace));
                let task = tokio::spawn(pod::run(ctx.clone(), pod, rx));
                handles.insert(uid, PodHandle { deletion: tx, task });
            }
            _ => {}
        }
    }
}

/// Binds `pod` to the node, as the scheduler would, if its nodeSelector allows.
async fn bind(client: &Client, pod: &Pod, node_name: &str) -> Result<(), String> {
    let selector = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_selector.clone())
        .unwrap_or_default();
    let nodes: Api<Node> = Api::all(client.clone());
    let labels = nodes
        .get(node_name)
        .await
        .map_err(|e| e.to_string())?
        .metadata
        .labels
        .unwrap_or_default();
    if let Some((k, v)) = selector.iter().find(|(k, v)| labels.get(*k) != Some(*v)) {
        return Err(format!(
            "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector ({k}={v})."
        ));
    }
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let binding = Binding {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(namespace.clone()),
            ..Default::default()
        },
        target: ObjectReference {
            kind: Some("Node".into()),
            api_version: Some("v1".into()),
            name: Some(node_name.into()),
            ..Default::default()
        },
    };
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    match pods
        .create_subresource::<_, serde_json::Value>(
            "binding",
            &name,
            &PostParams::default(),
            &binding,
        )
        .await
    {
        Ok(_) => Ok(()),
        // Already bound (a replayed event): not an error.
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => {
            tracing::debug!(pod = %name, "bind: {e}");
            Ok(())
        }
    }
}

async fn report_unschedulable(client: &Client, pod: &Pod, message: &str) {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let patch = serde_json::json!({"status": {"phase": "Pending", "conditions": [{
        "type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message,
        "lastTransitionTime": k8s_openapi::jiff::Timestamp::now().to_string()
    }]}});
    let _ = pods
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await;
}

async fn force_delete(client: &Client, pod: &Pod) {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        ..Default::default()
    };
    let _ = pods.delete(&name, &params).await;
}
