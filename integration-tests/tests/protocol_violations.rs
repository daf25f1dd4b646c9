//! Frames that break RFC 6455, written as raw bytes after a real upgrade: the server fails
//! the connection with the close code the RFC names (1007 for a text frame that is not
//! UTF-8, 1002 for a protocol violation), after a `disconnected` message where the
//! subprotocol has one, instead of dropping the socket (which the client would see as 1006).
//! A reliable connection failed this way is over: it is not kept for a recovery as if the
//! network had failed.

use futures_util::StreamExt as _;
use hubcast_integration_tests::{
    Bystanders, JSON_RELIABLE_SUBPROTOCOL, JSON_SUBPROTOCOL, JsonClient, TIMEOUT, TestServer, Ws,
    assert_eventually, request, try_connect,
};
use serde_json::Value;
use tokio::io::AsyncWriteExt as _;
use tokio_tungstenite::MaybeTlsStream;
use tokio_tungstenite::tungstenite::Message;

const HUB: &str = "violations";

/// A client frame of one byte of flags and opcode (`first`), masked as RFC 6455 requires.
fn masked(first: u8, payload: &[u8]) -> Vec<u8> {
    let key = [0x37, 0xfa, 0x21, 0x3d];
    let mut frame = vec![first, 0x80 | short_len(payload)];
    frame.extend_from_slice(&key);
    frame.extend(payload.iter().zip(key.iter().cycle()).map(|(b, k)| b ^ k));
    frame
}

/// The same frame without a mask, which a client must never send.
fn unmasked(first: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![first, short_len(payload)];
    frame.extend_from_slice(payload);
    frame
}

fn short_len(payload: &[u8]) -> u8 {
    u8::try_from(payload.len())
        .ok()
        .filter(|&n| n < 126)
        .expect("short payloads only")
}

/// A client whose WebSocket library is bypassed for the bad frame.
struct RawClient {
    ws: Ws,
    /// The `connected` message of a JSON subprotocol; `Null` for a simple client.
    connected: Value,
}

/// How the server ended a [`RawClient`]'s connection.
#[derive(Debug)]
struct Failed {
    code: u16,
    reason: String,
    /// Messages before the close frame, JSON ones parsed.
    messages: Vec<Value>,
}

impl RawClient {
    async fn connect(server: &TestServer, user: &str, subprotocol: Option<&str>) -> Self {
        let url = server.url(HUB, Some(user), &[], &[]);
        let subprotocols: Vec<&str> = subprotocol.into_iter().collect();
        let (mut ws, _) = try_connect(request(&url, &subprotocols, None))
            .await
            .expect("upgrade");
        let connected = match subprotocol {
            None => Value::Null,
            Some(_) => {
                let first = tokio::time::timeout(TIMEOUT, ws.next())
                    .await
                    .expect("connected within the timeout");
                let Some(Ok(Message::Text(text))) = first else {
                    panic!("a connected message expected, got {first:?}");
                };
                serde_json::from_str(&text).expect("JSON connected message")
            }
        };
        Self { ws, connected }
    }

    fn connection_id(&self) -> &str {
        self.connected["connectionId"].as_str().expect("connected")
    }

    /// Writes `bytes` on the TCP stream under the WebSocket.
    async fn send_raw(&mut self, bytes: &[u8]) {
        let MaybeTlsStream::Plain(tcp) = self.ws.get_mut() else {
            panic!("plain TCP expected");
        };
        tcp.write_all(bytes).await.expect("write the raw frame");
    }

    /// Reads until the server's close frame.
    async fn expect_close(mut self) -> Failed {
        let mut messages = Vec::new();
        let work = async {
            while let Some(frame) = self.ws.next().await {
                match frame {
                    Ok(Message::Text(text)) => {
                        messages.push(serde_json::from_str(&text).expect("JSON message"));
                    }
                    Ok(Message::Close(Some(close))) => {
                        return (u16::from(close.code), close.reason.to_string());
                    }
                    Ok(Message::Close(None)) => panic!("a close frame without a code"),
                    Ok(_) => {}
                    Err(e) => panic!("the socket failed before a close frame (1006): {e}"),
                }
            }
            panic!("the socket ended before a close frame (1006)");
        };
        let (code, reason) = tokio::time::timeout(TIMEOUT, work)
            .await
            .expect("a close frame within the timeout");
        Failed {
            code,
            reason,
            messages,
        }
    }
}

