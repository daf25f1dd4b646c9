//! The bounded queue between fan-out and one connection's socket writer.
//!
//! Fan-out never waits on a client: it appends a shared [`Frame`] and moves on. The writer
//! takes everything queued in one go and writes it with a single flush, so a burst costs one
//! syscall-sized write rather than one per message. When a client falls more than the byte
//! limit behind, its outbox closes itself; the slow client is dropped, nobody else notices.

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::message::Frame;

/// Close code for a connection whose outbox overflowed (RFC 6455 1013, "try again later"):
/// the client may reconnect, but it was not keeping up.
pub const CLOSE_SLOW_CONSUMER: u16 = 1013;

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
    /// The peer closed or the socket failed: nothing more is written.
    Peer,
}

/// The result of [`Outbox::push`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    /// Queued for writing.
    Queued,
    /// The frame did not fit: the outbox has closed itself (the caller counts it).
    Overflow,
    /// The connection is already closing; the frame was dropped.
    Closed,
}

#[derive(Debug, Default)]
struct State {
    frames: VecDeque<Queued>,
    bytes: usize,
    close: Option<Close>,
}

/// A queued frame and, for messages sent with a TTL, when it stops being worth writing.
#[derive(Debug)]
struct Queued {
    frame: Frame,
    expires: Option<Instant>,
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
    limit: usize,
}

