//! Which bed owns which index. A bed holds an exclusive lock on `/run/roomrec-node/net/N.lock`
//! while its network exists; the kernel drops the lock when the process dies, however it dies.
//! So bridges, veths and tables named for an index whose lock is free were left by a bed that
//! is gone, and are removed; those of a running bed (another test process) are never touched.

use super::command::run;
use super::{BASE, NetworkError, PREFIX, bridge_name};
use std::collections::BTreeMap;
use std::fs::{File, TryLockError};
use std::path::Path;

const LOCK_DIR: &str = "/run/roomrec-node/net";

/// Removes what dead beds left, then takes the first free index whose subnet overlaps no route
/// of this machine. Returns the index and its held lock.
pub fn claim() -> Result<(u8, File), NetworkError> {
    for (index, names) in leftovers()? {
        // Held while removing, so that no bed starting meanwhile takes the index.
        if let Some(_lock) = try_lock(index)? {
            tracing::info!(
                index,
                ?names,
                "removing the pod network of a test bed that is gone"
            );
            remove(index, &names);
        }
    }
    let routes = routes()?;
    for index in 0..=255u8 {
        if routes.iter().any(|route| overlaps(*route, index)) {
            continue;
        }
        if let Some(lock) = try_lock(index)? {
            // A bed that died since the sweep above: its bridge must go before ours is made.
            remove(index, &[bridge_name(index)]);
            return Ok((index, lock));
        }
    }
    Err(NetworkError::NoSubnet)
}

/// The lock of `index`, or None while a running bed holds it.
fn try_lock(index: u8) -> Result<Option<File>, NetworkError> {
    let system = |what: String| move |source| NetworkError::System { what, source };
    std::fs::create_dir_all(LOCK_DIR).map_err(system(format!("creating {LOCK_DIR}")))?;
    let path = Path::new(LOCK_DIR).join(format!("{index}.lock"));
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(system(format!("opening {}", path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(TryLockError::WouldBlock) => Ok(None),
        Err(TryLockError::Error(source)) => Err(NetworkError::System {
            what: format!("locking {}", path.display()),
            source,
        }),
    }
}

/// Links (bridges and host-side veths) and nftables tables named like a bed's, by index.
fn leftovers() -> Result<BTreeMap<u8, Vec<String>>, NetworkError> {
    let mut found: BTreeMap<u8, Vec<String>> = BTreeMap::new();
    for line in run("ip", &["-o", "link", "show"], None)?.lines() {
        // "12: rrec3-7@if2: <BROADCAST,…" — the name, without the peer after '@'.
        let Some(name) = line.split(": ").nth(1).and_then(|n| n.split('@').next()) else {
            continue;
        };
        if let Some(index) = index_of(name) {
            found.entry(index).or_default().push(name.to_string());
        }
    }
    for line in run("nft", &["list", "tables"], None)?.lines() {
        if let Some(table) = line.strip_prefix("table ip ")
            && let Some(index) = index_of(table.trim()).filter(|i| bridge_name(*i) == table.trim())
        {
            found
                .entry(index)
                .or_default()
                .push(format!("table {table}"));
        }
    }
    Ok(found)
}

/// The index in `rrecN` or `rrecN-H`.
fn index_of(name: &str) -> Option<u8> {
    let rest = name.strip_prefix(PREFIX)?;
    let (index, host) = match rest.split_once('-') {
        Some((index, host)) => (index, Some(host)),
        None => (rest, None),
    };
    if host.is_some_and(|h| h.parse::<u8>().is_err()) {
        return None;
    }
    index.parse().ok().filter(|i: &u8| i.to_string() == index)
}

/// Deletes the named links and the index's table; what is already gone is no error.
fn remove(index: u8, names: &[String]) {
    let batch: String = names
        .iter()
        .filter(|n| !n.starts_with("table "))
        .map(|n| format!("link del {n}\n"))
        .collect();
    if let Err(e) = run("ip", &["-force", "-batch", "-"], Some(&batch)) {
        tracing::debug!("removing links of pod network {index}: {e}");
    }
    if let Err(e) = run("nft", &["delete", "table", "ip", &bridge_name(index)], None) {
        tracing::debug!("removing table of pod network {index}: {e}");
    }
}

/// The IPv4 routes of the main table as (network, prefix length), the default route left out.
fn routes() -> Result<Vec<(u32, u8)>, NetworkError> {
    let text = run("ip", &["-j", "-4", "route", "show", "table", "main"], None)?;
    let routes: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap_or_default();
    Ok(routes
        .iter()
        .filter_map(|r| r["dst"].as_str())
        .filter_map(parse_prefix)
        .filter(|(_, len)| *len > 0)
        .collect())
}

fn parse_prefix(dst: &str) -> Option<(u32, u8)> {
    let (address, len) = dst.split_once('/').unwrap_or((dst, "32"));
    let address: std::net::Ipv4Addr = address.parse().ok()?;
    Some((u32::from(address), len.parse().ok().filter(|l| *l <= 32)?))
}

/// Whether the route `(network, len)` and the subnet of `index` share an address.
fn overlaps((network, len): (u32, u8), index: u8) -> bool {
    let subnet = u32::from(std::net::Ipv4Addr::new(BASE[0], BASE[1], index, 0));
    let common = len.min(24);
    let mask = if common == 0 {
        0
    } else {
        u32::MAX << (32 - common)
    };
    network & mask == subnet & mask
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_a_beds_network_give_its_index() {
        assert_eq!(index_of("rrec0"), Some(0));
        assert_eq!(index_of("rrec17-254"), Some(17));
        assert_eq!(index_of("rrec255"), Some(255));
        for other in [
            "rrec",
            "rrec256",
            "rrec01",
            "rrec3-x",
            "rrecx",
            "eth0",
            "rrec3-300",
        ] {
            assert_eq!(index_of(other), None, "{other}");
        }
    }

    #[test]
    fn a_subnet_that_a_route_covers_or_contains_is_taken() {
        let route = |s: &str| parse_prefix(s).unwrap();
        assert!(overlaps(route("198.18.0.0/15"), 4));
        assert!(overlaps(route("198.18.4.0/24"), 4));
        assert!(overlaps(route("198.18.4.128/25"), 4));
        assert!(overlaps(route("198.18.4.9"), 4));
        assert!(!overlaps(route("198.18.5.0/24"), 4));
        assert!(!overlaps(route("192.0.2.0/24"), 4));
        assert!(!overlaps(route("10.0.0.0/8"), 4));
        assert_eq!(parse_prefix("default"), None);
    }
}
