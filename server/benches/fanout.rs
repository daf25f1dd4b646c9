//! Fan-out cost per recipient, plain JSON vs reliable JSON vs reliable protobuf, against a
//! copy-only floor, measured in one run (ratios, since shared machines are noisy).
//!
//! Run with: `cargo bench -p hubcast-server --bench fanout`
//!
//! What one "delivery" covers is everything the server does per recipient: the router's
//! fan-out into the recipient's outbox (numbering and buffering for reliable connections),
//! the writer taking the batch and rendering each frame (splicing the sequence id for
//! reliable ones), and the copy of the payload into a socket write buffer, as tungstenite
//! does when it frames a message. The floor is that last copy alone. The socket write itself
//! is the same for every protocol and left out.

use std::hint::black_box;
use std::io::{Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures_util::FutureExt as _;
use hubcast_server::message::{Data, Frame, Message, Queued, WireFormat};
use hubcast_server::protocol::{self, Rendered};
use hubcast_server::router::outbox::Taken;
use hubcast_server::router::{
    ConnectSpec, Connection, ConnectionId, HubKey, Permissions, ReliableLimits, Router,
    RouterConfig,
};

const PAYLOAD: usize = 2048;
const ROUNDS_TARGET: Duration = Duration::from_secs(2);
const SLICE: Duration = Duration::from_millis(100);

struct Setup {
    router: Router,
    conns: Vec<Arc<Connection>>,
    format: WireFormat,
    /// With sockets: each connection's server end, and the client ends, drained between
    /// rounds outside the timed part (a client's reading is not the server's cost).
    sockets: Vec<UnixStream>,
    clients: Vec<UnixStream>,
}

fn setup(members: usize, format: WireFormat, reliable: bool, sockets: bool) -> Setup {
    let router = Router::new(RouterConfig {
        outbox_bytes: 64 << 20,
    });
    let conns = (0..members)
        .map(|_| {
            router.connect(ConnectSpec {
                id: ConnectionId::generate(),
                hub: HubKey::new("bench").expect("a valid hub name"),
                user_id: None,
                format,
                subprotocol: None,
                reliable: reliable.then_some(ReliableLimits::default()),
                remote_addr: None,
                permissions: Permissions::default(),
                groups: vec!["g".into()],
                greeting: None,
            })
        })
        .collect();
    let (sockets, clients): (Vec<_>, Vec<_>) = (0..if sockets { members } else { 0 })
        .map(|_| {
            let (server, client) = UnixStream::pair().expect("a socket pair");
            client.set_nonblocking(true).expect("non-blocking");
            (server, client)
        })
        .unzip();
    Setup {
        router,
        conns,
        format,
        sockets,
        clients,
    }
}

impl Setup {
    /// Reads and discards what the client ends received.
    fn drain(&self, buf: &mut [u8]) {
        for mut client in &self.clients {
            while let Ok(n) = client.read(buf) {
                if n == 0 {
                    break;
                }
            }
        }
    }
}

/// One message to the whole group and every writer's share of the work; returns bytes
/// "written" so nothing is optimized away.
fn round(
    setup: &Setup,
    message: &Message,
    batch: &mut Vec<Queued>,
    scratch: &mut BytesMut,
    wire: &mut Vec<u8>,
) -> usize {
    round_with(
        setup,
        message,
        batch,
        scratch,
        wire,
        WriterTelemetry::Recorded,
    )
}

/// Whether the writer's share of a round does its telemetry work (the publish-to-write
/// latency observation and the delivery-span check), or leaves it out, to isolate what that
/// work costs in the same run.
#[derive(Clone, Copy, PartialEq)]
enum WriterTelemetry {
    Recorded,
    Skipped,
}

/// [`round`], with the writer's telemetry work done or skipped.
fn round_with(
    setup: &Setup,
    message: &Message,
    batch: &mut Vec<Queued>,
    scratch: &mut BytesMut,
    wire: &mut Vec<u8>,
    telemetry: WriterTelemetry,
) -> usize {
    let hub = HubKey::new("bench").expect("a valid hub name");
    setup.router.send_to_group(&hub, "g", message, &[]);
    let latency = setup.router.hub_metrics(&hub).fanout_latency.clone();
    let record = telemetry == WriterTelemetry::Recorded;
    let mut published = Vec::new();
    let mut written = 0;
    for (i, conn) in setup.conns.iter().enumerate() {
        let epoch = conn.outbox().epoch();
        let taken = conn
            .outbox()
            .take(epoch, batch)
            .now_or_never()
            .expect("frames are queued");
        debug_assert_eq!(taken, Taken::Frames);
        let mut last = None;
        wire.clear();
        for queued in batch.drain(..) {
            last = queued.sequence_id.or(last);
            // When each data message entered fan-out, for the writer's publish-to-write
            // latency.
            if let Some(at) = queued.published.filter(|_| record) {
                published.push(at);
            }
            // A traced message gets a delivery span, child of its fan-out span.
            let _delivery = queued.trace.as_ref().filter(|_| record).map(|parent| {
                let span = tracing::info_span!("deliver");
                hubcast_server::telemetry::trace::set_parent(
                    &span,
                    hubcast_server::telemetry::trace::context_of(parent),
                );
                span
            });
            // What tungstenite does with each frame: a header, then the payload copied into
            // its write buffer.
            match protocol::render(setup.format, queued, scratch) {
                Rendered::Whole(Frame::Text(t)) => {
                    wire.extend_from_slice(&[0x81, 126, 0, 0]);
                    wire.extend_from_slice(t.as_bytes());
                }
                Rendered::Whole(Frame::Binary(b)) => {
                    wire.extend_from_slice(&[0x82, 126, 0, 0]);
                    wire.extend_from_slice(&b);
                }
                Rendered::Fragments { head, tail, .. } => {
                    wire.extend_from_slice(&[0x01, 0]);
                    wire.extend_from_slice(&head);
                    wire.extend_from_slice(&[0x80, 126, 0, 0]);
                    wire.extend_from_slice(&tail);
                }
            }
        }
        written += black_box(wire.len());
        // One flush per batch, as the connection's writer does.
        if let Some(socket) = setup.sockets.get(i) {
            (&*socket)
                .write_all(wire)
                .expect("the drain thread keeps up");
        }
        // Once written, the writer observes the batch's latencies (one clock read).
        if record {
            let now = tokio::time::Instant::now();
            latency.observe_all(
                published
                    .drain(..)
                    .map(|at| now.saturating_duration_since(at)),
            );
        }
        // Reliable clients acknowledge cumulatively (Azure's client: every second, or at
        // once when 300 behind); every 64 messages here.
        if let Some(id) = last.filter(|id| id % 64 == 0) {
            conn.outbox().acknowledge(id);
        }
    }
    written
}

/// Nanoseconds per delivery for each of `variants` (one call = `per_call` deliveries);
/// `between` runs after each call, untimed.
///
/// The variants run in alternating short slices and each keeps its fastest slice: on a
/// shared 2-core machine, interference only ever slows a slice down, so the minimum is the
/// fairest estimate and alternating keeps every variant exposed to the same conditions.
fn measure(
    per_call: usize,
    variants: &mut [&mut dyn FnMut() -> usize],
    between: &mut dyn FnMut(usize),
) -> Vec<f64> {
    let mut best = vec![f64::INFINITY; variants.len()];
    let started = Instant::now();
    while started.elapsed() < ROUNDS_TARGET * variants.len() as u32 {
        for (v, (variant, best)) in variants.iter_mut().zip(&mut best).enumerate() {
            black_box(variant());
            between(v);
            let slice = Instant::now();
            let mut timed = Duration::ZERO;
            let mut calls = 0u64;
            while slice.elapsed() < SLICE {
                let t = Instant::now();
                black_box(variant());
                timed += t.elapsed();
                between(v);
                calls += 1;
            }
            let ns = timed.as_nanos() as f64 / (calls as f64 * per_call as f64);
            *best = best.min(ns);
        }
    }
    best
}

/// Telemetry export off vs on, in one run: JSON fan-out to a group, with the writer's work
/// per frame (including its publish-to-write latency observation, as the socket writer
/// does). "off" is the default (no OTLP endpoint): per-message spans are not created and
/// the only telemetry work is a few relaxed atomic adds. "writer telemetry skipped" is "off"
/// without the writer's clock read, latency observation and delivery-span check, so
/// "off / skipped" is what that per-recipient work costs. "traces on" installs the OTLP
/// trace layer with an always-on sampler, so every fan-out opens a span and every
/// recipient's copy carries its context (export goes to a closed loopback port: the
/// exporter's own work runs on its thread, not on the measured path).
fn telemetry_on_vs_off() {
    use hubcast_server::telemetry::otlp::{OtlpSettings, SamplerSetting, TraceExport};
    use hubcast_server::telemetry::trace;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime");
    let settings = OtlpSettings {
        sampler: SamplerSetting::AlwaysOn,
        ..OtlpSettings::new("http://127.0.0.1:9")
    };
    let traces = runtime
        .block_on(async { TraceExport::start(&settings) })
        .expect("valid settings")
        .expect("traces on");
    tracing_subscriber::registry().with(traces.layer()).init();

    let text: String = "x".repeat(PAYLOAD);
    let message = Message::to_group("g", Some("sender".into()), Data::Text(text.into()));
    println!();
    println!(
        "| members | floor (copy) ns | writer telemetry skipped ns | export off ns | off / skipped | traces on ns | on / off |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for members in [1_000, 10_000] {
        let payload = vec![b'x'; PAYLOAD + 120];
        let none = setup(members, WireFormat::Json, false, false);
        let off = setup(members, WireFormat::Json, false, false);
        let on = setup(members, WireFormat::Json, false, false);
        let mut floor_wire = Vec::with_capacity(PAYLOAD + 256);
        let mut floor = || {
            let mut n = 0;
            for _ in 0..members {
                floor_wire.clear();
                floor_wire.extend_from_slice(black_box(&payload));
                n += black_box(floor_wire.len());
            }
            n
        };
        let (mut bn, mut sn, mut wn) = (Vec::new(), BytesMut::new(), Vec::new());
        let (mut b0, mut s0, mut w0) = (Vec::new(), BytesMut::new(), Vec::new());
        let (mut b1, mut s1, mut w1) = (Vec::new(), BytesMut::new(), Vec::new());
        let message = &message;
        let mut v_none = || {
            trace::set_enabled(false);
            round_with(
                &none,
                message,
                &mut bn,
                &mut sn,
                &mut wn,
                WriterTelemetry::Skipped,
            )
        };
        let mut v_off = || {
            trace::set_enabled(false);
            round(&off, message, &mut b0, &mut s0, &mut w0)
        };
        let mut v_on = || {
            trace::set_enabled(true);
            round(&on, message, &mut b1, &mut s1, &mut w1)
        };
        let ns = measure(
            members,
            &mut [&mut floor, &mut v_none, &mut v_off, &mut v_on],
            &mut |_| {},
        );
        println!(
            "| {members} | {:.0} | {:.0} | {:.0} | {:.2}x | {:.0} | {:.2}x |",
            ns[0],
            ns[1],
            ns[2],
            ns[2] / ns[1],
            ns[3],
            ns[3] / ns[2]
        );
    }
    trace::set_enabled(false);
    drop(runtime);
}

fn main() {
    let text: String = "x".repeat(PAYLOAD);
    let message = Message::to_group("g", Some("sender".into()), Data::Text(text.into()));
    println!(
        "| members | socket writes | floor (copy) ns | JSON ns | reliable JSON ns | ratio | protobuf ns | reliable protobuf ns | ratio |"
    );
    println!("|---:|:---:|---:|---:|---:|---:|---:|---:|---:|");
    for (members, sockets) in [(1_000, false), (10_000, false), (1_000, true)] {
        let payload = vec![b'x'; PAYLOAD + 120];
        let setups: Vec<Setup> = [
            (WireFormat::Json, false),
            (WireFormat::Json, true),
            (WireFormat::Protobuf, false),
            (WireFormat::Protobuf, true),
        ]
        .into_iter()
        .map(|(format, reliable)| setup(members, format, reliable, sockets))
        .collect();
        let mut state: Vec<_> = setups
            .iter()
            .map(|_| {
                (
                    Vec::new(),
                    BytesMut::new(),
                    Vec::with_capacity(PAYLOAD + 256),
                )
            })
            .collect();
        let mut floor_wire = Vec::with_capacity(PAYLOAD + 256);
        let mut floor = || {
            let mut n = 0;
            for _ in 0..members {
                floor_wire.clear();
                floor_wire.extend_from_slice(black_box(&payload));
                n += black_box(floor_wire.len());
            }
            n
        };
        let [s0, s1, s2, s3] = &mut state[..] else {
            unreachable!("four variants")
        };
        let message = &message;
        let mut v0 = || round(&setups[0], message, &mut s0.0, &mut s0.1, &mut s0.2);
        let mut v1 = || round(&setups[1], message, &mut s1.0, &mut s1.1, &mut s1.2);
        let mut v2 = || round(&setups[2], message, &mut s2.0, &mut s2.1, &mut s2.2);
        let mut v3 = || round(&setups[3], message, &mut s3.0, &mut s3.1, &mut s3.2);
        let mut buf = vec![0u8; 64 * 1024];
        let mut between = |v: usize| {
            if v > 0 {
                setups[v - 1].drain(&mut buf);
            }
        };
        let ns = measure(
            members,
            &mut [&mut floor, &mut v0, &mut v1, &mut v2, &mut v3],
            &mut between,
        );
        let (floor, results) = (ns[0], &ns[1..]);
        println!(
            "| {members} | {} | {floor:.0} | {:.0} | {:.0} | {:.2}x | {:.0} | {:.0} | {:.2}x |",
            if sockets { "yes" } else { "no" },
            results[0],
            results[1],
            results[1] / results[0],
            results[2],
            results[3],
            results[3] / results[2],
        );
    }
    telemetry_on_vs_off();
}
