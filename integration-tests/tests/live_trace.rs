//! The live trace, end to end: `hubcast.v1.Admin/Trace` over gRPC and `GET /api/trace` as
//! Server-Sent Events, against a real server with real clients: the records of a connect, a
//! group join and send, a REST call and a close arrive in order with Azure's fields; filters
//! hold; a listener that stops reading loses records (counted), is ended, and slows nobody;
//! tokens of any other audience are refused.

use std::time::Duration;

use hubcast_auth::{ADMIN_AUDIENCE_PATH, GRPC_AUDIENCE_PATH, mint_service_token};
use hubcast_integration_tests::{JOIN_ROLE, PRIMARY_KEY, SEND_ROLE, TIMEOUT, TestServer};
use hubcast_proto::v1::{self as pb, admin_client::AdminClient};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;
use tonic::Streaming;

const HUB: &str = "traced";

fn admin_token(server: &TestServer, path: &str) -> String {
    mint_service_token(
        PRIMARY_KEY,
        &format!("{}{path}", server.endpoint()),
        Duration::from_secs(600),
    )
}

async fn try_trace(
    server: &TestServer,
    token: Option<String>,
    request: pb::TraceRequest,
) -> Result<Streaming<pb::TraceEvent>, tonic::Status> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.grpc_addr()))
        .expect("valid endpoint")
        // A small window, so that a listener that stops reading is felt after a few records
        // (hyper's default of 2 MiB would hold thousands).
        .initial_stream_window_size(16 * 1024)
        .initial_connection_window_size(16 * 1024)
        .connect()
        .await
        .expect("gRPC connect");
    let mut client = AdminClient::with_interceptor(channel, move |mut r: tonic::Request<()>| {
        if let Some(token) = &token {
            r.metadata_mut().insert(
                "authorization",
                format!("Bearer {token}").parse().expect("ascii"),
            );
        }
        Ok(r)
    });
    let response = tokio::time::timeout(TIMEOUT, client.trace(request))
        .await
        .expect("Trace answered in time")?;
    Ok(response.into_inner())
}

async fn trace(server: &TestServer, request: pb::TraceRequest) -> Streaming<pb::TraceEvent> {
    try_trace(
        server,
        Some(admin_token(server, ADMIN_AUDIENCE_PATH)),
        request,
    )
    .await
    .expect("the admin token opens the trace")
}

/// The next record of `stream` (failing on drops: these tests stay well within the buffer).
async fn next_record(stream: &mut Streaming<pb::TraceEvent>) -> pb::TraceRecord {
    let event = tokio::time::timeout(TIMEOUT, stream.message())
        .await
        .expect("a trace record in time")
        .expect("the stream is healthy")
        .expect("the stream goes on");
    match event.event {
        Some(pb::trace_event::Event::Record(r)) => r,
        other => panic!("expected a record, got {other:?}"),
    }
}

