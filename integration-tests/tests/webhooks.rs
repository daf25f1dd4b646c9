//! Upstream events over webhooks (spec §6) against a real HTTP event handler: headers,
//! signatures, validation, `connect` decisions, `connected`/`disconnected`, retries, user
//! events and connection state.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, KeyInit as _, Mac};
use http::{Method, Version};
use hubcast_integration_tests::webhook::{Answer, Received, WebhookReceiver, default_answer};
use hubcast_integration_tests::{
    JOIN_ROLE, JSON_RELIABLE_SUBPROTOCOL, JSON_SUBPROTOCOL, JsonClient, PRIMARY_KEY, SECONDARY_KEY,
    SimpleClient, TestServer, request, try_connect, upgrade_status,
};
use hubcast_server::config::{EventHandlerAuth, EventHandlerConfig, HubConfig};
use serde_json::json;
use sha2::Sha256;
use tokio_tungstenite::tungstenite::{Message, http::HeaderValue};

const HUB: &str = "chat";
const ALL_SYSTEM: &[&str] = &["connect", "connected", "disconnected"];

fn handler(url: String, pattern: Option<&str>, system: &[&str]) -> EventHandlerConfig {
    EventHandlerConfig {
        url_template: url,
        user_event_pattern: pattern.map(str::to_owned),
        system_events: system.iter().map(|s| (*s).to_owned()).collect(),
        auth: None,
        http2: false,
    }
}

/// A server whose hub `chat` has `handlers`, with short upstream timings for tests.
async fn server_with(handlers: Vec<EventHandlerConfig>) -> TestServer {
    TestServer::start_with(|c| {
        c.upstream.timeout = Duration::from_secs(2);
        c.upstream.retry_backoff = vec![Duration::from_millis(50); 3];
        c.hubs.insert(
            HUB.into(),
            HubConfig {
                event_handlers: handlers,
                ..HubConfig::default()
            },
        );
    })
    .await
}

/// One handler taking every event at `{receiver}/upstream/{hub}/{event}`.
async fn server_for(receiver: &WebhookReceiver) -> TestServer {
    server_with(vec![handler(
        receiver.url("/upstream/{hub}/{event}"),
        Some("*"),
        ALL_SYSTEM,
    )])
    .await
}

