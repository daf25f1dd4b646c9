//! `GET /metrics` after a scripted workload: the Prometheus text is parsed (every line must
//! be a comment or a well-formed sample) and the series are checked against what the clients
//! actually saw.

use std::collections::BTreeMap;

use hubcast_integration_tests::{TestServer, assert_eventually, request, upgrade_status};

const HUB: &str = "metered";

/// One parsed sample: name, labels, value.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A small parser of the Prometheus text format (0.0.4): `# HELP` / `# TYPE` lines and
/// `name{label="value",...} number` samples, with `\\`, `\"` and `\n` escapes. Panics on
/// anything else, so a malformed exposition fails the test.
fn parse(text: &str) -> (Vec<Sample>, BTreeMap<String, String>) {
    let mut samples = Vec::new();
    let mut types = BTreeMap::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
            assert!(
                ["counter", "gauge", "histogram"].contains(&kind),
                "type {kind}"
            );
            types.insert(name.to_owned(), kind.to_owned());
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        assert!(!line.starts_with('#'), "unexpected comment: {line}");
        let name_end = line
            .find(['{', ' '])
            .unwrap_or_else(|| panic!("no value: {line}"));
        let name = &line[..name_end];
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "metric name {name:?}"
        );
        let mut labels = BTreeMap::new();
        let mut rest = &line[name_end..];
        if let Some(body) = rest.strip_prefix('{') {
            let mut chars = body.char_indices();
            let mut end = None;
            loop {
                // label name
                let start = chars.clone().next().map(|(i, _)| i).expect("label");
                let (eq, _) = chars.by_ref().find(|&(_, c)| c == '=').expect("label=");
                let key = body[start..eq].trim_start_matches(',').to_owned();
                assert_eq!(chars.next().map(|(_, c)| c), Some('"'), "{line}");
                let mut value = String::new();
                loop {
                    match chars.next().expect("unterminated label value") {
                        (_, '\\') => match chars.next().expect("escape").1 {
                            'n' => value.push('\n'),
                            c @ ('\\' | '"') => value.push(c),
                            c => panic!("bad escape \\{c} in {line}"),
                        },
                        (_, '"') => break,
                        (_, c) => value.push(c),
                    }
                }
                labels.insert(key, value);
                match chars.next().expect("label separator") {
                    (_, ',') => {}
                    (i, '}') => {
                        end = Some(i + 1);
                        break;
                    }
                    (_, c) => panic!("unexpected {c:?} in {line}"),
                }
                if end.is_some() {
                    break;
                }
            }
            rest = &body[end.expect("closing brace")..];
        }
        let value = rest.trim();
        let value = match value {
            "+Inf" => f64::INFINITY,
            v => v
                .parse::<f64>()
                .unwrap_or_else(|_| panic!("value {v:?} in {line}")),
        };
        samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    (samples, types)
}

/// The scraped, parsed exposition.
struct Scrape {
    samples: Vec<Sample>,
    types: BTreeMap<String, String>,
}

impl Scrape {
    async fn take(server: &TestServer) -> Self {
        let response = server
            .rest()
            .call_with("GET", "/metrics", None, None, &[])
            .await;
        assert_eq!(response.status, 200);
        assert_eq!(
            response.header("content-type"),
            Some("text/plain; version=0.0.4; charset=utf-8")
        );
        let text = String::from_utf8(response.body.to_vec()).expect("UTF-8");
        let (samples, types) = parse(&text);
        Self { samples, types }
    }

    /// The value of the one series of `name` with exactly `labels`; 0 if it does not exist.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let wanted: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let found: Vec<&Sample> = self
            .samples
            .iter()
            .filter(|s| s.name == name && s.labels == wanted)
            .collect();
        assert!(found.len() <= 1, "duplicate series {name}{labels:?}");
        found.first().map_or(0.0, |s| s.value)
    }

    /// Sum over every series of `name` whose labels include `labels`.
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
            .sum()
    }
}