impl Outbox {
    /// An empty outbox holding at most `limit` bytes of payload.
    pub fn new(limit: usize) -> Self {
        Self {
            state: Mutex::new(State::default()),
            wake: Notify::new(),
            abandoned: CancellationToken::new(),
            limit,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock leaves a consistent queue (every mutation is a
        // single push/take), so a poisoned lock is safe to keep using.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues a frame. Never blocks on the client.
    pub fn push(&self, frame: Frame) -> Push {
        self.push_queued(Queued {
            frame,
            expires: None,
        })
    }

    /// Queues a frame that is dropped instead of written if the writer only reaches it at or
    /// after `expires` (a message TTL: a client that cannot take it in time never gets it).
    pub fn push_expiring(&self, frame: Frame, expires: Instant) -> Push {
        self.push_queued(Queued {
            frame,
            expires: Some(expires),
        })
    }

    fn push_queued(&self, queued: Queued) -> Push {
        let frame = &queued.frame;
        let mut state = self.lock();
        if state.close.is_some() {
            return Push::Closed;
        }
        if state.bytes + frame.len() > self.limit && !state.frames.is_empty() {
            state.frames.clear();
            state.bytes = 0;
            state.close = Some(Close::Server {
                code: CLOSE_SLOW_CONSUMER,
                reason: "The connection was closed because the client did not read its \
                         messages fast enough (outbox full)."
                    .into(),
                discard_queued: true,
            });
            drop(state);
            self.abandoned.cancel();
            self.wake.notify_one();
            return Push::Overflow;
        }
        let was_empty = state.frames.is_empty();
        state.bytes += frame.len();
        state.frames.push_back(queued);
        drop(state);
        if was_empty {
            self.wake.notify_one();
        }
        Push::Queued
    }

    /// Starts closing. The first close wins; returns whether this call was it.
    pub fn close(&self, close: Close) -> bool {
        let mut state = self.lock();
        if state.close.is_some() {
            return false;
        }
        let discard = matches!(
            close,
            Close::Server {
                discard_queued: true,
                ..
            }
        );
        if discard {
            state.frames.clear();
            state.bytes = 0;
        }
        state.close = Some(close);
        drop(state);
        if discard {
            self.abandoned.cancel();
        }
        self.wake.notify_one();
        true
    }

    /// Whether a close has started.
    pub fn is_closing(&self) -> bool {
        self.lock().close.is_some()
    }

    /// Bytes currently queued.
    pub fn queued_bytes(&self) -> usize {
        self.lock().bytes
    }

    /// Waits until there is something to do, then moves every queued frame into `batch`.
    /// Returns the close, once one has started and the queue is drained.
    pub async fn take(&self, batch: &mut Vec<Frame>) -> Option<Close> {
        loop {
            {
                let mut state = self.lock();
                if !state.frames.is_empty() {
                    let now = Instant::now();
                    batch.extend(
                        state
                            .frames
                            .drain(..)
                            .filter(|q| q.expires.is_none_or(|at| at > now))
                            .map(|q| q.frame),
                    );
                    state.bytes = 0;
                    // Everything may have expired: then there is nothing to write, and the
                    // caller comes back for more.
                    return None;
                }
                if let Some(close) = &state.close {
                    return Some(close.clone());
                }
            }
            self.wake.notified().await;
        }
    }

    /// Takes the queued frames without waiting (unit tests stand in for the writer).
    #[cfg(test)]
    pub(crate) fn drain_for_test(&self) -> Vec<Frame> {
        let mut state = self.lock();
        state.bytes = 0;
        state.frames.drain(..).map(|q| q.frame).collect()
    }

    /// The close that has started, if any.
    pub fn current_close(&self) -> Option<Close> {
        self.lock().close.clone()
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

    #[tokio::test]
    async fn drains_everything_in_one_take() {
        let outbox = Outbox::new(1000);
        for _ in 0..5 {
            assert_eq!(outbox.push(frame(10)), Push::Queued);
        }
        let mut batch = Vec::new();
        assert_eq!(outbox.take(&mut batch).await, None);
        assert_eq!(batch.len(), 5);
        assert_eq!(outbox.queued_bytes(), 0);
    }

    #[tokio::test]
    async fn overflow_closes_and_discards() {
        let outbox = Outbox::new(100);
        assert_eq!(outbox.push(frame(60)), Push::Queued);
        assert_eq!(outbox.push(frame(60)), Push::Overflow);
        assert_eq!(outbox.push(frame(1)), Push::Closed);
        let mut batch = Vec::new();
        let close = outbox.take(&mut batch).await;
        assert!(batch.is_empty());
        assert!(matches!(
            close,
            Some(Close::Server {
                code: CLOSE_SLOW_CONSUMER,
                ..
            })
        ));
    }

    #[tokio::test]
    async fn a_single_frame_larger_than_the_limit_still_goes_out() {
        // An empty outbox accepts one frame whatever its size; the frame-size limit is
        // enforced elsewhere, and refusing it would make the message undeliverable.
        let outbox = Outbox::new(10);
        assert_eq!(outbox.push(frame(50)), Push::Queued);
    }

    #[tokio::test(start_paused = true)]
    async fn expired_frames_are_dropped_when_the_writer_reaches_them() {
        let outbox = Outbox::new(1000);
        let soon = Instant::now() + std::time::Duration::from_secs(1);
        assert_eq!(outbox.push_expiring(frame(1), soon), Push::Queued);
        assert_eq!(outbox.push(frame(2)), Push::Queued);
        assert_eq!(
            outbox.push_expiring(frame(3), soon + std::time::Duration::from_secs(10)),
            Push::Queued
        );
        tokio::time::advance(std::time::Duration::from_secs(2)).await;
        let mut batch = Vec::new();
        assert_eq!(outbox.take(&mut batch).await, None);
        assert_eq!(
            batch.iter().map(Frame::len).collect::<Vec<_>>(),
            [2, 3],
            "the expired frame is gone, the others keep their order"
        );
        assert_eq!(outbox.queued_bytes(), 0);

        // Only expired frames queued: nothing to write, and no spurious close.
        outbox.push_expiring(frame(4), Instant::now());
        let mut batch = Vec::new();
        assert_eq!(outbox.take(&mut batch).await, None);
        assert!(batch.is_empty());
        assert!(!outbox.is_closing());
    }

    #[tokio::test]
    async fn graceful_close_keeps_queued_frames() {
        let outbox = Outbox::new(100);
        outbox.push(frame(10));
        assert!(outbox.close(Close::Server {
            code: 1000,
            reason: "bye".into(),
            discard_queued: false,
        }));
        assert!(!outbox.close(Close::Peer), "first close wins");
        let mut batch = Vec::new();
        assert_eq!(outbox.take(&mut batch).await, None);
        assert_eq!(batch.len(), 1);
        assert!(matches!(
            outbox.take(&mut batch).await,
            Some(Close::Server { code: 1000, .. })
        ));
    }
}
