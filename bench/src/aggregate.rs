//! One result out of the shards of a run: every generator process (`--shard i/n`) writes
//! its own JSON; this adds up their connections and deliveries, merges their latency
//! histograms, and sets the deliveries within 1 s against what shard 0 sent (the only
//! shard that knows it), which is Azure's target ("99 % delivered within 1 s").

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::report::{Latency, ServerUse};

/// The part of one shard's `RunResult` that is combined.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ShardResult {
    pub(crate) scenario: String,
    pub(crate) target: String,
    pub(crate) clients: usize,
    pub(crate) groups: usize,
    pub(crate) size: usize,
    pub(crate) rate: f64,
    pub(crate) shard: String,
    pub(crate) duration_s: f64,
    pub(crate) connected: usize,
    pub(crate) connect_errors: usize,
    pub(crate) sent_per_s: f64,
    pub(crate) send_errors: u64,
    pub(crate) deliveries_per_s: f64,
    pub(crate) latency: Latency,
    pub(crate) server: Option<ServerUse>,
    pub(crate) nodes: Vec<ServerUse>,
    pub(crate) sent_in_window: u64,
    pub(crate) due_in_window: u64,
    pub(crate) window_delivered: u64,
    pub(crate) on_time: u64,
    pub(crate) generator_cpu_percent: Option<f64>,
    pub(crate) server_closed: usize,
}

/// The run as a whole.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Combined {
    pub(crate) scenario: String,
    pub(crate) target: String,
    pub(crate) clients: usize,
    pub(crate) groups: usize,
    pub(crate) size: usize,
    pub(crate) rate: f64,
    pub(crate) duration_s: f64,
    pub(crate) shards: usize,
    pub(crate) connected: usize,
    pub(crate) connect_errors: usize,
    /// Client connections the servers ended during the run.
    pub(crate) server_closed: usize,
    pub(crate) sent_per_s: f64,
    pub(crate) send_errors: u64,
    /// Messages stamped inside the window and the deliveries they were due (every member).
    pub(crate) sent_in_window: u64,
    pub(crate) due_in_window: u64,
    pub(crate) due_per_s: f64,
    /// Deliveries per second that arrived inside the window (all shards).
    pub(crate) deliveries_per_s: f64,
    /// Deliveries of the window's messages that arrived by the end of the drain, and those
    /// of them within 1 s.
    pub(crate) window_delivered: u64,
    pub(crate) on_time: u64,
    /// `on_time` over `due_in_window`, in percent: a delivery that never came counts late.
    pub(crate) on_time_percent: f64,
    /// Latencies of the deliveries that arrived inside the window (histogram left out).
    pub(crate) latency: Latency,
    /// All server processes together, and each (in `--pid` order), from shard 0.
    pub(crate) server: Option<ServerUse>,
    pub(crate) nodes: Vec<ServerUse>,
    /// The generator processes' CPU added up (100 = one core).
    pub(crate) generator_cpu_percent: f64,
}

