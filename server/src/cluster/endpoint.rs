//! Where the backplane's Redis is: one server (`cluster.redis_url`), or a Redis Cluster
//! reached through seed nodes (`cluster.redis_cluster_nodes`).
//!
//! Commands and publishes go through one [`Commands`] handle either way: redis-rs's
//! `ConnectionManager` for one server, its async cluster client for a Redis Cluster (which
//! follows `MOVED`, reconnects and refreshes the slot map by itself). Every key and channel of
//! a Hubcast cluster carries the hash tag `{prefix}`, so they all live in one hash slot: the
//! pipelines and `MGET` of the backplane never cross slots, and every `PUBLISH` goes to the
//! master of that slot.
//!
//! The subscription is classic `SUBSCRIBE` on a plain pub/sub connection to that same master.
//! Redis Cluster forwards a classic `PUBLISH` to every node, so any node would deliver the
//! messages; but `PUBLISH` counts only the subscribers of the node it ran on, and the
//! backplane reads that count (how many nodes heard a question, whether a node still exists).
//! With every Hubcast node subscribed on the master that receives every `PUBLISH`, the count
//! means what it means on one server. The master is found with `CLUSTER KEYSLOT` and
//! `CLUSTER SLOTS`, asked of the seeds and then of every node seen in an earlier answer; the
//! subscriber asks again periodically and resubscribes when the slot has moved (a failover
//! or a resharding).

use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use crate::config::RedisTarget;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig, PubSub};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{
    Cmd, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, Pipeline, RedisFuture, Value,
};

/// The command connection of the backplane: one code path for both kinds of Redis.
#[derive(Clone)]
pub(crate) enum Commands {
    /// One server, reconnected by the manager.
    Single(ConnectionManager),
    /// A Redis Cluster, routed by key slot.
    Cluster(ClusterConnection),
}

impl ConnectionLike for Commands {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(cmd, offset, count),
            Self::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

/// A Redis the backplane can connect to.
pub(crate) struct Endpoint {
    target: RedisTarget,
    kind: Kind,
}

enum Kind {
    Single(redis::Client),
    Cluster {
        /// The seeds, as configured.
        seeds: Vec<ConnectionInfo>,
        /// Nodes named by the last `CLUSTER SLOTS` answer, asked when no seed answers.
        known: Mutex<Vec<(String, u16)>>,
    },
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The target only: URLs may hold a password, which `Display` of the error paths
        // prints as configured by the operator, but Debug output goes to wider places.
        f.debug_struct("Endpoint")
            .field(
                "kind",
                &match self.target {
                    RedisTarget::Single(_) => "single",
                    RedisTarget::Cluster(_) => "cluster",
                },
            )
            .finish_non_exhaustive()
    }
}

/// The master of the backplane's hash slot, as found by [`Endpoint::slot_master`].
pub(crate) type NodeAddr = (String, u16);

impl Endpoint {
    /// Parses the URL(s) of `target`.
    pub(crate) fn new(target: RedisTarget) -> Result<Self, String> {
        let kind = match &target {
            RedisTarget::Single(url) => {
                Kind::Single(redis::Client::open(url.as_str()).map_err(|e| e.to_string())?)
            }
            RedisTarget::Cluster(urls) => {
                if urls.is_empty() {
                    return Err("no seed node given".into());
                }
                let seeds = urls
                    .iter()
                    .map(|u| {
                        let info = u
                            .as_str()
                            .into_connection_info()
                            .map_err(|e| e.to_string())?;
                        if info.redis_settings().db() != 0 {
                            return Err(format!(
                                "{u}: a Redis Cluster has no databases; leave out the /db"
                            ));
                        }
                        match info.addr() {
                            ConnectionAddr::Tcp(..) => Ok(info),
                            _ => Err(format!(
                                "{u}: a Redis Cluster seed must be redis://host:port"
                            )),
                        }
                    })
                    .collect::<Result<Vec<_>, String>>()?;
                Kind::Cluster {
                    seeds,
                    known: Mutex::new(Vec::new()),
                }
            }
        };
        Ok(Self { target, kind })
    }

