//! Bad input at the Socket.IO edge: malformed Engine.IO and Socket.IO packets, oversized
//! payloads, namespaces that are not connected or not valid, unknown sessions, and a storm of
//! overlapping polls, namespaces beyond the per-connection limit, a client that stops answering
//! pings. Each gets a clear refusal (a close code and reason, a `400` with
//! Engine.IO's error code, a `413`), and nothing else is affected: a bystander session goes
//! on receiving sends. Runs on one node and across three (a session's requests go to the
//! node that opened it; REST goes to node 3).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use http_body_util::{BodyExt as _, Full};
use hubcast_integration_tests::webhook::WebhookReceiver;
use hubcast_integration_tests::{TIMEOUT, TestServer, Ws};
use hubcast_server::config::{EventHandlerConfig, HubConfig};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

const HUB: &str = "siobad";
const PATH: &str = "/clients/socketio/hubs/siobad/";

/// A hub without anonymous clients: a token in the query or in the `auth` payload.
const TOKEN_PATH: &str = "/clients/socketio/hubs/siotoken/";

async fn server() -> TestServer {
    TestServer::start_with(|config| {
        config.hubs = BTreeMap::from([
            (
                HUB.to_owned(),
                HubConfig {
                    anonymous_connect: true,
                    ..HubConfig::default()
                },
            ),
            ("siotoken".to_owned(), HubConfig::default()),
        ]);
        config.socketio.max_payload_bytes = 4096;
    })
    .await
}

/// One HTTP/1.1 request to `addr`; returns the status and body.
async fn http(addr: SocketAddr, method: &str, path_and_query: &str, body: &[u8]) -> (u16, String) {
    let request = http::Request::builder()
        .method(method)
        .uri(path_and_query)
        .header("host", addr.to_string())
        .header("content-type", "text/plain;charset=UTF-8")
        .body(Full::new(Bytes::copy_from_slice(body)))
        .expect("valid request");
    let work = async {
        let stream = TcpStream::connect(addr).await.expect("TCP connect");
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("HTTP handshake");
        tokio::spawn(connection);
        let response = sender.send_request(request).await.expect("HTTP request");
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    };
    tokio::time::timeout(TIMEOUT, work)
        .await
        .expect("HTTP in time")
}

/// A long-polling session: its node and sid.
struct Polling {
    addr: SocketAddr,
    sid: String,
}

impl Polling {
    async fn open(server: &TestServer) -> Self {
        let addr = server.client_addr();
        let (status, body) =
            http(addr, "GET", &format!("{PATH}?EIO=4&transport=polling"), b"").await;
        assert_eq!(status, 200, "{body}");
        let open: Value =
            serde_json::from_str(body.strip_prefix('0').expect("open packet")).expect("open JSON");
        let sid = open["sid"].as_str().expect("sid").to_owned();
        let polling = Self { addr, sid };
        assert_eq!(polling.post("40").await, (200, "ok".to_owned()));
        let (status, connected) = polling.get().await;
        assert_eq!(status, 200);
        assert!(connected.starts_with("40{\"sid\":"), "{connected}");
        polling
    }

    fn url(&self) -> String {
        format!("{PATH}?EIO=4&transport=polling&sid={}", self.sid)
    }

    async fn get(&self) -> (u16, String) {
        http(self.addr, "GET", &self.url(), b"").await
    }

    async fn post(&self, body: &str) -> (u16, String) {
        http(self.addr, "POST", &self.url(), body.as_bytes()).await
    }
}

/// A WebSocket session connected to namespace `/`.
async fn websocket(server: &TestServer) -> Ws {
    let url = server.ws_url(&format!("{PATH}?EIO=4&transport=websocket"));
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("WebSocket session");
    let open = next_text(&mut ws).await;
    let open: Value =
        serde_json::from_str(open.strip_prefix('0').expect("open packet")).expect("open JSON");
    assert!(open["sid"].is_string(), "{open}");
    assert_eq!(open["maxPayload"], 4096);
    ws.send(Message::Text("40".into())).await.expect("send");
    let connected = next_text(&mut ws).await;
    assert!(connected.starts_with("40{\"sid\":"), "{connected}");
    ws
}

