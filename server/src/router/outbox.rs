//! The bounded queue between fan-out and one connection's socket writer, and, for reliable
//! subprotocols, the buffer of messages the client has not acknowledged yet.
//!
//! Fan-out never waits on a client: it appends a shared [`Frame`] and moves on. The writer
//! takes everything queued in one go and writes it with a single flush, so a burst costs one
//! syscall-sized write rather than one per message. When a client falls more than the byte
//! limit behind, its outbox closes itself; the slow client is dropped, nobody else notices.
//!
//! A reliable outbox numbers each data message (`sequenceId`, from 1) as it is queued and
//! keeps it until the client acknowledges it. The number travels beside the shared frame and
//! is spliced in only when the writer renders the frame for the socket, so fan-out to reliable
//! clients still shares one encoding. When the socket is lost the outbox *detaches*: the
//! queue for the dead socket is dropped, new messages keep being numbered and buffered, and a
//! later [`Outbox::reattach`] queues every unacknowledged message again, in order. Reliable
//! clients are bounded by their unacknowledged buffer (count and bytes) instead of the
//! outbox's byte limit: overflowing it ends the logical connection.
//!
//! An acknowledgement only counts for messages already handed to the socket: the writer
//! reports each sequence id it has fed to the WebSocket ([`Outbox::written`]), and an
//! acknowledgement above the highest of them is ignored. Otherwise a client that stops
//! reading and acknowledges `u64::MAX` would empty the buffer of messages it never got, and
//! the queue behind its stalled socket would grow without bound: with the rule, every
//! message still queued is also unacknowledged, so the buffer limit bounds the queue. The
//! queue of a reliable outbox is bounded on its own as well (`limit` plus the buffer's byte
//! limit, for the control frames beside the data), and overflowing it also ends the logical
//! connection (1008): the client was not reading, and what it was owed is gone.
//!
//! A data message sent with a time to live ([`Outbox::push_data_until`]) carries its expiry
//! beside the frame; the writer drops a copy it reaches at or after that instant instead of
//! writing it, so a client that cannot take the message in time never gets it. The TTL
//! applies to non-reliable connections only: on a reliable connection the message is
//! numbered and owed until acknowledged, and dropping it would leave a hole in the
//! `sequenceId`s the client acknowledges and a recovery resends. There the reliable
//! guarantee wins, and the message is written (and resent after a recovery) like any other.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::message::{Frame, Origin, Queued, close};

/// Why and how a connection is being closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Close {
    /// The server closes: send what is queued (unless `discard_queued`), then a `disconnected`
    /// system message (for protocol clients) and a close frame with `code` and `reason`.
    Server {
        /// WebSocket close code.
        code: u16,
        /// Human-readable reason, also the `disconnected` message text.
        reason: String,
        /// Drop queued frames first (the client is too slow to be owed them).
        discard_queued: bool,
    },
    /// The peer closed or the socket failed for good: nothing more is written.
    Peer,
}

/// The result of a push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    /// Queued for writing (or, while detached, buffered for the next socket).
    Queued,
    /// The frame did not fit: the outbox has closed itself (the caller counts it).
    Overflow,
    /// The connection is already closing; the frame was dropped.
    Closed,
}

/// What the writer gets from [`Outbox::take`] besides frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Taken {
    /// Frames were moved into the batch.
    Frames,
    /// A close has started and the queue is drained.
    Close(Close),
    /// This writer's socket is no longer the connection's (lost, or replaced by a recovery).
    Detached,
}

/// Limits of a reliable connection's unacknowledged buffer (Azure: 1000 messages, 16 MB).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReliableLimits {
    /// Most unacknowledged messages.
    pub max_messages: usize,
    /// Most unacknowledged payload bytes.
    pub max_bytes: usize,
}

impl Default for ReliableLimits {
    fn default() -> Self {
        Self {
            max_messages: 1000,
            max_bytes: 16 * 1024 * 1024,
        }
    }
}

#[derive(Debug)]
struct Reliable {
    limits: ReliableLimits,
    next_sequence_id: u64,
    unacked: VecDeque<(u64, Frame)>,
    unacked_bytes: usize,
    /// No socket is attached; messages are only buffered.
    detached: bool,
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Queued>,
    bytes: usize,
    close: Option<Close>,
    /// Bumped by every (re)attachment, so a writer of an earlier socket knows it is stale.
    epoch: u64,
    reliable: Option<Reliable>,
}

