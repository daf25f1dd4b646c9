//! The machine's limits: open files per process, ephemeral ports per source address, and
//! how clients are split between generator processes.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use rlimit::Resource;

/// Clients per source address. One address has about 28,000 ephemeral ports; staying far
/// below that leaves room for sockets in TIME_WAIT from earlier runs.
const CLIENTS_PER_SOURCE: usize = 1_000;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and checks that `needed` descriptors
/// fit. Children (the servers this process starts) inherit the raised limit.
///
/// # Errors
/// `needed` is above the hard limit, which only a privileged process can raise (and on
/// this machine nobody can): the run would fail halfway with EMFILE, so it does not start.
pub(crate) fn raise_nofile(needed: usize) -> Result<u64, String> {
    let (soft, hard) = Resource::NOFILE
        .get()
        .map_err(|e| format!("cannot read RLIMIT_NOFILE: {e}"))?;
    if (needed as u64) > hard {
        return Err(format!(
            "this run needs about {needed} open files in one process but the hard limit \
             (RLIMIT_NOFILE) is {hard}; use fewer clients, or several generator processes \
             (--shard i/n) and several server nodes (--url ...)"
        ));
    }
    if soft < hard {
        Resource::NOFILE
            .set(hard, hard)
            .map_err(|e| format!("cannot raise RLIMIT_NOFILE from {soft} to {hard}: {e}"))?;
    }
    Ok(hard)
}

/// The source address of client `index` (its global index, over all shards): 127.1.x.y,
/// a new address every [`CLIENTS_PER_SOURCE`] clients, so that 100,000 connections to one
/// server port never run out of ephemeral ports. Linux routes all of 127.0.0.0/8 to lo.
pub(crate) fn source_address(index: usize) -> SocketAddr {
    let k = index / CLIENTS_PER_SOURCE;
    let third = u8::try_from(k / 250).unwrap_or(u8::MAX);
    let fourth = u8::try_from(k % 250 + 1).unwrap_or(1);
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 1, third, fourth)), 0)
}

/// A free TCP port on 127.0.0.1 for a server this process starts.
pub(crate) fn free_port() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| format!("cannot find a free port: {e}"))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| e.to_string())
}

/// This process's share of the clients: those whose global index modulo `count` is `index`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shard {
    pub(crate) index: usize,
    pub(crate) count: usize,
}

impl Shard {
    /// Parses `i/n` with `i < n`.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let bad = || format!("--shard wants i/n with 0 <= i < n, got {text:?}");
        let (i, n) = text.split_once('/').ok_or_else(bad)?;
        let index: usize = i.trim().parse().map_err(|_| bad())?;
        let count: usize = n.trim().parse().map_err(|_| bad())?;
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Self { index, count })
    }

    /// Whether client `global` belongs to this shard.
    pub(crate) fn owns(&self, global: usize) -> bool {
        global % self.count == self.index
    }

    /// Shard 0 sends for everyone.
    pub(crate) fn sends(&self) -> bool {
        self.index == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_split_the_clients() {
        let shard = Shard::parse("1/3").unwrap();
        let mine: Vec<usize> = (0..9).filter(|i| shard.owns(*i)).collect();
        assert_eq!(mine, [1, 4, 7]);
        assert!(!shard.sends());
        for bad in ["3/3", "1", "a/2", "0/0"] {
            assert!(Shard::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn source_addresses_spread_over_loopback() {
        assert_eq!(source_address(0).ip().to_string(), "127.1.0.1");
        assert_eq!(source_address(999).ip().to_string(), "127.1.0.1");
        assert_eq!(source_address(1_000).ip().to_string(), "127.1.0.2");
        assert_eq!(source_address(250_000).ip().to_string(), "127.1.1.1");
    }

    #[test]
    fn more_than_the_hard_limit_is_refused() {
        let (_, hard) = Resource::NOFILE.get().unwrap();
        let above = usize::try_from(hard)
            .unwrap_or(usize::MAX)
            .saturating_add(1);
        if (above as u64) > hard {
            let err = raise_nofile(above).unwrap_err();
            assert!(err.contains("hard limit"), "{err}");
        } else {
            // An unlimited hard limit (RLIM_INFINITY): nothing is above it.
            assert!(raise_nofile(above).is_ok());
        }
    }
}
