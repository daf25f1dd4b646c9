//! The `invoke` calls of one socket: each runs in a task of its own, so the reader goes on
//! (a `cancelInvocation` must reach the call it cancels), and every call still waiting when
//! the socket ends is cancelled with it. Azure's client rejects its pending invocations when
//! its socket closes, so an answer after that would reach nobody.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::Edge;
use crate::limits::LimitKind;
use crate::protocol;
use crate::router::Connection;
use crate::upstream::{self, Invocation, Session};

/// The calls in flight on one socket, by invocation id. Dropping it cancels them all.
#[derive(Debug)]
pub(super) struct Invocations {
    inflight: Arc<Mutex<HashMap<String, InFlight>>>,
    /// Parent of every call's token: cancelled when the socket ends.
    socket: CancellationToken,
    next: u64,
}

/// One call waiting for the upstream.
#[derive(Debug)]
struct InFlight {
    /// Tells an ended call from a newer one that reuses its id.
    generation: u64,
    cancel: CancellationToken,
}

impl Invocations {
    pub(super) fn new() -> Self {
        Self {
            inflight: Arc::default(),
            socket: CancellationToken::new(),
            next: 0,
        }
    }

    /// Starts a call, or answers at once with a failed `invokeResponse`: an id already in
    /// flight (`Duplicate`), or more calls than `limits.max_invocations_per_connection`
    /// (`Forbidden`).
    pub(super) fn start(
        &mut self,
        edge: &Arc<Edge>,
        conn: &Arc<Connection>,
        session: &Arc<Session>,
        invocation: Invocation,
    ) {
        let refuse = |name: &str, why: &str| {
            if let Some(frame) =
                protocol::invoke_response(conn.format(), &invocation.id, Err((name, why)))
            {
                conn.send_frame(frame);
            }
        };
        let limit = edge.config.limits.max_invocations_per_connection;
        let mut inflight = lock(&self.inflight);
        if inflight.contains_key(&invocation.id) {
            drop(inflight);
            let why = format!(
                "An invocation with id '{}' is already in flight on this connection.",
                invocation.id
            );
            return refuse("Duplicate", &why);
        }
        if inflight.len() >= limit {
            drop(inflight);
            edge.limits.hit(LimitKind::InvocationsPerConnection);
            let why = format!(
                "The connection has {limit} invocations in flight, its limit (limits.max_invocations_per_connection)."
            );
            return refuse("Forbidden", &why);
        }
        self.next += 1;
        let generation = self.next;
        let cancel = self.socket.child_token();
        let id = invocation.id.clone();
        inflight.insert(
            id.clone(),
            InFlight {
                generation,
                cancel: cancel.clone(),
            },
        );
        drop(inflight);
        let upstream_timeout = edge.config.upstream.timeout;
        let timeout = edge
            .config
            .upstream
            .invoke_timeout
            .map_or(upstream_timeout, |t| t.min(upstream_timeout));
        let (task_edge, conn, session, table) = (
            edge.clone(),
            conn.clone(),
            session.clone(),
            self.inflight.clone(),
        );
        let task = async move {
            tokio::select! {
                () = upstream::on_invoke(&task_edge.upstream, &session, &conn, invocation, timeout) => {}
                () = cancel.cancelled() => tracing::debug!(invocation.id = %id, "invocation cancelled"),
            }
            let mut inflight = lock(&table);
            if inflight
                .get(&id)
                .is_some_and(|c| c.generation == generation)
            {
                inflight.remove(&id);
            }
        };
        edge.tracker.spawn(task.in_current_span());
    }

    /// Cancels a call (a client's `cancelInvocation`): its answer is never sent. An id not in
    /// flight (answered already, or never sent) is ignored.
    pub(super) fn cancel(&self, id: &str) {
        match lock(&self.inflight).remove(id) {
            Some(call) => call.cancel.cancel(),
            None => tracing::debug!(invocation.id = %id, "cancelInvocation for no call in flight"),
        }
    }
}

impl Drop for Invocations {
    fn drop(&mut self) {
        self.socket.cancel();
    }
}

fn lock(table: &Mutex<HashMap<String, InFlight>>) -> MutexGuard<'_, HashMap<String, InFlight>> {
    table.lock().unwrap_or_else(PoisonError::into_inner)
}