/// Combines the results of every shard of one run (each exactly once).
///
/// # Errors
/// The results are not the shards `0/n .. n-1/n` of one run (a shard missing or twice,
/// different scenarios or sizes), or shard 0's is missing: nothing sensible adds up then.
pub(crate) fn combine(shards: &[ShardResult]) -> Result<Combined, String> {
    let first = shards.first().ok_or("no shard results")?;
    let count = shards.len();
    let mut seen = vec![false; count];
    for s in shards {
        let same = s.scenario == first.scenario
            && s.target == first.target
            && s.clients == first.clients
            && s.groups == first.groups
            && s.size == first.size
            && s.rate == first.rate
            && s.duration_s == first.duration_s;
        if !same {
            return Err(format!(
                "shard {} ran something else than shard {} (scenario, size or rate differ)",
                s.shard, first.shard
            ));
        }
        let index = s
            .shard
            .split_once('/')
            .filter(|(_, n)| n.parse() == Ok(count))
            .and_then(|(i, _)| i.parse::<usize>().ok())
            .filter(|i| *i < count)
            .ok_or_else(|| format!("shard {} is not one of {count} shards", s.shard))?;
        if std::mem::replace(&mut seen[index], true) {
            return Err(format!("shard {} appears twice", s.shard));
        }
    }
    let sender = shards
        .iter()
        .find(|s| s.shard.starts_with("0/"))
        .ok_or("shard 0 (the sender) is missing")?;

    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
        .map_err(|e| format!("histogram: {e}"))?;
    for s in shards {
        for [value, count] in &s.latency.histogram {
            histogram
                .record_n(*value, *count)
                .map_err(|e| format!("shard {}: latency {value} µs: {e}", s.shard))?;
        }
    }
    let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    let latency = Latency {
        samples: histogram.len(),
        p50_ms: ms(0.5),
        p99_ms: ms(0.99),
        p999_ms: ms(0.999),
        max_ms: histogram.max() as f64 / 1000.0,
        histogram: Vec::new(),
    };
    let on_time: u64 = shards.iter().map(|s| s.on_time).sum();
    let due = sender.due_in_window;
    Ok(Combined {
        scenario: first.scenario.clone(),
        target: first.target.clone(),
        clients: first.clients,
        groups: first.groups,
        size: first.size,
        rate: first.rate,
        duration_s: first.duration_s,
        shards: count,
        connected: shards.iter().map(|s| s.connected).sum(),
        connect_errors: shards.iter().map(|s| s.connect_errors).sum(),
        server_closed: shards.iter().map(|s| s.server_closed).sum(),
        sent_per_s: sender.sent_per_s,
        send_errors: sender.send_errors,
        sent_in_window: sender.sent_in_window,
        due_in_window: due,
        due_per_s: due as f64 / first.duration_s.max(1e-9),
        deliveries_per_s: shards.iter().map(|s| s.deliveries_per_s).sum(),
        window_delivered: shards.iter().map(|s| s.window_delivered).sum(),
        on_time,
        on_time_percent: if due > 0 {
            on_time as f64 / due as f64 * 100.0
        } else {
            0.0
        },
        latency,
        server: sender.server.clone(),
        nodes: sender.nodes.clone(),
        generator_cpu_percent: shards.iter().filter_map(|s| s.generator_cpu_percent).sum(),
    })
}

/// Reads the shards' JSON files (each an array with one run, as `run --json` writes it).
pub(crate) fn read(paths: &[std::path::PathBuf]) -> Result<Vec<ShardResult>, String> {
    let mut shards = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let mut runs: Vec<ShardResult> = serde_json::from_str(&text)
            .map_err(|e| format!("{} is not a run's JSON: {e}", path.display()))?;
        if runs.len() != 1 {
            return Err(format!(
                "{} holds {} runs; a shard's file holds one (a single --target)",
                path.display(),
                runs.len()
            ));
        }
        shards.extend(runs.pop());
    }
    Ok(shards)
}

