//! Pod networking, as a bridge CNI plugin sets it up: each pod gets a network namespace of its
//! own with an `eth0` (one end of a veth pair whose other end is on the bed's bridge) and an
//! address in the bed's subnet, so pods can bind the same port and the host (tests,
//! Prometheus) reaches each at its pod IP.
//!
//! Addresses: each bed claims an index `N` (a lock file, see `claim`) and with it the subnet
//! `198.18.N.0/24` (RFC 2544's benchmarking range: routed nowhere, rarely used by a LAN), the
//! bridge `rrecN` holding the gateway `198.18.N.1` (the node's address on the pod network) and
//! the nftables table `ip rrecN`; pods get `.2`–`.254`, and a pod's host-side veth is
//! `rrecN-{last octet}`. Two beds on one machine never share a name or a subnet.
//!
//! The host's services: tests hand pods `127.0.0.1` URLs (the bed listens on loopback), which
//! in a namespace of its own would be the pod's own loopback. So, unlike a cluster, a pod's
//! TCP and UDP to `127.0.0.1` leave for the node unless the port is one the pod declares as a
//! `containerPort` (its own): a DNAT to the gateway in the pod's namespace, and on the bridge
//! a DNAT from the gateway to `127.0.0.1` (`route_localnet` on both ends lets loopback
//! addresses cross them). A socket bound to the gateway or to `0.0.0.0` takes the packet
//! without that second DNAT, so a UDP server that answers from its wildcard socket answers
//! from the address the pod sent to. The host's service sees the pod's IP as its peer.
//!
//! Cleanup: a pod's namespace lives as long as its descriptor here (never bind-mounted under
//! `/run/netns`), so the kernel removes it and its veth when the agent dies; the veth is also
//! deleted when the pod ends. The bridge and the table go when the agent stops, and those of a
//! bed that died (its lock released by the kernel) are removed by the next agent that starts.

mod claim;
mod command;
mod netns;

pub use netns::PodNetwork;

use command::run;
use std::fs::File;
use std::net::Ipv4Addr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// Names of bridges, veths and tables begin with this; `leftovers` finds them by it.
const PREFIX: &str = "rrec";
/// The first two octets of every bed's subnet (`198.18.N.0/24`).
const BASE: [u8; 2] = [198, 18];
/// Pod addresses: `.2` to `.254` (`.1` is the gateway, `.255` broadcast).
const FIRST_HOST: u8 = 2;
const HOSTS: usize = 253;

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("{program} not found: `bash hack/testbed.sh` installs it (Debian package {package})")]
    MissingTool {
        program: &'static str,
        package: &'static str,
    },

    #[error("`{command}` failed: {stderr}")]
    Command { command: String, stderr: String },

    #[error("{what}: {source}")]
    System {
        what: String,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "no pod subnet left: each 198.18.N.0/24 is held by a running bed or overlaps a route of this machine"
    )]
    NoSubnet,

    #[error("no pod address left in {subnet}: {HOSTS} pods have their network")]
    Exhausted { subnet: String },
}

/// A protocol and port a pod declares as its own (`containerPort`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OwnPort {
    pub protocol: Protocol,
    pub port: u16,
}

/// The protocols forwarded from a pod's loopback to the node's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    fn nft(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// The bed's pod network: its bridge, its nftables table and its pod addresses.
pub struct Network {
    index: u8,
    slots: Mutex<Slots>,
    stopped: AtomicBool,
    /// Held while the network exists; the kernel releases it if the process dies.
    _lock: File,
}

impl Network {
    /// Claims a free index (removing what beds that died left behind) and sets up the bridge
    /// and the bed's DNAT to loopback. Blocking.
    pub fn start() -> Result<Self, NetworkError> {
        let (index, lock) = claim::claim()?;
        let network = Self {
            index,
            slots: Mutex::new(Slots::default()),
            stopped: AtomicBool::new(false),
            _lock: lock,
        };
        network.create_bridge()?;
        Ok(network)
    }

    /// The node's address on the pod network (the bridge's).
    pub fn gateway(&self) -> Ipv4Addr {
        address(self.index, 1)
    }

    pub fn subnet(&self) -> String {
        format!("{}/24", address(self.index, 0))
    }

    fn bridge(&self) -> String {
        bridge_name(self.index)
    }

    fn veth(&self, host: u8) -> String {
        host_veth_of(address(self.index, host))
    }

    fn create_bridge(&self) -> Result<(), NetworkError> {
        let bridge = self.bridge();
        run(
            "ip",
            &["-batch", "-"],
            Some(&format!(
                "link add {bridge} type bridge\naddr add {gateway}/24 dev {bridge}\nlink set {bridge} up\n",
                gateway = self.gateway()
            )),
        )?;
        // Lets packets to and from 127.0.0.1 cross the bridge (the DNAT below), as kube-proxy
        // does for node ports on localhost.
        let sysctl = format!("/proc/sys/net/ipv4/conf/{bridge}/route_localnet");
        std::fs::write(&sysctl, "1").map_err(|source| NetworkError::System {
            what: format!("writing {sysctl}"),
            source,
        })?;
        run(
            "nft",
            &["-f", "-"],
            Some(&host_rules(&bridge, self.gateway())),
        )?;
        Ok(())
    }

    /// Gives up the address `host` of a pod whose network is gone.
    fn release(&self, host: u8) {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.used[usize::from(host)] = false;
    }

