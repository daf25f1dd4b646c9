//! Client-chosen event names and the webhook URLs they go to: `{event}` is always one path
//! segment of its own. The names `.` and `..`, which would be dot-segments, are refused with
//! a `BadRequest` ack and the connection stays; a user event named like a system event goes
//! to that event's URL, as on Azure, and keeps its user `ce-type` (handlers dispatch on it).

use http::Method;
use hubcast_integration_tests::webhook::WebhookReceiver;
use hubcast_integration_tests::{JsonClient, TestServer};
use hubcast_server::config::{EventHandlerConfig, HubConfig};
use serde_json::json;

const HUB: &str = "chat";

/// A server whose hub `chat` sends every event, user and system, to
/// `{receiver}/events/{hub}/{event}`.
async fn server_for(receiver: &WebhookReceiver) -> TestServer {
    let url = receiver.url("/events/{hub}/{event}");
    TestServer::start_with(|c| {
        c.hubs.insert(
            HUB.into(),
            HubConfig {
                event_handlers: vec![EventHandlerConfig {
                    url_template: url,
                    user_event_pattern: Some("*".into()),
                    system_events: vec!["connect".into(), "connected".into()],
                    auth: None,
                    http2: false,
                }],
                ..HubConfig::default()
            },
        );
    })
    .await
}

async fn send_event(client: &mut JsonClient, name: &str, ack_id: u64) {
    client
        .send(json!({"type": "event", "event": name, "ackId": ack_id,
                     "dataType": "text", "data": "x"}))
        .await;
}

#[tokio::test]
async fn events_named_dot_or_dot_dot_are_refused_and_the_connection_stays() {
    let mut receiver = WebhookReceiver::start().await;
    let server = server_for(&receiver).await;
    let mut client = server.json_client(HUB, Some("u"), &[], &[]).await;
    receiver.next_named("connected").await;

    send_event(&mut client, ".", 1).await;
    let ack = client.expect_ack_error(1, "BadRequest").await;
    assert!(
        ack["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("'.'")),
        "{ack}"
    );
    send_event(&mut client, "..", 2).await;
    client.expect_ack_error(2, "BadRequest").await;

    // Still connected, and other names still go to their own URL.
    send_event(&mut client, "after", 3).await;
    client.expect_ack_ok(3).await;
    let after = receiver.next_event().await;
    assert_eq!(after.path, "/events/chat/after");
    let stray: Vec<String> = receiver
        .drain()
        .into_iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert!(
        stray.is_empty(),
        "nothing else reached the handler: {stray:?}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn user_events_named_like_system_events_go_to_their_url_with_a_user_ce_type() {
    let mut receiver = WebhookReceiver::start().await;
    let server = server_for(&receiver).await;
    let mut client = server.json_client(HUB, Some("u"), &[], &[]).await;
    receiver.next_named("connected").await;
    for (ack_id, name) in (1..).zip(["connect", "connected", "disconnected", "validate"]) {
        send_event(&mut client, name, ack_id).await;
        client.expect_ack_ok(ack_id).await;
        let event = receiver.next_event().await;
        assert_eq!(event.method, Method::POST);
        assert_eq!(event.path, format!("/events/chat/{name}"));
        assert_eq!(
            event.header("ce-type"),
            format!("azure.webpubsub.user.{name}")
        );
        assert_eq!(event.header("ce-eventname"), name);
    }
    server.shutdown().await;
}
