//! What a run measures: deliveries and their latency (from the send timestamp each payload
//! carries), and the server process's CPU time and memory from `/proc`.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use tokio::sync::Notify;

/// Histogram shards: receivers on different worker threads rarely share a lock.
const SHARDS: usize = 16;

/// Latencies are recorded in microseconds, up to a minute.
const MAX_LATENCY_US: u64 = 60_000_000;

/// Azure's latency target: a delivery counts as on time when it arrives within 1 s of its
/// send.
pub(crate) const ON_TIME_NANOS: u64 = 1_000_000_000;

/// The marker in front of the send timestamp in every payload: `@<unix nanoseconds>.`.
pub(crate) const STAMP: u8 = b'@';

/// Nanoseconds since the Unix epoch. Wall-clock time rather than an `Instant` so that
/// several generator processes on one machine (shards) read each other's timestamps.
pub(crate) fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A payload of exactly `size` bytes (at least the stamp) that carries `stamp`.
pub(crate) fn stamped_payload(size: usize, stamp: u64) -> String {
    let mut text = format!("@{stamp}.");
    while text.len() < size {
        text.push('x');
    }
    text
}

/// The send timestamp in `bytes` (the first `@` followed by digits), if any.
pub(crate) fn stamp_in(bytes: &[u8]) -> Option<u64> {
    let at = bytes.iter().position(|b| *b == STAMP)?;
    let mut value: u64 = 0;
    let mut digits = 0;
    for b in &bytes[at + 1..] {
        if b.is_ascii_digit() {
            value = value.wrapping_mul(10).wrapping_add(u64::from(b - b'0'));
            digits += 1;
        } else {
            break;
        }
    }
    (digits > 0).then_some(value)
}

/// Deliveries and latencies, shared by every receiving connection of a run.
pub(crate) struct Stats {
    histograms: Vec<Mutex<Histogram<u64>>>,
    /// Every data message received, measured or not.
    pub(crate) delivered: AtomicU64,
    /// Data messages received while the measurement window was open.
    pub(crate) measured: AtomicU64,
    measuring: AtomicBool,
    /// The measurement window in wall-clock ns, `[start, end)`, for the on-time count:
    /// messages *sent* inside it, wherever they arrive (drain included), so that a message
    /// that arrives late, or after the window, still counts against the target.
    window_start: AtomicU64,
    window_end: AtomicU64,
    /// The window was given by [`Stats::fix_window`] (shards share one) and the
    /// measurement flag leaves it alone.
    window_fixed: AtomicBool,
    /// Deliveries of messages sent inside the window, and those of them that arrived
    /// within [`ON_TIME_NANOS`].
    pub(crate) window_delivered: AtomicU64,
    pub(crate) on_time: AtomicU64,
    /// Set by a sender waiting for deliveries (closed-loop fan-out), so receivers only pay
    /// for a wake-up when someone waits.
    pub(crate) waiting: AtomicBool,
    pub(crate) progress: Notify,
}

impl Stats {
    pub(crate) fn new() -> Self {
        let histograms = (0..SHARDS)
            .map(|_| {
                Mutex::new(
                    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
                        .expect("static histogram bounds are valid"),
                )
            })
            .collect();
        Self {
            histograms,
            delivered: AtomicU64::new(0),
            measured: AtomicU64::new(0),
            measuring: AtomicBool::new(false),
            window_start: AtomicU64::new(u64::MAX),
            window_end: AtomicU64::new(u64::MAX),
            window_fixed: AtomicBool::new(false),
            window_delivered: AtomicU64::new(0),
            on_time: AtomicU64::new(0),
            waiting: AtomicBool::new(false),
            progress: Notify::new(),
        }
    }

    /// Opens or closes the measurement window. Latencies are recorded only while it is
    /// open, so warm-up and drain do not count.
    pub(crate) fn set_measuring(&self, on: bool) {
        if !self.window_fixed.load(Ordering::SeqCst) {
            let now = now_nanos();
            if on {
                self.window_end.store(u64::MAX, Ordering::SeqCst);
                self.window_start.store(now, Ordering::SeqCst);
            } else {
                self.window_end.store(now, Ordering::SeqCst);
            }
        }
        self.measuring.store(on, Ordering::SeqCst);
    }

    /// Sets the on-time window to `[start, end)` (wall-clock ns) for good: the shards of one
    /// run count the same messages even if one of them wakes up late.
    pub(crate) fn fix_window(&self, start: u64, end: u64) {
        self.window_fixed.store(true, Ordering::SeqCst);
        self.window_start.store(start, Ordering::SeqCst);
        self.window_end.store(end, Ordering::SeqCst);
    }

    /// Whether a message stamped `stamp` was sent inside the on-time window.
    pub(crate) fn in_window(&self, stamp: u64) -> bool {
        stamp >= self.window_start.load(Ordering::Relaxed)
            && stamp < self.window_end.load(Ordering::Relaxed)
    }

