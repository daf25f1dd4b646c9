//! Socket.IO long-polling across nodes, so that polling sessions work behind a load balancer
//! without session affinity.
//!
//! An Engine.IO session lives on the node that created it, and its `sid` is its connection
//! id, which starts with that node's id. A poll that lands on another node is served, not
//! redirected (a redirect cannot pin the next request through a balancer without affinity):
//! the node that took it relays it to the owner over the backplane and writes the owner's
//! HTTP answer as is.
//!
//! - a `POST`'s body is read and bounded (`socketio.max_payload_bytes`, the request body
//!   timeout) where it arrives, then handed to the owner, which handles its packets as for
//!   a local `POST`; a body refused there ends the session at the owner, as a local one would;
//! - a `GET` is held at the owner, as a local one, at most `socketio.max_poll_duration`, and
//!   its answer comes back; the relaying node waits that long plus the backplane's answer
//!   timeout, so the owner always answers before the asker gives up;
//! - the per-session rules hold, since the owner applies them: one `GET` and one `POST` at a
//!   time, wherever they arrive. Each node serves at most `socketio.max_relayed_polls`
//!   relayed requests at once; beyond that the asker gets a `503`;
//! - an owner that is gone answers nothing: the client hears Engine.IO's "Session ID
//!   unknown" and starts a new session; a backplane that is down is a `503`.
//!
//! The node that holds the session is the only one that touches it, so nothing about a
//! session is shared through Redis. A session's upgrade to WebSocket may land anywhere too:
//! the node that takes the WebSocket tells the owner of the probe (its pending poll ends with
//! a no-op, so the client can switch) and of the switch, then serves the WebSocket as a
//! long-polling client of the owner would, relaying a `GET` at a time for what goes to the
//! client and a `POST` for each message from it.

use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use prost::Message as _;
use tokio::sync::{mpsc, oneshot};

use super::{Node, Result};
use crate::cluster::wire::{Body, PollAnswer, Reply, SocketIoPoll};
use crate::cluster::{ANSWER_TIMEOUT, Asker, Cluster, ClusterError};

/// What a relayed long-polling request asks of the owner.
#[derive(Debug)]
pub(crate) enum PollRequest {
    /// A `GET`: what is queued for the session, or wait for it.
    Get,
    /// A `POST` with its body.
    Post(Bytes),
    /// A `POST` whose body the relaying node refused, or the end of the WebSocket it served
    /// the session over (why): end the session.
    RefusedPost(String),
    /// The client probed a WebSocket for the session on the relaying node: end pending polls
    /// with a no-op so the client can switch.
    Probed,
    /// The client switched to that WebSocket, which the relaying node serves with relayed
    /// polls and posts from now on (or the upgrade was abandoned): polls are served again.
    Switched,
}

/// An HTTP answer to a long-polling request, as the owner wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PollReply {
    pub(crate) status: u16,
    pub(crate) content_type: String,
    pub(crate) body: Bytes,
}

/// A long-polling request another node took for a session of this one: the Socket.IO edge
/// serves it and sends the answer back through `answer`.
#[derive(Debug)]
pub(crate) struct RelayedPoll {
    pub(crate) hub: String,
    pub(crate) sid: String,
    pub(crate) request: PollRequest,
    pub(crate) answer: oneshot::Sender<PollReply>,
}

/// Where relayed polls go: set once, by the Socket.IO edge.
#[derive(Debug, Default)]
pub(super) struct PollHost(OnceLock<mpsc::Sender<RelayedPoll>>);

/// Relayed polls waiting for the edge to pick them up (it takes them at once; the edge bounds
/// how many it serves at a time).
const HOST_QUEUE: usize = 256;

/// Where a long-polling request for `sid` must be served.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PollOwner {
    /// Here (a single node, or a session of this node).
    Here,
    /// On another node of the cluster.
    Remote(String),
}

impl Node {
    /// Where the Engine.IO session `sid` lives: its id names its node.
    pub(crate) fn poll_owner(&self, sid: &str) -> PollOwner {
        match self.cluster() {
            Some(cluster) => match cluster.owner_of(sid) {
                Some(owner) if owner != cluster.node() => PollOwner::Remote(owner.to_owned()),
                _ => PollOwner::Here,
            },
            None => PollOwner::Here,
        }
    }

