//! The harness's network: one Linux network namespace per node, each with a
//! veth into one bridge in the root namespace, where the clients live.
//! Partitions are kernel packet drops: iptables DROP rules on a node's INPUT
//! chain inside its namespace, naming the peers it must not hear from.
//! Clients (on the bridge address) are never cut off, as in Jepsen.

use std::net::Ipv4Addr;
use std::process::Command;

use anyhow::Context;

/// Names are fixed so a run can clean up what a crashed run left behind.
const BRIDGE: &str = "sbxj0";
const NS_PREFIX: &str = "sbxj-n";
const VETH_PREFIX: &str = "sbxjv";
const SUBNET_PREFIX: &str = "10.77.0";
pub const NODES_MAX: u64 = 9;

pub fn bridge_ip() -> Ipv4Addr {
    format!("{SUBNET_PREFIX}.1").parse().expect("static address")
}

pub fn node_ip(id: u64) -> Ipv4Addr {
    format!("{SUBNET_PREFIX}.{}", 10 + id).parse().expect("static address")
}

pub fn namespace(id: u64) -> String {
    format!("{NS_PREFIX}{id}")
}

/// Runs a command, failing with its stderr.
fn sh(args: &[&str]) -> anyhow::Result<()> {
    let out =
        Command::new(args[0]).args(&args[1..]).output().with_context(|| format!("cannot run {}", args[0]))?;
    if !out.status.success() {
        anyhow::bail!("`{}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// Runs a command whose failure is expected when there is nothing to undo.
fn sh_quiet(args: &[&str]) {
    let _ = Command::new(args[0]).args(&args[1..]).output();
}

fn in_ns(id: u64, args: &[&str]) -> anyhow::Result<()> {
    let ns = namespace(id);
    let mut full = vec!["ip", "netns", "exec", ns.as_str()];
    full.extend_from_slice(args);
    sh(&full)
}

/// Held for the whole run: the names are fixed, so two runs on one machine
/// would tear down each other's network.
const LOCK_PATH: &str = "/run/lock/strongbox-jepsen.lock";

/// Takes the machine-wide harness lock, or says who to wait for.
fn lock() -> anyhow::Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(LOCK_PATH)
        .with_context(|| format!("cannot open {LOCK_PATH}"))?;
    // SAFETY: flock(2) on a descriptor we own; released when it closes.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        anyhow::bail!(
            "another jepsen run holds {LOCK_PATH}; one run per machine (they share namespace names)"
        );
    }
    Ok(file)
}

/// Removes leftovers if no other run is in progress (used after a run ends,
/// however it ended).
pub fn teardown_if_idle() {
    if let Ok(_lock) = lock() {
        teardown_leftovers();
    }
}

/// The namespaces, bridge and rules of one run; torn down on drop, so an
/// error or a panic does not leave them behind.
pub struct Net {
    nodes: u64,
    _lock: std::fs::File,
}

impl Net {
    pub fn setup(nodes: u64) -> anyhow::Result<Net> {
        anyhow::ensure!((1..=NODES_MAX).contains(&nodes), "nodes: 1..={NODES_MAX}, got {nodes}");
        preflight()?;
        let lock = lock()?;
        teardown_leftovers();
        let net = Net { nodes, _lock: lock };
        let bridge_cidr = format!("{}/24", bridge_ip());
        sh(&["ip", "link", "add", BRIDGE, "type", "bridge"])?;
        sh(&["ip", "addr", "add", &bridge_cidr, "dev", BRIDGE])?;
        sh(&["ip", "link", "set", BRIDGE, "up"])?;
        // Docker sets the FORWARD policy to DROP, and with br_netfilter
        // loaded bridged frames pass through it: let our bridge through.
        sh(&["iptables", "-I", "FORWARD", "-i", BRIDGE, "-o", BRIDGE, "-j", "ACCEPT"])?;
        for id in 1..=nodes {
            let (ns, veth) = (namespace(id), format!("{VETH_PREFIX}{id}"));
            let cidr = format!("{}/24", node_ip(id));
            sh(&["ip", "netns", "add", &ns])?;
            sh(&["ip", "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns])?;
            sh(&["ip", "link", "set", &veth, "master", BRIDGE, "up"])?;
            sh(&["ip", "-n", &ns, "addr", "add", &cidr, "dev", "eth0"])?;
            sh(&["ip", "-n", &ns, "link", "set", "eth0", "up"])?;
            sh(&["ip", "-n", &ns, "link", "set", "lo", "up"])?;
            // Fail here, not at the first partition, if iptables cannot
            // work inside a namespace.
            in_ns(id, &["iptables", "-L", "INPUT", "-n"])?;
        }
        Ok(net)
    }

    /// Drops every packet `to` receives from `from` (one direction).
    pub fn drop_from(&self, to: u64, from: u64) -> anyhow::Result<()> {
        let src = node_ip(from).to_string();
        in_ns(to, &["iptables", "-A", "INPUT", "-s", &src, "-j", "DROP"])
    }

    /// Cuts the nodes into groups that cannot reach each other.
    pub fn partition(&self, groups: &[Vec<u64>]) -> anyhow::Result<()> {
        for (i, a) in groups.iter().enumerate() {
            for (j, b) in groups.iter().enumerate() {
                if i != j {
                    for &to in a {
                        for &from in b {
                            self.drop_from(to, from)?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    pub fn heal(&self) -> anyhow::Result<()> {
        for id in 1..=self.nodes {
            in_ns(id, &["iptables", "-F", "INPUT"])?;
        }
        Ok(())
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        teardown_leftovers();
    }
}

fn preflight() -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        anyhow::bail!("the harness needs root for network namespaces and iptables (run it with sudo)");
    }
    for tool in ["ip", "iptables"] {
        let found = Command::new(tool).arg("--version").output().is_ok();
        anyhow::ensure!(found, "`{tool}` not found: apt-get install iproute2 iptables");
    }
    Ok(())
}

/// Removes whatever a run (this one or a crashed earlier one) set up.
fn teardown_leftovers() {
    for id in 1..=NODES_MAX {
        sh_quiet(&["ip", "netns", "del", &namespace(id)]);
        sh_quiet(&["ip", "link", "del", &format!("{VETH_PREFIX}{id}")]);
    }
    sh_quiet(&["ip", "link", "del", BRIDGE]);
    // Delete every copy of the rule, however many runs inserted it.
    for _ in 0..16 {
        let out = Command::new("iptables")
            .args(["-D", "FORWARD", "-i", BRIDGE, "-o", BRIDGE, "-j", "ACCEPT"])
            .output();
        if !matches!(out, Ok(o) if o.status.success()) {
            break;
        }
    }
}