    /// One data message arrived at client `client`, sent at `stamp` (ns).
    pub(crate) fn record(&self, client: usize, stamp: Option<u64>) {
        self.delivered.fetch_add(1, Ordering::Relaxed);
        if let Some(stamp) = stamp
            && self.in_window(stamp)
        {
            self.window_delivered.fetch_add(1, Ordering::Relaxed);
            if now_nanos().saturating_sub(stamp) <= ON_TIME_NANOS {
                self.on_time.fetch_add(1, Ordering::Relaxed);
            }
        }
        if self.measuring.load(Ordering::Relaxed) {
            self.measured.fetch_add(1, Ordering::Relaxed);
            if let Some(stamp) = stamp {
                let micros = now_nanos().saturating_sub(stamp) / 1_000;
                let mut histogram = self.histograms[client % SHARDS]
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                histogram.saturating_record(micros.clamp(1, MAX_LATENCY_US));
            }
        }
        if self.waiting.load(Ordering::Relaxed) {
            self.progress.notify_one();
        }
    }

    /// Every measured latency, merged.
    pub(crate) fn latencies(&self) -> Histogram<u64> {
        let mut all = Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
            .expect("static histogram bounds are valid");
        for shard in &self.histograms {
            let shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            all.add(&*shard).expect("same bounds");
        }
        all
    }
}

/// CPU time (user + system, in seconds) and memory of a process, from `/proc`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ProcSample {
    pub(crate) cpu_seconds: f64,
    pub(crate) rss_kib: u64,
    pub(crate) hwm_kib: u64,
}

/// Clock ticks per second of `/proc/<pid>/stat` times (`getconf CLK_TCK`; 100 on Linux).
fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// Reads `/proc/<pid>/stat` (utime, stime) and `/proc/<pid>/status` (VmRSS, VmHWM).
pub(crate) fn sample(pid: u32) -> Option<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: split after it.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of the whole line are the 12th and 13th after the name.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Some(ProcSample {
        cpu_seconds: (utime + stime) / clock_ticks(),
        rss_kib: kib("VmRSS:"),
        hwm_kib: kib("VmHWM:"),
    })
}

/// The sum of the samples of several processes (a multi-node target).
pub(crate) fn sample_all(pids: &[u32]) -> Option<ProcSample> {
    if pids.is_empty() {
        return None;
    }
    let mut total = ProcSample::default();
    for pid in pids {
        let one = sample(*pid)?;
        total.cpu_seconds += one.cpu_seconds;
        total.rss_kib += one.rss_kib;
        total.hwm_kib += one.hwm_kib;
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_carry_their_send_time() {
        let before = now_nanos();
        let text = stamped_payload(2048, now_nanos());
        assert_eq!(text.len(), 2048);
        let stamp = stamp_in(format!("{{\"data\":\"{text}\"}}").as_bytes()).unwrap();
        assert!(stamp >= before && stamp <= now_nanos());
        assert_eq!(stamp_in(b"no stamp"), None);
        assert_eq!(stamp_in(b"@x"), None);
    }

    #[test]
    fn own_process_is_sampled() {
        let own = sample(std::process::id()).unwrap();
        assert!(own.rss_kib > 0);
        assert!(own.hwm_kib >= own.rss_kib);
    }

    #[test]
    fn only_the_window_is_measured() {
        let stats = Stats::new();
        stats.record(0, Some(now_nanos()));
        stats.set_measuring(true);
        stats.record(1, Some(now_nanos()));
        stats.record(2, None);
        assert_eq!(stats.delivered.load(Ordering::Relaxed), 3);
        assert_eq!(stats.measured.load(Ordering::Relaxed), 2);
        assert_eq!(stats.latencies().len(), 1);
    }

    #[test]
    fn on_time_counts_messages_sent_in_the_window_wherever_they_arrive() {
        let stats = Stats::new();
        let before = now_nanos() - 1;
        stats.set_measuring(true);
        let fresh = now_nanos();
        let stale = fresh - 2 * ON_TIME_NANOS;
        stats.record(0, Some(fresh));
        stats.set_measuring(false);
        // Sent in the window, arriving after it closed: counted, on time.
        stats.record(1, Some(fresh));
        // Sent before the window: not counted.
        stats.record(2, Some(before));
        assert_eq!(stats.window_delivered.load(Ordering::Relaxed), 2);
        assert_eq!(stats.on_time.load(Ordering::Relaxed), 2);
        // A message stamped inside a window but 2 s old on arrival is late.
        let late = Stats::new();
        late.window_start.store(stale - 1, Ordering::SeqCst);
        late.record(0, Some(stale));
        assert_eq!(late.window_delivered.load(Ordering::Relaxed), 1);
        assert_eq!(late.on_time.load(Ordering::Relaxed), 0);
        // A fixed window is not moved by the measurement flag.
        let fixed = Stats::new();
        fixed.fix_window(10, 20);
        fixed.set_measuring(true);
        fixed.set_measuring(false);
        assert!(fixed.in_window(10) && fixed.in_window(19));
        assert!(!fixed.in_window(9) && !fixed.in_window(20));
    }
}
