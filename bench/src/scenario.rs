//! The scenarios: Azure Web PubSub's performance guide (spec §7.2) and ours, as plans of
//! who connects, who is in which group, and what is sent how fast; and the runner that
//! carries a plan out against one system.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use hubcast_sdk::ServiceClient;
use hubcast_sdk::{Message as SdkMessage, SendOptions};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;

use crate::barrier;
use crate::limits::Shard;
use crate::metrics::{self, Stats, now_nanos, stamped_payload};
use crate::report::RunResult;
use crate::system::{HUB, Kind, System};
use crate::wire::{self, Identity, Outbox};

/// Deliveries a closed-loop sender lets be outstanding, in messages per recipient.
const FANOUT_WINDOW: u64 = 32;

/// Longest wait for messages still in flight when sending stops.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest wait for the other shards at the start line (they may connect 20,000 clients
/// each on a busy machine).
const BARRIER_TIMEOUT: Duration = Duration::from_secs(600);

/// A shard that does not send stops draining once nothing arrived for this long.
const QUIET: Duration = Duration::from_millis(1_000);

/// Control-plane calls in flight at once.
const CONTROL_CONCURRENCY: usize = 64;

/// The scenarios.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Scenario {
    /// Azure "send to big group": 10 groups of clients/10, 30 msg/s of 2 KB in.
    BigGroup,
    /// Azure's U100 outbound rate on one node: one group of 10,000, 30 msg/s of 2 KB.
    U100,
    /// Azure "send to small group": groups of 10, 0.4 msg/s per client in.
    SmallGroup,
    /// Azure "broadcast via REST": 3 msg/s of 2 KB to every connection, through REST.
    BroadcastRest,
    /// The same through gRPC (`Control.SendToAll`).
    BroadcastGrpc,
    /// Azure "send to user via REST": 0.18 msg/s per client, each to one user.
    UserRest,
    /// The same through gRPC (`Control.SendToUser`).
    UserGrpc,
    /// Azure "echo": clients raise events, an upstream webhook answers with the same body.
    Echo,
    /// Maximum fan-out: one group of every client, 100 B, as fast as the system delivers
    /// (closed loop: at most 32 messages per recipient outstanding).
    Fanout,
    /// The same with MQTT subscribers on one topic and an MQTT publisher (`--qos`): Hubcast's
    /// MQTT edge against mosquitto, and the floor.
    MqttFanout,
    /// The same with Socket.IO clients in one room, each message sent by the backend over
    /// HTTP (Azure's REST send on Hubcast, `io.to(room).emit` behind an HTTP endpoint on the
    /// Node peer), and the floor.
    #[value(name = "socketio-fanout")]
    SocketIoFanout,
    /// Idle connections: memory per connection after warm-up.
    Idle,
    /// Connect rate: new authenticated connections per second.
    ConnectRate,
    /// Slow consumer: one stalled client in a group of clients, 50 msg/s of 2 KB.
    SlowConsumer,
}

impl Scenario {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Scenario::BigGroup => "big-group",
            Scenario::U100 => "u100",
            Scenario::SmallGroup => "small-group",
            Scenario::BroadcastRest => "broadcast-rest",
            Scenario::BroadcastGrpc => "broadcast-grpc",
            Scenario::UserRest => "user-rest",
            Scenario::UserGrpc => "user-grpc",
            Scenario::Echo => "echo",
            Scenario::Fanout => "fanout",
            Scenario::MqttFanout => "mqtt-fanout",
            Scenario::SocketIoFanout => "socketio-fanout",
            Scenario::Idle => "idle",
            Scenario::ConnectRate => "connect-rate",
            Scenario::SlowConsumer => "slow-consumer",
        }
    }

    /// Echo needs an upstream (a Hubcast feature); the MQTT and Socket.IO fan-outs run on
    /// the systems that speak their protocol and on the floor (the bound for any WebSocket
    /// fan-out); every other scenario runs on the JSON clients of Hubcast, the floor, NATS
    /// and Socket.IO (control-plane sends become a publisher connection on the last three).
    pub(crate) fn supports(self, kind: Kind) -> bool {
        match self {
            Scenario::Echo => kind == Kind::Hubcast,
            Scenario::MqttFanout => kind.is_mqtt() || kind == Kind::Floor,
            Scenario::SocketIoFanout => kind.is_socketio() || kind == Kind::Floor,
            _ => matches!(
                kind,
                Kind::Hubcast | Kind::Floor | Kind::Nats | Kind::SocketIo
            ),
        }
    }

    /// One group of every client, closed loop.
    pub(crate) fn is_fanout(self) -> bool {
        matches!(
            self,
            Scenario::Fanout | Scenario::MqttFanout | Scenario::SocketIoFanout
        )
    }

    fn sends(self) -> bool {
        !matches!(self, Scenario::Idle | Scenario::ConnectRate)
    }
}

