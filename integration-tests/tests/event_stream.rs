//! Upstream events over the gRPC event stream (`hubcast.v1.Events/Listen`): backends that
//! dial in receive the events and answer the blocking ones on the same stream.

use std::time::Duration;

use hubcast_integration_tests::webhook::WebhookReceiver;
use hubcast_integration_tests::{
    JSON_SUBPROTOCOL, JsonClient, PRIMARY_KEY, TIMEOUT, TestServer, request, sign_token, unix_now,
    upgrade_status,
};
use hubcast_proto::v1::events_client::EventsClient;
use hubcast_proto::v1::{self as pb, event, event_reply, listen_request};
use hubcast_server::config::{EventHandlerConfig, EventStreamMode, HubConfig};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

const HUB: &str = "chat";

/// A backend listening on the event stream.
struct Listener {
    replies: mpsc::Sender<pb::ListenRequest>,
    events: tonic::Streaming<pb::Event>,
}

/// A service token for the event stream: signed with an access key, audience
/// `{endpoint}/hubcast.v1.Events`.
fn api_token(server: &TestServer) -> String {
    sign_token(
        PRIMARY_KEY,
        &json!({ "exp": unix_now() + 3600, "aud": format!("{}/hubcast.v1.Events", server.endpoint()) }),
    )
}

fn subscription(hubs: &[&str], pattern: &str, system: &[pb::SystemEventKind]) -> pb::Subscription {
    pb::Subscription {
        hubs: hubs.iter().map(|h| (*h).to_owned()).collect(),
        user_event_pattern: pattern.to_owned(),
        system_events: system.iter().map(|k| *k as i32).collect(),
    }
}

/// Every event of hub `chat`.
fn everything() -> pb::Subscription {
    use pb::SystemEventKind as K;
    subscription(&[HUB], "*", &[K::Connect, K::Connected, K::Disconnected])
}

async fn try_listen(
    server: &TestServer,
    token: Option<String>,
    subscription: pb::Subscription,
) -> Result<Listener, tonic::Status> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.grpc_addr()))
        .expect("valid endpoint")
        .connect()
        .await
        .expect("gRPC connect");
    let mut client = EventsClient::with_interceptor(channel, move |mut r: tonic::Request<()>| {
        if let Some(token) = &token {
            r.metadata_mut().insert(
                "authorization",
                format!("Bearer {token}").parse().expect("ascii"),
            );
        }
        Ok(r)
    });
    let (replies, rx) = mpsc::channel(16);
    replies
        .send(pb::ListenRequest {
            request: Some(listen_request::Request::Subscription(subscription)),
        })
        .await
        .expect("queue the subscription");
    let response = tokio::time::timeout(TIMEOUT, client.listen(ReceiverStream::new(rx)))
        .await
        .expect("Listen answered in time")?;
    Ok(Listener {
        replies,
        events: response.into_inner(),
    })
}

impl Listener {
    async fn open(server: &TestServer, subscription: pb::Subscription) -> Self {
        try_listen(server, Some(api_token(server)), subscription)
            .await
            .expect("Listen accepted")
    }

    async fn next(&mut self) -> pb::Event {
        tokio::time::timeout(TIMEOUT, self.events.message())
            .await
            .unwrap_or_else(|_| panic!("no event within {TIMEOUT:?}"))
            .expect("stream healthy")
            .expect("stream open")
    }

    async fn reply(
        &self,
        event: &pb::Event,
        result: Option<event_reply::Result>,
        state: Option<&str>,
    ) {
        self.replies
            .send(pb::ListenRequest {
                request: Some(listen_request::Request::Reply(pb::EventReply {
                    event_id: event.event_id,
                    result,
                    connection_state: state.map(str::to_owned),
                })),
            })
            .await
            .expect("reply sent");
    }
}

fn accept(user: Option<&str>, groups: &[&str]) -> Option<event_reply::Result> {
    Some(event_reply::Result::Connect(pb::ConnectResult {
        user_id: user.map(str::to_owned),
        groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        roles: None,
        subprotocol: None,
    }))
}

fn fail(code: pb::EventErrorCode) -> Option<event_reply::Result> {
    Some(event_reply::Result::Error(pb::EventError {
        code: code as i32,
        message: "no".into(),
        mqtt_code: None,
    }))
}