/// A bounded, byte-counted queue of frames for one connection.
#[derive(Debug)]
pub struct Outbox {
    state: Mutex<State>,
    /// Wakes the writer. `notify_one` keeps a permit when nobody waits, so a push between
    /// the writer's check and its wait is never lost.
    wake: Notify,
    /// Fires when a close that discards the queue starts (the client is being dropped), for
    /// a writer blocked on the socket rather than on [`Outbox::take`].
    abandoned: CancellationToken,
    /// Fires when any close starts, for tasks that wait on a detached connection.
    closed: CancellationToken,
    limit: usize,
    /// The highest sequence id a writer has fed to a socket (0: none yet): no client can
    /// have received more, so [`Outbox::acknowledge`] ignores acknowledgements above it. An
    /// atomic rather than a field under the lock: the writer raises it once per data frame,
    /// and it must not contend with fan-out for the lock to do so. Relaxed ordering is
    /// enough: a socket's writer and reader run in one task, and the writer raises it before
    /// that task can yield, so the reader sees every id fed before the client can have it;
    /// across the sockets of a recovery, the round trip through the client orders them.
    written: AtomicU64,
}

impl Outbox {
    /// An empty outbox holding at most `limit` bytes of payload.
    pub fn new(limit: usize) -> Self {
        Self {
            state: Mutex::new(State::default()),
            wake: Notify::new(),
            abandoned: CancellationToken::new(),
            closed: CancellationToken::new(),
            limit,
            written: AtomicU64::new(0),
        }
    }

