//! Results: one JSON object per run, markdown rows with ratios to the floor, and the checks
//! CI makes (the tool worked; the numbers themselves are not judged).

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::metrics::ProcSample;
use crate::scenario::{Plan, Scenario};
use crate::system::Kind;

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Latency {
    pub(crate) samples: u64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) p999_ms: f64,
    pub(crate) max_ms: f64,
    /// The whole histogram as `[µs, count]` pairs, so that shards can be merged.
    #[serde(default)]
    pub(crate) histogram: Vec<[u64; 2]>,
}

/// The server's use of the machine during the measurement window.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ServerUse {
    /// CPU time over wall time, in percent of one core (200 = both cores of this machine).
    pub(crate) cpu_percent: f64,
    pub(crate) rss_mib: f64,
    pub(crate) peak_rss_mib: f64,
    /// RSS divided by the connections held (whole process, baseline included).
    pub(crate) rss_per_connection_kib: f64,
}

impl ServerUse {
    pub(crate) fn between(a: ProcSample, b: ProcSample, seconds: f64, connections: usize) -> Self {
        Self {
            cpu_percent: (b.cpu_seconds - a.cpu_seconds) / seconds.max(1e-9) * 100.0,
            rss_mib: b.rss_kib as f64 / 1024.0,
            peak_rss_mib: b.hwm_kib as f64 / 1024.0,
            rss_per_connection_kib: b.rss_kib as f64 / connections.max(1) as f64,
        }
    }
}

/// Everything one run of one scenario against one system measured.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RunResult {
    pub(crate) scenario: &'static str,
    pub(crate) target: &'static str,
    pub(crate) clients: usize,
    pub(crate) groups: usize,
    pub(crate) size: usize,
    pub(crate) rate: f64,
    pub(crate) reliable: bool,
    /// MQTT systems: the QoS of the publishes and subscriptions.
    pub(crate) qos: Option<u8>,
    pub(crate) shard: String,
    pub(crate) duration_s: f64,
    pub(crate) connected: usize,
    pub(crate) connect_errors: usize,
    pub(crate) connects_per_s: f64,
    pub(crate) sent: u64,
    pub(crate) sent_per_s: f64,
    pub(crate) send_errors: u64,
    /// Deliveries due to this shard's clients for what was sent (warm-up included).
    pub(crate) expected: u64,
    /// Deliveries that arrived (warm-up included, after a drain of up to 10 s).
    pub(crate) delivered: u64,
    /// Deliveries per second inside the measurement window.
    pub(crate) deliveries_per_s: f64,
    pub(crate) latency: Latency,
    pub(crate) server: Option<ServerUse>,
    /// Server CPU time per delivery in the window, in µs: the steadier measure on a shared
    /// machine (the throughput moves with what else runs; the cost per message less).
    pub(crate) server_cpu_us_per_delivery: Option<f64>,
    /// The same per server process, in `--pid` order (one entry per node of a cluster;
    /// `rss_per_connection_kib` is 0 there: how the connections split is not known).
    pub(crate) nodes: Vec<ServerUse>,
    /// Messages sent while the window was open, and the deliveries they are due over all
    /// shards (every member of the destination, connected or not).
    pub(crate) sent_in_window: u64,
    pub(crate) due_in_window: u64,
    /// Deliveries to this shard's clients of messages sent in the window (arriving at any
    /// time until the drain ends), and those of them within 1 s.
    pub(crate) window_delivered: u64,
    pub(crate) on_time: u64,
    /// `on_time` over `due_in_window` in percent: Azure's "delivered within 1 s" (only
    /// when this process holds every client; shards are combined by `aggregate`).
    pub(crate) on_time_percent: Option<f64>,
    pub(crate) idle_rss_per_connection_kib: Option<f64>,
    pub(crate) generator_cpu_percent: Option<f64>,
    /// Client connections the server ended during the run.
    pub(crate) server_closed: usize,
    pub(crate) stalled_client_closed_by_server: Option<bool>,
}

impl RunResult {
    pub(crate) fn new(plan: &Plan, kind: Kind) -> Self {
        Self {
            scenario: plan.scenario.name(),
            target: kind.name(),
            clients: plan.clients,
            groups: plan.groups,
            size: plan.size,
            rate: plan.rate,
            reliable: plan.reliable && kind == Kind::Hubcast,
            qos: kind.is_mqtt().then_some(plan.qos),
            shard: format!("{}/{}", plan.shard.index, plan.shard.count),
            duration_s: plan.duration.as_secs_f64(),
            connected: 0,
            connect_errors: 0,
            connects_per_s: 0.0,
            sent: 0,
            sent_per_s: 0.0,
            send_errors: 0,
            expected: 0,
            delivered: 0,
            deliveries_per_s: 0.0,
            latency: Latency::default(),
            server: None,
            server_cpu_us_per_delivery: None,
            nodes: Vec::new(),
            sent_in_window: 0,
            due_in_window: 0,
            window_delivered: 0,
            on_time: 0,
            on_time_percent: None,
            idle_rss_per_connection_kib: None,
            generator_cpu_percent: None,
            server_closed: 0,
            stalled_client_closed_by_server: None,
        }
    }

    pub(crate) fn set_latency(&mut self, histogram: &Histogram<u64>) {
        let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
        self.latency = Latency {
            samples: histogram.len(),
            p50_ms: ms(0.5),
            p99_ms: ms(0.99),
            p999_ms: ms(0.999),
            max_ms: histogram.max() as f64 / 1000.0,
            histogram: histogram
                .iter_recorded()
                .map(|v| [v.value_iterated_to(), v.count_at_value()])
                .collect(),
        };
    }