fn hmac_hex(key: &str, connection_id: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("any key length");
    mac.update(connection_id.as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Checks the headers every event POST carries (spec §6.3).
#[track_caller]
fn assert_common_headers(r: &Received, event: &str, ce_type: &str, id: u64, user: Option<&str>) {
    let conn = r.connection_id();
    assert!(!conn.is_empty(), "ce-connectionId present");
    assert_eq!(r.header("webhook-request-origin"), "127.0.0.1");
    assert_eq!(r.header("ce-specversion"), "1.0");
    assert_eq!(r.header("ce-awpsversion"), "1.0");
    assert_eq!(r.header("ce-type"), ce_type);
    assert_eq!(r.header("ce-source"), format!("/hubs/{HUB}/client/{conn}"));
    assert_eq!(r.header("ce-id"), id.to_string());
    assert_eq!(r.header("ce-hub"), HUB);
    assert_eq!(r.header("ce-eventname"), event);
    assert_eq!(r.try_header("ce-userid"), user);
    let time = r.header("ce-time");
    assert!(
        time.len() == 20 && time.ends_with('Z') && time.as_bytes()[10] == b'T',
        "ce-time is yyyy-MM-ddTHH:mm:ssZ: {time}"
    );
    // One signature per access key, primary first, each verifiable with its key.
    let expected = format!(
        "sha256={},sha256={}",
        hmac_hex(PRIMARY_KEY, conn),
        hmac_hex(SECONDARY_KEY, conn)
    );
    assert_eq!(r.header("ce-signature"), expected);
}

#[tokio::test]
async fn every_event_carries_the_azure_headers_signature_and_body() {
    let mut receiver = WebhookReceiver::start().await;
    let server = server_for(&receiver).await;
    let url = format!(
        "{}&lang=en&lang=fr",
        server.url(HUB, Some("alice"), &[JOIN_ROLE], &[])
    );
    let mut req = request(&url, &[JSON_SUBPROTOCOL], None);
    req.headers_mut()
        .insert("x-custom", HeaderValue::from_static("yes"));
    let mut client = JsonClient::connect_request(req).await;
    let id = client.connection_id().to_owned();

    // Abuse protection first: OPTIONS on the URL with {event} = validate.
    let validation = receiver.next().await;
    assert_eq!(validation.method, Method::OPTIONS);
    assert_eq!(validation.path, "/upstream/chat/validate");
    assert_eq!(validation.header("webhook-request-origin"), "127.0.0.1");
    assert_eq!(validation.header("ce-awpsversion"), "1.0");

    let connect = receiver.next().await;
    assert_eq!(connect.method, Method::POST);
    assert_eq!(connect.path, "/upstream/chat/connect");
    assert_eq!(connect.connection_id(), id);
    assert_common_headers(
        &connect,
        "connect",
        "azure.webpubsub.sys.connect",
        0,
        Some("alice"),
    );
    assert_eq!(
        connect.header("content-type"),
        "application/json; charset=utf-8"
    );
    assert_eq!(connect.header("ce-subprotocol"), JSON_SUBPROTOCOL);
    assert_eq!(connect.try_header("ce-connectionstate"), None);
    let body = connect.json();
    assert_eq!(body["claims"]["sub"], json!(["alice"]));
    assert_eq!(body["claims"]["role"], json!([JOIN_ROLE]));
    assert_eq!(body["claims"]["aud"], json!([server.audience(HUB)]));
    assert_eq!(body["query"]["lang"], json!(["en", "fr"]));
    assert!(body["query"].get("access_token").is_none(), "{body}");
    assert_eq!(body["headers"]["x-custom"], json!(["yes"]));
    assert!(body["headers"].get("authorization").is_none(), "{body}");
    assert!(body["headers"].get("sec-websocket-key").is_none(), "{body}");
    assert_eq!(body["subprotocols"], json!([JSON_SUBPROTOCOL]));
    assert_eq!(body["clientCertificates"], json!([]));

    let connected = receiver.next().await;
    assert_eq!(connected.path, "/upstream/chat/connected");
    assert_common_headers(
        &connected,
        "connected",
        "azure.webpubsub.sys.connected",
        1,
        Some("alice"),
    );
    assert_eq!(
        connected.header("content-type"),
        "application/json; charset=utf-8"
    );
    assert_eq!(connected.json(), json!({}));

    client
        .send(
            json!({"type": "event", "event": "chat", "dataType": "text", "data": "hi", "ackId": 1}),
        )
        .await;
    client.expect_ack_ok(1).await;
    let user = receiver.next().await;
    assert_eq!(user.path, "/upstream/chat/chat");
    assert_common_headers(&user, "chat", "azure.webpubsub.user.chat", 2, Some("alice"));
    assert_eq!(user.header("content-type"), "text/plain");
    assert_eq!(&user.body[..], b"hi");

    client.close().await;
    let disconnected = receiver.next().await;
    assert_common_headers(
        &disconnected,
        "disconnected",
        "azure.webpubsub.sys.disconnected",
        3,
        Some("alice"),
    );
    assert_eq!(
        disconnected.json(),
        json!({}),
        "a client close has no reason"
    );

    // Shutdown delivers everything queued: nothing else was sent, and the URL was
    // validated once.
    server.shutdown().await;
    let rest = receiver.drain();
    assert!(rest.is_empty(), "unexpected requests: {rest:#?}");
}

#[tokio::test]
async fn requests_wait_for_one_validation_and_a_failed_one_refuses() {
    let options = Arc::new(AtomicUsize::new(0));
    let counter = options.clone();
    let mut receiver = WebhookReceiver::start_with(move |r| {
        if r.method == Method::OPTIONS {
            counter.fetch_add(1, Ordering::SeqCst);
            Answer::allow_any_origin().after(Duration::from_millis(300))
        } else {
            Answer::status(204)
        }
    })
    .await;
    let server = server_with(vec![handler(
        receiver.url("/upstream/{event}"),
        None,
        &["connect"],
    )])
    .await;
    // Two clients at once: both wait for the single validation, then connect.
    let (url_a, url_b) = (
        server.url(HUB, Some("a"), &[], &[]),
        server.url(HUB, Some("b"), &[], &[]),
    );
    let (a, b) = tokio::join!(JsonClient::connect(&url_a), JsonClient::connect(&url_b));
    drop((a, b));
    let first = receiver.next().await;
    assert_eq!(first.method, Method::OPTIONS, "validation comes first");
    receiver.next_named("connect").await;
    receiver.next_named("connect").await;
    assert_eq!(options.load(Ordering::SeqCst), 1, "validated once, cached");

    // A handler that does not allow our origin is never sent events.
    let mut refusing = WebhookReceiver::start_with(|r| {
        if r.method == Method::OPTIONS {
            Answer::status(200).header("webhook-allowed-origin", "other.example.com")
        } else {
            Answer::status(204)
        }
    })
    .await;
    let server = server_with(vec![handler(
        refusing.url("/x/{event}"),
        None,
        &["connect"],
    )])
    .await;
    let status = upgrade_status(request(&server.url(HUB, None, &[], &[]), &[], None)).await;
    assert_eq!(status, 502, "validation failed: bad gateway");
    server.shutdown().await;
    let seen = refusing.drain();
    assert!(
        seen.iter().all(|r| r.method != Method::POST),
        "no event after a failed validation: {seen:#?}"
    );
}

#[tokio::test]
async fn connect_answer_sets_user_groups_roles_subprotocol_and_state() {
    let mut receiver = WebhookReceiver::start_with(|r| match r.event() {
        "connect" => Answer::json(&json!({
            "userId": "bob",
            "groups": ["g1"],
            "roles": ["webpubsub.sendToGroup.g1"],
            "subprotocol": JSON_SUBPROTOCOL,
        }))
        .header("ce-connectionState", "c0"),
        _ => default_answer(r),
    })
    .await;
    let server = server_for(&receiver).await;
    let mut client = server.json_client(HUB, Some("alice"), &[], &[]).await;
    assert_eq!(client.user_id(), Some("bob"), "userId replaced");
    assert!(server.router().group_exists(HUB, "g1"), "joined g1");
    assert!(server.router().user_exists(HUB, "bob"));
    assert!(!server.router().user_exists(HUB, "alice"));
    // The roles replaced the token's (none): sending to g1 is allowed, to g2 not.
    client.publish_text("g1", "to g1").await;
    let message = client.recv_message().await;
    assert_eq!(message["data"], "to g1");
    client
        .send(json!({"type": "sendToGroup", "group": "g2", "dataType": "text", "data": "x", "ackId": 9}))
        .await;
    client.expect_ack_error(9, "Forbidden").await;

    let connected = receiver.next_named("connected").await;
    assert_eq!(connected.header("ce-userid"), "bob");
    assert_eq!(connected.header("ce-connectionstate"), "c0");
}

#[tokio::test]
async fn connect_may_select_a_custom_subprotocol_for_a_simple_client() {
    let receiver = WebhookReceiver::start_with(|r| match r.event() {
        "connect" => Answer::json(&json!({"subprotocol": "custom.v1"})),
        _ => default_answer(r),
    })
    .await;
    let server = server_for(&receiver).await;
    let (mut ws, response) = try_connect(request(
        &server.url(HUB, None, &[], &[]),
        &["custom.v1"],
        None,
    ))
    .await
    .expect("accepted");
    assert_eq!(
        response
            .headers()
            .get("sec-websocket-protocol")
            .map(|v| v.as_bytes()),
        Some(&b"custom.v1"[..])
    );
    let _ = futures_util::SinkExt::close(&mut ws).await;
    // A subprotocol the client did not offer refuses the connection.
    receiver.respond_with(|r| match r.event() {
        "connect" => Answer::json(&json!({"subprotocol": "never.offered"})),
        _ => default_answer(r),
    });
    let status = upgrade_status(request(
        &server.url(HUB, None, &[], &[]),
        &["custom.v1"],
        None,
    ))
    .await;
    assert_eq!(status, 500);
}

#[tokio::test]
async fn connect_rejections_pass_their_status_to_the_client() {
    let mut receiver = WebhookReceiver::start().await;
    let server = server_for(&receiver).await;
    for status in [401, 403, 500, 503] {
        receiver.respond_with(move |r| match r.event() {
            "connect" => Answer::status(status).body("no"),
            _ => default_answer(r),
        });
        let got = upgrade_status(request(&server.url(HUB, Some("u"), &[], &[]), &[], None)).await;
        assert_eq!(got, status, "the handler's {status} reaches the client");
    }
    server.shutdown().await;
    let requests = receiver.drain();
    let connects = requests.iter().filter(|r| r.event() == "connect").count();
    assert_eq!(
        connects, 4,
        "blocking events are not retried: {requests:#?}"
    );
    assert!(
        requests
            .iter()
            .all(|r| r.event() != "connected" && r.event() != "disconnected"),
        "a refused connection raises no other event: {requests:#?}"
    );
}

#[tokio::test]
async fn connect_timeout_and_unreachable_handler_refuse_with_gateway_statuses() {
    let receiver = WebhookReceiver::start_with(|r| match r.event() {
        "connect" => Answer::status(204).after(Duration::from_secs(3)),
        _ => default_answer(r),
    })
    .await;
    let server = TestServer::start_with(|c| {
        c.upstream.timeout = Duration::from_millis(500);
        c.hubs.insert(
            HUB.into(),
            HubConfig {
                event_handlers: vec![handler(receiver.url("/{event}"), None, &["connect"])],
                ..HubConfig::default()
            },
        );
    })
    .await;
    let status = upgrade_status(request(&server.url(HUB, None, &[], &[]), &[], None)).await;
    assert_eq!(status, 504, "a handler that does not answer in time");

    // A port nobody listens on.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    let server = server_with(vec![handler(
        format!("http://127.0.0.1:{port}/{{event}}"),
        None,
        &["connect"],
    )])
    .await;
    let status = upgrade_status(request(&server.url(HUB, None, &[], &[]), &[], None)).await;
    assert_eq!(status, 502, "an unreachable handler");
}