/// The combined run as a markdown table: the totals, then one row per node.
pub(crate) fn print_markdown(c: &Combined) {
    println!();
    println!(
        "| scenario | clients | connected | shards | sent/s | due/s | deliveries/s | within 1 s % | \
         p50 ms | p99 ms | p99.9 ms | max ms | not delivered | closed by server | server CPU % | \
         server RSS MiB | generator CPU % |"
    );
    println!(
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    println!(
        "| {} ({} groups, {} B) | {} | {} | {} | {:.1} | {:.0} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} | {} | {} | {:.0} |",
        c.scenario,
        c.groups,
        c.size,
        c.clients,
        c.connected,
        c.shards,
        c.sent_per_s,
        c.due_per_s,
        c.deliveries_per_s,
        c.on_time_percent,
        c.latency.p50_ms,
        c.latency.p99_ms,
        c.latency.p999_ms,
        c.latency.max_ms,
        c.due_in_window.saturating_sub(c.window_delivered),
        c.server_closed,
        c.server
            .as_ref()
            .map_or("–".into(), |s| format!("{:.0}", s.cpu_percent)),
        c.server
            .as_ref()
            .map_or("–".into(), |s| format!("{:.0}", s.rss_mib)),
        c.generator_cpu_percent,
    );
    if !c.nodes.is_empty() {
        println!();
        println!("| node | CPU % | RSS MiB | peak RSS MiB |");
        println!("|---:|---:|---:|---:|");
        for (i, n) in c.nodes.iter().enumerate() {
            println!(
                "| {} | {:.0} | {:.0} | {:.0} |",
                i + 1,
                n.cpu_percent,
                n.rss_mib,
                n.peak_rss_mib
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(shard: &str, latencies_us: &[u64], on_time: u64) -> ShardResult {
        let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
        for v in latencies_us {
            histogram.record(*v).unwrap();
        }
        let latency = Latency {
            histogram: histogram
                .iter_recorded()
                .map(|v| [v.value_iterated_to(), v.count_at_value()])
                .collect(),
            ..Latency::default()
        };
        let sender = shard.starts_with("0/");
        ShardResult {
            scenario: "big-group".into(),
            target: "hubcast".into(),
            clients: 20,
            groups: 2,
            size: 2048,
            rate: 30.0,
            shard: shard.into(),
            duration_s: 2.0,
            connected: 10,
            connect_errors: 0,
            sent_per_s: if sender { 30.0 } else { 0.0 },
            send_errors: 0,
            deliveries_per_s: 150.0,
            latency,
            server: None,
            nodes: if sender {
                vec![
                    ServerUse::between(Default::default(), Default::default(), 1.0, 1),
                    ServerUse::between(Default::default(), Default::default(), 1.0, 1),
                ]
            } else {
                Vec::new()
            },
            sent_in_window: if sender { 60 } else { 0 },
            // 60 messages to groups of 10.
            due_in_window: if sender { 600 } else { 0 },
            window_delivered: latencies_us.len() as u64,
            on_time,
            generator_cpu_percent: Some(10.0),
            server_closed: 0,
        }
    }

    #[test]
    fn shards_add_up_and_histograms_merge() {
        // Shard 0: 100 fast deliveries; shard 1: 100 at 2 s (late), in the same run.
        let fast = vec![1_000; 100];
        let slow = vec![2_000_000; 100];
        let combined = combine(&[shard("1/2", &slow, 0), shard("0/2", &fast, 100)]).unwrap();
        assert_eq!(combined.shards, 2);
        assert_eq!(combined.connected, 20);
        assert_eq!(combined.deliveries_per_s, 300.0);
        assert_eq!(combined.due_per_s, 300.0);
        assert_eq!(combined.latency.samples, 200);
        assert!(
            (combined.latency.p50_ms - 1.0).abs() < 0.01,
            "{:?}",
            combined.latency
        );
        assert!(
            (combined.latency.p99_ms - 2000.0).abs() < 2.0,
            "{:?}",
            combined.latency
        );
        // 100 on time out of 600 due: the 400 that never came count against the target.
        assert!((combined.on_time_percent - 100.0 / 6.0).abs() < 1e-9);
        assert_eq!(combined.nodes.len(), 2);
        assert_eq!(combined.generator_cpu_percent, 20.0);
    }

    #[test]
    fn a_missing_or_repeated_shard_is_refused() {
        let missing = combine(&[shard("0/3", &[1], 1), shard("1/3", &[1], 1)]).unwrap_err();
        assert!(missing.contains("not one of 2 shards"), "{missing}");
        let twice = combine(&[shard("0/2", &[1], 1), shard("0/2", &[1], 1)]).unwrap_err();
        assert!(twice.contains("twice"), "{twice}");
        let mut other = shard("1/2", &[1], 1);
        other.size = 100;
        let err = combine(&[shard("0/2", &[1], 1), other]).unwrap_err();
        assert!(err.contains("something else"), "{err}");
    }
}