    /// Relays a long-polling request for session `sid` of `hub` to `owner` and waits up to
    /// `hold` (the owner's longest poll) plus the backplane's answer timeout for its answer.
    /// `Ok(None)`: the owner is gone, and the session with it.
    ///
    /// # Errors
    /// [`NodeError::Cluster`](super::NodeError::Cluster): the backplane is down, or the owner
    /// is alive and did not answer; [`NodeError::Remote`](super::NodeError::Remote): the owner
    /// could not serve it (too many relayed polls there).
    pub(crate) async fn relay_poll(
        &self,
        owner: &str,
        hub: &str,
        sid: &str,
        request: PollRequest,
        hold: Duration,
    ) -> Result<Option<PollReply>> {
        let Some(cluster) = self.cluster() else {
            return Ok(None);
        };
        let (post, payload, refused, upgrade) = match request {
            PollRequest::Get => (false, Bytes::new(), None, 0),
            PollRequest::Post(body) => (true, body, None, 0),
            PollRequest::RefusedPost(why) => (true, Bytes::new(), Some(why), 0),
            PollRequest::Probed => (false, Bytes::new(), None, SocketIoPoll::PROBED),
            PollRequest::Switched => (false, Bytes::new(), None, SocketIoPoll::SWITCHED),
        };
        let body = Body::SocketIoPoll(SocketIoPoll {
            hub: hub.to_owned(),
            sid: sid.to_owned(),
            post,
            payload,
            refused,
            upgrade,
        });
        let Some(reply) = cluster
            .ask_within(owner, body, hold + ANSWER_TIMEOUT)
            .await?
        else {
            return Ok(None);
        };
        if reply.error_code != 0 {
            return Err(ClusterError::Unavailable(reply.message).into());
        }
        let answer = PollAnswer::decode(&reply.body[..]).map_err(|e| {
            ClusterError::Unavailable(format!("node {owner} sent an undecodable poll answer: {e}"))
        })?;
        Ok(Some(PollReply {
            status: u16::try_from(answer.status).unwrap_or(500),
            content_type: answer.content_type,
            body: answer.body,
        }))
    }

    /// Where the long-polling requests other nodes relay here go: the Socket.IO edge calls
    /// this once, at start, and serves what comes out. `None` if it was called before.
    pub(crate) fn host_relayed_polls(&self) -> Option<mpsc::Receiver<RelayedPoll>> {
        let (tx, rx) = mpsc::channel(HOST_QUEUE);
        self.inner.polls.0.set(tx).ok().map(|()| rx)
    }

    /// Hands a relayed poll to the Socket.IO edge and answers the asker once it is served,
    /// in a task of its own: a `GET` is held for up to the poll duration, and the requests of
    /// the other nodes must not wait behind it.
    pub(super) fn serve_relayed_poll(
        &self,
        cluster: &std::sync::Arc<Cluster>,
        poll: SocketIoPoll,
        asker: Asker,
    ) {
        let refuse = |message: &str| Reply {
            error_code: 0,
            body: PollAnswer {
                status: 503,
                content_type: "application/json".into(),
                body: serde_json::json!({ "code": 3, "message": message })
                    .to_string()
                    .into(),
            }
            .encode_to_vec(),
            ..Reply::default()
        };
        let Some(host) = self.inner.polls.0.get() else {
            cluster.answer(asker, refuse("this node serves no Socket.IO sessions"));
            return;
        };
        let request = match (poll.upgrade, poll.post, poll.refused) {
            (SocketIoPoll::PROBED, _, _) => PollRequest::Probed,
            (SocketIoPoll::SWITCHED, _, _) => PollRequest::Switched,
            (_, false, _) => PollRequest::Get,
            (_, true, Some(why)) => PollRequest::RefusedPost(why),
            (_, true, None) => PollRequest::Post(poll.payload),
        };
        let (answer, answered) = oneshot::channel();
        let relayed = RelayedPoll {
            hub: poll.hub,
            sid: poll.sid,
            request,
            answer,
        };
        if host.try_send(relayed).is_err() {
            cluster.answer(
                asker,
                refuse("the node holding this session cannot take more relayed polls now"),
            );
            return;
        }
        let cluster = cluster.clone();
        tokio::spawn(async move {
            let reply = match answered.await {
                Ok(answer) => Reply {
                    body: PollAnswer {
                        status: u32::from(answer.status),
                        content_type: answer.content_type,
                        body: answer.body,
                    }
                    .encode_to_vec(),
                    ..Reply::default()
                },
                Err(_) => refuse("the node holding this session is shutting down"),
            };
            cluster.answer(asker, reply);
        });
    }
}
