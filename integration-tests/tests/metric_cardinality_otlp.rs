//! OTLP export shows the series `/metrics` shows under the series bounds: label sets beyond
//! `metrics.max_series_per_metric` in the `_overflow` series (never the SDK's own
//! `otel.metric.overflow` point), and no series of a hub whose series expired. Against an
//! OTLP metrics receiver inside the test (the collector's `MetricsService`).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hubcast_integration_tests::{TIMEOUT, TestServer, assert_eventually};
use hubcast_server::telemetry::otlp::OtlpSettings;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::metrics::v1::metric::Data as MetricData;
use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value as Number;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;

/// One data point: metric name, attributes, value.
type Point = (String, Vec<(String, String)>, f64);

/// The exports received, each the points of one request.
#[derive(Debug, Clone, Default)]
struct Receiver(Arc<Mutex<Vec<Vec<Point>>>>);

#[tonic::async_trait]
impl MetricsService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let mut export = Vec::new();
        for resource in request.into_inner().resource_metrics {
            for scope in resource.scope_metrics {
                for metric in scope.metrics {
                    let points = match metric.data {
                        Some(MetricData::Sum(sum)) => sum.data_points,
                        Some(MetricData::Gauge(gauge)) => gauge.data_points,
                        _ => Vec::new(),
                    };
                    for p in points {
                        let attributes = p
                            .attributes
                            .iter()
                            .map(|a| {
                                let value = match a.value.as_ref().and_then(|v| v.value.as_ref()) {
                                    Some(AnyValue::StringValue(s)) => s.clone(),
                                    other => format!("{other:?}"),
                                };
                                (a.key.clone(), value)
                            })
                            .collect();
                        let value = match p.value {
                            Some(Number::AsInt(i)) => i as f64,
                            Some(Number::AsDouble(d)) => d,
                            None => f64::NAN,
                        };
                        export.push((metric.name.clone(), attributes, value));
                    }
                }
            }
        }
        self.0.lock().expect("lock").push(export);
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

impl Receiver {
    async fn start(&self) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let service = self.clone();
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(MetricsServiceServer::new(service))
                .serve_with_incoming(TcpIncoming::from(listener))
                .await
                .expect("OTLP receiver");
        });
        format!("http://{addr}")
    }

    /// The points of the latest export that began after `after` exports.
    fn latest(&self, after: usize) -> Option<Vec<Point>> {
        let exports = self.0.lock().expect("lock");
        (exports.len() > after)
            .then(|| exports.last().cloned())
            .flatten()
    }

    fn count(&self) -> usize {
        self.0.lock().expect("lock").len()
    }

    /// Waits for an export that starts after now and returns its points.
    async fn next_export(&self) -> Vec<Point> {
        // The export under way may have read the registry already: skip it.
        let after = self.count() + 1;
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            if let Some(points) = self.latest(after) {
                return points;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no OTLP export within {TIMEOUT:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The `hub` values of `name`'s points in `points`.
fn hubs_of(points: &[Point], name: &str) -> BTreeSet<String> {
    points
        .iter()
        .filter(|(n, _, _)| n == name)
        .filter_map(|(_, attrs, _)| attrs.iter().find(|(k, _)| k == "hub"))
        .map(|(_, v)| v.clone())
        .collect()
}

/// The `hub` values of `name`'s series in a Prometheus text exposition.
fn scraped_hubs(text: &str, name: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix(name)?.strip_prefix("{hub=\""))
        .filter_map(|rest| rest.split('"').next())
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_export_shows_the_bounded_series_of_the_prometheus_text() {
    const CAP: usize = 3;
    const HUBS: usize = 6;
    let receiver = Receiver::default();
    let endpoint = receiver.start().await;
    let settings = OtlpSettings {
        traces_endpoint: None,
        metric_interval: Duration::from_millis(200),
        ..OtlpSettings::new(&endpoint)
    };
    let server = TestServer::start_single_with(|c| {
        c.otlp = Some(settings);
        c.metrics.max_series_per_metric = CAP;
        c.metrics.hub_series_expiry = Duration::from_secs(1);
    })
    .await;
    let mut clients = Vec::new();
    for i in 0..HUBS {
        clients.push(server.json_client(&format!("hub{i}"), None, &[], &[]).await);
    }

    let points = receiver.next_export().await;
    let scrape = |path: &'static str| {
        let rest = server.rest();
        async move {
            let response = rest.call_with("GET", path, None, None, &[]).await;
            String::from_utf8(response.body.to_vec()).expect("UTF-8")
        }
    };
    let text = scrape("/metrics").await;
    let exported = hubs_of(&points, "hubcast_connections");
    assert_eq!(exported.len(), CAP + 1, "{exported:?}");
    assert!(exported.contains("_overflow"), "{exported:?}");
    assert_eq!(exported, scraped_hubs(&text, "hubcast_connections"));
    let overflow = points
        .iter()
        .find(|(n, attrs, _)| {
            n == "hubcast_connections" && attrs.iter().any(|(_, v)| v == "_overflow")
        })
        .map(|(_, _, v)| *v);
    assert_eq!(overflow, Some((HUBS - CAP) as f64));
    assert!(
        points
            .iter()
            .all(|(_, attrs, _)| attrs.iter().all(|(k, _)| k != "otel.metric.overflow")),
        "the SDK folded nothing on its own"
    );

    // Every client leaves: once the expiry has passed, neither shows a hub's series.
    for client in clients {
        client.close().await;
    }
    assert_eventually!(server.router().stats().connections == 0);
    let deadline = tokio::time::Instant::now() + TIMEOUT * 2;
    loop {
        let text = scrape("/metrics").await;
        if scraped_hubs(&text, "hubcast_connections")
            .iter()
            .all(|h| h == "_overflow")
        {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let points = receiver.next_export().await;
    let left = hubs_of(&points, "hubcast_connects_total");
    assert!(
        left.iter().all(|h| h == "_overflow"),
        "expired hubs still exported: {left:?}"
    );
    server.shutdown().await;
}