#[tokio::test]
async fn connected_and_disconnected_come_exactly_once_with_the_reason() {
    let mut receiver = WebhookReceiver::start().await;
    // Only system events: a simple client's frame has no handler and closes it with 1011.
    let server = server_with(vec![handler(
        receiver.url("/upstream/{event}"),
        None,
        &["connected", "disconnected"],
    )])
    .await;
    let mut client = SimpleClient::connect(&server.url(HUB, Some("u"), &[], &[])).await;
    client.send(Message::text("hello")).await;
    let closed = client.expect_close().await;
    assert_eq!(closed.code, 1011);

    let connected = receiver.next_named("connected").await;
    let id = connected.connection_id().to_owned();
    assert_eq!(
        connected.try_header("ce-subprotocol"),
        None,
        "a simple client"
    );
    let disconnected = receiver.next_named("disconnected").await;
    assert_eq!(disconnected.connection_id(), id);
    assert_eq!(disconnected.json(), json!({"reason": closed.reason}));
    assert!(closed.reason.contains("message"), "{}", closed.reason);

    server.shutdown().await;
    let rest: Vec<_> = receiver
        .drain()
        .into_iter()
        .filter(|r| r.method == Method::POST)
        .collect();
    assert!(rest.is_empty(), "exactly one of each: {rest:#?}");
}