    /// Sets the server's CPU time per delivery from its CPU share and the delivery rate.
    pub(crate) fn set_cpu_per_delivery(&mut self) {
        self.server_cpu_us_per_delivery = self
            .server
            .as_ref()
            .filter(|_| self.deliveries_per_s > 0.0)
            .map(|s| s.cpu_percent / 100.0 * 1e6 / self.deliveries_per_s);
    }

    fn lost(&self) -> u64 {
        self.expected.saturating_sub(self.delivered)
    }
}

/// Prints a markdown table of `results` with each run's ratio to the floor's run of the
/// same scenario (deliveries/s, p99 latency, server CPU per delivery, memory per idle
/// connection).
pub(crate) fn print_markdown(results: &[RunResult]) {
    if results.is_empty() {
        return;
    }
    println!();
    println!(
        "| scenario | system | clients | sent/s | deliveries/s | vs floor | p50 ms | p99 ms | p99.9 ms | \
         p99 vs floor | server CPU % | CPU µs/delivery | CPU/delivery vs floor | server RSS MiB | \
         idle KiB/conn | connects/s | lost | generator CPU % |"
    );
    println!(
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    let floor = results.iter().find(|r| r.target == "floor");
    for r in results {
        let ratio = |ours: f64, theirs: f64| {
            if theirs > 0.0 && ours > 0.0 {
                format!("{:.2}x", ours / theirs)
            } else {
                "–".into()
            }
        };
        let vs_floor = floor.map_or("–".into(), |f| {
            if r.scenario == Scenario::ConnectRate.name() {
                ratio(r.connects_per_s, f.connects_per_s)
            } else if r.scenario == Scenario::Idle.name() {
                ratio(
                    r.idle_rss_per_connection_kib.unwrap_or(0.0),
                    f.idle_rss_per_connection_kib.unwrap_or(0.0),
                )
            } else {
                ratio(r.deliveries_per_s, f.deliveries_per_s)
            }
        });
        let p99_vs_floor =
            floor.map_or("–".into(), |f| ratio(r.latency.p99_ms, f.latency.p99_ms));
        let cpu_vs_floor = floor.map_or("–".into(), |f| {
            ratio(
                r.server_cpu_us_per_delivery.unwrap_or(0.0),
                f.server_cpu_us_per_delivery.unwrap_or(0.0),
            )
        });
        let opt =
            |v: Option<f64>, digits: usize| v.map_or("–".into(), |v| format!("{v:.digits$}"));
        let system = match r.stalled_client_closed_by_server {
            Some(true) => format!("{} (stalled client closed)", r.target),
            Some(false) => format!("{} (stalled client kept)", r.target),
            None => r.target.to_owned(),
        };
        let variant = match (r.reliable, r.qos) {
            (true, _) => " (reliable)".to_owned(),
            (false, Some(qos)) => format!(" (QoS {qos})"),
            (false, None) => String::new(),
        };
        println!(
            "| {}{} | {} | {} | {:.0} | {:.0} | {} | {:.2} | {:.2} | {:.2} | {} | {} | {} | {} | {} | {} | {:.0} | {} | {} |",
            r.scenario,
            variant,
            system,
            r.connected,
            r.sent_per_s,
            r.deliveries_per_s,
            vs_floor,
            r.latency.p50_ms,
            r.latency.p99_ms,
            r.latency.p999_ms,
            p99_vs_floor,
            opt(r.server.as_ref().map(|s| s.cpu_percent), 0),
            opt(r.server_cpu_us_per_delivery, 2),
            cpu_vs_floor,
            opt(r.server.as_ref().map(|s| s.rss_mib), 1),
            opt(r.idle_rss_per_connection_kib, 2),
            r.connects_per_s,
            r.lost(),
            opt(r.generator_cpu_percent, 0),
        );
    }
}

/// What `--check` requires of every run: all clients connected, and then per scenario:
/// messages were sent and every due delivery arrived (the slow-consumer run: the stalled
/// client's are not due), or memory was measured.
pub(crate) fn check(results: &[RunResult]) -> Result<(), String> {
    let mut failures = Vec::new();
    for r in results {
        let name = format!("{} on {}", r.scenario, r.target);
        if r.connect_errors > 0 || r.connected == 0 {
            failures.push(format!("{name}: {} connections failed", r.connect_errors));
            continue;
        }
        if r.scenario == Scenario::ConnectRate.name() {
            if r.connects_per_s <= 0.0 {
                failures.push(format!("{name}: no connect rate"));
            }
            continue;
        }
        if r.scenario == Scenario::Idle.name() {
            if r.idle_rss_per_connection_kib.is_none() || r.server_closed > 0 {
                failures.push(format!("{name}: memory not measured or connections lost"));
            }
            continue;
        }
        if r.sent == 0 || r.delivered == 0 || r.latency.samples == 0 {
            failures.push(format!(
                "{name}: sent {}, delivered {}, {} latency samples",
                r.sent, r.delivered, r.latency.samples
            ));
        }
        if r.lost() > 0 || r.send_errors > 0 {
            failures.push(format!(
                "{name}: {} of {} deliveries lost, {} send errors",
                r.lost(),
                r.expected,
                r.send_errors
            ));
        }
        if r.server_closed > 0 {
            failures.push(format!(
                "{name}: the server closed {} clients",
                r.server_closed
            ));
        }
    }
    if failures.is_empty() {
        eprintln!("check: {} runs worked", results.len());
        Ok(())
    } else {
        Err(format!("check failed:\n  {}", failures.join("\n  ")))
    }
}
