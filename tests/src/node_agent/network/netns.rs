//! One pod's network namespace: made empty, its `eth0` (a veth whose peer joins the bed's
//! bridge) given the pod's address and a default route through the gateway, and its loopback
//! rules set from inside; the veth is deleted and the namespace released when it is dropped.

use super::command::run;
use super::{Network, NetworkError, OwnPort, address, pod_rules};
use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::Arc;

pub struct PodNetwork {
    network: Arc<Network>,
    host: u8,
    /// The namespace exists while this is open or a process is in it; nothing else names it.
    netns: OwnedFd,
}

impl PodNetwork {
    /// Sets up a pod's namespace; `own` are the ports it declares. Blocking.
    pub fn create(network: &Arc<Network>, own: &[OwnPort]) -> Result<Self, NetworkError> {
        let host = network
            .slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .ok_or_else(|| NetworkError::Exhausted {
                subnet: network.subnet(),
            })?;
        let netns = match new_netns() {
            Ok(netns) => netns,
            Err(e) => {
                network.release(host);
                return Err(e);
            }
        };
        // From here on, dropping `pod` undoes whatever was done.
        let pod = Self {
            network: network.clone(),
            host,
            netns,
        };
        pod.connect()?;
        pod.configure(own)?;
        Ok(pod)
    }

    pub fn ip(&self) -> Ipv4Addr {
        address(self.network.index, self.host)
    }

    /// The namespace, for a container's process to join before it runs its program.
    pub fn netns_fd(&self) -> RawFd {
        self.netns.as_raw_fd()
    }

    /// The veth pair: `eth0` in the pod's namespace, its peer on the bridge.
    fn connect(&self) -> Result<(), NetworkError> {
        let veth = self.network.veth(self.host);
        let netns = format!("/proc/{}/fd/{}", std::process::id(), self.netns_fd());
        let bridge = self.network.bridge();
        run(
            "ip",
            &["-batch", "-"],
            Some(&format!(
                "link add {veth} type veth peer name eth0 netns {netns}\nlink set {veth} master {bridge} up\n"
            )),
        )?;
        Ok(())
    }

    /// Address, route and rules, set by commands run from inside the namespace.
    fn configure(&self, own: &[OwnPort]) -> Result<(), NetworkError> {
        let gateway = self.network.gateway();
        let addressing = format!(
            "link set lo up\naddr add {ip}/24 dev eth0\nlink set eth0 up\nroute add default via {gateway}\n",
            ip = self.ip()
        );
        let rules = pod_rules(gateway, own);
        inside(self.netns.as_fd(), move || {
            // Packets from 127.0.0.1 may leave through eth0 (to be rewritten to the pod's
            // address), and answers to them may come back in.
            let sysctl = "/proc/sys/net/ipv4/conf/all/route_localnet";
            std::fs::write(sysctl, "1").map_err(|source| NetworkError::System {
                what: format!("writing {sysctl} in a pod's namespace"),
                source,
            })?;
            run("ip", &["-batch", "-"], Some(&addressing))?;
            run("nft", &["-f", "-"], Some(&rules))?;
            Ok(())
        })
    }
}

impl Drop for PodNetwork {
    fn drop(&mut self) {
        // Deleting one end deletes the pair, at once, even while a process still holds the
        // namespace (it is being killed).
        if let Err(e) = run("ip", &["link", "del", &self.network.veth(self.host)], None) {
            tracing::debug!("removing a pod's veth: {e}");
        }
        self.network.release(self.host);
    }
}

/// A new, empty network namespace, made on a thread of its own so no other thread moves.
fn new_netns() -> Result<OwnedFd, NetworkError> {
    let made = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                // SAFETY: unshare(2) takes flags only; it moves this thread alone.
                if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                File::open("/proc/thread-self/ns/net").map(OwnedFd::from)
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    });
    made.map_err(|source| NetworkError::System {
        what: "creating a network namespace".into(),
        source,
    })
}

/// Runs `work` on a fresh thread inside `netns`; processes it starts are inside too. The
/// thread ends with `work`, so no thread of the agent stays in a pod's namespace.
fn inside<T: Send>(
    netns: BorrowedFd<'_>,
    work: impl FnOnce() -> Result<T, NetworkError> + Send,
) -> Result<T, NetworkError> {
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                // SAFETY: setns(2) with a namespace descriptor we hold; it moves this thread.
                if unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(NetworkError::System {
                        what: "entering a pod's network namespace".into(),
                        source: std::io::Error::last_os_error(),
                    });
                }
                work()
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}