#[tokio::test]
async fn a_reliable_connection_is_disconnected_upstream_only_when_it_finally_ends() {
    let mut receiver = WebhookReceiver::start().await;
    let server = TestServer::start_with(|c| {
        c.client.recovery_window = Duration::from_millis(500);
        c.hubs.insert(
            HUB.into(),
            HubConfig {
                event_handlers: vec![handler(
                    receiver.url("/upstream/{event}"),
                    None,
                    &["connected", "disconnected"],
                )],
                ..HubConfig::default()
            },
        );
    })
    .await;
    let client = JsonClient::connect_as(
        &server.url(HUB, Some("u"), &[], &[]),
        JSON_RELIABLE_SUBPROTOCOL,
    )
    .await;
    let id = client.connection_id().to_owned();
    let token = client.connected()["reconnectionToken"]
        .as_str()
        .expect("reliable")
        .to_owned();
    let recovery = format!(
        "{}&awps_connection_id={id}&awps_reconnection_token={token}",
        server.url_to_node_of(&id, HUB, Some("u"), &[], &[])
    );
    assert_eq!(receiver.next_named("connected").await.connection_id(), id);

    // A lost socket that is recovered is the same logical connection: no events.
    client.abort();
    let recovered = JsonClient::connect_as(&recovery, JSON_RELIABLE_SUBPROTOCOL).await;
    assert_eq!(recovered.connection_id(), id);
    // Lost again, and not recovered: one `disconnected` when the window ends.
    recovered.abort();
    let disconnected = receiver.next_named("disconnected").await;
    assert_eq!(disconnected.connection_id(), id);
    assert!(!server.router().connection_exists(HUB, &id));

    server.shutdown().await;
    let rest: Vec<_> = receiver
        .drain()
        .into_iter()
        .filter(|r| r.method == Method::POST)
        .collect();
    assert!(
        rest.is_empty(),
        "one connected, one disconnected: {rest:#?}"
    );
}

