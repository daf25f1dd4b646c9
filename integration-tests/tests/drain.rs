//! Graceful drain with upstream events: while the server drains, new upgrades get 503;
//! every client (reliable ones too) gets a reconnectable `disconnected` and close 1001 (not
//! 1008, on which Azure's client gives up); and each connection's `disconnected` event
//! reaches the webhook before `run` returns, even when the handler is slow and another
//! client holds the drain open by not answering the close. All within the grace period.

use std::collections::BTreeSet;
use std::time::Duration;

use hubcast_integration_tests::webhook::{Answer, WebhookReceiver, default_answer};
use hubcast_integration_tests::{
    JSON_RELIABLE_SUBPROTOCOL, JSON_SUBPROTOCOL, JsonClient, TestServer, request, try_connect,
};
use hubcast_server::config::{EventHandlerConfig, HubConfig};

const HUB: &str = "drain";
const GRACE: Duration = Duration::from_secs(8);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_refuses_new_clients_tells_old_ones_and_delivers_their_disconnected_events() {
    // The handler takes its time over `disconnected`: in flight when the drain starts.
    let mut receiver = WebhookReceiver::start_with(|r| {
        if r.event() == "disconnected" {
            Answer::status(200).after(Duration::from_millis(700))
        } else {
            default_answer(r)
        }
    })
    .await;
    let url_template = receiver.url("/upstream/{hub}/{event}");
    let server = TestServer::start_with(move |c| {
        c.shutdown_grace = GRACE;
        c.hubs.insert(
            HUB.into(),
            HubConfig {
                event_handlers: vec![EventHandlerConfig {
                    url_template,
                    user_event_pattern: None,
                    system_events: vec!["disconnected".into()],
                    auth: None,
                    http2: false,
                }],
                ..HubConfig::default()
            },
        );
    })
    .await;

    let plain = JsonClient::connect(&server.url(HUB, Some("plain"), &[], &[])).await;
    let reliable = JsonClient::connect_as(
        &server.url(HUB, Some("reliable"), &[], &[]),
        JSON_RELIABLE_SUBPROTOCOL,
    )
    .await;
    // Never reads: its close handshake cannot finish, so the drain stays open a while.
    let (stuck, _) = try_connect(request(
        &server.url(HUB, Some("stuck"), &[], &[]),
        &[JSON_SUBPROTOCOL],
        None,
    ))
    .await
    .expect("upgrade");
    let mut ids: BTreeSet<String> = [plain.connection_id(), reliable.connection_id()]
        .into_iter()
        .map(str::to_owned)
        .collect();
    let late_url = server.url(HUB, Some("late"), &[], &[]);
    let plain_wait = tokio::spawn(plain.expect_close());
    let reliable_wait = tokio::spawn(reliable.expect_close());

    let server_rest = server.rest();
    let shutdown = tokio::spawn(server.shutdown());
    // While draining, a newcomer is refused with 503 (or finds the listener closed). One
    // that comes before the drain has started is a connection like the others (it closes at
    // once) and has its own `disconnected` event.
    let mut refused = false;
    let mut admitted_before_drain = 0;
    for _ in 0..50 {
        match try_connect(request(&late_url, &[JSON_SUBPROTOCOL], None)).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) if r.status() == 503 => {
                refused = true;
                break;
            }
            Err(tokio_tungstenite::tungstenite::Error::Io(_)) => break,
            Ok(_) => {
                admitted_before_drain += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    assert!(
        refused,
        "a new upgrade during the drain is refused with 503"
    );
    let health = server_rest
        .call_with("GET", "/api/health", None, None, &[])
        .await;
    assert_eq!(health.status, 503, "health reports the drain: {health:?}");

    for (what, wait) in [("plain", plain_wait), ("reliable", reliable_wait)] {
        let closed = wait.await.expect("client task");
        assert_eq!(closed.code, 1001, "{what}: reconnectable close, {closed:?}");
        assert!(
            closed.expect_disconnected().contains("shutting down"),
            "{what}: {closed:?}"
        );
    }
    let took = shutdown.await.expect("shutdown task");
    assert!(
        took < GRACE,
        "drain took {took:?}, over the {GRACE:?} grace period"
    );
    drop(stuck);

    // Every connection's `disconnected` was delivered before `run` returned.
    let delivered: Vec<_> = receiver
        .drain()
        .into_iter()
        .filter(|r| r.event() == "disconnected")
        .collect();
    let delivered_ids: BTreeSet<String> = delivered
        .iter()
        .map(|r| r.connection_id().to_owned())
        .collect();
    assert_eq!(
        delivered.len(),
        3 + admitted_before_drain,
        "one per connection: {delivered:#?}"
    );
    for id in &delivered_ids {
        ids.remove(id);
    }
    assert!(ids.is_empty(), "no disconnected event for {ids:?}");
}