fn connect_event(e: &pb::Event) -> &pb::ConnectEvent {
    match &e.kind {
        Some(event::Kind::Connect(c)) => c,
        other => panic!("connect expected, got {other:?}"),
    }
}

async fn server(configure: impl FnOnce(&mut hubcast_server::Config)) -> TestServer {
    TestServer::start_with(|c| {
        c.upstream.timeout = Duration::from_secs(2);
        configure(c);
    })
    .await
}

#[tokio::test]
async fn connect_decisions_and_user_event_replies_travel_on_the_stream() {
    let server = server(|_| {}).await;
    let mut listener = Listener::open(&server, everything()).await;

    let url = server.url(HUB, Some("alice"), &[], &[]);
    let connecting = tokio::spawn(async move { JsonClient::connect(&url).await });
    let connect = listener.next().await;
    assert!(connect.reply_expected);
    assert_eq!(
        (connect.hub.as_str(), connect.user_id.as_str()),
        (HUB, "alice")
    );
    assert_eq!(connect.sequence, 0);
    let body = connect_event(&connect);
    assert_eq!(body.claims["sub"].values, ["alice"]);
    assert_eq!(body.subprotocols, [JSON_SUBPROTOCOL]);
    listener
        .reply(&connect, accept(Some("bob"), &["g"]), Some("st"))
        .await;
    let mut client = connecting.await.expect("client task");
    assert_eq!(client.user_id(), Some("bob"));
    assert_eq!(client.connection_id(), connect.connection_id);
    assert!(server.router().group_exists(HUB, "g"));

    let connected = listener.next().await;
    assert!(matches!(connected.kind, Some(event::Kind::Connected(_))));
    assert!(!connected.reply_expected);
    assert_eq!(
        (
            connected.user_id.as_str(),
            connected.connection_state.as_str()
        ),
        ("bob", "st")
    );

    client
        .send(
            json!({"type": "event", "event": "chat", "dataType": "text", "data": "hi", "ackId": 1}),
        )
        .await;
    let user = listener.next().await;
    let Some(event::Kind::UserEvent(u)) = &user.kind else {
        panic!("user event expected: {user:?}");
    };
    assert_eq!(u.name, "chat");
    assert_eq!(
        u.data.as_ref().and_then(|p| p.data.clone()),
        Some(pb::payload::Data::Text("hi".into()))
    );
    assert_eq!(user.connection_state, "st");
    let echo = pb::Payload {
        data: Some(pb::payload::Data::Json(r#"{"echo":1}"#.into())),
        content_type: String::new(),
        ..Default::default()
    };
    listener
        .reply(
            &user,
            Some(event_reply::Result::UserEvent(pb::UserEventResult {
                data: Some(echo),
            })),
            Some("st2"),
        )
        .await;
    assert_eq!(
        client.recv().await,
        json!({"type": "message", "from": "server", "dataType": "json", "data": {"echo": 1}})
    );
    client.expect_ack_ok(1).await;

    client
        .send(json!({"type": "event", "event": "chat", "data": 2, "ackId": 2}))
        .await;
    let failing = listener.next().await;
    assert_eq!(
        failing.connection_state, "st2",
        "state set by the previous reply"
    );
    listener
        .reply(&failing, fail(pb::EventErrorCode::Internal), None)
        .await;
    client.expect_ack_error(2, "InternalServerError").await;

    client.close().await;
    let disconnected = listener.next().await;
    assert!(matches!(
        disconnected.kind,
        Some(event::Kind::Disconnected(_))
    ));
    assert_eq!(disconnected.connection_id, connect.connection_id);

    // A rejection's code becomes the client's HTTP status.
    let url = server.url(HUB, Some("mallory"), &[], &[]);
    let refused = tokio::spawn(async move { upgrade_status(request(&url, &[], None)).await });
    let connect = listener.next().await;
    listener
        .reply(&connect, fail(pb::EventErrorCode::Unauthorized), None)
        .await;
    assert_eq!(refused.await.expect("task"), 401);
}

/// Opens an MQTT 5 session over WebSocket as `client_id` (raw bytes: a CONNECT with user
/// name `device`), and returns the socket and the CONNACK's reason code and reason string.
async fn mqtt_connect(
    server: &TestServer,
    client_id: &str,
) -> (hubcast_integration_tests::Ws, u8, Option<String>) {
    use futures_util::{SinkExt as _, StreamExt as _};
    use mqtt_proto::v5;
    use tokio_tungstenite::tungstenite::Message;
    let token = server.mqtt_token(HUB, Some("dev"), &[]);
    let url = server.ws_url(&format!("/clients/mqtt/hubs/{HUB}?access_token={token}"));
    let (mut ws, _) = hubcast_integration_tests::try_connect(request(&url, &["mqtt"], None))
        .await
        .expect("the upgrade succeeds");
    // CONNECT: "MQTT", level 5, flags user name + clean start, keep-alive 60, no properties.
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 5, 0x82, 0, 60, 0];
    for field in [client_id, "device"] {
        body.extend_from_slice(&u16::try_from(field.len()).expect("short").to_be_bytes());
        body.extend_from_slice(field.as_bytes());
    }
    let mut packet = vec![0x10, u8::try_from(body.len()).expect("short")];
    packet.extend_from_slice(&body);
    ws.send(Message::Binary(packet.into())).await.expect("send");
    let connack = loop {
        match tokio::time::timeout(TIMEOUT, ws.next())
            .await
            .expect("a CONNACK in time")
        {
            Some(Ok(Message::Binary(b))) => break b,
            Some(Ok(_)) => {}
            other => panic!("no CONNACK: {other:?}"),
        }
    };
    match v5::Packet::decode(&connack).expect("valid").expect("whole") {
        v5::Packet::Connack(c) => (
            ws,
            c.reason_code as u8,
            c.properties.reason_string.map(|r| r.to_string()),
        ),
        other => panic!("expected a CONNACK, got {other:?}"),
    }
}

#[tokio::test]
async fn mqtt_sessions_carry_their_ids_connect_requests_and_end_on_the_stream() {
    use futures_util::SinkExt as _;
    use tokio_tungstenite::tungstenite::Message;
    let server = server(|_| {}).await;
    let mut listener = Listener::open(&server, everything()).await;

    // A refusal with an MQTT code is that CONNACK code, its message the reason string.
    let backend = async {
        let connect = listener.next().await;
        listener
            .reply(
                &connect,
                Some(event_reply::Result::Error(pb::EventError {
                    code: pb::EventErrorCode::Forbidden as i32,
                    message: "banned here".into(),
                    mqtt_code: Some(0x8A),
                })),
                None,
            )
            .await;
        connect
    };
    let ((_, code, reason), connect) = tokio::join!(mqtt_connect(&server, "banned1"), backend);
    assert_eq!((code, reason.as_deref()), (0x8A, Some("banned here")));
    let mqtt = connect.mqtt.as_ref().expect("the MQTT side of connect");
    assert!(!mqtt.physical_connection_id.is_empty());
    assert_eq!(mqtt.session_id, "", "no session yet on connect");
    let packet = mqtt.connect.as_ref().expect("the CONNECT packet");
    assert_eq!(
        (packet.protocol_version, packet.username.as_deref()),
        (5, Some("device"))
    );

    // Accepted: `connected` and `disconnected` carry the session; the client's DISCONNECT
    // is in the `disconnected` event.
    let backend = async {
        let connect = listener.next().await;
        listener.reply(&connect, accept(None, &[]), None).await;
        connect
    };
    let ((mut ws, code, _), connect) = tokio::join!(mqtt_connect(&server, "device1"), backend);
    assert_eq!(code, 0);
    let physical = connect.mqtt.expect("mqtt").physical_connection_id;
    let connected = listener.next().await;
    assert!(matches!(connected.kind, Some(event::Kind::Connected(_))));
    let ids = connected.mqtt.expect("mqtt on connected");
    assert_eq!(ids.physical_connection_id, physical);
    assert!(!ids.session_id.is_empty());

    // A request on `$webpubsub/server/events/ping` (QoS 0, no properties) is the user event
    // `ping`; the listener's answer comes back on `…/ping/succeeded` with its status.
    let topic = b"$webpubsub/server/events/ping";
    let mut body = u16::try_from(topic.len())
        .expect("short")
        .to_be_bytes()
        .to_vec();
    body.extend_from_slice(topic);
    body.push(0);
    body.extend_from_slice(b"hello");
    let mut publish = vec![0x30, u8::try_from(body.len()).expect("short")];
    publish.extend_from_slice(&body);
    ws.send(Message::Binary(publish.into()))
        .await
        .expect("send");
    let user = listener.next().await;
    let Some(event::Kind::UserEvent(u)) = &user.kind else {
        panic!("user event expected: {user:?}");
    };
    assert_eq!(u.name, "ping");
    assert_eq!(
        user.mqtt.as_ref().map(|m| &m.session_id),
        Some(&ids.session_id)
    );
    let pong = pb::Payload {
        data: Some(pb::payload::Data::Text("pong".into())),
        content_type: String::new(),
        metadata: Default::default(),
    };
    listener
        .reply(
            &user,
            Some(event_reply::Result::UserEvent(pb::UserEventResult {
                data: Some(pong),
            })),
            None,
        )
        .await;
    let reply = loop {
        use futures_util::StreamExt as _;
        match tokio::time::timeout(TIMEOUT, ws.next())
            .await
            .expect("a reply in time")
        {
            Some(Ok(Message::Binary(b))) => break b,
            Some(Ok(_)) => {}
            other => panic!("no reply: {other:?}"),
        }
    };
    let mqtt_proto::v5::Packet::Publish(reply) = mqtt_proto::v5::Packet::decode(&reply)
        .expect("valid")
        .expect("whole")
    else {
        panic!("a PUBLISH expected");
    };
    assert_eq!(
        &*reply.topic_name,
        "$webpubsub/server/events/ping/succeeded"
    );
    assert_eq!(&reply.payload[..], b"pong");
    assert_eq!(reply.properties.content_type.as_deref(), Some("text/plain"));
    let status: Vec<_> = reply
        .properties
        .user_properties
        .iter()
        .map(|p| (p.name.to_string(), p.value.to_string()))
        .collect();
    assert_eq!(status, [("azure-status-code".to_owned(), "200".to_owned())]);
    // DISCONNECT, reason 0x04 (with will message), no properties.
    ws.send(Message::Binary(vec![0xE0, 2, 0x04, 0].into()))
        .await
        .expect("send");
    let disconnected = listener.next().await;
    assert!(matches!(
        disconnected.kind,
        Some(event::Kind::Disconnected(_))
    ));
    let mqtt = disconnected.mqtt.expect("mqtt on disconnected");
    assert_eq!(mqtt.session_id, ids.session_id);
    let end = mqtt.disconnected.expect("how the session ended");
    assert!(end.initiated_by_client);
    assert_eq!(end.disconnect_packet.map(|p| p.code), Some(0x04));
}

#[tokio::test]
async fn an_unanswered_connect_times_out() {
    let server = server(|c| c.upstream.timeout = Duration::from_millis(300)).await;
    let mut listener = Listener::open(&server, everything()).await;
    let url = server.url(HUB, None, &[], &[]);
    let refused = tokio::spawn(async move { upgrade_status(request(&url, &[], None)).await });
    listener.next().await;
    assert_eq!(refused.await.expect("task"), 504);
}

#[tokio::test]
async fn two_listeners_share_the_events_of_a_hub() {
    let server = server(|_| {}).await;
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel();
    for name in ["a", "b"] {
        let mut listener = Listener::open(
            &server,
            subscription(&[HUB], "", &[pb::SystemEventKind::Connect]),
        )
        .await;
        let seen = seen_tx.clone();
        tokio::spawn(async move {
            while let Ok(Some(e)) = listener.events.message().await {
                listener.reply(&e, accept(None, &[]), None).await;
                let _ = seen.send((name, e.connection_id));
            }
        });
    }
    let mut ids = Vec::new();
    for _ in 0..4 {
        let client = server.json_client(HUB, None, &[], &[]).await;
        ids.push(client.connection_id().to_owned());
        client.close().await;
    }
    let mut by = std::collections::HashMap::<&str, usize>::new();
    for id in &ids {
        let (name, seen_id) = tokio::time::timeout(TIMEOUT, seen_rx.recv())
            .await
            .expect("reported")
            .expect("open");
        assert_eq!(
            &seen_id, id,
            "each event went to exactly one listener, in order"
        );
        *by.entry(name).or_default() += 1;
    }
    assert_eq!(by.get("a"), Some(&2), "round robin: {by:?}");
    assert_eq!(by.get("b"), Some(&2), "round robin: {by:?}");
}

#[tokio::test]
async fn a_listener_that_drops_mid_event_hands_it_to_another() {
    let server = server(|_| {}).await;
    let mut first = Listener::open(&server, everything()).await;
    let url = server.url(HUB, Some("u"), &[], &[]);
    let connecting = tokio::spawn(async move { JsonClient::connect(&url).await });
    let connect = first.next().await;
    let mut second = Listener::open(&server, everything()).await;
    drop(first);
    let retried = second.next().await;
    assert_eq!(
        retried.connection_id, connect.connection_id,
        "the same event"
    );
    assert_eq!(retried.sequence, 0);
    assert!(matches!(retried.kind, Some(event::Kind::Connect(_))));
    second
        .reply(&retried, accept(Some("from-second"), &[]), None)
        .await;
    let client = connecting.await.expect("client task");
    assert_eq!(client.user_id(), Some("from-second"));
}

#[tokio::test]
async fn without_listeners_a_hub_falls_back_to_webhooks_or_refuses() {
    let mut receiver = WebhookReceiver::start().await;
    let server = server(|c| {
        c.hubs.insert(
            HUB.into(),
            HubConfig {
                event_handlers: vec![EventHandlerConfig {
                    url_template: receiver.url("/hook/{event}"),
                    user_event_pattern: None,
                    system_events: vec!["connect".into()],
                    auth: None,
                    http2: false,
                }],
                ..HubConfig::default()
            },
        );
        c.hubs.insert(
            "strict".into(),
            HubConfig {
                event_stream: EventStreamMode::Required,
                ..HubConfig::default()
            },
        );
    })
    .await;

    // Fallback: the only listener drops the event; the webhook takes it.
    let mut listener = Listener::open(&server, everything()).await;
    let url = server.url(HUB, None, &[], &[]);
    let connecting = tokio::spawn(async move { JsonClient::connect(&url).await });
    let connect = listener.next().await;
    drop(listener);
    let hooked = receiver.next_named("connect").await;
    assert_eq!(hooked.connection_id(), connect.connection_id);
    connecting
        .await
        .expect("client connected through the webhook");

    // Required: no listener, no connection.
    let strict = server.url("strict", None, &[], &[]);
    assert_eq!(upgrade_status(request(&strict, &[], None)).await, 503);
    // A listener that drops the event with nobody to take over: refused cleanly too.
    let mut listener = Listener::open(
        &server,
        subscription(&["strict"], "", &[pb::SystemEventKind::Connect]),
    )
    .await;
    let refused = tokio::spawn(async move { upgrade_status(request(&strict, &[], None)).await });
    listener.next().await;
    drop(listener);
    assert_eq!(refused.await.expect("task"), 503);
}

#[tokio::test]
async fn listen_needs_a_valid_token_and_subscription() {
    let server = server(|_| {}).await;
    let status = try_listen(&server, None, everything())
        .await
        .err()
        .expect("refused");
    assert_eq!(status.code(), Code::Unauthenticated);
    let forged = sign_token(
        "not-the-key-0123456789abcdef0123456789",
        &json!({"exp": unix_now() + 60}),
    );
    let status = try_listen(&server, Some(forged), everything())
        .await
        .err()
        .expect("refused");
    assert_eq!(status.code(), Code::Unauthenticated);
    // Tokens for other audiences do not open the stream: not a control-plane token, and
    // above all not a client access token, which browsers hold.
    for aud in [
        format!("{}/hubcast.v1.Control", server.endpoint()),
        format!("{}/client/hubs/chat", server.endpoint()),
    ] {
        let other = sign_token(PRIMARY_KEY, &json!({"exp": unix_now() + 60, "aud": aud}));
        let status = try_listen(&server, Some(other), everything())
            .await
            .err()
            .expect("refused");
        assert_eq!(status.code(), Code::Unauthenticated, "{aud}");
    }
    let status = try_listen(
        &server,
        Some(api_token(&server)),
        subscription(&[], "*", &[]),
    )
    .await
    .err()
    .expect("refused");
    assert_eq!(status.code(), Code::InvalidArgument);
}