async fn next_text(ws: &mut Ws) -> String {
    loop {
        match tokio::time::timeout(TIMEOUT, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) if t.as_str() == "2" => {
                ws.send(Message::Text("3".into())).await.expect("pong");
            }
            Ok(Some(Ok(Message::Text(t)))) => return t.as_str().to_owned(),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

/// The close frame the server ends a WebSocket session with.
async fn close_of(ws: &mut Ws) -> (u16, String) {
    loop {
        match tokio::time::timeout(TIMEOUT, ws.next()).await {
            Ok(Some(Ok(Message::Close(Some(frame))))) => {
                return (frame.code.into(), frame.reason.as_str().to_owned());
            }
            Ok(Some(Ok(_))) => {}
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

/// A bystander still gets a send to the `/` namespace after the bad input.
async fn bystander_receives(server: &TestServer, ws: &mut Ws) {
    let payload = r#"42["still","here"]"#;
    let response = server
        .rest()
        .call(
            "POST",
            &format!("/api/hubs/{HUB}/groups/0~Lw~/:send?api-version=2024-01-01"),
            Some(("text/plain", payload.as_bytes())),
        )
        .await;
    assert_eq!(response.status, 202);
    assert_eq!(next_text(ws).await, payload);
}

#[tokio::test]
async fn a_malformed_engine_io_packet_closes_only_its_session_with_1002() {
    let server = server().await;
    let mut bystander = websocket(&server).await;
    for bad in ["9nope", "", "0{}", "5", "2probe"] {
        let mut ws = websocket(&server).await;
        ws.send(Message::Text(bad.into())).await.expect("send");
        let (code, reason) = close_of(&mut ws).await;
        assert_eq!(code, 1002, "{bad:?}: {reason}");
        assert!(
            reason.contains("Engine.IO"),
            "{bad:?}: the reason names the fault: {reason}"
        );
    }
    bystander_receives(&server, &mut bystander).await;
}

#[tokio::test]
async fn a_malformed_socket_io_packet_closes_its_session_with_the_parse_error() {
    let server = server().await;
    let mut bystander = websocket(&server).await;
    for bad in [
        r#"42["unterminated"#,
        "42{}",
        "42[1]",
        "49",
        "44{}",
        "4x-[]",
        r#"451-["a",{"_placeholder":true,"num":0}]x"#,
    ] {
        let mut ws = websocket(&server).await;
        ws.send(Message::Text(bad.into())).await.expect("send");
        let (code, reason) = close_of(&mut ws).await;
        assert_eq!(code, 1002, "{bad:?}: {reason}");
    }
    // An attachment nobody announced.
    let mut ws = websocket(&server).await;
    ws.send(Message::Binary(vec![1, 2].into()))
        .await
        .expect("send");
    let (code, reason) = close_of(&mut ws).await;
    assert_eq!(code, 1002);
    assert!(reason.contains("no Socket.IO packet announced"), "{reason}");
    // A polling session: 400 with the reason, and the session is gone.
    let polling = Polling::open(&server).await;
    let (status, body) = polling.post(r#"42["unterminated"#).await;
    assert_eq!(status, 400);
    assert!(body.contains("Invalid Socket.IO packet"), "{body}");
    let (status, body) = polling.get().await;
    assert_eq!(status, 400);
    assert_eq!(
        serde_json::from_str::<Value>(&body).expect("JSON")["code"],
        1
    );
    bystander_receives(&server, &mut bystander).await;
}

#[tokio::test]
async fn oversized_payloads_are_refused_with_1009_or_413() {
    let server = server().await;
    let mut bystander = websocket(&server).await;
    let big = format!(r#"42["big","{}"]"#, "x".repeat(5000));
    let mut ws = websocket(&server).await;
    ws.send(Message::Text(big.clone().into()))
        .await
        .expect("send");
    let (code, reason) = close_of(&mut ws).await;
    assert_eq!(code, 1009, "{reason}");
    assert!(reason.contains("maxPayload"), "{reason}");
    let polling = Polling::open(&server).await;
    let (status, body) = polling.post(&big).await;
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("max_payload_bytes"), "{body}");
    assert_eq!(polling.get().await.0, 400, "the session is gone");
    bystander_receives(&server, &mut bystander).await;
}

#[tokio::test]
async fn packets_of_namespaces_not_connected_are_ignored_and_bad_namespaces_refused() {
    let server = server().await;
    let mut ws = websocket(&server).await;
    ws.send(Message::Text(r#"42/nowhere,["x"]"#.into()))
        .await
        .expect("send");
    ws.send(Message::Text("41/nowhere,".into()))
        .await
        .expect("send");
    // The connection goes on: another namespace connects.
    ws.send(Message::Text("40/ok,".into())).await.expect("send");
    let connected = next_text(&mut ws).await;
    assert!(connected.starts_with("40/ok,{\"sid\":"), "{connected}");
    bystander_receives(&server, &mut ws).await;
    // A namespace name too long for a group name.
    ws.send(Message::Text(format!("40/{},", "n".repeat(300)).into()))
        .await
        .expect("send");
    let (code, reason) = close_of(&mut ws).await;
    assert_eq!(code, 1002);
    assert!(reason.contains("namespace"), "{reason}");
}

#[tokio::test]
async fn a_poll_storm_ends_only_the_storming_session() {
    let server = server().await;
    let mut bystander = websocket(&server).await;
    let polling = Polling::open(&server).await;
    let url = polling.url();
    let storm = (0..20).map(|_| http(polling.addr, "GET", &url, b""));
    let answers = futures_util::future::join_all(storm).await;
    let refused = answers
        .iter()
        .filter(|(status, body)| *status == 400 && body.contains("Overlapping poll"))
        .count();
    assert!(refused >= 1, "overlapping polls are refused: {answers:?}");
    assert!(
        answers
            .iter()
            .all(|(status, _)| *status == 200 || *status == 400),
        "{answers:?}"
    );
    // The storming session is over; a new one works.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(polling.get().await.0, 400);
    Polling::open(&server).await;
    bystander_receives(&server, &mut bystander).await;
}

#[tokio::test]
async fn unknown_sessions_transports_and_versions_get_engine_io_errors() {
    let server = server().await;
    let addr = server.client_addr();
    for (query, code) in [
        ("EIO=4&transport=polling&sid=nope", 1),
        ("EIO=3&transport=polling", 5),
        ("EIO=4&transport=carrier-pigeon", 0),
    ] {
        let (status, body) = http(addr, "GET", &format!("{PATH}?{query}"), b"").await;
        assert_eq!(status, 400, "{query}: {body}");
        let error: Value = serde_json::from_str(&body).expect("JSON error");
        assert_eq!(error["code"], code, "{query}: {body}");
        assert!(error["message"].is_string());
    }
    let (status, _) = http(
        addr,
        "POST",
        &format!("{PATH}?EIO=4&transport=polling"),
        b"40",
    )
    .await;
    assert_eq!(status, 400, "a session starts with a GET");
}

#[tokio::test]
async fn namespace_connects_beyond_max_namespaces_per_connection_get_connect_error() {
    let server = TestServer::start_with(|config| {
        config.hubs = BTreeMap::from([(
            HUB.to_owned(),
            HubConfig {
                anonymous_connect: true,
                ..HubConfig::default()
            },
        )]);
        config.socketio.max_payload_bytes = 4096;
        config.socketio.max_namespaces_per_connection = 2;
    })
    .await;
    // `/` is the first namespace, `/a` the second: the limit.
    let mut ws = websocket(&server).await;
    ws.send(Message::Text("40/a,".into())).await.expect("send");
    let connected = next_text(&mut ws).await;
    assert!(connected.starts_with("40/a,{\"sid\":"), "{connected}");
    ws.send(Message::Text("40/b,".into())).await.expect("send");
    let refused = next_text(&mut ws).await;
    let error: Value = serde_json::from_str(
        refused
            .strip_prefix("44/b,")
            .unwrap_or_else(|| panic!("a connect_error for /b: {refused}")),
    )
    .expect("connect_error JSON");
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("limit of 2 namespaces")
                && m.contains("socketio.max_namespaces_per_connection")),
        "{error}"
    );
    // The connection goes on, and a namespace left frees its place.
    bystander_receives(&server, &mut ws).await;
    ws.send(Message::Text("41/a,".into())).await.expect("send");
    ws.send(Message::Text("40/b,".into())).await.expect("send");
    let connected = next_text(&mut ws).await;
    assert!(connected.starts_with("40/b,{\"sid\":"), "{connected}");
}

#[tokio::test]
async fn a_client_that_stops_answering_pings_is_closed_after_ping_interval_plus_ping_timeout() {
    let mut handler = WebhookReceiver::start().await;
    let url = handler.url("/events");
    let server = TestServer::start_with(move |config| {
        config.hubs = BTreeMap::from([(
            HUB.to_owned(),
            HubConfig {
                anonymous_connect: true,
                event_handlers: vec![EventHandlerConfig {
                    url_template: url.clone(),
                    user_event_pattern: None,
                    system_events: vec!["disconnected".into()],
                    auth: None,
                    http2: false,
                }],
                ..HubConfig::default()
            },
        )]);
        config.socketio.max_payload_bytes = 4096;
        config.socketio.ping_interval = Duration::from_secs(1);
        config.socketio.ping_timeout = Duration::from_secs(1);
    })
    .await;
    let mut bystander = websocket(&server).await;
    let mut silent = websocket(&server).await;
    let since = std::time::Instant::now();
    // Pings arrive and go unanswered; then the close.
    let mut pings = 0;
    let deadline = tokio::time::sleep(TIMEOUT);
    tokio::pin!(deadline);
    let close = loop {
        tokio::select! {
            frame = silent.next() => match frame {
                Some(Ok(Message::Text(t))) if t.as_str() == "2" => pings += 1,
                Some(Ok(Message::Close(frame))) => break frame,
                Some(Ok(_)) => {}
                other => panic!("expected pings, then a close: {other:?}"),
            },
            // Meanwhile the bystander answers its pings.
            frame = bystander.next() => match frame {
                Some(Ok(Message::Text(t))) if t.as_str() == "2" => {
                    bystander.send(Message::Text("3".into())).await.expect("pong");
                }
                other => panic!("the bystander got {other:?}"),
            },
            () = &mut deadline => panic!("no close within {TIMEOUT:?}"),
        }
    };
    let elapsed = since.elapsed();
    assert!(pings >= 1, "the server pinged");
    assert!(
        elapsed >= Duration::from_secs(2) && elapsed < Duration::from_secs(5),
        "closed after pingInterval + pingTimeout (2 s), at the next heartbeat: {elapsed:?}"
    );
    let frame = close.expect("a close frame");
    assert!(frame.reason.as_str().contains("ping timeout"), "{frame:?}");
    // The disconnected event says why; the bystander, which answers its pings, stays.
    let event = handler.next_named("disconnected").await;
    assert!(
        event.json()["reason"]
            .as_str()
            .is_some_and(|r| r.contains("ping timeout")),
        "{:?}",
        event.json()
    );
    bystander_receives(&server, &mut bystander).await;
}

#[tokio::test]
async fn a_session_without_a_token_whose_first_packet_brings_none_gets_connect_error_and_ends() {
    let server = server().await;
    let mut bystander = websocket(&server).await;
    let addr = server.client_addr();
    // Long-polling: the handshake hands out a sid; a first packet that is not a namespace
    // connect, or one without a token, is refused on the next poll, then the session closes.
    for (first, why) in [
        ("40", "missing access token"),
        (r#"40{"token":"not a jwt"}"#, "token"),
        ("3", "must be a namespace connect"),
        (r#"42["too","early"]"#, "must be a namespace connect"),
    ] {
        let (status, open) = http(
            addr,
            "GET",
            &format!("{TOKEN_PATH}?EIO=4&transport=polling"),
            b"",
        )
        .await;
        assert_eq!(status, 200, "{open}");
        let open: Value =
            serde_json::from_str(open.strip_prefix('0').expect("open packet")).expect("open JSON");
        let url = format!(
            "{TOKEN_PATH}?EIO=4&transport=polling&sid={}",
            open["sid"].as_str().expect("sid")
        );
        assert_eq!(
            http(addr, "POST", &url, first.as_bytes()).await,
            (200, "ok".to_owned())
        );
        let (status, refusal) = http(addr, "GET", &url, b"").await;
        assert_eq!(status, 200, "{first}: {refusal}");
        let (connect_error, close) = refusal.split_once('\x1e').expect("two packets");
        let error: Value = serde_json::from_str(
            connect_error
                .strip_prefix("44")
                .unwrap_or_else(|| panic!("{first}: a connect_error: {refusal}")),
        )
        .expect("connect_error JSON");
        assert!(
            error["message"].as_str().is_some_and(|m| m.contains(why)),
            "{first}: {error}"
        );
        assert_eq!(close, "1", "{first}: then the close");
        let (status, gone) = http(addr, "GET", &url, b"").await;
        assert_eq!(status, 400, "{first}: the session is over: {gone}");
    }
    // WebSocket: the same refusal, then a close with 1008.
    let url = server.ws_url(&format!("{TOKEN_PATH}?EIO=4&transport=websocket"));
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("WebSocket session");
    assert!(
        next_text(&mut ws).await.starts_with("0{"),
        "the open packet"
    );
    ws.send(Message::Text(r#"40/chat,{"token":"not a jwt"}"#.into()))
        .await
        .expect("send");
    let refused = next_text(&mut ws).await;
    assert!(refused.starts_with("44/chat,{"), "{refused}");
    let (code, _) = close_of(&mut ws).await;
    assert_eq!(code, 1008);
    bystander_receives(&server, &mut bystander).await;
}