#[tokio::test]
async fn metrics_match_a_scripted_workload() {
    let server = TestServer::start().await;
    let mut alice = server
        .json_client(HUB, Some("alice"), &["webpubsub.sendToGroup"], &["g"])
        .await;
    let mut bob = server.json_client(HUB, Some("bob"), &[], &["g"]).await;
    let carol = server.json_client(HUB, Some("carol"), &[], &[]).await;
    // A refused connection: a token signed with the wrong key.
    let bad = request(
        &server.ws_url(&format!("/client/hubs/{HUB}?access_token=nope")),
        &[],
        None,
    );
    assert_eq!(upgrade_status(bad).await, 401);

    let scrape = Scrape::take(&server).await;
    assert_eq!(scrape.types["hubcast_connections"], "gauge");
    assert_eq!(scrape.types["hubcast_messages_sent_total"], "counter");
    assert_eq!(scrape.types["hubcast_fanout_latency_seconds"], "histogram");
    assert_eq!(scrape.value("hubcast_connections", &[("hub", HUB)]), 3.0);
    assert_eq!(scrape.value("hubcast_connects_total", &[("hub", HUB)]), 3.0);
    // The same connections by client protocol: all three came through the default edge.
    let protocol = |p| [("protocol", p)];
    assert_eq!(scrape.types["hubcast_protocol_connections"], "gauge");
    assert_eq!(
        scrape.value("hubcast_protocol_connections", &protocol("default")),
        3.0
    );
    assert_eq!(
        scrape.value("hubcast_protocol_connects_total", &protocol("default")),
        3.0
    );
    for other in ["mqtt", "socketio"] {
        assert_eq!(
            scrape.value("hubcast_protocol_connections", &protocol(other)),
            0.0
        );
    }
    assert_eq!(
        scrape.value("hubcast_connect_refusals_total", &[("status", "401")]),
        1.0
    );

    // Alice publishes three messages to group g (alice and bob are members, echo on).
    for i in 0..3 {
        alice.publish_text("g", &format!("hello {i}")).await;
    }
    // The service sends one message to the whole hub, over REST.
    let sent = server
        .rest()
        .call(
            "POST",
            &format!("/api/hubs/{HUB}/:send?api-version=2024-12-01"),
            Some(("text/plain", b"to everyone")),
        )
        .await;
    assert_eq!(sent.status, 202);

    // Count what the clients really got.
    let mut received = 0;
    for client in [&mut alice, &mut bob] {
        for _ in 0..4 {
            let m = client.recv_message().await;
            assert_eq!(m["type"], "message", "{m}");
            received += 1;
        }
        client.expect_nothing_queued().await;
    }
    let mut carol = carol;
    assert_eq!(carol.recv_message().await["data"], "to everyone");
    received += 1;
    carol.expect_nothing_queued().await;
    assert_eq!(received, 9);

    // Carol leaves; bob is closed by the service.
    carol.close().await;
    let closed = server
        .rest()
        .call(
            "DELETE",
            &format!(
                "/api/hubs/{HUB}/connections/{}?api-version=2024-12-01",
                bob.connection_id()
            ),
            None,
        )
        .await;
    assert_eq!(closed.status, 204);
    bob.expect_close().await;

    assert_eventually!(
        Scrape::take(&server)
            .await
            .value("hubcast_connections", &[("hub", HUB)])
            == 1.0
    );
    // The latency of a message is recorded right after its write: wait for the last one.
    assert_eventually!(
        Scrape::take(&server)
            .await
            .value("hubcast_fanout_latency_seconds_count", &[("hub", HUB)])
            == 9.0
    );
    let scrape = Scrape::take(&server).await;
    let hub = ("hub", HUB);
    // Messages out equals what the clients received, split by how they were sent.
    assert_eq!(
        scrape.sum("hubcast_messages_sent_total", &[hub]),
        received as f64
    );
    assert_eq!(
        scrape.value("hubcast_messages_sent_total", &[hub, ("kind", "group")]),
        6.0
    );
    assert_eq!(
        scrape.value("hubcast_messages_sent_total", &[hub, ("kind", "all")]),
        3.0
    );
    assert!(scrape.value("hubcast_sent_bytes_total", &[hub, ("kind", "group")]) > 6.0 * 7.0);
    // Frames in: alice's three publishes, and one ping from each client
    // (`expect_nothing_queued`).
    assert_eq!(
        scrape.value("hubcast_messages_received_total", &[hub, ("kind", "text")]),
        6.0
    );
    assert_eq!(
        scrape.value(
            "hubcast_messages_received_total",
            &[hub, ("kind", "binary")]
        ),
        0.0
    );
    assert!(scrape.value("hubcast_received_bytes_total", &[hub, ("kind", "text")]) > 3.0 * 40.0);
    assert_eq!(
        scrape.value(
            "hubcast_protocol_messages_received_total",
            &protocol("default")
        ),
        6.0
    );
    assert_eq!(
        scrape.value(
            "hubcast_protocol_received_bytes_total",
            &protocol("default")
        ),
        scrape.value("hubcast_received_bytes_total", &[hub, ("kind", "text")])
    );
    assert_eq!(
        scrape.value("hubcast_protocol_connections", &protocol("default")),
        1.0
    );
    assert_eq!(
        scrape.value("hubcast_protocol_connects_total", &protocol("default")),
        3.0
    );
    // Disconnects by reason.
    assert_eq!(
        scrape.value("hubcast_disconnects_total", &[hub, ("reason", "client")]),
        1.0
    );
    assert_eq!(
        scrape.value(
            "hubcast_disconnects_total",
            &[hub, ("reason", "closed_by_service")]
        ),
        1.0
    );
    assert_eq!(scrape.value("hubcast_connects_total", &[hub]), 3.0);
    // The fan-out latency histogram is cumulative and ends with +Inf = count.
    assert_eq!(
        scrape.value(
            "hubcast_fanout_latency_seconds_bucket",
            &[hub, ("le", "+Inf")]
        ),
        9.0
    );
    assert!(scrape.value("hubcast_fanout_latency_seconds_sum", &[hub]) > 0.0);
    // Control calls by transport, operation and status.
    assert_eq!(
        scrape.value(
            "hubcast_control_call_duration_seconds_count",
            &[
                ("transport", "rest"),
                ("operation", "sendToAll"),
                ("status", "202")
            ]
        ),
        1.0
    );
    assert_eq!(
        scrape.value(
            "hubcast_control_call_duration_seconds_count",
            &[
                ("transport", "rest"),
                ("operation", "closeConnection"),
                ("status", "204")
            ]
        ),
        1.0
    );
    // Nothing is waiting in outboxes now, and nobody was too slow.
    assert_eq!(scrape.value("hubcast_outbox_bytes", &[hub]), 0.0);
    assert_eq!(
        scrape.value("hubcast_slow_consumer_closes_total", &[hub]),
        0.0
    );
    drop(alice);
    server.shutdown().await;
}