#[tokio::test]
async fn non_blocking_events_are_retried_on_503() {
    let failures = Arc::new(AtomicUsize::new(0));
    let counter = failures.clone();
    let mut receiver = WebhookReceiver::start_with(move |r| match r.event() {
        "connected" if counter.fetch_add(1, Ordering::SeqCst) < 2 => Answer::status(503),
        // Not retried: only 408, 5xx and network errors are.
        "disconnected" => Answer::status(429),
        _ => default_answer(r),
    })
    .await;
    let server = server_for(&receiver).await;
    let client = server.json_client(HUB, None, &[], &[]).await;
    let attempts = [
        receiver.next_named("connected").await,
        receiver.next_named("connected").await,
        receiver.next_named("connected").await,
    ];
    for attempt in &attempts {
        assert_eq!(attempt.connection_id(), client.connection_id());
        assert_eq!(attempt.header("ce-id"), "1", "the same event each time");
    }
    client.close().await;
    // In order after the retried `connected`, on the same connection's queue.
    receiver.next_named("disconnected").await;
    server.shutdown().await;
    let extra: Vec<_> = receiver
        .drain()
        .into_iter()
        .filter(|r| r.method == Method::POST)
        .collect();
    assert!(
        extra.is_empty(),
        "three attempts of `connected`, one of `disconnected` (429): {extra:#?}"
    );
}

/// Answers every user event with its own body and content type.
fn echo(r: &Received) -> Answer {
    if r.method == Method::POST && r.header("ce-type").starts_with("azure.webpubsub.user.") {
        Answer::status(200)
            .header("content-type", r.header("content-type").to_owned())
            .body(r.body.clone())
    } else {
        default_answer(r)
    }
}

#[tokio::test]
async fn json_client_events_are_echoed_before_the_ack_for_each_data_type() {
    let mut receiver = WebhookReceiver::start_with(echo).await;
    let server = server_for(&receiver).await;
    let mut client = server.json_client(HUB, None, &[], &[]).await;
    let cases = [
        ("text", json!("hello"), "text/plain", b"hello".to_vec()),
        (
            "json",
            json!({"a": [1, 2]}),
            "application/json",
            br#"{"a":[1,2]}"#.to_vec(),
        ),
        (
            "binary",
            json!("AAEC"),
            "application/octet-stream",
            vec![0, 1, 2],
        ),
        (
            "protobuf",
            json!("CgEx"),
            "application/x-protobuf",
            vec![10, 1, 49],
        ),
    ];
    for (ack, (data_type, data, content_type, body)) in (1..).zip(cases) {
        client
            .send(json!({"type": "event", "event": "echo", "dataType": data_type, "data": data, "ackId": ack}))
            .await;
        let request = receiver.next_named("echo").await;
        assert_eq!(request.header("content-type"), content_type);
        assert_eq!(request.body.to_vec(), body, "{data_type}");
        let first = client.recv().await;
        assert_eq!(
            first,
            json!({"type": "message", "from": "server", "dataType": data_type, "data": data}),
            "the reply comes first"
        );
        let second = client.recv().await;
        assert_eq!(
            second,
            json!({"type": "ack", "ackId": ack, "success": true})
        );
    }
    // A reused ack id is a duplicate and is not delivered again.
    client
        .send(json!({"type": "event", "event": "echo", "dataType": "text", "data": "again", "ackId": 1}))
        .await;
    client.expect_ack_error(1, "Duplicate").await;
    client.close().await;
    receiver.next_named("disconnected").await;
    server.shutdown().await;
    assert!(receiver.drain().iter().all(|r| r.event() != "echo"));
}