#[tokio::test]
async fn a_connect_a_group_send_a_rest_call_and_a_close_are_traced_in_order() {
    let server = TestServer::start().await;
    let mut stream = trace(
        &server,
        pb::TraceRequest {
            hub: HUB.to_uppercase(),
            ..Default::default()
        },
    )
    .await;
    // Another hub's traffic is filtered out.
    let other = server.json_client("elsewhere", Some("eve"), &[], &[]).await;

    let mut alice = server
        .json_client(HUB, Some("alice"), &[JOIN_ROLE, SEND_ROLE], &[])
        .await;
    let id = alice.connection_id().to_owned();
    let started = next_record(&mut stream).await;
    assert_eq!(started.event_name, "ConnectionStarted");
    assert_eq!(started.category, pb::TraceCategory::Connectivity as i32);
    assert_eq!(started.level, "Informational");
    assert_eq!(started.hub, HUB);
    assert_eq!(started.connection_id, id);
    assert_eq!(started.user_id, "alice");
    assert_eq!(started.ip, "127.0.0.1");
    assert!(
        started.message.contains("json.webpubsub.azure.v1"),
        "{started:?}"
    );
    assert!(started.time.is_some_and(|t| t.seconds > 1_700_000_000));

    alice.join("g").await;
    let joined = next_record(&mut stream).await;
    assert_eq!(
        (joined.event_name.as_str(), joined.group.as_str()),
        ("GroupJoined", "g")
    );
    assert_eq!(joined.category, pb::TraceCategory::Messaging as i32);

    alice.publish_text("g", "secret words").await;
    let sent = next_record(&mut stream).await;
    assert_eq!(sent.event_name, "MessageSent");
    assert_eq!(
        (sent.group.as_str(), sent.connection_id.as_str()),
        ("g", id.as_str())
    );
    assert!(sent.message.contains("1 recipient"), "{sent:?}");
    assert!(sent.payload.is_empty(), "payloads are off by default");
    assert!(!sent.message.contains("secret"), "{sent:?}");
    alice.recv_message().await;

    let rest = server
        .rest()
        .call(
            "POST",
            &format!("/api/hubs/{HUB}/:send?api-version=2024-12-01"),
            Some(("text/plain", b"to all")),
        )
        .await;
    assert_eq!(rest.status, 202);
    let by_service = next_record(&mut stream).await;
    assert_eq!(by_service.event_name, "MessageSent");
    assert!(
        by_service.message.starts_with("the service"),
        "{by_service:?}"
    );
    let http = next_record(&mut stream).await;
    assert_eq!(http.event_name, "HttpRequest");
    assert_eq!(http.category, pb::TraceCategory::HttpRequest as i32);
    assert_eq!(http.http_method, "POST");
    assert_eq!(
        http.url,
        format!("/api/hubs/{HUB}/:send?api-version=2024-12-01")
    );
    assert_eq!(http.status_code, 202);
    assert_eq!(http.route_template, "sendToAll");
    assert_eq!(http.hub, HUB);
    alice.recv_message().await;

    alice.close().await;
    let ended = next_record(&mut stream).await;
    assert_eq!(
        (ended.event_name.as_str(), ended.connection_id.as_str()),
        ("ConnectionEnded", id.as_str())
    );
    other.close().await;
    server.shutdown().await;
}

#[tokio::test]
async fn filters_select_by_category_connection_user_and_keyword() {
    let server = TestServer::start().await;
    let mut http_only = trace(
        &server,
        pb::TraceRequest {
            categories: vec![pb::TraceCategory::HttpRequest as i32],
            keyword: "GROUPS/VIP".to_owned(),
            ..Default::default()
        },
    )
    .await;
    let mut bob_only = trace(
        &server,
        pb::TraceRequest {
            user_id: "bob".to_owned(),
            ..Default::default()
        },
    )
    .await;
    let _alice = server.json_client(HUB, Some("alice"), &[], &[]).await;
    let bob = server.json_client(HUB, Some("bob"), &[], &[]).await;
    let bob_id = bob.connection_id().to_owned();
    // Only bob's connect reaches `bob_only`.
    let record = next_record(&mut bob_only).await;
    assert_eq!(
        (record.event_name.as_str(), record.user_id.as_str()),
        ("ConnectionStarted", "bob")
    );

    let mut by_connection = trace(
        &server,
        pb::TraceRequest {
            connection_id: bob_id.clone(),
            ..Default::default()
        },
    )
    .await;
    for (path, status) in [
        (
            format!("/api/hubs/{HUB}/groups/other/connections/{bob_id}"),
            200,
        ),
        (
            format!("/api/hubs/{HUB}/groups/vip/connections/{bob_id}"),
            200,
        ),
    ] {
        let reply = server
            .rest()
            .call("PUT", &format!("{path}?api-version=2024-12-01"), None)
            .await;
        assert_eq!(reply.status, status, "{path}");
    }
    let record = next_record(&mut http_only).await;
    assert!(record.url.contains("/groups/vip/"), "{record:?}");
    assert_eq!(record.category, pb::TraceCategory::HttpRequest as i32);

    bob.close().await;
    let record = next_record(&mut by_connection).await;
    assert_eq!(record.event_name, "ConnectionEnded");
    let record = next_record(&mut bob_only).await;
    assert_eq!(record.event_name, "ConnectionEnded");
    server.shutdown().await;
}