#[tokio::test]
async fn control_calls_over_grpc_are_counted_by_status() {
    let server = TestServer::start().await;
    let client = server.service_client().await;
    let mut alice = server.json_client(HUB, Some("alice"), &[], &[]).await;
    client
        .send_to_user(HUB, "alice", "hi", hubcast_sdk::SendOptions::new())
        .await
        .expect("send to user");
    assert_eq!(alice.recv_message().await["data"], "hi");
    client
        .connection_exists("1 is not a hub name", "x")
        .await
        .expect_err("an invalid hub name is refused");
    let scrape = Scrape::take(&server).await;
    let count = |operation: &str, status: &str| {
        scrape.value(
            "hubcast_control_call_duration_seconds_count",
            &[
                ("transport", "grpc"),
                ("operation", operation),
                ("status", status),
            ],
        )
    };
    assert_eq!(count("send_to_user", "Ok"), 1.0);
    assert_eq!(count("connection_exists", "InvalidArgument"), 1.0);
    assert_eq!(
        scrape.value(
            "hubcast_messages_sent_total",
            &[("hub", HUB), ("kind", "user")]
        ),
        1.0
    );
    server.shutdown().await;
}

#[tokio::test]
async fn the_endpoint_can_be_disabled() {
    let server = TestServer::start_with(|c| c.metrics.enabled = false).await;
    let response = server
        .rest()
        .call_with("GET", "/metrics", None, None, &[])
        .await;
    assert_eq!(response.status, 404);
    // Counting goes on for OTLP export: the registry still sees connections.
    let _alice = server.json_client(HUB, None, &[], &[]).await;
    assert!(
        server.router().nodes()[0]
            .metrics()
            .render()
            .contains("hubcast_connects_total{hub=\"metered\"} 1\n")
    );
    server.shutdown().await;
}

