//! The number of `/metrics` series is bounded whatever callers do: no label value comes from
//! an unauthenticated caller or from a client's event names, a hub's series expire once it
//! has had no connection for `metrics.hub_series_expiry`, and each metric has at most
//! `metrics.max_series_per_metric` series, the rest folded into its `_overflow` series and
//! counted in `hubcast_metric_series_overflows_total`.
//!
//! Series are per node, so every test here runs one node whatever the topology.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use hubcast_integration_tests::webhook::WebhookReceiver;
use hubcast_integration_tests::{
    JSON_RELIABLE_SUBPROTOCOL, JsonClient, TIMEOUT, TestServer, assert_eventually,
};
use hubcast_server::config::{EventHandlerConfig, HubConfig};
use serde_json::json;

/// The samples of a Prometheus text exposition: `name{labels}` and value, one per line that
/// is not a comment.
fn samples(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap_or_else(|| panic!("{l}"));
            let value = value.parse().unwrap_or_else(|_| panic!("{l}"));
            (series.to_owned(), value)
        })
        .collect()
}

/// `GET /metrics` of `server`, as text.
async fn scrape(server: &TestServer) -> String {
    let response = server
        .rest()
        .call_with("GET", "/metrics", None, None, &[])
        .await;
    assert_eq!(response.status, 200);
    String::from_utf8(response.body.to_vec()).expect("UTF-8")
}

/// The series (`name{labels}`) of `text` whose name is `name` (histograms: their `_count`).
fn series_of(text: &str, name: &str) -> BTreeSet<String> {
    samples(text)
        .into_iter()
        .map(|(series, _)| series)
        .filter(|s| s.split('{').next() == Some(name))
        .collect()
}

/// The value of `series` (`name{labels}` exactly as rendered), if present.
fn value(text: &str, series: &str) -> Option<f64> {
    samples(text)
        .into_iter()
        .find(|(s, _)| s == series)
        .map(|(_, v)| v)
}

#[tokio::test]
async fn recovery_attempts_without_credentials_add_no_series_whatever_hubs_they_name() {
    const ATTEMPTS: usize = 1_000;
    let server = TestServer::start_single_with(|_| {}).await;
    let before: BTreeSet<String> = samples(&scrape(&server).await)
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    let addr = server.addr();
    // No token: only the recovery parameters, for a thousand well-formed hub names. Each
    // is refused after the upgrade with 1008, once the server has counted it.
    futures_util::stream::iter(0..ATTEMPTS)
        .for_each_concurrent(32, |i| async move {
            let url = format!(
                "ws://{addr}/client/hubs/h{i}?awps_connection_id=c{i}&awps_reconnection_token=t"
            );
            let client = JsonClient::connect_raw(&url, JSON_RELIABLE_SUBPROTOCOL).await;
            assert_eq!(client.expect_close().await.code, 1008);
        })
        .await;
    let text = scrape(&server).await;
    let added: Vec<String> = samples(&text)
        .into_iter()
        .map(|(s, _)| s)
        .filter(|s| !before.contains(s))
        .collect();
    assert_eq!(
        added,
        ["hubcast_reliable_recoveries_total{hub=\"_unknown\",outcome=\"refused\"}"],
        "one series for every refused recovery of a hub without series"
    );
    assert_eq!(
        value(
            &text,
            "hubcast_reliable_recoveries_total{hub=\"_unknown\",outcome=\"refused\"}"
        ),
        Some(ATTEMPTS as f64)
    );
    server.shutdown().await;
}

#[tokio::test]
async fn user_events_of_many_names_add_one_webhook_series() {
    const EVENTS: u64 = 900;
    let receiver = WebhookReceiver::start().await;
    let url = receiver.url("/upstream/{hub}/{event}");
    let server = TestServer::start_single_with(|c| {
        c.hubs.insert(
            "chat".into(),
            HubConfig {
                event_handlers: vec![EventHandlerConfig {
                    url_template: url,
                    user_event_pattern: Some("*".into()),
                    system_events: Vec::new(),
                    auth: None,
                    http2: false,
                }],
                ..HubConfig::default()
            },
        );
    })
    .await;
    let mut client = server.json_client("chat", Some("u"), &[], &[]).await;
    let size_before = scrape(&server).await.len();
    for id in 1..=EVENTS {
        client
            .send(
                json!({"type": "event", "event": format!("e{id}"), "ackId": id,
                         "dataType": "text", "data": "x"}),
            )
            .await;
    }
    for id in 1..=EVENTS {
        client.expect_ack_ok(id).await;
    }
    let text = scrape(&server).await;
    assert_eq!(
        series_of(&text, "hubcast_webhook_duration_seconds_count"),
        BTreeSet::from([
            "hubcast_webhook_duration_seconds_count{event=\"user\",outcome=\"ok\"}".to_owned()
        ]),
    );
    assert_eq!(
        value(
            &text,
            "hubcast_webhook_duration_seconds_count{event=\"user\",outcome=\"ok\"}"
        ),
        Some(EVENTS as f64)
    );
    // One histogram (19 lines) and the hub's own series grew the exposition, no more.
    let grown = text.len().saturating_sub(size_before);
    assert!(grown < 8 * 1024, "/metrics grew by {grown} bytes");
    server.shutdown().await;
}

