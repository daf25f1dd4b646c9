//! OpenTelemetry export end to end, against an OTLP receiver inside the test: a tonic server
//! implementing the collector's `TraceService` and `MetricsService` from `opentelemetry-proto`.
//!
//! Also across a two-node cluster on the real Redis: the backplane carries the trace.
//!
//! One test function on purpose: `tracing`'s subscriber (and so the trace pipeline) is
//! process-wide, and its exporter lives on the runtime it was built on.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hubcast_integration_tests::cluster::TestCluster;
use hubcast_integration_tests::webhook::WebhookReceiver;
use hubcast_integration_tests::{JsonClient, PRIMARY_KEY, TIMEOUT, TestServer, request};
use hubcast_proto::v1 as pb;
use hubcast_server::config::{EventHandlerConfig, HubConfig};
use hubcast_server::telemetry::otlp::{OtlpSettings, SamplerSetting, TraceExport};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::metrics::v1::metric::Data as MetricData;
use opentelemetry_proto::tonic::trace::v1::Span;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

const HUB: &str = "traced";

/// One exported metric data point: name, attributes, value.
type Point = (String, Vec<(String, String)>, f64);

/// What the receiver has been sent.
#[derive(Debug, Default)]
struct Received {
    spans: Vec<Span>,
    /// Every metric data point as (name, attributes, value).
    points: Vec<Point>,
    service_names: Vec<String>,
}

#[derive(Debug, Clone, Default)]
struct Receiver(Arc<Mutex<Received>>);

fn text(value: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(AnyValue::StringValue(s)) => s.clone(),
        Some(AnyValue::IntValue(i)) => i.to_string(),
        Some(AnyValue::BoolValue(b)) => b.to_string(),
        Some(AnyValue::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut received = self.0.lock().expect("lock");
        for resource in request.into_inner().resource_spans {
            if let Some(r) = &resource.resource {
                for a in &r.attributes {
                    if a.key == "service.name" {
                        received.service_names.push(text(a.value.as_ref()));
                    }
                }
            }
            for scope in resource.scope_spans {
                received.spans.extend(scope.spans);
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let mut received = self.0.lock().expect("lock");
        for resource in request.into_inner().resource_metrics {
            for scope in resource.scope_metrics {
                for metric in scope.metrics {
                    let points: Vec<(Vec<_>, f64)> = match metric.data {
                        Some(MetricData::Sum(sum)) => sum
                            .data_points
                            .into_iter()
                            .map(|p| (p.attributes, number(p.value)))
                            .collect(),
                        Some(MetricData::Gauge(gauge)) => gauge
                            .data_points
                            .into_iter()
                            .map(|p| (p.attributes, number(p.value)))
                            .collect(),
                        _ => Vec::new(),
                    };
                    for (attributes, value) in points {
                        let attributes = attributes
                            .iter()
                            .map(|a| (a.key.clone(), text(a.value.as_ref())))
                            .collect();
                        received
                            .points
                            .push((metric.name.clone(), attributes, value));
                    }
                }
            }
        }
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

fn number(value: Option<opentelemetry_proto::tonic::metrics::v1::number_data_point::Value>) -> f64 {
    use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value;
    match value {
        Some(Value::AsInt(i)) => i as f64,
        Some(Value::AsDouble(d)) => d,
        None => f64::NAN,
    }
}

impl Receiver {
    async fn start(&self) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let incoming = TcpIncoming::from(listener);
        let service = self.clone();
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(service.clone()))
                .add_service(MetricsServiceServer::new(service))
                .serve_with_incoming(incoming)
                .await
                .expect("OTLP receiver");
        });
        format!("http://{addr}")
    }

    /// The spans of trace `trace_id` received so far.
    fn trace(&self, trace_id: &[u8]) -> Vec<Span> {
        self.0
            .lock()
            .expect("lock")
            .spans
            .iter()
            .filter(|s| s.trace_id == trace_id)
            .cloned()
            .collect()
    }

    /// The latest exported value of metric `name` with `attributes` among its attributes.
    fn metric(&self, name: &str, attributes: &[(&str, &str)]) -> Option<f64> {
        self.0
            .lock()
            .expect("lock")
            .points
            .iter()
            .rev()
            .find(|(n, attrs, _)| {
                n == name
                    && attributes
                        .iter()
                        .all(|(k, v)| attrs.iter().any(|(ak, av)| ak == k && av == v))
            })
            .map(|(_, _, v)| *v)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// A caller's span: a fresh trace id and span id, as a `traceparent` value.
fn caller(seed: u8) -> (Vec<u8>, Vec<u8>, String) {
    let trace_id: Vec<u8> = (0..16)
        .map(|i| seed.wrapping_mul(31).wrapping_add(i))
        .collect();
    let span_id: Vec<u8> = (0..8).map(|i| seed.wrapping_add(100 + i)).collect();
    let header = format!("00-{}-{}-01", hex(&trace_id), hex(&span_id));
    (trace_id, span_id, header)
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|a| a.key == key)
        .map(|a| text(a.value.as_ref()))
}

/// The one span named `name` in `spans`.
fn one<'a>(spans: &'a [Span], name: &str) -> &'a Span {
    let found: Vec<&Span> = spans.iter().filter(|s| s.name == name).collect();
    assert_eq!(
        found.len(),
        1,
        "one {name} span expected in {:#?}",
        spans.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    found[0]
}