    /// An outbox for a reliable subprotocol.
    pub fn reliable(limit: usize, limits: ReliableLimits) -> Self {
        let outbox = Self::new(limit);
        outbox.lock().reliable = Some(Reliable {
            limits,
            next_sequence_id: 1,
            unacked: VecDeque::new(),
            unacked_bytes: 0,
            detached: false,
        });
        outbox
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock leaves a consistent queue (every mutation is a
        // single push/take), so a poisoned lock is safe to keep using.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether this outbox numbers and buffers data messages.
    pub fn is_reliable(&self) -> bool {
        self.lock().reliable.is_some()
    }

    /// Queues a control frame (ack, pong, system message): never numbered, never buffered for
    /// recovery. Dropped while detached: it answered a socket that is gone.
    pub fn push(&self, frame: Frame) -> Push {
        let state = self.lock();
        if state.close.is_some() {
            return Push::Closed;
        }
        if state.reliable.as_ref().is_some_and(|r| r.detached) {
            return Push::Queued;
        }
        if self.is_full(&state, &frame) {
            return self.overflow(state);
        }
        self.enqueue(
            state,
            Queued {
                frame,
                sequence_id: None,
                expires: None,
                published: None,
                trace: None,
            },
        )
    }

    /// Queues a data message (a group or server message). A reliable outbox numbers it and
    /// keeps it until acknowledged.
    pub fn push_data(&self, frame: Frame) -> Push {
        self.push_data_until(frame, None)
    }

    /// Queues a data message that expires at `expires` (a message TTL): the writer drops it
    /// instead of writing it if it only gets to it then or later. A reliable outbox ignores
    /// the expiry (see the module documentation) and numbers and buffers it as
    /// [`Outbox::push_data`] does.
    pub fn push_data_until(&self, frame: Frame, expires: Option<Instant>) -> Push {
        self.push_message(frame, expires, &Origin::default())
    }

    /// [`Outbox::push_data_until`] of a message whose copy carries `origin` (fan-out's
    /// timestamp and trace) to the writer.
    pub fn push_message(&self, frame: Frame, expires: Option<Instant>, origin: &Origin) -> Push {
        let mut state = self.lock();
        if state.close.is_some() {
            return Push::Closed;
        }
        let queue_full = self.is_full(&state, &frame);
        let Some(r) = &mut state.reliable else {
            if queue_full {
                return self.overflow(state);
            }
            return self.enqueue(
                state,
                Queued {
                    frame,
                    sequence_id: None,
                    expires,
                    published: origin.published,
                    trace: origin.trace.clone(),
                },
            );
        };
        if r.unacked.len() >= r.limits.max_messages
            || r.unacked_bytes + frame.len() > r.limits.max_bytes
        {
            let reason = format!(
                "The connection was closed because more than {} messages or {} bytes were \
                 not acknowledged by the client.",
                r.limits.max_messages, r.limits.max_bytes
            );
            return self.close_locked(
                state,
                Close::Server {
                    code: close::UNRECOVERABLE,
                    reason,
                    discard_queued: true,
                },
                Push::Overflow,
            );
        }
        // Every queued data message is also unacknowledged, so the checks above bound them;
        // this bounds the queue as a whole (data and control frames), as for other outboxes.
        if queue_full {
            return self.overflow(state);
        }
        let sequence_id = r.next_sequence_id;
        r.next_sequence_id += 1;
        r.unacked_bytes += frame.len();
        r.unacked.push_back((sequence_id, frame.clone()));
        if r.detached {
            return Push::Queued;
        }
        self.enqueue(
            state,
            Queued {
                frame,
                sequence_id: Some(sequence_id),
                expires: None,
                published: origin.published,
                trace: origin.trace.clone(),
            },
        )
    }

    /// Whether `frame` does not fit in the queue. The limit is `limit` bytes, plus, for a
    /// reliable outbox, its unacknowledged buffer's byte limit (its data messages sit in the
    /// queue too). An empty queue takes one frame whatever its size: the frame-size limit is
    /// enforced elsewhere, and refusing it would make the message undeliverable.
    fn is_full(&self, state: &State, frame: &Frame) -> bool {
        let limit = self.limit + state.reliable.as_ref().map_or(0, |r| r.limits.max_bytes);
        state.bytes + frame.len() > limit && !state.queue.is_empty()
    }

    fn enqueue(&self, mut state: std::sync::MutexGuard<'_, State>, item: Queued) -> Push {
        let was_empty = state.queue.is_empty();
        state.bytes += item.frame.len();
        state.queue.push_back(item);
        drop(state);
        if was_empty {
            self.wake.notify_one();
        }
        Push::Queued
    }

    /// Closes an outbox whose queue is full. A reliable one closes with 1008: its buffer is
    /// discarded with the queue, so the connection cannot be recovered.
    fn overflow(&self, state: std::sync::MutexGuard<'_, State>) -> Push {
        let code = if state.reliable.is_some() {
            close::UNRECOVERABLE
        } else {
            close::SLOW_CONSUMER
        };
        self.close_locked(
            state,
            Close::Server {
                code,
                reason: "The connection was closed because the client did not read its \
                         messages fast enough (outbox full)."
                    .into(),
                discard_queued: true,
            },
            Push::Overflow,
        )
    }

    /// The writer has fed the data message `sequence_id` to the socket: from now on the
    /// client may acknowledge it.
    pub fn written(&self, sequence_id: u64) {
        self.written.fetch_max(sequence_id, Ordering::Relaxed);
    }

    /// Drops every buffered message up to and including `sequence_id` (a cumulative ack).
    /// Returns false, and drops nothing, when `sequence_id` is above every sequence id
    /// written to a socket so far: the client claims messages it cannot have received.
    pub fn acknowledge(&self, sequence_id: u64) -> bool {
        if sequence_id > self.written.load(Ordering::Relaxed) {
            return false;
        }
        let mut state = self.lock();
        if let Some(r) = &mut state.reliable {
            while r.unacked.front().is_some_and(|(id, _)| *id <= sequence_id) {
                if let Some((_, frame)) = r.unacked.pop_front() {
                    r.unacked_bytes -= frame.len();
                }
            }
        }
        true
    }

    /// Messages waiting for an acknowledgement (reliable outboxes), and their bytes.
    pub fn unacknowledged(&self) -> (usize, usize) {
        self.lock()
            .reliable
            .as_ref()
            .map_or((0, 0), |r| (r.unacked.len(), r.unacked_bytes))
    }

    /// Starts closing. The first close wins; returns whether this call was it.
    pub fn close(&self, close: Close) -> bool {
        let state = self.lock();
        if state.close.is_some() {
            return false;
        }
        self.close_locked(state, close, Push::Closed);
        true
    }

    fn close_locked(
        &self,
        mut state: std::sync::MutexGuard<'_, State>,
        close: Close,
        result: Push,
    ) -> Push {
        let discard = matches!(
            close,
            Close::Server {
                discard_queued: true,
                ..
            }
        );
        if discard {
            state.queue.clear();
            state.bytes = 0;
        }
        if let Some(r) = &mut state.reliable {
            r.unacked.clear();
            r.unacked_bytes = 0;
        }
        state.close = Some(close);
        drop(state);
        if discard {
            self.abandoned.cancel();
        }
        self.closed.cancel();
        self.wake.notify_one();
        result
    }

    /// The current attachment epoch, for [`Outbox::take`] and [`Outbox::detach`].
    pub fn epoch(&self) -> u64 {
        self.lock().epoch
    }

    /// A reliable connection lost socket `epoch`: keep numbering and buffering messages for a
    /// recovery, drop the queue of the dead socket. Returns false (nothing changes) for
    /// non-reliable outboxes, once a close has started, or if `epoch` is stale.
    pub fn detach(&self, epoch: u64) -> bool {
        let mut state = self.lock();
        if state.close.is_some() || state.epoch != epoch {
            return false;
        }
        let Some(r) = &mut state.reliable else {
            return false;
        };
        r.detached = true;
        state.queue.clear();
        state.bytes = 0;
        state.epoch += 1;
        drop(state);
        self.wake.notify_one();
        true
    }

    /// Ends a detached connection (its recovery window passed, or it was closed while no
    /// socket was attached), unless a socket was attached since `epoch`. Returns whether the
    /// caller must now remove the connection.
    pub fn expire(&self, epoch: u64) -> bool {
        let state = self.lock();
        let detached = state.reliable.as_ref().is_some_and(|r| r.detached);
        if state.epoch != epoch || !detached {
            return false;
        }
        if state.close.is_none() {
            self.close_locked(state, Close::Peer, Push::Closed);
        }
        true
    }

    /// Resolves once any close has started.
    pub async fn closed(&self) {
        self.closed.cancelled().await;
    }

    /// Attaches a new socket to a reliable connection (a recovery): the previous socket's
    /// writer sees [`Taken::Detached`], and `first` (the new `connected` message) followed by
    /// every unacknowledged message, in order, is queued for the new one. Returns the new
    /// epoch, or `None` when the connection is closing or not reliable.
    pub fn reattach(&self, first: Option<Frame>) -> Option<u64> {
        let mut state = self.lock();
        if state.close.is_some() {
            return None;
        }
        let state = &mut *state;
        let r = state.reliable.as_mut()?;
        r.detached = false;
        state.epoch += 1;
        state.queue.clear();
        state.bytes = 0;
        if let Some(frame) = first {
            state.bytes += frame.len();
            state.queue.push_back(Queued {
                frame,
                sequence_id: None,
                expires: None,
                published: None,
                trace: None,
            });
        }
        for (id, frame) in &r.unacked {
            state.bytes += frame.len();
            state.queue.push_back(Queued {
                frame: frame.clone(),
                sequence_id: Some(*id),
                expires: None,
                published: None,
                trace: None,
            });
        }
        let epoch = state.epoch;
        self.wake.notify_waiters();
        self.wake.notify_one();
        Some(epoch)
    }

    /// Whether a close has started.
    pub fn is_closing(&self) -> bool {
        self.lock().close.is_some()
    }

    /// Bytes currently queued.
    pub fn queued_bytes(&self) -> usize {
        self.lock().bytes
    }

    /// The close that has started, if any.
    pub fn current_close(&self) -> Option<Close> {
        self.lock().close.clone()
    }

    /// Waits until there is something to do for the writer of socket `epoch`, then moves
    /// every queued frame into `batch`, leaving out those whose TTL has passed. When all of
    /// them had expired the batch gets nothing and the result is still [`Taken::Frames`]: the
    /// writer comes back for more.
    pub async fn take(&self, epoch: u64, batch: &mut Vec<Queued>) -> Taken {
        loop {
            {
                let mut state = self.lock();
                if state.epoch != epoch {
                    return Taken::Detached;
                }
                if !state.queue.is_empty() {
                    let now = Instant::now();
                    batch.extend(
                        state
                            .queue
                            .drain(..)
                            .filter(|q| q.expires.is_none_or(|at| at > now)),
                    );
                    state.bytes = 0;
                    return Taken::Frames;
                }
                if let Some(close) = &state.close {
                    return Taken::Close(close.clone());
                }
            }
            self.wake.notified().await;
        }
    }

    /// Takes the queued frames without waiting (unit tests stand in for the writer).
    #[cfg(test)]
    pub(crate) fn drain_for_test(&self) -> Vec<Queued> {
        let mut state = self.lock();
        state.bytes = 0;
        state.queue.drain(..).collect()
    }

    /// The sequence ids kept for acknowledgement, oldest first (unit tests).
    #[cfg(test)]
    pub(crate) fn unacked_ids_for_test(&self) -> Vec<u64> {
        self.lock()
            .reliable
            .as_ref()
            .map_or_else(Vec::new, |r| r.unacked.iter().map(|(id, _)| *id).collect())
    }

    /// Resolves once the connection is being dropped with its queue discarded (used to give
    /// up a write stuck on a stalled client).
    pub async fn abandoned(&self) {
        self.abandoned.cancelled().await;
    }

    /// Whether the connection is being dropped with its queue discarded.
    pub fn abandoned_now(&self) -> bool {
        self.abandoned.is_cancelled()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn frame(n: usize) -> Frame {
        Frame::Binary(Bytes::from(vec![0u8; n]))
    }

    fn ids(batch: &[Queued]) -> Vec<Option<u64>> {
        batch.iter().map(|q| q.sequence_id).collect()
    }

    #[tokio::test]
    async fn drains_everything_in_one_take() {
        let outbox = Outbox::new(1000);
        for _ in 0..5 {
            assert_eq!(outbox.push_data(frame(10)), Push::Queued);
        }
        let mut batch = Vec::new();
        assert_eq!(outbox.take(0, &mut batch).await, Taken::Frames);
        assert_eq!(batch.len(), 5);
        assert_eq!(ids(&batch), vec![None; 5]);
        assert_eq!(outbox.queued_bytes(), 0);
    }

    #[tokio::test]
    async fn overflow_closes_and_discards() {
        let outbox = Outbox::new(100);
        assert_eq!(outbox.push_data(frame(60)), Push::Queued);
        assert_eq!(outbox.push_data(frame(60)), Push::Overflow);
        assert_eq!(outbox.push(frame(1)), Push::Closed);
        let mut batch = Vec::new();
        let taken = outbox.take(0, &mut batch).await;
        assert!(batch.is_empty());
        assert!(matches!(
            taken,
            Taken::Close(Close::Server {
                code: close::SLOW_CONSUMER,
                ..
            })
        ));
        assert!(outbox.abandoned_now());
    }

    #[tokio::test]
    async fn a_single_frame_larger_than_the_limit_still_goes_out() {
        // An empty outbox accepts one frame whatever its size; the frame-size limit is
        // enforced elsewhere, and refusing it would make the message undeliverable.
        let outbox = Outbox::new(10);
        assert_eq!(outbox.push_data(frame(50)), Push::Queued);
    }

    #[tokio::test(start_paused = true)]
    async fn expired_frames_are_dropped_when_the_writer_reaches_them() {
        let outbox = Outbox::new(1000);
        let soon = Instant::now() + std::time::Duration::from_secs(1);
        assert_eq!(outbox.push_data_until(frame(1), Some(soon)), Push::Queued);
        assert_eq!(outbox.push_data(frame(2)), Push::Queued);
        assert_eq!(
            outbox.push_data_until(frame(3), Some(soon + std::time::Duration::from_secs(10))),
            Push::Queued
        );
        tokio::time::advance(std::time::Duration::from_secs(2)).await;
        let mut batch = Vec::new();
        assert_eq!(outbox.take(0, &mut batch).await, Taken::Frames);
        assert_eq!(
            batch.iter().map(|q| q.frame.len()).collect::<Vec<_>>(),
            [2, 3],
            "the expired frame is gone, the others keep their order"
        );
        assert_eq!(outbox.queued_bytes(), 0);

        // Only expired frames queued: nothing to write, and no spurious close.
        outbox.push_data_until(frame(4), Some(Instant::now()));
        let mut batch = Vec::new();
        assert_eq!(outbox.take(0, &mut batch).await, Taken::Frames);
        assert!(batch.is_empty());
        assert!(!outbox.is_closing());
    }

    #[tokio::test(start_paused = true)]
    async fn reliable_outboxes_number_and_write_messages_whatever_their_ttl() {
        let outbox = reliable(10);
        let soon = Instant::now() + std::time::Duration::from_secs(1);
        outbox.push_data(frame(1));
        outbox.push_data_until(frame(2), Some(soon));
        outbox.push_data(frame(3));
        tokio::time::advance(std::time::Duration::from_secs(2)).await;
        let mut batch = Vec::new();
        assert_eq!(outbox.take(0, &mut batch).await, Taken::Frames);
        assert_eq!(ids(&batch), vec![Some(1), Some(2), Some(3)], "no hole");
        assert_eq!(outbox.unacknowledged(), (3, 6));
    }

    #[tokio::test]
    async fn graceful_close_keeps_queued_frames() {
        let outbox = Outbox::new(100);
        outbox.push_data(frame(10));
        assert!(outbox.close(Close::Server {
            code: 1000,
            reason: "bye".into(),
            discard_queued: false,
        }));
        assert!(!outbox.close(Close::Peer), "first close wins");
        let mut batch = Vec::new();
        assert_eq!(outbox.take(0, &mut batch).await, Taken::Frames);
        assert_eq!(batch.len(), 1);
        assert!(matches!(
            outbox.take(0, &mut batch).await,
            Taken::Close(Close::Server { code: 1000, .. })
        ));
    }

    fn reliable(max_messages: usize) -> Outbox {
        Outbox::reliable(
            100,
            ReliableLimits {
                max_messages,
                max_bytes: 1 << 20,
            },
        )
    }

    /// Stands in for the writer: takes what is queued and feeds all of it to the socket.
    fn write_all(outbox: &Outbox) -> Vec<Queued> {
        let batch = outbox.drain_for_test();
        for id in batch.iter().filter_map(|q| q.sequence_id) {
            outbox.written(id);
        }
        batch
    }

    #[tokio::test]
    async fn reliable_outbox_numbers_data_and_not_control_frames() {
        let outbox = reliable(10);
        outbox.push_data(frame(1));
        outbox.push(frame(1));
        outbox.push_data(frame(1));
        let batch = write_all(&outbox);
        assert_eq!(ids(&batch), vec![Some(1), None, Some(2)]);
        assert_eq!(outbox.unacknowledged(), (2, 2));
        assert!(outbox.acknowledge(1));
        assert_eq!(outbox.unacknowledged(), (1, 1));
        assert!(outbox.acknowledge(2));
        assert_eq!(outbox.unacknowledged(), (0, 0));
    }

    #[tokio::test]
    async fn acknowledgements_beyond_what_was_written_are_ignored() {
        let outbox = reliable(10);
        for _ in 0..3 {
            outbox.push_data(frame(1));
        }
        // The writer took all three and has fed only the first to its socket so far.
        let batch = outbox.drain_for_test();
        outbox.written(batch[0].sequence_id.expect("numbered"));
        for unsent in [2, 3, 4, u64::MAX] {
            assert!(!outbox.acknowledge(unsent), "ack {unsent} ignored");
            assert_eq!(outbox.unacknowledged(), (3, 3), "after ack {unsent}");
        }
        assert!(outbox.acknowledge(1));
        assert_eq!(outbox.unacknowledged(), (2, 2));
        assert!(outbox.acknowledge(0), "an ack of nothing is harmless");
    }

    #[tokio::test]
    async fn a_stalled_reliable_client_acknowledging_everything_is_closed_with_1008() {
        // The attack: the client stops reading and acknowledges `u64::MAX` after every
        // message. Nothing is written, so nothing is released, and the buffer limit closes
        // the connection before the queue can outgrow it.
        let outbox = Outbox::reliable(
            100,
            ReliableLimits {
                max_messages: 1000,
                max_bytes: 1000,
            },
        );
        let mut pushes = 0;
        while outbox.push_data(frame(10)) == Push::Queued {
            pushes += 1;
            assert!(!outbox.acknowledge(u64::MAX));
            assert!(
                outbox.queued_bytes() <= 1000,
                "{} queued",
                outbox.queued_bytes()
            );
            assert!(pushes <= 100, "still open after {pushes} messages");
        }
        assert!(matches!(
            outbox.current_close(),
            Some(Close::Server {
                code: close::UNRECOVERABLE,
                discard_queued: true,
                ..
            })
        ));
        assert_eq!(outbox.queued_bytes(), 0, "the queue is discarded");
        assert!(
            outbox.abandoned_now(),
            "a write stuck on the socket gives up"
        );
    }

    #[tokio::test]
    async fn a_reliable_queue_full_of_control_frames_closes_with_1008() {
        // Replies (acks, pongs) to a client that does not read fill the queue beside the
        // data; past `limit` plus the buffer's bytes the connection ends for good.
        let outbox = Outbox::reliable(
            100,
            ReliableLimits {
                max_messages: 1000,
                max_bytes: 1000,
            },
        );
        let mut replies = 0;
        while outbox.push(frame(10)) == Push::Queued {
            replies += 1;
            assert!(replies <= 110, "still open after {replies} replies");
        }
        assert_eq!(replies, 110);
        assert!(matches!(
            outbox.current_close(),
            Some(Close::Server {
                code: close::UNRECOVERABLE,
                ..
            })
        ));

        // Data behind a queue full of replies: the same bound, the same close.
        let outbox = Outbox::reliable(
            100,
            ReliableLimits {
                max_messages: 1000,
                max_bytes: 1000,
            },
        );
        for _ in 0..105 {
            assert_eq!(outbox.push(frame(10)), Push::Queued);
        }
        for _ in 0..5 {
            assert_eq!(outbox.push_data(frame(10)), Push::Queued);
        }
        assert_eq!(outbox.push_data(frame(10)), Push::Overflow);
        assert!(matches!(
            outbox.current_close(),
            Some(Close::Server {
                code: close::UNRECOVERABLE,
                ..
            })
        ));
    }

    #[tokio::test]
    async fn reliable_outbox_ignores_the_byte_limit_but_not_its_buffer_limit() {
        let outbox = reliable(3);
        for _ in 0..3 {
            assert_eq!(outbox.push_data(frame(90)), Push::Queued);
        }
        assert_eq!(outbox.push_data(frame(1)), Push::Overflow);
        assert!(matches!(
            outbox.current_close(),
            Some(Close::Server {
                code: close::UNRECOVERABLE,
                ..
            })
        ));
    }

    #[tokio::test]
    async fn detached_outbox_buffers_and_reattach_resends_unacked_in_order() {
        let outbox = reliable(10);
        outbox.push_data(frame(1));
        outbox.push_data(frame(1));
        write_all(&outbox);
        assert!(outbox.acknowledge(1));
        let old = outbox.epoch();
        assert!(outbox.detach(old));
        assert!(!outbox.detach(old), "stale epoch");
        let mut batch = Vec::new();
        assert_eq!(outbox.take(old, &mut batch).await, Taken::Detached);
        assert_eq!(outbox.push(frame(1)), Push::Queued, "control dropped");
        outbox.push_data(frame(1));
        let epoch = outbox.reattach(Some(frame(2))).expect("reattached");
        assert_eq!(outbox.take(epoch, &mut batch).await, Taken::Frames);
        assert_eq!(ids(&batch), vec![None, Some(2), Some(3)]);
        assert!(!outbox.expire(epoch), "attached again");
    }

    #[tokio::test]
    async fn expiry_ends_a_detached_connection_for_good() {
        let outbox = reliable(10);
        let epoch = outbox.epoch();
        outbox.detach(epoch);
        assert!(outbox.expire(outbox.epoch()));
        assert_eq!(outbox.reattach(None), None);
        assert_eq!(outbox.push_data(frame(1)), Push::Closed);
    }

    /// The attack frames kept in `fuzz/regressions/` (sequence acks of messages never
    /// written), parsed as the socket's reader parses them and applied to a stalled outbox,
    /// release nothing.
    #[test]
    fn regression_acks_of_unwritten_messages_release_nothing() {
        use crate::protocol::{ClientMessage, json, protobuf};

        let fuzz = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/regressions");
        let mut acks = 0;
        for target in ["json_protocol", "protobuf_protocol"] {
            let dir = fuzz.join(target);
            for entry in std::fs::read_dir(&dir).expect("the regression folder exists") {
                let data = std::fs::read(entry.expect("readable folder").path()).expect("input");
                let parsed = if target == "json_protocol" {
                    std::str::from_utf8(&data)
                        .ok()
                        .and_then(|text| json::parse(text).ok())
                        .map(|m| matches!(m, ClientMessage::SequenceAck { sequence_id } if sequence_id == u64::MAX))
                } else {
                    protobuf::parse(&bytes::Bytes::from(data))
                        .ok()
                        .map(|m| matches!(m, ClientMessage::SequenceAck { sequence_id } if sequence_id == u64::MAX))
                };
                if parsed != Some(true) {
                    continue;
                }
                acks += 1;
                let outbox = reliable(10);
                outbox.push_data(frame(1));
                outbox.push_data(frame(1));
                write_all(&outbox);
                outbox.push_data(frame(1));
                assert!(!outbox.acknowledge(u64::MAX), "{target}");
                assert_eq!(outbox.unacknowledged(), (3, 3), "{target}");
            }
        }
        assert!(
            acks >= 2,
            "an ack-everything input per protocol target, found {acks}"
        );
    }

    /// Property tests of the acknowledgement path: whatever a client acknowledges, and
    /// whenever the writer gets to the socket, a reliable outbox stays within its bounds and
    /// never lets go of a message it has not written.
    mod acknowledgements {
        use proptest::prelude::*;

        use super::*;

        const LIMIT: usize = 256;
        const MAX_MESSAGES: usize = 64;
        const MAX_BYTES: usize = 1024;
        const MAX_FRAME: usize = 64;

        #[derive(Debug, Clone)]
        enum Op {
            /// Fan-out queues a data message of this size.
            Data(usize),
            /// A reply (ack, pong) of this size.
            Control(usize),
            /// The client acknowledges this sequence id.
            Ack(u64),
            /// The writer takes the queue and feeds this many of its data messages to the
            /// socket before it blocks (the rest stay unwritten, as on a stalled socket).
            Take(usize),
            /// The socket is lost.
            Detach,
            /// The client recovers.
            Reattach,
        }

        fn op() -> impl Strategy<Value = Op> {
            let ack = prop_oneof![Just(u64::MAX), 0..80u64, any::<u64>(),];
            // Stalls (many pushes and acks between takes) are the interesting cases.
            prop_oneof![
                8 => (1..=MAX_FRAME).prop_map(Op::Data),
                2 => (1..=MAX_FRAME).prop_map(Op::Control),
                6 => ack.prop_map(Op::Ack),
                1 => (0..8usize).prop_map(Op::Take),
                1 => Just(Op::Detach),
                1 => Just(Op::Reattach),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn acknowledgements_never_grow_a_reliable_outbox_beyond_its_bounds(
                ops in prop::collection::vec(op(), 1..400)
            ) {
                let outbox = Outbox::reliable(
                    LIMIT,
                    ReliableLimits { max_messages: MAX_MESSAGES, max_bytes: MAX_BYTES },
                );
                // The model: how many data messages were numbered, and the highest id fed
                // to a socket.
                let mut numbered = 0u64;
                let mut written = 0u64;
                for op in ops {
                    match op {
                        Op::Data(n) => {
                            if outbox.push_data(frame(n)) == Push::Queued {
                                numbered += 1;
                            }
                        }
                        Op::Control(n) => {
                            outbox.push(frame(n));
                        }
                        Op::Ack(id) => {
                            let accepted = outbox.acknowledge(id);
                            prop_assert_eq!(accepted, id <= written, "ack {}", id);
                        }
                        Op::Take(fed) => {
                            let batch = outbox.drain_for_test();
                            for id in batch.iter().filter_map(|q| q.sequence_id).take(fed) {
                                outbox.written(id);
                                written = written.max(id);
                            }
                        }
                        Op::Detach => {
                            outbox.detach(outbox.epoch());
                        }
                        Op::Reattach => {
                            outbox.reattach(Some(frame(8)));
                        }
                    }

                    let queued = outbox.queued_bytes();
                    prop_assert!(
                        queued <= LIMIT + MAX_BYTES + MAX_FRAME,
                        "{} bytes queued, bound {}", queued, LIMIT + MAX_BYTES
                    );
                    let (messages, bytes) = outbox.unacknowledged();
                    prop_assert!(messages <= MAX_MESSAGES && bytes <= MAX_BYTES);
                    if outbox.is_closing() {
                        continue;
                    }
                    // Nothing numbered but not yet written has been let go: a recovery
                    // could still resend all of it.
                    let kept = outbox.unacked_ids_for_test();
                    let unwritten = (written + 1)..=numbered;
                    for id in unwritten {
                        prop_assert!(kept.contains(&id), "unwritten {} released; kept {:?}", id, kept);
                    }
                }
            }
        }
    }
}
