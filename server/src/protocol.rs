//! Client subprotocols: negotiation, and what a connection's messages mean.
//!
//! - No or an unknown subprotocol: a *simple* client. Its frames are raw payloads, and it
//!   receives raw payloads (spec §2.4).
//! - `json.webpubsub.azure.v1`: a PubSub client speaking JSON ([`json`]).
//!
//! The reliable and protobuf subprotocols are not negotiated yet: a client that offers only
//! those gets no `Sec-WebSocket-Protocol` back, so it fails its handshake loudly instead of
//! being silently treated as a simple client.

pub mod json;

use std::collections::{HashSet, VecDeque};

use crate::router::WireFormat;

/// The JSON PubSub subprotocol.
pub const JSON_V1: &str = "json.webpubsub.azure.v1";

/// The subprotocols this server speaks, in order of preference when a client offers several.
const SUPPORTED: &[&str] = &[JSON_V1];

/// Picks the subprotocol for a handshake: the first offered value (across every
/// `Sec-WebSocket-Protocol` header, comma-separated) that is supported, compared
/// case-insensitively as Azure does. Returns the canonical name and the value as offered
/// (which is what the handshake must echo). `None` makes a simple client.
pub fn negotiate<'a>(
    offered: impl IntoIterator<Item = &'a str>,
) -> Option<(&'static str, &'a str)> {
    offered
        .into_iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .find_map(|o| {
            SUPPORTED
                .iter()
                .find(|s| s.eq_ignore_ascii_case(o))
                .map(|s| (*s, o))
        })
}

/// The wire format of a negotiated subprotocol.
pub fn wire_format(subprotocol: Option<&str>) -> WireFormat {
    match subprotocol {
        Some(_) => WireFormat::Json,
        None => WireFormat::Simple,
    }
}

/// How many processed ack ids a connection remembers for `Duplicate` answers (Azure: 1000).
pub const ACK_ID_MEMORY: usize = 1000;

/// The ack ids a connection has processed successfully, so that a retried request is
/// answered `Duplicate` instead of being executed twice. Only successes are remembered:
/// a failed request may be retried with the same id.
#[derive(Debug, Default)]
pub struct AckIds {
    seen: HashSet<u64>,
    order: VecDeque<u64>,
}

impl AckIds {
    /// Whether `id` was already processed.
    pub fn is_duplicate(&self, id: u64) -> bool {
        self.seen.contains(&id)
    }

    /// Remembers a processed id, forgetting the oldest beyond [`ACK_ID_MEMORY`].
    pub fn record(&mut self, id: u64) {
        if self.seen.insert(id) {
            self.order.push_back(id);
            if self.order.len() > ACK_ID_MEMORY
                && let Some(old) = self.order.pop_front()
            {
                self.seen.remove(&old);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiates_case_insensitively_across_headers() {
        assert_eq!(
            negotiate(["JSON.WebPubSub.Azure.V1"]),
            Some((JSON_V1, "JSON.WebPubSub.Azure.V1"))
        );
        assert_eq!(
            negotiate(["foo, json.webpubsub.azure.v1"]),
            Some((JSON_V1, JSON_V1))
        );
        assert_eq!(
            negotiate(["foo", "json.webpubsub.azure.v1"]),
            Some((JSON_V1, JSON_V1))
        );
        assert_eq!(negotiate(["json.reliable.webpubsub.azure.v1"]), None);
        assert_eq!(negotiate([]), None);
    }

    #[test]
    fn ack_ids_remember_a_bounded_window() {
        let mut ids = AckIds::default();
        for id in 0..=ACK_ID_MEMORY as u64 {
            ids.record(id);
        }
        assert!(!ids.is_duplicate(0), "oldest forgotten");
        assert!(ids.is_duplicate(1));
        assert!(ids.is_duplicate(ACK_ID_MEMORY as u64));
    }
}