#[tokio::test]
async fn only_admin_tokens_open_the_trace() {
    let server = TestServer::start().await;
    let refused = |r: Result<Streaming<pb::TraceEvent>, tonic::Status>| match r {
        Ok(_) => panic!("the trace opened"),
        Err(status) => status,
    };
    let none = refused(try_trace(&server, None, pb::TraceRequest::default()).await);
    assert_eq!(none.code(), tonic::Code::Unauthenticated);
    let control = admin_token(&server, GRPC_AUDIENCE_PATH);
    let wrong =
        refused(try_trace(&server, Some(control.clone()), pb::TraceRequest::default()).await);
    assert_eq!(wrong.code(), tonic::Code::Unauthenticated, "{wrong:?}");
    let bad_category = refused(
        try_trace(
            &server,
            Some(admin_token(&server, ADMIN_AUDIENCE_PATH)),
            pb::TraceRequest {
                categories: vec![42],
                ..Default::default()
            },
        )
        .await,
    );
    assert_eq!(bad_category.code(), tonic::Code::InvalidArgument);

    for (query, token, status) in [
        ("", None, 401),
        ("", Some(control.as_str()), 401),
        ("?access_token=nope", None, 401),
    ] {
        let (head, _) = sse_get(&server, &format!("/api/trace{query}"), token).await;
        assert!(
            head.starts_with(&format!("HTTP/1.1 {status}")),
            "{query}: {head}"
        );
    }
    let admin = admin_token(&server, ADMIN_AUDIENCE_PATH);
    let (head, _) = sse_get(&server, "/api/trace?category=bogus", Some(&admin)).await;
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    server.shutdown().await;
}

/// Sends `GET path` with an optional bearer token; returns the response head and the reader
/// positioned at the body.
async fn sse_get(
    server: &TestServer,
    path: &str,
    token: Option<&str>,
) -> (String, BufReader<TcpStream>) {
    let mut socket = TcpStream::connect(server.addr()).await.expect("connect");
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    socket
        .write_all(
            format!(
                "GET {path} HTTP/1.1\r\nHost: {}\r\n{auth}\r\n",
                server.addr()
            )
            .as_bytes(),
        )
        .await
        .expect("write the request");
    let mut reader = BufReader::new(socket);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        tokio::time::timeout(TIMEOUT, reader.read_line(&mut line))
            .await
            .expect("a response in time")
            .expect("read");
        if line == "\r\n" || line.is_empty() {
            break;
        }
        head.push_str(&line);
    }
    (head, reader)
}

/// The next SSE event (`event:` name and `data:` JSON) from a chunked response body.
async fn next_sse(reader: &mut BufReader<TcpStream>) -> (String, Value) {
    let (mut event, mut data) = (String::new(), String::new());
    loop {
        let mut line = String::new();
        tokio::time::timeout(TIMEOUT, reader.read_line(&mut line))
            .await
            .expect("an event in time")
            .expect("read");
        let line = line.trim_end();
        if let Some(name) = line.strip_prefix("event:") {
            event = name.trim().to_owned();
        } else if let Some(d) = line.strip_prefix("data:") {
            data = d.trim().to_owned();
        } else if line.is_empty() && !data.is_empty() {
            return (event, serde_json::from_str(&data).expect("JSON data"));
        }
    }
}