#[tokio::test]
async fn a_hubs_series_disappear_once_it_has_had_no_connection_for_the_expiry() {
    const EXPIRY: Duration = Duration::from_secs(2);
    let server = TestServer::start_single_with(|c| {
        c.metrics.hub_series_expiry = EXPIRY;
    })
    .await;
    let hub = "fleeting";
    let connects = format!("hubcast_connects_total{{hub=\"{hub}\"}}");
    let client = server.json_client(hub, Some("u"), &[], &[]).await;
    // The last time the registry sees the hub with a connection is during this scrape.
    let seen = Instant::now();
    assert_eq!(value(&scrape(&server).await, &connects), Some(1.0));
    client.close().await;
    assert_eventually!(server.router().stats().connections == 0);
    let text = scrape(&server).await;
    if seen.elapsed() < EXPIRY {
        assert_eq!(
            value(&text, &connects),
            Some(1.0),
            "kept while the expiry runs"
        );
    }
    // Every series naming the hub goes (connections, sends, disconnects...), and not before
    // the expiry has passed.
    let needle = format!("hub=\"{hub}\"");
    let deadline = Instant::now() + EXPIRY + TIMEOUT;
    loop {
        let text = scrape(&server).await;
        if !text.contains(&needle) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the series of {hub} are still there:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        seen.elapsed() >= EXPIRY,
        "removed {:?} after the hub was last seen with a connection, before the expiry",
        seen.elapsed()
    );
    // A connection brings them back.
    let _again = server.json_client(hub, Some("u"), &[], &[]).await;
    let text = scrape(&server).await;
    assert_eq!(
        value(&text, &format!("hubcast_connections{{hub=\"{hub}\"}}")),
        Some(1.0)
    );
    server.shutdown().await;
}

#[tokio::test]
async fn label_sets_beyond_the_cap_share_an_overflow_series_and_are_counted() {
    const CAP: usize = 3;
    const HUBS: usize = 7;
    let server = TestServer::start_single_with(|c| {
        c.metrics.max_series_per_metric = CAP;
    })
    .await;
    let mut clients = Vec::new();
    for i in 0..HUBS {
        clients.push(server.json_client(&format!("hub{i}"), None, &[], &[]).await);
    }
    let text = scrape(&server).await;
    let connections = series_of(&text, "hubcast_connections");
    assert_eq!(connections.len(), CAP + 1, "{connections:?}");
    assert!(connections.contains("hubcast_connections{hub=\"_overflow\"}"));
    let total: f64 = samples(&text)
        .iter()
        .filter(|(s, _)| s.starts_with("hubcast_connections{"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(
        total, HUBS as f64,
        "the overflow series keeps the sum right"
    );
    assert_eq!(
        value(&text, "hubcast_connections{hub=\"_overflow\"}"),
        Some((HUBS - CAP) as f64)
    );
    let hits = value(
        &text,
        "hubcast_metric_series_overflows_total{metric=\"hubcast_connections\"}",
    );
    assert!(
        hits.is_some_and(|n| n >= (HUBS - CAP) as f64),
        "cap hits counted: {hits:?}"
    );
    // No family holds more than the cap and its overflow series (the counter of hits has
    // one series per family, and is not capped).
    for (name, count) in samples(&text)
        .iter()
        .filter(|(s, _)| !s.contains("_bucket{") && !s.contains("_sum{"))
        .fold(
            std::collections::BTreeMap::<&str, usize>::new(),
            |mut m, (s, _)| {
                *m.entry(s.split('{').next().unwrap_or(s)).or_default() += 1;
                m
            },
        )
    {
        if name != "hubcast_metric_series_overflows_total" {
            assert!(count <= CAP + 1, "{name} has {count} series");
        }
    }
    server.shutdown().await;
}