/// The command-line knobs of a run.
#[derive(Debug, Clone)]
pub(crate) struct RunArgs {
    pub(crate) scenario: Scenario,
    pub(crate) clients: Option<usize>,
    pub(crate) groups: Option<usize>,
    pub(crate) rate: Option<f64>,
    pub(crate) size: Option<usize>,
    pub(crate) duration: f64,
    pub(crate) warmup: f64,
    pub(crate) reliable: bool,
    pub(crate) qos: u8,
    pub(crate) shard: Shard,
    pub(crate) connect_concurrency: usize,
    /// A directory shared by the shards of one run: they start together (see `barrier`).
    pub(crate) barrier: Option<PathBuf>,
}

/// A scenario with every number decided.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub(crate) scenario: Scenario,
    /// Clients over all shards (publishers and the stalled client not counted).
    pub(crate) clients: usize,
    pub(crate) groups: usize,
    /// Messages per second sent in; 0 means closed loop (as fast as delivered).
    pub(crate) rate: f64,
    pub(crate) size: usize,
    pub(crate) duration: Duration,
    pub(crate) warmup: Duration,
    pub(crate) reliable: bool,
    /// MQTT: the QoS of publishes and subscriptions.
    pub(crate) qos: u8,
    pub(crate) shard: Shard,
    pub(crate) connect_concurrency: usize,
    pub(crate) barrier: Option<PathBuf>,
    /// Publisher connections (shard 0).
    pub(crate) publishers: usize,
}

impl RunArgs {
    /// Fills in the scenario's defaults and checks the knobs.
    pub(crate) fn plan(&self) -> Result<Plan, String> {
        use Scenario::*;
        let clients = self.clients.unwrap_or(match self.scenario {
            U100 => 10_000,
            _ => 1_000,
        });
        if clients == 0 {
            return Err("--clients must be at least 1".into());
        }
        let groups = self.groups.unwrap_or(match self.scenario {
            BigGroup => 10,
            SmallGroup => clients.div_ceil(10),
            _ => 1,
        });
        if groups == 0 || groups > clients {
            return Err(format!(
                "--groups must be between 1 and the clients ({clients})"
            ));
        }
        let clients_f = clients as f64;
        let rate = self.rate.unwrap_or(match self.scenario {
            BigGroup | U100 => 30.0,
            SmallGroup => 0.4 * clients_f,
            BroadcastRest | BroadcastGrpc => 3.0,
            UserRest | UserGrpc => 0.18 * clients_f,
            Echo => 0.5 * clients_f,
            SlowConsumer => 50.0,
            Fanout | MqttFanout | SocketIoFanout | Idle | ConnectRate => 0.0,
        });
        if !(0.0..=1_000_000.0).contains(&rate) {
            return Err("--rate must be between 0 and 1,000,000 messages/s".into());
        }
        if rate == 0.0
            && !(self.scenario.is_fanout() || matches!(self.scenario, Idle | ConnectRate))
        {
            return Err("--rate 0 (closed loop) is only for the fan-out scenarios".into());
        }
        let size = self
            .size
            .unwrap_or(if self.scenario.is_fanout() { 100 } else { 2048 });
        if !(32..=1_000_000).contains(&size) {
            return Err("--size must be between 32 and 1,000,000 bytes".into());
        }
        if !(0.1..=600.0).contains(&self.duration) || !(0.0..=600.0).contains(&self.warmup) {
            return Err("--duration must be 0.1–600 s and --warmup 0–600 s".into());
        }
        if self.scenario.is_fanout() && self.shard.count > 1 {
            return Err("fan-out runs closed loop in one process; it cannot be sharded".into());
        }
        let publishers = match self.scenario {
            SmallGroup | UserRest | UserGrpc => 4,
            _ => 1,
        };
        Ok(Plan {
            scenario: self.scenario,
            clients,
            groups,
            rate,
            size,
            duration: Duration::from_secs_f64(self.duration),
            warmup: Duration::from_secs_f64(self.warmup),
            reliable: self.reliable,
            qos: self.qos,
            shard: self.shard,
            connect_concurrency: self.connect_concurrency,
            barrier: self.barrier.clone(),
            publishers,
        })
    }
}