#[tokio::test]
async fn server_sent_events_carry_the_same_records() {
    let server = TestServer::start_with(|c| c.live_trace.include_payloads = true).await;
    let admin = admin_token(&server, ADMIN_AUDIENCE_PATH);
    let (head, mut body) = sse_get(
        &server,
        &format!("/api/trace?hub={HUB}&category=connectivity,messaging"),
        Some(&admin),
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/event-stream"),
        "{head}"
    );

    let mut alice = server
        .json_client(HUB, Some("alice"), &[JOIN_ROLE, SEND_ROLE], &["g"])
        .await;
    let (event, record) = next_sse(&mut body).await;
    assert_eq!(event, "record");
    assert_eq!(record["eventName"], "ConnectionStarted");
    assert_eq!(record["category"], "connectivity");
    assert_eq!(record["hub"], HUB);
    assert_eq!(record["userId"], "alice");
    assert_eq!(record["connectionId"], alice.connection_id());
    assert!(
        record["time"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{record}"
    );
    alice.publish_text("g", "hello").await;
    let (_, record) = next_sse(&mut body).await;
    assert_eq!(record["eventName"], "MessageSent");
    assert_eq!(
        record["payload"], "hello",
        "payloads are on in this server's config"
    );
    alice.close().await;
    let (_, record) = next_sse(&mut body).await;
    assert_eq!(record["eventName"], "ConnectionEnded");
    server.shutdown().await;
}

#[tokio::test]
async fn a_listener_that_stops_reading_is_ended_without_slowing_delivery() {
    let server = TestServer::start_with(|c| {
        c.live_trace.buffer = 8;
        c.live_trace.stall = Duration::from_millis(500);
        c.live_trace.max_listeners = 1;
        c.limits.messages_per_second = 1_000_000;
    })
    .await;
    let mut stalled = trace(&server, pb::TraceRequest::default()).await;
    // The slot is taken: a second listener is refused.
    let Err(full) = try_trace(
        &server,
        Some(admin_token(&server, ADMIN_AUDIENCE_PATH)),
        pb::TraceRequest::default(),
    )
    .await
    else {
        panic!("one listener at most");
    };
    assert_eq!(full.code(), tonic::Code::ResourceExhausted, "{full:?}");

    // Far more records than the buffer and HTTP/2's window hold, while nobody reads.
    let mut sender = server
        .json_client(HUB, Some("s"), &[JOIN_ROLE, SEND_ROLE], &["g"])
        .await;
    let mut receiver = server.json_client(HUB, Some("r"), &[], &["g"]).await;
    let filler = "x".repeat(200);
    const SENDS: usize = 1500;
    for i in 0..SENDS {
        sender.publish_text("g", &format!("{i} {filler}")).await;
    }
    // Every message arrived: the trace slowed nobody.
    for i in 0..SENDS {
        let m = receiver.recv_message().await;
        assert!(
            m["data"]
                .as_str()
                .is_some_and(|d| d.starts_with(&format!("{i} "))),
            "{m}"
        );
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    sender.publish_text("g", "after the stall").await;

    // Reading now: what fit, the count of what did not, then the end.
    let (mut records, mut dropped, mut end) = (0, 0, None);
    loop {
        match tokio::time::timeout(TIMEOUT, stalled.message()).await {
            Ok(Ok(Some(event))) => match event.event {
                Some(pb::trace_event::Event::Record(_)) => records += 1,
                Some(pb::trace_event::Event::Dropped(n)) => dropped += n,
                None => panic!("an empty event"),
            },
            Ok(Ok(None)) => break,
            Ok(Err(status)) => {
                end = Some(status);
                break;
            }
            Err(_) => panic!("the stalled listener was not ended"),
        }
    }
    assert!(dropped > 0, "records were dropped ({records} delivered)");
    let end = end.expect("the stream ends with a status");
    assert_eq!(end.code(), tonic::Code::ResourceExhausted, "{end:?}");
    assert!(end.message().contains("live_trace.stall"), "{end:?}");
    // Its slot is free again.
    let mut again = trace(&server, pb::TraceRequest::default()).await;
    let _late = server.json_client(HUB, Some("late"), &[], &[]).await;
    assert_eq!(
        next_record(&mut again).await.event_name,
        "ConnectionStarted"
    );
    server.shutdown().await;
}