impl Failed {
    /// Asserts that the last message before the close is the one `disconnected`; returns
    /// its reason.
    fn expect_disconnected(&self) -> &str {
        let last = self.messages.last().unwrap_or_else(|| {
            panic!("no disconnected message before close {}", self.code);
        });
        assert_eq!(
            (last["type"].as_str(), last["event"].as_str()),
            (Some("system"), Some("disconnected")),
            "{:?}",
            self.messages
        );
        last["message"].as_str().expect("a reason")
    }
}

/// Sends `frame` from a fresh JSON client and expects `code` after a `disconnected`; the
/// connection leaves the router and bystanders keep working.
async fn fails_with(frame: &[u8], code: u16, what: &str) {
    let server = TestServer::start().await;
    let mut bystanders = Bystanders::connect(&server, HUB).await;
    let mut bad = RawClient::connect(&server, "mallory", Some(JSON_SUBPROTOCOL)).await;
    let id = bad.connection_id().to_owned();
    bad.send_raw(frame).await;
    let failed = bad.expect_close().await;
    assert_eq!(failed.code, code, "{what}: {failed:?}");
    let reason = failed.expect_disconnected();
    assert!(
        !reason.is_empty(),
        "{what}: the disconnected message says why"
    );
    assert!(!failed.reason.is_empty(), "{what}: so does the close frame");
    assert_eventually!(
        !server.router().connection_exists(HUB, &id),
        "{what}: connection {id} still registered"
    );
    bystanders.check(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_in_a_text_frame_gets_disconnected_and_1007() {
    // `{"type":"ping"` then a lone continuation byte and a truncated sequence.
    let mut text = br#"{"type":"ping","x":""#.to_vec();
    text.extend_from_slice(&[0x80, 0xc3]);
    text.extend_from_slice(br#""}"#);
    fails_with(&masked(0x81, &text), 1007, "invalid UTF-8").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unmasked_client_frame_gets_disconnected_and_1002() {
    fails_with(
        &unmasked(0x81, br#"{"type":"ping"}"#),
        1002,
        "unmasked frame",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_bits_get_disconnected_and_1002() {
    // FIN, RSV1 (no extension was negotiated), text.
    fails_with(&masked(0xc1, br#"{"type":"ping"}"#), 1002, "RSV1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_opcodes_get_disconnected_and_1002() {
    fails_with(&masked(0x83, b"data"), 1002, "reserved data opcode 3").await;
    fails_with(&masked(0x8b, b""), 1002, "reserved control opcode 0xB").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fragmented_control_frame_gets_disconnected_and_1002() {
    // A ping without FIN.
    fails_with(&masked(0x09, b"hi"), 1002, "fragmented ping").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_continuation_with_nothing_to_continue_gets_disconnected_and_1002() {
    fails_with(&masked(0x80, b"tail"), 1002, "stray continuation").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_simple_client_gets_1002_without_a_disconnected_message() {
    let server = TestServer::start().await;
    let mut bad = RawClient::connect(&server, "simple", None).await;
    bad.send_raw(&unmasked(0x82, b"bytes")).await;
    let failed = bad.expect_close().await;
    assert_eq!(failed.code, 1002, "{failed:?}");
    assert!(
        failed.messages.is_empty(),
        "a simple client has no system messages: {failed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reliable_connection_failed_for_a_protocol_violation_cannot_be_recovered() {
    let server = TestServer::start().await;
    for (frame, code) in [
        (unmasked(0x81, br#"{"type":"ping"}"#), 1002),
        (masked(0x81, &[b'"', 0xff, b'"']), 1007),
    ] {
        let mut bad = RawClient::connect(&server, "mallory", Some(JSON_RELIABLE_SUBPROTOCOL)).await;
        let id = bad.connection_id().to_owned();
        let token = bad.connected["reconnectionToken"]
            .as_str()
            .expect("a reliable connection has a reconnection token")
            .to_owned();
        // Where Azure's clients go to recover: the original URL plus the two parameters.
        let original = server.url_to_node_of(&id, HUB, Some("mallory"), &[], &[]);
        let url = format!("{original}&awps_connection_id={id}&awps_reconnection_token={token}");
        bad.send_raw(&frame).await;
        let failed = bad.expect_close().await;
        assert_eq!(failed.code, code, "{failed:?}");
        failed.expect_disconnected();
        assert_eventually!(
            !server.router().connection_exists(HUB, &id),
            "connection {id} is kept after close {code}, as if it could be recovered"
        );

        // The client tries to recover, as Azure's clients do after anything but 1008: it is
        // told, with 1008, that there is nothing to recover.
        let refused = JsonClient::connect_raw(&url, JSON_RELIABLE_SUBPROTOCOL)
            .await
            .expect_close()
            .await;
        assert_eq!(
            refused.code, 1008,
            "recovery after close {code}: {refused:?}"
        );
    }
}