#[tokio::test]
async fn simple_client_frames_are_message_events_echoed_as_frames() {
    let mut receiver = WebhookReceiver::start_with(echo).await;
    let server = server_for(&receiver).await;
    let mut client = SimpleClient::connect(&server.url(HUB, None, &[], &[])).await;
    client.send(Message::text("ping")).await;
    let request = receiver.next_named("message").await;
    assert_eq!(request.header("ce-type"), "azure.webpubsub.user.message");
    assert_eq!(request.header("content-type"), "text/plain");
    assert_eq!(client.recv().await, Message::text("ping"));

    client.send(Message::binary(vec![1u8, 2, 3])).await;
    let request = receiver.next_named("message").await;
    assert_eq!(request.header("content-type"), "application/octet-stream");
    assert_eq!(client.recv().await, Message::binary(vec![1u8, 2, 3]));

    // A JSON answer reaches a simple client as a text frame.
    receiver.respond_with(|r| match r.event() {
        "message" => Answer::json(&json!({"ok": true})),
        _ => default_answer(r),
    });
    client.send(Message::text("json please")).await;
    assert_eq!(client.recv().await, Message::text(r#"{"ok":true}"#));

    // A failing handler closes a simple client with 1011.
    receiver.respond_with(|r| match r.event() {
        "message" => Answer::status(500),
        _ => default_answer(r),
    });
    client.send(Message::text("fail")).await;
    assert_eq!(client.expect_close().await.code, 1011);
}

#[tokio::test]
async fn failed_user_events_are_acked_internal_server_error() {
    let receiver = WebhookReceiver::start_with(|r| match r.event() {
        "boom" => Answer::status(500),
        "slow" => Answer::status(204).after(Duration::from_secs(4)),
        "nojson" => Answer::status(200)
            .header("content-type", "application/json")
            .body("not json"),
        _ => default_answer(r),
    })
    .await;
    let server = server_for(&receiver).await;
    let mut client = server.json_client(HUB, None, &[], &[]).await;
    for (ack, event) in [(1, "boom"), (2, "slow"), (3, "nojson")] {
        client
            .send(json!({"type": "event", "event": event, "data": 1, "ackId": ack}))
            .await;
        let ack = client.expect_ack_error(ack, "InternalServerError").await;
        assert!(
            !ack.to_string().contains("not json"),
            "the backend's body is not forwarded: {ack}"
        );
    }
    // The connection stays usable.
    client.ping().await;
}

#[tokio::test]
async fn connection_state_round_trips_across_events() {
    let mut receiver = WebhookReceiver::start_with(|r| match r.event() {
        "connect" => Answer::status(204).header("ce-connectionState", "s0"),
        "e1" => Answer::status(204).header("ce-connectionState", "s1"),
        "e3" => Answer::status(204).header("ce-connectionState", "s2"),
        _ => default_answer(r),
    })
    .await;
    let server = server_for(&receiver).await;
    let mut client = server.json_client(HUB, None, &[], &[]).await;
    assert_eq!(
        receiver
            .next_named("connected")
            .await
            .header("ce-connectionstate"),
        "s0"
    );
    let mut seen = Vec::new();
    for (ack, event) in (1..).zip(["e1", "e2", "e3"]) {
        client
            .send(json!({"type": "event", "event": event, "dataType": "text", "data": "x", "ackId": ack}))
            .await;
        client.expect_ack_ok(ack).await;
        let r = receiver.next_named(event).await;
        seen.push(r.header("ce-connectionstate").to_owned());
    }
    assert_eq!(seen, ["s0", "s1", "s1"], "set by answers, kept when absent");
    client.close().await;
    let disconnected = receiver.next_named("disconnected").await;
    assert_eq!(disconnected.header("ce-connectionstate"), "s2");
}

#[tokio::test]
async fn events_without_a_matching_handler_keep_the_old_behaviour() {
    let mut receiver = WebhookReceiver::start().await;
    let server = server_with(vec![handler(
        receiver.url("/upstream/{event}"),
        Some("other, more"),
        &[],
    )])
    .await;
    let mut client = server.json_client(HUB, None, &[], &[]).await;
    client
        .send(json!({"type": "event", "event": "chat", "data": 1, "ackId": 1}))
        .await;
    client.expect_ack_ok(1).await;
    client
        .send(json!({"type": "event", "event": "MORE", "data": 1, "ackId": 2}))
        .await;
    client.expect_ack_ok(2).await;
    let more = receiver.next_event().await;
    assert_eq!(more.event(), "MORE", "patterns match case-insensitively");
    client.close().await;
    server.shutdown().await;
    let rest: Vec<_> = receiver
        .drain()
        .into_iter()
        .filter(|r| r.method == Method::POST)
        .collect();
    assert!(
        rest.is_empty(),
        "`chat` and system events select no handler: {rest:#?}"
    );
}

#[tokio::test]
async fn handlers_speak_http2_and_carry_their_auth() {
    let mut receiver = WebhookReceiver::start().await;
    let mut with_header = handler(receiver.url("/h2/{event}"), None, &["connect"]);
    with_header.http2 = true;
    with_header.auth = Some(EventHandlerAuth {
        header: Some("x-api-key".into()),
        value: Some("k1".into()),
        code: None,
    });
    let mut with_code = handler(receiver.url("/fn/{event}"), None, &["connected"]);
    with_code.auth = Some(EventHandlerAuth {
        header: None,
        value: None,
        code: Some("s3cret".into()),
    });
    let server = server_with(vec![with_header, with_code]).await;
    let _client = server.json_client(HUB, None, &[], &[]).await;
    let requests = [
        receiver.next().await,
        receiver.next().await,
        receiver.next().await,
        receiver.next().await,
    ];
    let find = |method: Method, prefix: &str| {
        requests
            .iter()
            .find(|r| r.method == method && r.path.starts_with(prefix))
            .unwrap_or_else(|| panic!("{method} {prefix} in {requests:#?}"))
    };
    for r in [find(Method::OPTIONS, "/h2/"), find(Method::POST, "/h2/")] {
        assert_eq!(r.version, Version::HTTP_2, "{r:#?}");
        assert_eq!(r.header("x-api-key"), "k1");
    }
    assert_eq!(
        find(Method::OPTIONS, "/fn/").path,
        "/fn/validate?code=s3cret"
    );
    let connected = find(Method::POST, "/fn/");
    assert_eq!(connected.path, "/fn/connected?code=s3cret");
    assert_eq!(connected.version, Version::HTTP_11);
}

#[tokio::test]
async fn binary_event_data_is_decoded_for_the_handler() {
    let mut receiver = WebhookReceiver::start().await;
    let server = server_for(&receiver).await;
    let mut client = server.json_client(HUB, None, &[], &[]).await;
    let bytes = [0u8, 255, 7];
    let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
    client
        .send(
            json!({"type": "event", "event": "bin", "dataType": "binary", "data": b64, "ackId": 1}),
        )
        .await;
    client.expect_ack_ok(1).await;
    let r = receiver.next_named("bin").await;
    assert_eq!(&r.body[..], &bytes);
}

#[tokio::test]
async fn a_slow_backend_fills_a_bounded_queue_without_slowing_clients() {
    let mut receiver = WebhookReceiver::start_with(|r| match r.event() {
        "connected" => Answer::status(204).after(Duration::from_millis(500)),
        _ => default_answer(r),
    })
    .await;
    let server = TestServer::start_with(|c| {
        // Long enough to deliver everything that was queued.
        c.shutdown_grace = Duration::from_secs(5);
        c.upstream.workers = 1;
        c.upstream.queue_capacity = 2;
        c.hubs.insert(
            HUB.into(),
            HubConfig {
                event_handlers: vec![handler(receiver.url("/{event}"), None, &["connected"])],
                ..HubConfig::default()
            },
        );
    })
    .await;
    let mut clients = Vec::new();
    for _ in 0..8 {
        let mut client = server.json_client(HUB, None, &[], &[]).await;
        client.ping().await;
        clients.push(client);
    }
    for client in clients {
        client.close().await;
    }
    server.shutdown().await;
    let delivered = receiver
        .drain()
        .iter()
        .filter(|r| r.event() == "connected")
        .count();
    // One in flight, two queued (one more if connecting took longer than an answer); the
    // others were dropped rather than held in memory.
    assert!(
        (3..=4).contains(&delivered),
        "{delivered} of 8 `connected` events reached the slow backend"
    );
}