/// What the k-th message is addressed to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Destination {
    Group(String),
    All,
    User(usize),
}

impl Plan {
    pub(crate) fn local_clients(&self) -> usize {
        (0..self.clients).filter(|i| self.shard.owns(*i)).count()
    }

    /// Sockets this process holds at most (clients, publishers, the stalled client, and
    /// the control-plane connections).
    pub(crate) fn local_sockets(&self) -> usize {
        self.local_clients() + self.publishers + 1 + CONTROL_CONCURRENCY
    }

    fn group_of(&self, client: usize) -> Option<String> {
        match self.scenario {
            Scenario::BigGroup
            | Scenario::U100
            | Scenario::Fanout
            | Scenario::MqttFanout
            | Scenario::SocketIoFanout
            | Scenario::SlowConsumer => Some(format!("g{}", client % self.groups)),
            Scenario::SmallGroup => Some(format!("g{}", client / 10)),
            _ => None,
        }
    }

    /// Who client `index` is, on `kind`. On the floor and the peers, "all" and "user"
    /// destinations are groups too.
    fn identity(&self, kind: Kind, index: usize) -> Identity {
        let mut groups: Vec<String> = self.group_of(index).into_iter().collect();
        let user = Some(format!("u{index}"));
        if kind != Kind::Hubcast {
            match self.scenario {
                Scenario::BroadcastRest | Scenario::BroadcastGrpc => groups.push("all".into()),
                Scenario::UserRest | Scenario::UserGrpc => groups.push(format!("u{index}")),
                _ => {}
            }
        }
        Identity {
            index,
            groups,
            user,
            publisher: false,
            reliable: self.reliable && kind == Kind::Hubcast,
            qos: self.qos,
            small_receive_buffer: false,
        }
    }

    fn destination(&self, k: u64) -> Destination {
        match self.scenario {
            Scenario::BroadcastRest | Scenario::BroadcastGrpc => Destination::All,
            Scenario::UserRest | Scenario::UserGrpc => {
                // A stride coprime with most client counts spreads the users.
                Destination::User(((k * 7919) % self.clients as u64) as usize)
            }
            Scenario::SmallGroup => {
                Destination::Group(format!("g{}", k % self.clients.div_ceil(10) as u64))
            }
            _ => Destination::Group(format!("g{}", k % self.groups as u64)),
        }
    }

    /// How many clients, over all shards, the k-th message is due to (connected or not).
    fn recipients(&self, k: u64) -> u64 {
        if self.scenario == Scenario::Echo {
            return 1;
        }
        match self.destination(k) {
            Destination::All => self.clients as u64,
            Destination::User(_) => 1,
            Destination::Group(group) => group[1..]
                .parse::<usize>()
                .map_or(0, |g| self.group_size(g) as u64),
        }
    }

    /// Members of group `g` over all shards.
    fn group_size(&self, g: usize) -> usize {
        match self.scenario {
            Scenario::SmallGroup => self.clients.saturating_sub(g * 10).min(10),
            _ if g < self.groups => {
                self.clients / self.groups + usize::from(g < self.clients % self.groups)
            }
            _ => 0,
        }
    }