    /// Opens the command connection, with `timeout` per connection attempt and per command.
    pub(crate) async fn commands(
        &self,
        timeout: Duration,
        max_backoff: Duration,
    ) -> Result<Commands, String> {
        match &self.kind {
            Kind::Single(client) => {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout))
                    .set_number_of_retries(1)
                    .set_max_delay(max_backoff);
                ConnectionManager::new_with_config(client.clone(), config)
                    .await
                    .map(Commands::Single)
                    .map_err(|e| e.to_string())
            }
            Kind::Cluster { seeds, .. } => {
                // Few, quick retries: a command the caller waits on must fail within its
                // timeout (and mark the node degraded) rather than retry for seconds; the
                // client refreshes its slot map and reconnects on the next command anyway.
                let client = ClusterClientBuilder::new(seeds.clone())
                    .connection_timeout(timeout)
                    .response_timeout(timeout)
                    .retries(2)
                    .min_retry_wait(50)
                    .max_retry_wait(u64::try_from(max_backoff.as_millis()).unwrap_or(u64::MAX))
                    .build()
                    .map_err(|e| e.to_string())?;
                client
                    .get_async_connection()
                    .await
                    .map(Commands::Cluster)
                    .map_err(|e| e.to_string())
            }
        }
    }

    /// Opens a pub/sub connection to the server that carries the backplane's channels: the
    /// one server, or the master of `slot_key`'s hash slot (returned too, to check later that
    /// it still is).
    pub(crate) async fn pubsub(
        &self,
        slot_key: &str,
        timeout: Duration,
    ) -> Result<(PubSub, Option<NodeAddr>), String> {
        match &self.kind {
            Kind::Single(client) => {
                let pubsub = tokio::time::timeout(timeout, client.get_async_pubsub())
                    .await
                    .map_err(|_| "connection timed out".to_owned())?
                    .map_err(|e| e.to_string())?;
                Ok((pubsub, None))
            }
            Kind::Cluster { seeds, .. } => {
                let master = self.slot_master(slot_key, timeout).await?;
                let info = seeds[0]
                    .clone()
                    .set_addr(ConnectionAddr::Tcp(master.0.clone(), master.1));
                let client = redis::Client::open(info).map_err(|e| e.to_string())?;
                let pubsub = tokio::time::timeout(timeout, client.get_async_pubsub())
                    .await
                    .map_err(|_| format!("{}:{}: connection timed out", master.0, master.1))?
                    .map_err(|e| format!("{}:{}: {e}", master.0, master.1))?;
                Ok((pubsub, Some(master)))
            }
        }
    }

    /// The master that owns `key`'s hash slot, asked of the seeds in order and then of the
    /// nodes the last answer named; the first node that answers decides.
    pub(crate) async fn slot_master(
        &self,
        key: &str,
        timeout: Duration,
    ) -> Result<NodeAddr, String> {
        let Kind::Cluster { seeds, known } = &self.kind else {
            return Err("not a Redis Cluster".into());
        };
        let mut candidates: Vec<ConnectionInfo> = seeds.clone();
        let learned = known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        for (host, port) in learned {
            let addr = ConnectionAddr::Tcp(host, port);
            if !candidates.iter().any(|c| *c.addr() == addr) {
                candidates.push(seeds[0].clone().set_addr(addr));
            }
        }
        let mut last_error = String::from("no node to ask");
        for info in candidates {
            let asked = info.addr().to_string();
            match tokio::time::timeout(timeout, ask_slots(info, key)).await {
                Ok(Ok((master, nodes))) => {
                    *known
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = nodes;
                    return Ok(master);
                }
                Ok(Err(e)) => last_error = format!("{asked}: {e}"),
                Err(_) => last_error = format!("{asked}: timed out"),
            }
        }
        Err(format!(
            "no Redis Cluster node told where the backplane's slot is ({last_error})"
        ))
    }
}