    /// Removes every pod's veth, the bridge and the table. Pods still running lose their
    /// network (the agent is stopping them). Idempotent; the lock is released on drop.
    pub fn stop(&self) {
        if self.stopped.swap(true, Ordering::SeqCst) {
            return;
        }
        let used: Vec<u8> = {
            let slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            (0..=255u8)
                .filter(|h| slots.used[usize::from(*h)])
                .collect()
        };
        let mut batch: String = used
            .iter()
            .map(|host| format!("link del {}\n", self.veth(*host)))
            .collect();
        batch.push_str(&format!("link del {}\n", self.bridge()));
        // -force: go on past a veth that is already gone.
        if let Err(e) = run("ip", &["-force", "-batch", "-"], Some(&batch)) {
            tracing::debug!("removing the pod network: {e}");
        }
        if let Err(e) = run("nft", &["delete", "table", "ip", &self.bridge()], None) {
            tracing::warn!("removing the pod network's nftables table: {e}");
        }
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        self.stop();
    }
}

#[derive(Debug)]
struct Slots {
    used: [bool; 256],
    /// Addresses are handed out round-robin, so a pod's address is not reused at once.
    next: usize,
}

impl Default for Slots {
    fn default() -> Self {
        Self {
            used: [false; 256],
            next: 0,
        }
    }
}

impl Slots {
    fn take(&mut self) -> Option<u8> {
        let offset = (0..HOSTS)
            .map(|i| (self.next + i) % HOSTS)
            .find(|i| !self.used[usize::from(FIRST_HOST) + i])?;
        self.next = offset + 1;
        let host = usize::from(FIRST_HOST) + offset;
        self.used[host] = true;
        Some(host as u8)
    }
}

/// The bridge (and nftables table, `ip` family) of the bed whose gateway or pod has address
/// `ip`: for tests and for looking around (`ip link show master rrecN`).
pub fn bridge_of(ip: Ipv4Addr) -> String {
    bridge_name(ip.octets()[2])
}

/// The host-side veth of the pod at `ip`.
pub fn host_veth_of(ip: Ipv4Addr) -> String {
    let [_, _, index, host] = ip.octets();
    format!("{PREFIX}{index}-{host}")
}

fn address(index: u8, host: u8) -> Ipv4Addr {
    Ipv4Addr::new(BASE[0], BASE[1], index, host)
}

fn bridge_name(index: u8) -> String {
    format!("{PREFIX}{index}")
}

/// The bed's table on the host: what pods send to the gateway goes to 127.0.0.1, unless a
/// socket bound to the gateway or to 0.0.0.0 takes it as it is.
fn host_rules(bridge: &str, gateway: Ipv4Addr) -> String {
    format!(
        "table ip {bridge} {{
  chain prerouting {{
    type nat hook prerouting priority dstnat; policy accept;
    iifname \"{bridge}\" ip daddr {gateway} socket transparent 0 return
    iifname \"{bridge}\" ip daddr {gateway} dnat to 127.0.0.1
  }}
}}
"
    )
}

/// The pod's table: TCP and UDP to 127.0.0.1 go to the node (the gateway), except to the
/// ports the pod declares; the pod's loopback source address is rewritten to its own.
fn pod_rules(gateway: Ipv4Addr, own: &[OwnPort]) -> String {
    let rule = |protocol: Protocol| {
        let name = protocol.nft();
        // A set: two containers may declare one port.
        let ports: std::collections::BTreeSet<u16> = own
            .iter()
            .filter(|p| p.protocol == protocol)
            .map(|p| p.port)
            .collect();
        let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
        let except = if ports.is_empty() {
            String::new()
        } else {
            format!(" {name} dport != {{ {} }}", ports.join(", "))
        };
        format!("    ip daddr 127.0.0.1 meta l4proto {name}{except} dnat to {gateway}\n")
    };
    format!(
        "table ip roomrec {{
  chain output {{
    type nat hook output priority -100; policy accept;
{}{}  }}
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    oifname \"eth0\" ip saddr 127.0.0.0/8 masquerade
  }}
}}
",
        rule(Protocol::Tcp),
        rule(Protocol::Udp)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_go_round_robin_and_come_back() {
        let mut slots = Slots::default();
        assert_eq!(slots.take(), Some(2));
        assert_eq!(slots.take(), Some(3));
        slots.used[2] = false;
        // .2 is free again, but the next pod gets .4: a fresh address while there are any.
        assert_eq!(slots.take(), Some(4));
        let rest: Vec<u8> = std::iter::from_fn(|| slots.take()).collect();
        assert_eq!(rest.len(), HOSTS - 3 + 1, "every address once, .2 last");
        assert_eq!(rest.first(), Some(&5));
        assert_eq!(rest.last(), Some(&2));
        assert!(!rest.contains(&255) && !rest.contains(&1) && !rest.contains(&0));
        assert_eq!(slots.take(), None);
    }

    #[test]
    fn a_pods_declared_ports_stay_its_own() {
        let gateway = address(7, 1);
        let tcp = |port| OwnPort {
            protocol: Protocol::Tcp,
            port,
        };
        let rules = pod_rules(gateway, &[tcp(9090), tcp(8080), tcp(9090)]);
        assert!(rules.contains(
            "ip daddr 127.0.0.1 meta l4proto tcp tcp dport != { 8080, 9090 } dnat to 198.18.7.1\n"
        ));
        assert!(rules.contains("ip daddr 127.0.0.1 meta l4proto udp dnat to 198.18.7.1\n"));
        assert!(rules.contains("oifname \"eth0\" ip saddr 127.0.0.0/8 masquerade"));
    }

    #[test]
    fn the_bridge_takes_what_pods_send_to_the_gateway_to_loopback() {
        let rules = host_rules("rrec7", address(7, 1));
        assert!(rules.starts_with("table ip rrec7 {"));
        assert!(rules.contains("iifname \"rrec7\" ip daddr 198.18.7.1 dnat to 127.0.0.1\n"));
    }
}