/// The Grafana dashboard and the README's metric list cover every metric the registry has
/// (a metric added without them fails here).
#[test]
fn dashboard_and_readme_cover_every_metric() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("deploy/grafana/hubcast.json")).expect("dashboard"),
    )
    .expect("the dashboard is JSON");
    let mut exprs = String::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            exprs.push_str(target["expr"].as_str().expect("expr"));
            exprs.push('\n');
        }
    }
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README");
    let metrics = hubcast_server::telemetry::Metrics::new();
    for family in metrics.registry().families() {
        let name = family.name();
        assert!(exprs.contains(name), "the dashboard does not show {name}");
        assert!(
            readme.contains(&format!("| `{name}` |")),
            "the README's metric list lacks {name}"
        );
    }
}

/// Webhook calls are timed by event and outcome, and failures counted by kind.
#[tokio::test]
async fn webhook_calls_are_timed_and_failures_counted() {
    use hubcast_integration_tests::webhook::{Answer, WebhookReceiver};
    use hubcast_server::config::{EventHandlerConfig, HubConfig};

    // The handler lets the first `connect` in and refuses the second with 401.
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = seen.clone();
    let receiver = WebhookReceiver::start_with(move |r| {
        if r.method == http::Method::OPTIONS {
            return Answer::allow_any_origin();
        }
        if counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
            Answer::status(204)
        } else {
            Answer::status(401)
        }
    })
    .await;
    let url = receiver.url("/upstream/{hub}/{event}");
    let server = TestServer::start_with(|c| {
        c.hubs.insert(
            HUB.into(),
            HubConfig {
                event_handlers: vec![EventHandlerConfig {
                    url_template: url,
                    user_event_pattern: None,
                    system_events: vec!["connect".into()],
                    auth: None,
                    http2: false,
                }],
                ..HubConfig::default()
            },
        );
    })
    .await;
    let _admitted = server.json_client(HUB, Some("a"), &[], &[]).await;
    let refused = upgrade_status(request(&server.url(HUB, Some("b"), &[], &[]), &[], None)).await;
    assert_eq!(refused, 401, "the handler's refusal reaches the client");

    let scrape = Scrape::take(&server).await;
    let calls = |outcome: &str| {
        scrape.value(
            "hubcast_webhook_duration_seconds_count",
            &[("event", "connect"), ("outcome", outcome)],
        )
    };
    assert_eq!(calls("ok"), 1.0);
    assert_eq!(calls("error"), 1.0);
    assert_eq!(
        scrape.value(
            "hubcast_webhook_errors_total",
            &[("event", "connect"), ("error", "rejected")]
        ),
        1.0
    );
    assert_eq!(
        scrape.value("hubcast_connect_refusals_total", &[("status", "401")]),
        1.0
    );
    assert_eq!(scrape.value("hubcast_connects_total", &[("hub", HUB)]), 1.0);
    server.shutdown().await;
}
