//! `hubcast-bench`: the load generator behind `docs/PERFORMANCE.md`.
//!
//! It starts the system it measures (Hubcast, the raw tokio-tungstenite [`floor`], NATS with
//! its WebSocket listener, a Socket.IO server) or takes URLs of running ones, opens client
//! connections from source addresses spread over 127.0.0.0/8, runs one of Azure Web PubSub's
//! performance scenarios (or one of ours), and reports delivered messages/s, latency
//! percentiles (HdrHistogram, from send timestamps carried in every payload) and the server
//! process's CPU and RSS read from `/proc`, as JSON and as markdown rows.
//!
//! Everything is bounded: a run has a fixed number of connections and a fixed duration,
//! targets loopback only, and stops by itself.

mod aggregate;
mod barrier;
mod floor;
mod limits;
mod metrics;
mod mqtt;
mod report;
mod scenario;
mod system;
mod webhook;
mod wire;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::scenario::{RunArgs, Scenario};
use crate::system::Kind;

#[derive(Parser)]
#[command(about = "Load generator for Hubcast and its peers (loopback only, bounded runs)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one scenario against one or more systems, one after the other.
    Run(Box<RunCli>),
    /// Serve the raw fan-out floor (started by `run`; a separate process so its CPU and
    /// memory are measured the way the other systems' are).
    Floor {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
    },
    /// Combine the JSON files of the shards of one run (`run --shard i/n --json FILE`)
    /// into one result: connections and deliveries added up, latency histograms merged,
    /// and the share of deliveries within 1 s of what shard 0 sent.
    Aggregate {
        /// The shards' JSON files, one per shard.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Write the combined result as JSON to this file.
        #[arg(long)]
        json: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
struct RunCli {
    /// The scenario.
    #[arg(long, value_enum)]
    scenario: Scenario,
    /// Systems to measure, in this order (repeatable; `all` = every system, each running
    /// the scenarios it has an equivalent of).
    #[arg(long = "target", value_enum, default_value = "hubcast")]
    targets: Vec<Kind>,
    /// Client connections (of this shard, when sharded, they are counted over all shards).
    #[arg(long)]
    clients: Option<usize>,
    /// Groups (big-group: 10; u100 and fanout: 1; small-group: clients/10).
    #[arg(long)]
    groups: Option<usize>,
    /// Messages per second sent into the system (scenario default when absent).
    #[arg(long)]
    rate: Option<f64>,
    /// Payload size in bytes (scenario default when absent).
    #[arg(long)]
    size: Option<usize>,
    /// Seconds of measurement after the connections are up.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of load before the measurement starts (and of settling for `idle`).
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Hubcast clients use `json.reliable.webpubsub.azure.v1` (acknowledging every 64
    /// messages) instead of `json.webpubsub.azure.v1`.
    #[arg(long)]
    reliable: bool,
    /// MQTT systems: the QoS of the publishes and of the subscriptions (0 or 1).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=1))]
    qos: u8,
    /// Use running servers instead of starting one: WebSocket base URLs (repeatable;
    /// clients are spread over them round-robin). Only with a single `--target`.
    #[arg(long = "url")]
    urls: Vec<String>,
    /// With `--url` and hubcast: the access key the servers accept.
    #[arg(long, env = "HUBCAST_BENCH_ACCESS_KEY")]
    access_key: Option<String>,
    /// With `--url` and hubcast: gRPC address for the control-plane scenarios.
    #[arg(long)]
    grpc: Option<String>,
    /// With `--url`: server process ids to read CPU and RSS from (repeatable).
    #[arg(long = "pid")]
    pids: Vec<u32>,
    /// This process's share of the clients, `i/n` (0-based): clients whose index modulo n
    /// is i. Shard 0 alone sends; run the shards at the same time with the same arguments.
    #[arg(long, default_value = "0/1")]
    shard: String,
    /// A directory shared by the shards of one run (empty at the start): each shard waits
    /// there until all are connected, then they all start sending and measuring at the same
    /// wall-clock instant.
    #[arg(long)]
    barrier: Option<PathBuf>,
    /// The `hubcast` binary to start (default: next to this binary).
    #[arg(long)]
    hubcast_bin: Option<PathBuf>,
    /// The `nats-server` binary.
    #[arg(long, default_value = "nats-server")]
    nats_bin: PathBuf,
    /// The `mosquitto` binary (looked up on PATH, then in /usr/sbin).
    #[arg(long, default_value = "mosquitto")]
    mosquitto_bin: PathBuf,
    /// Connections opened at once while connecting.
    #[arg(long, default_value_t = 200)]
    connect_concurrency: usize,
    /// Write the results as a JSON array to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Exit non-zero unless every run delivered messages (or connected, or held its
    /// connections) and lost none that it should not have: what CI checks.
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Floor { listen } => floor::serve(&listen).await,
            Command::Run(run) => run_cli(*run).await,
            Command::Aggregate { files, json } => aggregate_cli(&files, json.as_deref()),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run_cli(cli: RunCli) -> Result<(), String> {
    let shard = limits::Shard::parse(&cli.shard)?;
    let mut targets = Vec::new();
    for target in cli.targets {
        match target {
            Kind::All => targets.extend(Kind::EVERY),
            other => targets.push(other),
        }
    }
    if !cli.urls.is_empty() && targets.len() != 1 {
        return Err("--url takes exactly one --target (the kind of the running servers)".into());
    }
    let args = RunArgs {
        scenario: cli.scenario,
        clients: cli.clients,
        groups: cli.groups,
        rate: cli.rate,
        size: cli.size,
        duration: cli.duration,
        warmup: cli.warmup,
        reliable: cli.reliable,
        qos: cli.qos,
        shard,
        connect_concurrency: cli.connect_concurrency.max(1),
        barrier: cli.barrier,
    };
    let plan = args.plan()?;
    let nofile = limits::raise_nofile(plan.local_sockets() + 64)?;
    eprintln!(
        "{}: {} clients ({} here), open-file limit {nofile}",
        plan.scenario.name(),
        plan.clients,
        plan.local_clients()
    );
    let start = system::StartOptions {
        hubcast_bin: cli.hubcast_bin,
        nats_bin: cli.nats_bin,
        mosquitto_bin: cli.mosquitto_bin,
        urls: cli.urls,
        access_key: cli.access_key,
        grpc: cli.grpc,
        pids: cli.pids,
    };
    let mut results = Vec::new();
    for kind in targets {
        if !plan.scenario.supports(kind) {
            eprintln!(
                "{}: {} has no equivalent of this scenario; skipped",
                plan.scenario.name(),
                kind.name()
            );
            continue;
        }
        eprintln!("--- {} on {}", plan.scenario.name(), kind.name());
        let system = system::System::start(kind, &plan, &start).await?;
        let result = scenario::run(&plan, &system).await;
        system.stop();
        let result = result?;
        println!("{}", serde_json::to_string(&result).unwrap_or_default());
        results.push(result);
    }
    report::print_markdown(&results);
    if let Some(path) = &cli.json {
        let text = serde_json::to_string_pretty(&results).map_err(|e| e.to_string())?;
        std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    if cli.check {
        report::check(&results)?;
    }
    Ok(())
}

fn aggregate_cli(files: &[PathBuf], json: Option<&std::path::Path>) -> Result<(), String> {
    let combined = aggregate::combine(&aggregate::read(files)?)?;
    let text = serde_json::to_string_pretty(&combined).map_err(|e| e.to_string())?;
    println!("{text}");
    aggregate::print_markdown(&combined);
    if let Some(path) = json {
        std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(())
}