/// Exports what the batch processor holds (its `force_flush` blocks, so off the runtime).
async fn flush(traces: &Arc<TraceExport>) {
    let traces = traces.clone();
    tokio::task::spawn_blocking(move || traces.flush())
        .await
        .expect("flush");
}

/// The spans of `trace_id` once one named `name` has arrived (flushing meanwhile), or what
/// arrived within [`TIMEOUT`].
async fn spans_of(
    receiver: &Receiver,
    traces: &Arc<TraceExport>,
    trace_id: &[u8],
    name: &str,
) -> Vec<Span> {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        flush(traces).await;
        let spans = receiver.trace(trace_id);
        if spans.iter().any(|s| s.name == name) || tokio::time::Instant::now() > deadline {
            return spans;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_follow_messages_and_metrics_are_exported() {
    let receiver = Receiver::default();
    let endpoint = receiver.start().await;
    let settings = OtlpSettings {
        sampler: SamplerSetting::ParentBasedAlwaysOn,
        metric_interval: Duration::from_millis(200),
        service_name: "hubcast-under-test".into(),
        ..OtlpSettings::new(&endpoint)
    };
    let traces = Arc::new(
        TraceExport::start(&settings)
            .expect("valid settings")
            .expect("traces on"),
    );
    tracing_subscriber::registry()
        .with(
            traces.layer().with_filter(
                tracing_subscriber::filter::Targets::new()
                    .with_target("hubcast_server", tracing::Level::INFO),
            ),
        )
        .init();

    let mut webhooks = WebhookReceiver::start().await;
    let handler_url = webhooks.url("/upstream/{hub}/{event}");
    let server = TestServer::start_with(|c| {
        c.otlp = Some(settings.clone());
        c.hubs.insert(
            HUB.into(),
            HubConfig {
                event_handlers: vec![EventHandlerConfig {
                    url_template: handler_url,
                    user_event_pattern: Some("*".into()),
                    system_events: vec!["connect".into()],
                    auth: None,
                    http2: false,
                }],
                ..HubConfig::default()
            },
        );
    })
    .await;

    // 1. A client connects with a `traceparent` on its upgrade request: the `connect`
    //    webhook continues that trace.
    let (connect_trace, connect_parent, header) = caller(1);
    let mut upgrade = request(
        &server.url(HUB, Some("alice"), &[], &["g"]),
        &["json.webpubsub.azure.v1"],
        None,
    );
    upgrade
        .headers_mut()
        .insert("traceparent", header.parse().expect("header value"));
    let mut alice = JsonClient::connect_request(upgrade).await;
    let connect = webhooks.next_named("connect").await;
    let sent_parent = connect.header("traceparent").to_owned();
    let parts: Vec<&str> = sent_parent.split('-').collect();
    assert_eq!(parts.len(), 4, "{sent_parent}");
    assert_eq!(
        parts[1],
        hex(&connect_trace),
        "the webhook continues the caller's trace"
    );

    // 2. A backend sends to group g over gRPC with its own `traceparent`.
    let (send_trace, send_parent, header) = caller(2);
    grpc_send_to_group(&server, "g", &header, "traced hello").await;
    assert_eq!(alice.recv_message().await["data"], "traced hello");

    // 3. The client publishes an event: the user-event webhook carries the trace of the
    //    client message's span.
    alice
        .send(
            serde_json::json!({"type": "event", "event": "hello", "dataType": "text", "data": "x"}),
        )
        .await;
    let user_event = webhooks.next_named("hello").await;
    let user_parent = user_event.header("traceparent").to_owned();

    // Spans arrive after a flush; the delivery span ends after the write, so poll.
    let spans = spans_of(&receiver, &traces, &send_trace, "deliver").await;
    // control call -> fan-out -> delivery, each the child of the one before, under the
    // caller's span.
    let control_span = one(&spans, "control");
    assert_eq!(
        control_span.parent_span_id, send_parent,
        "control call continues the caller"
    );
    assert_eq!(
        attribute(control_span, "transport").as_deref(),
        Some("grpc")
    );
    assert_eq!(
        attribute(control_span, "operation").as_deref(),
        Some("send_to_group")
    );
    assert_eq!(attribute(control_span, "status").as_deref(), Some("Ok"));
    let fanout = one(&spans, "fanout");
    assert_eq!(fanout.parent_span_id, control_span.span_id);
    assert_eq!(attribute(fanout, "hub").as_deref(), Some(HUB));
    assert_eq!(attribute(fanout, "kind").as_deref(), Some("group"));
    assert_eq!(attribute(fanout, "recipients").as_deref(), Some("1"));
    let deliver = one(&spans, "deliver");
    assert_eq!(deliver.parent_span_id, fanout.span_id);
    assert_eq!(
        attribute(deliver, "connection.id").as_deref(),
        Some(alice.connection_id())
    );

    // The connect trace: handshake under the caller, webhook under the handshake, and the
    // handler was told the webhook span as its parent.
    let spans = receiver.trace(&connect_trace);
    let handshake = one(&spans, "handshake");
    assert_eq!(handshake.parent_span_id, connect_parent);
    let webhook = one(&spans, "webhook");
    assert_eq!(webhook.parent_span_id, handshake.span_id);
    assert_eq!(attribute(webhook, "event").as_deref(), Some("connect"));
    assert_eq!(parts[2], hex(&webhook.span_id));

    // The user event: a `client message` span, with the webhook under it.
    let user_parts: Vec<&str> = user_parent.split('-').collect();
    let spans = spans_of(&receiver, &traces, &unhex(user_parts[1]), "client message").await;
    let message = one(&spans, "client message");
    assert_eq!(attribute(message, "message.type").as_deref(), Some("event"));
    let webhook = one(&spans, "webhook");
    assert_eq!(webhook.parent_span_id, message.span_id);
    assert_eq!(user_parts[2], hex(&webhook.span_id));
    assert!(
        receiver
            .0
            .lock()
            .expect("lock")
            .service_names
            .iter()
            .all(|n| n == "hubcast-under-test")
    );

    // Metrics: the server's own meter provider exports the registry every 200 ms.
    hubcast_integration_tests::assert_eventually!(
        receiver.metric(
            "hubcast_messages_sent_total",
            &[("hub", HUB), ("kind", "group")]
        ) == Some(1.0)
            && receiver.metric("hubcast_connections", &[("hub", HUB)]) == Some(1.0),
        "exported metrics: {:?}",
        receiver
            .0
            .lock()
            .expect("lock")
            .points
            .iter()
            .map(|p| &p.0)
            .collect::<std::collections::BTreeSet<_>>()
    );
    hubcast_integration_tests::assert_eventually!(
        receiver.metric(
            "hubcast_control_call_duration_seconds_count",
            &[
                ("transport", "grpc"),
                ("operation", "send_to_group"),
                ("status", "Ok")
            ]
        ) == Some(1.0)
    );
    drop(alice);
    server.shutdown().await;

    // 4. Across a cluster: a gRPC send on node 1 to a group whose member is on node 0. The
    //    trace goes control call -> backplane publish (node 1) -> backplane receive (node 0)
    //    -> fan-out -> delivery.
    let cluster = TestCluster::start("telemetry_traces", 2).await;
    let mut bob = JsonClient::connect(&cluster.node(0).url(HUB, Some("bob"), &[], &["cg"])).await;
    let (cluster_trace, cluster_parent, header) = caller(3);
    grpc_send_to_group(cluster.node(1), "cg", &header, "across nodes").await;
    assert_eq!(bob.recv_message().await["data"], "across nodes");
    let spans = spans_of(&receiver, &traces, &cluster_trace, "deliver").await;
    let control_span = one(&spans, "control");
    assert_eq!(control_span.parent_span_id, cluster_parent);
    let publish = one(&spans, "backplane publish");
    assert_eq!(publish.parent_span_id, control_span.span_id);
    let receive = one(&spans, "backplane receive");
    assert_eq!(
        receive.parent_span_id, publish.span_id,
        "the receiving node continues the publishing node's span"
    );
    let remote_fanout = spans
        .iter()
        .find(|s| s.name == "fanout" && s.parent_span_id == receive.span_id)
        .expect("a fan-out under the backplane receive span");
    assert_eq!(attribute(remote_fanout, "recipients").as_deref(), Some("1"));
    let deliver = one(&spans, "deliver");
    assert_eq!(deliver.parent_span_id, remote_fanout.span_id);
    assert_eq!(
        attribute(deliver, "connection.id").as_deref(),
        Some(bob.connection_id())
    );
}

/// Sends `text` to `group` of [`HUB`] over gRPC with `traceparent` in the call's metadata.
async fn grpc_send_to_group(server: &TestServer, group: &str, traceparent: &str, text: &str) {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.grpc_addr()))
        .expect("endpoint")
        .connect()
        .await
        .expect("gRPC connect");
    let token = hubcast_auth::mint_service_token(
        PRIMARY_KEY,
        &format!("{}{}", server.endpoint(), hubcast_auth::GRPC_AUDIENCE_PATH),
        Duration::from_secs(600),
    );
    let mut control = pb::control_client::ControlClient::new(channel);
    let mut call = tonic::Request::new(pb::SendToGroupRequest {
        hub: HUB.into(),
        group: group.into(),
        payload: Some(pb::Payload {
            content_type: String::new(),
            data: Some(pb::payload::Data::Text(text.into())),
            ..Default::default()
        }),
        ..Default::default()
    });
    call.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("metadata"),
    );
    call.metadata_mut()
        .insert("traceparent", traceparent.parse().expect("metadata"));
    control.send_to_group(call).await.expect("send to group");
}