    /// How many of this shard's clients the k-th message reaches.
    fn local_recipients(&self, destination: &Destination, per_group: &[u64]) -> u64 {
        match destination {
            Destination::All => self.local_clients() as u64,
            Destination::User(user) => u64::from(self.shard.owns(*user)),
            Destination::Group(group) => group[1..]
                .parse::<usize>()
                .ok()
                .and_then(|g| per_group.get(g))
                .copied()
                .unwrap_or(0),
        }
    }
}

/// One run of `plan` against `system`.
pub(crate) async fn run(plan: &Plan, system: &System) -> Result<RunResult, String> {
    let stats = Arc::new(Stats::new());
    let kind = system.kind;
    let locals: Vec<usize> = (0..plan.clients).filter(|i| plan.shard.owns(*i)).collect();
    let mut per_group = vec![0u64; plan.clients.div_ceil(10).max(plan.groups)];
    for &i in &locals {
        if let Some(group) = plan.group_of(i)
            && let Ok(g) = group[1..].parse::<usize>()
        {
            per_group[g] += 1;
        }
    }
    let before = metrics::sample_all(&system.pids);

    // Connect this shard's clients.
    let connect_started = Instant::now();
    let semaphore = Arc::new(Semaphore::new(plan.connect_concurrency));
    let mut connecting = futures_util::stream::iter(locals.iter().map(|&i| {
        let who = plan.identity(kind, i);
        let semaphore = semaphore.clone();
        async move {
            let _permit = semaphore.acquire().await;
            wire::connect(system, &who).await.map(|ws| (who, ws))
        }
    }))
    .buffer_unordered(plan.connect_concurrency);
    let mut drivers = JoinSet::new();
    let mut outboxes: Vec<Outbox> = Vec::with_capacity(locals.len());
    let mut connect_errors = 0usize;
    let mut first_error = None;
    while let Some(connected) = connecting.next().await {
        match connected {
            Ok((who, ws)) => {
                let (tx, rx) = mpsc::channel(16);
                outboxes.push(tx);
                drivers.spawn(wire::drive(kind, who, ws, rx, stats.clone()));
            }
            Err(e) => {
                connect_errors += 1;
                first_error.get_or_insert(e);
            }
        }
    }
    drop(connecting);
    let connect_seconds = connect_started.elapsed().as_secs_f64();
    if let Some(e) = &first_error {
        eprintln!("{connect_errors} connections failed; the first: {e}");
    }
    eprintln!(
        "shard {}/{}: {} clients connected in {connect_seconds:.1} s",
        plan.shard.index,
        plan.shard.count,
        outboxes.len()
    );
    if outboxes.is_empty() && !locals.is_empty() {
        return Err(format!(
            "no client connected: {}",
            first_error.unwrap_or_default()
        ));
    }

    if let Some(dir) = &plan.barrier {
        let start = barrier::wait(dir, plan.shard, BARRIER_TIMEOUT).await?;
        let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let window_start = start.saturating_add(nanos(plan.warmup));
        stats.fix_window(
            window_start,
            window_start.saturating_add(nanos(plan.duration)),
        );
    }

    let mut result = RunResult::new(plan, kind);
    result.connected = outboxes.len();
    result.connect_errors = connect_errors;
    result.connects_per_s = outboxes.len() as f64 / connect_seconds.max(1e-9);

    // The slow consumer: one more member of g0 that never reads.
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut stalled = None;
    if plan.scenario == Scenario::SlowConsumer && plan.shard.sends() {
        let mut who = plan.identity(kind, plan.clients + plan.publishers);
        who.groups = vec!["g0".into()];
        who.small_receive_buffer = true;
        let ws = wire::connect(system, &who).await?;
        stalled = Some(tokio::spawn(wire::stall(ws, stop_rx.clone())));
    }

    if plan.scenario == Scenario::ConnectRate {
        result.server = before
            .zip(metrics::sample_all(&system.pids))
            .map(|(a, b)| crate::report::ServerUse::between(a, b, connect_seconds, outboxes.len()));
        drop(outboxes);
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, drivers.join_all()).await;
        return Ok(result);
    }

    if plan.scenario == Scenario::Idle {
        tokio::time::sleep(plan.warmup).await;
        let own_before = metrics::sample(std::process::id());
        let window = Instant::now();
        let at_start = metrics::sample_all(&system.pids);
        tokio::time::sleep(plan.duration).await;
        let after = metrics::sample_all(&system.pids);
        if let (Some(empty), Some(held)) = (before, after) {
            result.idle_rss_per_connection_kib = Some(
                (held.rss_kib.saturating_sub(empty.rss_kib)) as f64 / outboxes.len().max(1) as f64,
            );
        }
        result.server = at_start.zip(after).map(|(a, b)| {
            crate::report::ServerUse::between(a, b, window.elapsed().as_secs_f64(), outboxes.len())
        });
        result.generator_cpu_percent = generator_cpu(own_before, window.elapsed());
        let unexpected = count_server_closes(&mut drivers);
        result.server_closed = unexpected;
        drop(outboxes);
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, drivers.join_all()).await;
        return Ok(result);
    }

    // Publishers (shard 0) for group sends, and for control-plane sends on the peers.
    // The Socket.IO fan-out sends from the backend on both Socket.IO systems: Hubcast's
    // serverless Socket.IO clients cannot send to a room themselves.
    let via_control = match kind {
        Kind::Hubcast => matches!(
            plan.scenario,
            Scenario::BroadcastRest
                | Scenario::BroadcastGrpc
                | Scenario::UserRest
                | Scenario::UserGrpc
        ),
        Kind::HubcastSocketIo | Kind::SocketIo => plan.scenario == Scenario::SocketIoFanout,
        _ => false,
    };
    let mut publishers: Vec<Outbox> = Vec::new();
    if plan.shard.sends() && plan.scenario != Scenario::Echo && !via_control {
        for p in 0..plan.publishers {
            let who = Identity {
                index: plan.clients + p,
                publisher: true,
                qos: plan.qos,
                ..Identity::default()
            };
            let ws = wire::connect(system, &who).await?;
            let (tx, rx) = mpsc::channel(1024);
            publishers.push(tx);
            drivers.spawn(wire::drive(kind, who, ws, rx, stats.clone()));
        }
    }
    let control = if via_control && plan.shard.sends() {
        Some(Control::new(plan.scenario, system).await?)
    } else {
        None
    };

    // Send for warm-up + duration; measure the duration.
    let expected = Arc::new(AtomicU64::new(0));
    let sender = Sender {
        plan,
        kind,
        publishers: &publishers,
        clients: &outboxes,
        control: control.as_ref(),
        per_group: &per_group,
        expected: &expected,
        stats: &stats,
        inflight: Arc::new(Semaphore::new(CONTROL_CONCURRENCY)),
        send_errors: Arc::new(AtomicU64::new(0)),
        due_in_window: AtomicU64::new(0),
    };
    let started = Instant::now();
    let total = plan.warmup + plan.duration;
    let mut window: Option<WindowStart> = None;
    let mut sent: u64 = 0;
    let mut sent_at_window = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        let elapsed = started.elapsed();
        if window.is_none() && elapsed >= plan.warmup {
            stats.set_measuring(true);
            sent_at_window = sent;
            window = Some(WindowStart {
                at: Instant::now(),
                measured: stats.measured.load(Ordering::Relaxed),
                server: metrics::sample_all(&system.pids),
                own: metrics::sample(std::process::id()),
                nodes: system
                    .pids
                    .iter()
                    .map(|pid| metrics::sample(*pid))
                    .collect(),
            });
        }
        if elapsed >= total {
            break;
        }
        if !plan.shard.sends() || !plan.scenario.sends() {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        if plan.rate > 0.0 {
            tick.tick().await;
            let due = (started.elapsed().as_secs_f64() * plan.rate) as u64;
            while sent < due {
                sender.send(sent).await;
                sent += 1;
            }
        } else {
            // Closed loop: keep at most FANOUT_WINDOW messages per recipient outstanding.
            let limit = FANOUT_WINDOW * (locals.len() as u64).max(1);
            let outstanding = expected
                .load(Ordering::Relaxed)
                .saturating_sub(stats.delivered.load(Ordering::Relaxed));
            if outstanding <= limit {
                sender.send(sent).await;
                sent += 1;
            } else {
                stats.waiting.store(true, Ordering::SeqCst);
                let _ =
                    tokio::time::timeout(Duration::from_millis(5), stats.progress.notified()).await;
                stats.waiting.store(false, Ordering::SeqCst);
            }
        }
    }
    stats.set_measuring(false);
    let WindowStart {
        at: window_start,
        measured: measured_before,
        server: server_before,
        own: own_before,
        nodes: nodes_before,
    } = window.expect("the window opens before the run ends");
    let window_seconds = window_start.elapsed().as_secs_f64();
    let server_after = metrics::sample_all(&system.pids);
    // Per node: the connections each holds are not known here, so its per-connection RSS
    // is left at 0.
    result.nodes = system
        .pids
        .iter()
        .zip(nodes_before)
        .filter_map(|(pid, before)| {
            let after = metrics::sample(*pid)?;
            let mut node = crate::report::ServerUse::between(before?, after, window_seconds, 0);
            node.rss_per_connection_kib = 0.0;
            Some(node)
        })
        .collect();
    let measured = stats.measured.load(Ordering::Relaxed) - measured_before;

    // Let what is in flight arrive (or not) before counting losses. A shard that did not
    // send does not know what is due: it waits until deliveries stop.
    let drain = Instant::now();
    if plan.shard.sends() {
        while stats.delivered.load(Ordering::Relaxed) < expected.load(Ordering::Relaxed)
            && drain.elapsed() < DRAIN_TIMEOUT
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    } else {
        let mut last = stats.delivered.load(Ordering::Relaxed);
        let mut last_change = Instant::now();
        while last_change.elapsed() < QUIET && drain.elapsed() < DRAIN_TIMEOUT {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let now = stats.delivered.load(Ordering::Relaxed);
            if now != last {
                last = now;
                last_change = Instant::now();
            }
        }
    }
    sender.wait_for_control().await;

    result.sent = sent;
    result.sent_in_window = sent - sent_at_window;
    result.due_in_window = sender.due_in_window.load(Ordering::Relaxed);
    result.window_delivered = stats.window_delivered.load(Ordering::Relaxed);
    result.on_time = stats.on_time.load(Ordering::Relaxed);
    if plan.shard.count == 1 && result.due_in_window > 0 {
        result.on_time_percent = Some(result.on_time as f64 / result.due_in_window as f64 * 100.0);
    }
    result.sent_per_s = (sent - sent_at_window) as f64 / window_seconds;
    result.send_errors = sender.send_errors.load(Ordering::Relaxed);
    result.expected = expected.load(Ordering::Relaxed);
    result.delivered = stats.delivered.load(Ordering::Relaxed);
    result.deliveries_per_s = measured as f64 / window_seconds;
    result.set_latency(&stats.latencies());
    result.server = server_before
        .zip(server_after)
        .map(|(a, b)| crate::report::ServerUse::between(a, b, window_seconds, outboxes.len()));
    result.set_cpu_per_delivery();
    result.generator_cpu_percent =
        generator_cpu(own_before, Duration::from_secs_f64(window_seconds));
    result.server_closed = count_server_closes(&mut drivers);

    let _ = stop_tx.send(true);
    if let Some(stalled) = stalled {
        result.stalled_client_closed_by_server = stalled.await.ok();
    }
    drop(publishers);
    drop(outboxes);
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, drivers.join_all()).await;
    Ok(result)
}