/// Asks one node which master owns `key`'s slot; returns it and every node the answer names.
async fn ask_slots(info: ConnectionInfo, key: &str) -> Result<(NodeAddr, Vec<NodeAddr>), String> {
    let ConnectionAddr::Tcp(asked_host, _) = info.addr().clone() else {
        return Err("not a TCP address".into());
    };
    let client = redis::Client::open(info).map_err(|e| e.to_string())?;
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| e.to_string())?;
    let (slot, slots): (i64, Value) = redis::pipe()
        .cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(key)
        .cmd("CLUSTER")
        .arg("SLOTS")
        .query_async(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    parse_slots(&slots, slot, &asked_host)
}

/// Reads a `CLUSTER SLOTS` answer: `[[start, end, [host, port, id, ...], replicas...], ...]`.
/// An empty host means the node that answered.
fn parse_slots(
    slots: &Value,
    slot: i64,
    asked_host: &str,
) -> Result<(NodeAddr, Vec<NodeAddr>), String> {
    let malformed = || "unexpected CLUSTER SLOTS answer".to_owned();
    let Value::Array(ranges) = slots else {
        return Err(malformed());
    };
    let node = |v: &Value| -> Option<NodeAddr> {
        let Value::Array(parts) = v else { return None };
        let host = match parts.first()? {
            Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
            Value::SimpleString(s) => s.clone(),
            _ => return None,
        };
        let port = match parts.get(1)? {
            Value::Int(p) => u16::try_from(*p).ok()?,
            _ => return None,
        };
        let host = if host.is_empty() || host == "?" {
            asked_host.to_owned()
        } else {
            host
        };
        Some((host, port))
    };
    let mut master = None;
    let mut nodes = Vec::new();
    for range in ranges {
        let Value::Array(parts) = range else {
            return Err(malformed());
        };
        let (Some(Value::Int(start)), Some(Value::Int(end))) = (parts.first(), parts.get(1)) else {
            return Err(malformed());
        };
        for (i, n) in parts.iter().skip(2).enumerate() {
            let addr = node(n).ok_or_else(malformed)?;
            if i == 0 && (*start..=*end).contains(&slot) {
                master = Some(addr.clone());
            }
            if !nodes.contains(&addr) {
                nodes.push(addr);
            }
        }
    }
    match master {
        Some(m) => Ok((m, nodes)),
        None => Err(format!("slot {slot} is not served by any master")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(host: &str, port: i64) -> Value {
        Value::Array(vec![
            Value::BulkString(host.as_bytes().to_vec()),
            Value::Int(port),
            Value::BulkString(b"id".to_vec()),
        ])
    }

    #[test]
    fn finds_the_master_of_a_slot_and_every_node() {
        let slots = Value::Array(vec![
            Value::Array(vec![
                Value::Int(0),
                Value::Int(5460),
                node("10.0.0.1", 7000),
            ]),
            Value::Array(vec![
                Value::Int(5461),
                Value::Int(10922),
                node("", 7001),
                node("10.0.0.4", 7004),
            ]),
        ]);
        let (master, nodes) = parse_slots(&slots, 6000, "10.0.0.9").expect("parses");
        assert_eq!(master, ("10.0.0.9".to_owned(), 7001));
        assert_eq!(nodes.len(), 3);
        assert!(nodes.contains(&("10.0.0.4".to_owned(), 7004)));
        let err = parse_slots(&slots, 12000, "h").expect_err("uncovered slot");
        assert!(err.contains("12000"), "{err}");
        assert!(parse_slots(&Value::Int(1), 0, "h").is_err());
    }

    #[test]
    fn cluster_seeds_must_be_tcp_urls() {
        assert!(Endpoint::new(RedisTarget::Cluster(Vec::new())).is_err());
        assert!(Endpoint::new(RedisTarget::Cluster(vec!["redis://127.0.0.1:7000".into()])).is_ok());
        assert!(Endpoint::new(RedisTarget::Cluster(vec!["nonsense".into()])).is_err());
        assert!(Endpoint::new(RedisTarget::Cluster(vec!["redis://h:7000/2".into()])).is_err());
    }
}
