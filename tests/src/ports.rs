//! Loopback ports for the servers the tests start (brokers, workers' metrics), leased across
//! the test processes of the machine.
//!
//! A port found free by binding port 0 and letting go of it is free only until someone else
//! binds it, and a broker binds its ports a second or more later, and again on every restart.
//! Two tests starting brokers at once (the fault suite runs two at a time) could so be handed
//! the same port: the second broker cannot bind it, and its test then talks to the first
//! test's broker, or to none once that one stops. A broker restarted on its own port could
//! likewise find it taken meanwhile. Both were seen: a restarted broker's test timing out,
//! its broker's log saying `Address already in use`.
//!
//! So a port is taken below the kernel's ephemeral range (`ip_local_port_range`), where
//! neither port 0 nor an outgoing connection lands, and leased: a file named after the port
//! under `tollgate-kafka-ports` in the temporary directory, created exclusively and holding
//! the owner's process id, removed when the [`PortLease`] drops. A lease whose process is gone
//! (a test killed) is taken over.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::net::TcpListener;
use std::path::PathBuf;

/// The lowest port leased.
const FIRST: u16 = 20_000;

/// A loopback port reserved for this process until dropped.
#[derive(Debug)]
pub struct PortLease {
    port: u16,
    file: Option<PathBuf>,
}

impl PortLease {
    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for PortLease {
    fn drop(&mut self) {
        if let Some(file) = &self.file {
            let _ = fs::remove_file(file);
        }
    }
}

/// A free loopback port, leased to this process (see the module documentation).
pub fn lease() -> PortLease {
    let Some(end) = ephemeral_start().filter(|&start| start > FIRST + 1_000) else {
        // No room below the ephemeral range: a port the kernel hands out, unleased.
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or_else(|e| panic!("cannot bind a loopback port: {e}"));
        return PortLease { port, file: None };
    };
    let dir = std::env::temp_dir().join("tollgate-kafka-ports");
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    let span = u32::from(end - FIRST);
    let seed = std::process::id().wrapping_mul(2_654_435_761)
        ^ std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    for step in 0..span {
        let port = FIRST + ((seed.wrapping_add(step)) % span) as u16;
        let file = dir.join(port.to_string());
        if !claim(&file) {
            continue;
        }
        // Leased; it must also be free (a server outside the tests may hold it).
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return PortLease { port, file: Some(file) };
        }
        let _ = fs::remove_file(&file);
    }
    panic!("no free loopback port between {FIRST} and {end}");
}

/// Creates the lease file, or takes it over from a process that is gone.
fn claim(file: &PathBuf) -> bool {
    for _ in 0..2 {
        match OpenOptions::new().write(true).create_new(true).open(file) {
            Ok(mut f) => {
                let _ = write!(f, "{}", std::process::id());
                return true;
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let holder = fs::read_to_string(file).unwrap_or_default();
                let alive =
                    holder.trim().parse::<u32>().is_ok_and(|pid| PathBuf::from(format!("/proc/{pid}")).exists());
                // An empty file is a lease being written: its owner is alive.
                if alive || holder.is_empty() {
                    return false;
                }
                let _ = fs::remove_file(file);
            }
            Err(_) => return false,
        }
    }
    false
}

/// The first port of the kernel's ephemeral range, if it can be read.
fn ephemeral_start() -> Option<u16> {
    let range = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    range.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two leases never share a port, and a dropped lease frees its file.
    #[test]
    fn leases_are_distinct_and_released() {
        let leases: Vec<PortLease> = (0..20).map(|_| lease()).collect();
        let mut ports: Vec<u16> = leases.iter().map(PortLease::port).collect();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 20);
        let files: Vec<PathBuf> = leases.iter().filter_map(|l| l.file.clone()).collect();
        if ephemeral_start().is_some_and(|start| start > FIRST + 1_000) {
            assert_eq!(files.len(), 20, "every lease holds its file");
        }
        assert!(files.iter().all(|f| f.exists()));
        drop(leases);
        assert!(files.iter().all(|f| !f.exists()));
    }

    /// A lease left by a process that is gone is taken over.
    #[test]
    fn a_dead_holders_lease_is_taken_over() {
        let dir = std::env::temp_dir().join("tollgate-kafka-ports");
        fs::create_dir_all(&dir).unwrap();
        let file = dir.join("19999");
        // Process ids this high are not in use (the default pid_max is 4194304 at most).
        fs::write(&file, "4294967295").unwrap();
        assert!(claim(&file));
        assert_eq!(fs::read_to_string(&file).unwrap(), std::process::id().to_string());
        fs::remove_file(&file).unwrap();
    }
}