/// What is read when the measurement window opens, to be compared at its end.
struct WindowStart {
    at: Instant,
    /// Deliveries measured before the window (counted from here).
    measured: u64,
    /// The server processes together, this process, and each server process.
    server: Option<metrics::ProcSample>,
    own: Option<metrics::ProcSample>,
    nodes: Vec<Option<metrics::ProcSample>>,
}

/// Connections that the server ended while the run was going (drivers already finished).
fn count_server_closes(drivers: &mut JoinSet<bool>) -> usize {
    let mut closed = 0;
    while let Some(done) = drivers.try_join_next() {
        if done.unwrap_or(true) {
            closed += 1;
        }
    }
    closed
}

fn generator_cpu(before: Option<metrics::ProcSample>, elapsed: Duration) -> Option<f64> {
    let after = metrics::sample(std::process::id())?;
    Some((after.cpu_seconds - before?.cpu_seconds) / elapsed.as_secs_f64().max(1e-9) * 100.0)
}

/// Hands the k-th message to the right publisher, client or control-plane call.
struct Sender<'a> {
    plan: &'a Plan,
    kind: Kind,
    publishers: &'a [Outbox],
    clients: &'a [Outbox],
    control: Option<&'a Control>,
    per_group: &'a [u64],
    expected: &'a AtomicU64,
    stats: &'a Stats,
    inflight: Arc<Semaphore>,
    send_errors: Arc<AtomicU64>,
    /// Deliveries due, over all shards, for the messages stamped inside the window.
    due_in_window: AtomicU64,
}

