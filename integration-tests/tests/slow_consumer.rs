//! Slow consumers (DESIGN.md, performance model): a client that stops reading is closed
//! when its outbox overflows, and counted, while every other member of the group keeps
//! receiving every message, in order.

use std::time::Duration;

use hubcast_integration_tests::{
    JOIN_ROLE, JsonClient, SEND_ROLE, TIMEOUT, TestServer, assert_eventually,
};
use serde_json::json;
use tokio::sync::watch;

const HUB: &str = "flood";
const GROUP: &str = "firehose";
const OUTBOX_BYTES: usize = 64 * 1024;
const MESSAGES: usize = 2_000;
const PAYLOAD_BYTES: usize = 8 * 1024;
const READERS: usize = 3;
/// How far the sender may run ahead of the slowest *reader*: at most `WINDOW + 1` messages
/// (about 58 KiB with their JSON envelopes) are ever unread by a reader, which fits in its
/// 64 KiB outbox even if the kernel buffered nothing, so whatever the scheduling a reader can
/// never be mistaken for a slow consumer. The slow client, which reads nothing, still has
/// all 16 MB pushed at it.
const WINDOW: usize = 6;

/// Message `i`: its number, then filler up to `PAYLOAD_BYTES`.
fn payload(i: usize) -> String {
    let mut text = format!("{i:06}:");
    text.extend(std::iter::repeat_n('.', PAYLOAD_BYTES - text.len()));
    text
}

fn number_of(message: &serde_json::Value) -> usize {
    let data = message["data"]
        .as_str()
        .unwrap_or_else(|| panic!("text data: {message}"));
    assert_eq!(data.len(), PAYLOAD_BYTES, "payload arrives whole");
    data[..6].parse().expect("numbered payload")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_is_closed_while_readers_get_everything_in_order() {
    let server = TestServer::start_with(|config| {
        config.client.outbox_bytes = OUTBOX_BYTES;
        // The sender pushes 16 MiB as fast as the readers keep up: on an idle machine that
        // is more than the default per-socket byte rate (16 MiB/s), and a rate-limited
        // sender would starve the readers. This test is about the slow consumer only.
        config.limits.bytes_per_second = 1 << 30;
        config.limits.messages_per_second = 1_000_000;
    })
    .await;
    let stats_before = server.router().stats();

    // The slow client: a small kernel receive buffer, so that once it stops reading the
    // bytes pile up in the server and not in the kernel. It joins, then never reads again.
    let mut slow = JsonClient::connect_with_recv_buffer(
        &server.url(HUB, Some("slow"), &[JOIN_ROLE], &[]),
        4096,
    )
    .await;
    slow.join(GROUP).await;
    let slow_id = slow.connection_id().to_owned();

    let mut progress = Vec::new();
    let mut reader_tasks = Vec::new();
    let mut reader_ids = Vec::new();
    for r in 0..READERS {
        let mut reader = server
            .json_client(HUB, Some(&format!("reader{r}")), &[JOIN_ROLE], &[])
            .await;
        reader.join(GROUP).await;
        reader_ids.push(reader.connection_id().to_owned());
        let (tx, rx) = watch::channel(0usize);
        progress.push(rx);
        reader_tasks.push(tokio::spawn(async move {
            for expected in 0..MESSAGES {
                let message = reader.recv_message().await;
                assert_eq!(message["group"], GROUP, "reader {r}: {message}");
                assert_eq!(
                    number_of(&message),
                    expected,
                    "reader {r} got messages out of order or lost one"
                );
                let _ = tx.send(expected + 1);
            }
            reader
        }));
    }

    let mut sender = server
        .json_client(HUB, Some("sender"), &[SEND_ROLE], &[])
        .await;
    for i in 0..MESSAGES {
        let needed = i.saturating_sub(WINDOW);
        for (r, rx) in progress.iter_mut().enumerate() {
            tokio::time::timeout(TIMEOUT, rx.wait_for(|&got| got >= needed))
                .await
                .unwrap_or_else(|_| panic!("reader {r} stalled before message {needed}"))
                .unwrap_or_else(|_| panic!("reader {r} failed before message {needed}"));
        }
        sender
            .send(json!({
                "type": "sendToGroup", "group": GROUP,
                "dataType": "text", "data": payload(i),
            }))
            .await;
    }

    let mut readers = Vec::new();
    for (r, task) in reader_tasks.into_iter().enumerate() {
        let reader = tokio::time::timeout(TIMEOUT, task)
            .await
            .unwrap_or_else(|_| panic!("reader {r} did not get all {MESSAGES} messages"))
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        readers.push(reader);
    }

    // The slow one was closed and counted; the readers and the sender were not.
    assert_eventually!(
        server.router().stats().slow_consumer_closes > stats_before.slow_consumer_closes,
        "slow_consumer_closes never increased: {:?}",
        server.router().stats()
    );
    assert_eventually!(
        !server.router().connection_exists(HUB, &slow_id),
        "the slow consumer {slow_id} is still registered"
    );
    for id in &reader_ids {
        assert!(
            server.router().connection_exists(HUB, id),
            "reader {id} was closed"
        );
    }
    assert!(
        server
            .router()
            .connection_exists(HUB, sender.connection_id())
    );
    sender.ping().await;
    for reader in &mut readers {
        reader.expect_nothing_queued().await;
    }

    // The slow client's socket was really closed: reading it now drains what the kernel
    // buffered and then ends. What it got is a gap-free prefix of the stream.
    let drained = slow.drain_until_closed(Duration::from_secs(30)).await;
    let numbers: Vec<usize> = drained
        .messages
        .iter()
        .filter(|m| m["type"] == "message")
        .map(number_of)
        .collect();
    assert!(
        numbers.len() < MESSAGES,
        "the slow consumer received everything; it was never slow"
    );
    assert!(
        numbers.iter().copied().eq(0..numbers.len()),
        "the slow consumer got a gapped or reordered stream before its close: {:?}..",
        &numbers[..numbers.len().min(20)]
    );
}