impl Sender<'_> {
    async fn send(&self, k: u64) {
        let stamp = now_nanos();
        let text = stamped_payload(self.plan.size, stamp);
        if self.stats.in_window(stamp) {
            self.due_in_window
                .fetch_add(self.plan.recipients(k), Ordering::Relaxed);
        }
        if self.plan.scenario == Scenario::Echo {
            if self.clients.is_empty() {
                return;
            }
            let client = &self.clients[(k as usize) % self.clients.len()];
            self.expected.fetch_add(1, Ordering::Relaxed);
            if client.send(wire::echo_event(&text)).await.is_err() {
                self.send_errors.fetch_add(1, Ordering::Relaxed);
            }
            return;
        }
        let destination = self.plan.destination(k);
        let recipients = self.plan.local_recipients(&destination, self.per_group);
        self.expected.fetch_add(recipients, Ordering::Relaxed);
        if let Some(control) = self.control {
            let Ok(permit) = self.inflight.clone().acquire_owned().await else {
                return;
            };
            let control = control.clone();
            let errors = self.send_errors.clone();
            tokio::spawn(async move {
                if let Err(e) = control.send(&destination, text).await
                    && errors.fetch_add(1, Ordering::Relaxed) == 0
                {
                    eprintln!("control-plane send failed: {e}");
                }
                drop(permit);
            });
            return;
        }
        let group = match &destination {
            Destination::Group(group) => group.clone(),
            Destination::All => "all".to_owned(),
            Destination::User(user) => format!("u{user}"),
        };
        let publisher = &self.publishers[(k as usize) % self.publishers.len().max(1)];
        let message = match wire::publish(self.kind, &group, &text, self.plan.qos, k) {
            Ok(message) => message,
            Err(e) => {
                if self.send_errors.fetch_add(1, Ordering::Relaxed) == 0 {
                    eprintln!("cannot publish: {e}");
                }
                return;
            }
        };
        if publisher.send(message).await.is_err() {
            self.send_errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Waits for control-plane calls still in flight.
    async fn wait_for_control(&self) {
        let _ = tokio::time::timeout(
            DRAIN_TIMEOUT,
            self.inflight.acquire_many(CONTROL_CONCURRENCY as u32),
        )
        .await;
    }
}

/// Hubcast's control plane, as a backend uses it: REST (Azure's API, HTTP/1.1 keep-alive)
/// or gRPC (the SDK's `ServiceClient`).
#[derive(Clone)]
enum Control {
    Rest {
        client: hyper_util::client::legacy::Client<
            hyper_util::client::legacy::connect::HttpConnector,
            http_body_util::Full<bytes::Bytes>,
        >,
        base: String,
        key: String,
        /// Hubcast's JSON clients, Hubcast's Socket.IO clients, or the Socket.IO peer.
        kind: Kind,
    },
    Grpc(ServiceClient),
}

impl Control {
    async fn new(scenario: Scenario, system: &System) -> Result<Self, String> {
        match scenario {
            Scenario::BroadcastGrpc | Scenario::UserGrpc => {
                let grpc = system
                    .grpc
                    .as_deref()
                    .ok_or("gRPC scenarios need --grpc with --url")?;
                let connection_string =
                    hubcast_auth::ConnectionString::format(&system.http_url(0), &system.access_key);
                ServiceClient::connect(&connection_string, grpc)
                    .await
                    .map(Control::Grpc)
                    .map_err(|e| format!("gRPC connect {grpc}: {e}"))
            }
            _ => {
                let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
                connector.set_nodelay(true);
                let client = hyper_util::client::legacy::Client::builder(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .pool_max_idle_per_host(CONTROL_CONCURRENCY)
                // Below the servers' keep-alive timeouts (Node's default is 5 s), so an idle
                // connection is not reused just as the server closes it.
                .pool_idle_timeout(Duration::from_secs(3))
                .build(connector);
                Ok(Control::Rest {
                    client,
                    base: system.http_url(0),
                    key: system.access_key.clone(),
                    kind: system.kind,
                })
            }
        }
    }

    async fn send(&self, destination: &Destination, text: String) -> Result<(), String> {
        match self {
            Control::Grpc(client) => match destination {
                Destination::All => client
                    .send_to_all(HUB, SdkMessage::text(text), SendOptions::new())
                    .await
                    .map_err(|e| e.to_string()),
                Destination::User(user) => client
                    .send_to_user(
                        HUB,
                        &format!("u{user}"),
                        SdkMessage::text(text),
                        SendOptions::new(),
                    )
                    .await
                    .map_err(|e| e.to_string()),
                Destination::Group(group) => client
                    .send_to_group(HUB, group, SdkMessage::text(text), SendOptions::new())
                    .await
                    .map_err(|e| e.to_string()),
            },
            Control::Rest {
                client,
                base,
                key,
                kind,
            } => {
                let request = if *kind == Kind::SocketIo {
                    // The peer's backend endpoint: `io.to(room).emit("msg", body)`.
                    let Destination::Group(group) = destination else {
                        return Err("the Socket.IO peer sends to rooms only".into());
                    };
                    http::Request::post(format!("{base}/publish/{group}"))
                        .header(http::header::CONTENT_TYPE, "text/plain")
                        .body(http_body_util::Full::new(bytes::Bytes::from(text)))
                        .map_err(|e| e.to_string())?
                } else {
                    let (path, body) = match (destination, kind) {
                        // Azure's REST send to a Socket.IO room: the group of the room, and
                        // the Engine.IO packet the room's sockets get, as the server SDK
                        // encodes it.
                        (Destination::Group(group), Kind::HubcastSocketIo) => (
                            format!(
                                "/api/hubs/{HUB}/groups/{}/:send",
                                wire::socketio_room_group(group)
                            ),
                            wire::socketio_event(&text),
                        ),
                        (Destination::All, _) => (format!("/api/hubs/{HUB}/:send"), text),
                        (Destination::User(user), _) => {
                            (format!("/api/hubs/{HUB}/users/u{user}/:send"), text)
                        }
                        (Destination::Group(group), _) => {
                            (format!("/api/hubs/{HUB}/groups/{group}/:send"), text)
                        }
                    };
                    let url = format!("{base}{path}");
                    let token =
                        hubcast_auth::mint_service_token(key, &url, Duration::from_secs(3600));
                    http::Request::post(format!("{url}?api-version=2024-01-01"))
                        .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
                        .header(http::header::CONTENT_TYPE, "text/plain")
                        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
                        .map_err(|e| e.to_string())?
                };
                let path = request.uri().path().to_owned();
                let response = client.request(request).await.map_err(|e| e.to_string())?;
                if response.status().is_success() {
                    Ok(())
                } else {
                    Err(format!("REST {path} answered {}", response.status()))
                }
            }
        }
    }
}
