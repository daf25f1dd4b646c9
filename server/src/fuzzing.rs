//! One entry point per parser that reads outside input, for the cargo-fuzz targets in
//! `fuzz/` (built with the `fuzzing` feature, never in a release) and for the property tests
//! below, which run the same entry points on stable in CI.
//!
//! Each function feeds arbitrary bytes to one parser and returns nothing: the only property
//! checked is that no input makes the parser panic, loop or abort. Inputs that once did are
//! kept in `fuzz/regressions/<target>/` and replayed by the `regressions` test below.

use std::sync::{Arc, OnceLock};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;

use crate::filter::{Filter, Subject};
use hubcast_auth::{self as auth, KeyRing};

/// The client WebSocket JSON subprotocol (`json.webpubsub.azure.v1` frames).
pub fn json_protocol(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::protocol::json::parse(text);
    }
}

/// The client WebSocket protobuf subprotocol (`protobuf.webpubsub.azure.v1` frames).
pub fn protobuf_protocol(data: &[u8]) {
    let _ = crate::protocol::protobuf::parse(&Bytes::copy_from_slice(data));
}

/// The MQTT edge's codec path: the byte stream cut into packets (with a size limit), the
/// CONNECT's protocol level, and every packet decoded as 3.1.1 and as 5.0; and the shared
/// PUBLISH body the writer cuts up.
pub fn mqtt_packets(data: &[u8]) {
    use crate::edge::mqtt::packet::{self, Framer, Version};
    let mut framer = Framer::default();
    framer.extend(data);
    while let Ok(Some(bytes)) = framer.next_packet(4096) {
        let _ = packet::connect_level(&bytes);
        let _ = packet::decode(Version::V311, &bytes);
        let _ = packet::decode(Version::V5, &bytes);
    }
    let _ = crate::protocol::mqtt::PublishBody::split(&Bytes::copy_from_slice(data));
}

/// A connection as OData filters see it.
struct Sample;

impl Subject for Sample {
    fn connection_id(&self) -> &str {
        "conn1"
    }
    fn user_id(&self) -> Option<&str> {
        Some("alice")
    }
    fn protocol(&self) -> Option<&str> {
        Some("json.webpubsub.azure.v1")
    }
    fn groups(&self) -> Vec<Arc<str>> {
        vec!["g1".into(), "room 2".into()]
    }
}

/// OData filters (REST `filter=` and gRPC `filter`): parse, and evaluate what parses.
pub fn odata_filter(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(filter) = Filter::parse(text)
    {
        let _ = filter.matches(&Sample);
    }
}

const KEY: &str = "fuzzing-access-key-0123456789abcdef0123";
const ENDPOINT: &str = "http://127.0.0.1:8080";

fn keys() -> &'static KeyRing {
    static KEYS: OnceLock<KeyRing> = OnceLock::new();
    KEYS.get_or_init(|| KeyRing::new(vec![KEY.to_owned()]).expect("valid key"))
}

/// JWT handling: `data` as a token for every verifier; as the claims of a correctly
/// signed token (so claim parsing is reached past the signature); and as a header.
pub fn jwt(data: &[u8]) {
    let keys = keys();
    if let Ok(token) = std::str::from_utf8(data) {
        let _ = auth::verify_client_token(token, keys, ENDPOINT, "chat");
        let _ = auth::verify_service_token(token, keys, ENDPOINT, auth::GRPC_AUDIENCE_PATH);
        let _ = auth::verify_reconnection_token(token, keys, "conn1");
    }
    if let Ok(claims) = serde_json::from_slice::<serde_json::Value>(data) {
        let token = auth::sign_hs256(KEY, &claims);
        let _ = auth::verify_client_token(&token, keys, ENDPOINT, "chat");
        let _ = auth::verify_service_token(&token, keys, ENDPOINT, auth::GRPC_AUDIENCE_PATH);
    }
    let valid = auth::sign_hs256(KEY, &serde_json::json!({"exp": 4_000_000_000u64}));
    let mut parts = valid.splitn(2, '.');
    let _ = parts.next();
    let rest = parts.next().unwrap_or_default();
    let forged = format!("{}.{rest}", URL_SAFE_NO_PAD.encode(data));
    let _ = auth::verify_client_token(&forged, keys, ENDPOINT, "chat");
}

/// REST: the path after `/api/hubs/` and the query string, split at the first `?` of
/// `data`, and `data` as a `:addToGroups` body.
pub fn rest_request(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (path, query) = text.split_once('?').unwrap_or((&text, ""));
    crate::edge::rest::fuzz::request(path, query);
    crate::edge::rest::fuzz::groups_body(data);
}

/// A webhook's answer: the first two bytes pick the status, then `name: value` header
/// lines up to an empty line, then the body.
pub fn webhook_response(data: &[u8]) {
    let (status, rest) = match data {
        [a, b, rest @ ..] => (100 + u16::from_le_bytes([*a, *b]) % 500, rest),
        _ => (200, data),
    };
    let split = rest.windows(2).position(|w| w == b"\n\n");
    let (head, body) = match split {
        Some(i) => (&rest[..i], &rest[i + 2..]),
        None => (&[][..], rest),
    };
    let headers: Vec<(&[u8], &[u8])> = head
        .split(|&b| b == b'\n')
        .filter_map(|line| {
            let colon = line.iter().position(|&b| b == b':')?;
            Some((&line[..colon], line[colon + 1..].trim_ascii()))
        })
        .collect();
    crate::upstream::webhook::fuzz::response(status, &headers, body);
}

/// The Socket.IO edge's packet layer: an Engine.IO payload (a long-polling body), each text
/// packet, and each Socket.IO packet in it, as the edge reads them; and the check of what a
/// backend sends.
pub fn socketio_packet(data: &[u8]) {
    use crate::protocol::socketio as sio;
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = sio::check_outgoing(text);
    let _ = sio::parse_text(text);
    let _ = sio::parse_sio(text);
    if let Ok(parts) = sio::split_payload(text) {
        for part in parts {
            if let sio::EioPacket::Text(_, data) = part
                && let Ok(packet) = sio::parse_sio(data)
            {
                let _ = sio::event_payload(packet.data, &[]);
            }
        }
    }
    let _ = sio::payload_frames(text).count();
}

/// The tunnel edge's frame parser (length prefix, msgpack array, JSON fields); a decoded
/// request or response is encoded back.
pub fn tunnel_frame(data: &[u8]) {
    use crate::protocol::tunnel::{self as frames, TunnelFrame};
    match frames::decode(data) {
        Ok(TunnelFrame::Request(r)) => {
            let _ = frames::encode_request(&r);
        }
        Ok(TunnelFrame::Response(r)) => {
            let _ = frames::encode_response(&r);
        }
        _ => {}
    }
}

/// A parser entry point: arbitrary bytes in, nothing out.
pub type Target = fn(&[u8]);

/// Every target by name, for the regression replay and the fuzz crate.
pub const TARGETS: [(&str, Target); 9] = [
    ("mqtt_packets", mqtt_packets),
    ("json_protocol", json_protocol),
    ("protobuf_protocol", protobuf_protocol),
    ("odata_filter", odata_filter),
    ("jwt", jwt),
    ("rest_request", rest_request),
    ("webhook_response", webhook_response),
    ("socketio_packet", socketio_packet),
    ("tunnel_frame", tunnel_frame),
];

#[cfg(test)]
mod tests {
    use std::path::Path;

    use proptest::prelude::*;

    use super::*;

    /// Inputs shaped like each parser's language, so that generated cases get past the
    /// first byte: JSON-ish text from the message grammar's tokens.
    fn json_like() -> impl Strategy<Value = String> {
        let token = prop_oneof![
            Just("{".to_owned()),
            Just("}".to_owned()),
            Just("[".to_owned()),
            Just("]".to_owned()),
            Just(",".to_owned()),
            Just(":".to_owned()),
            Just("\"type\"".to_owned()),
            Just("\"joinGroup\"".to_owned()),
            Just("\"sendToGroup\"".to_owned()),
            Just("\"event\"".to_owned()),
            Just("\"sequenceAck\"".to_owned()),
            Just("\"group\"".to_owned()),
            Just("\"ackId\"".to_owned()),
            Just("\"dataType\"".to_owned()),
            Just("\"data\"".to_owned()),
            Just("\"json\"".to_owned()),
            Just("\"binary\"".to_owned()),
            Just("\"protobuf\"".to_owned()),
            Just("\"sequenceId\"".to_owned()),
            Just("-1".to_owned()),
            Just("18446744073709551616".to_owned()),
            Just("1e999".to_owned()),
            Just("null".to_owned()),
            "\"[^\"]{0,8}\"".prop_map(|s| s),
        ];
        prop::collection::vec(token, 0..40).prop_map(|t| t.concat())
    }

    fn filter_like() -> impl Strategy<Value = String> {
        let token = prop_oneof![
            Just("userId".to_owned()),
            Just("connectionId".to_owned()),
            Just("groups".to_owned()),
            Just("protocol".to_owned()),
            Just(" eq ".to_owned()),
            Just(" ne ".to_owned()),
            Just(" in ".to_owned()),
            Just(" and ".to_owned()),
            Just(" or ".to_owned()),
            Just("not ".to_owned()),
            Just("(".to_owned()),
            Just(")".to_owned()),
            Just(",".to_owned()),
            Just("null".to_owned()),
            Just("'a'".to_owned()),
            Just("'it''s'".to_owned()),
            Just("'".to_owned()),
            "[a-z ]{0,4}".prop_map(|s| s),
        ];
        prop::collection::vec(token, 0..30).prop_map(|t| t.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn mqtt_packets_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            mqtt_packets(&bytes);
        }

        #[test]
        fn json_protocol_never_panics(text in json_like()) {
            json_protocol(text.as_bytes());
        }

        #[test]
        fn socketio_packet_never_panics(text in prop_oneof![
            "[0-6b][0-9]{0,3}-?(/[a-z]{0,3},)?[0-9]{0,3}\\[\"[a-z]{0,3}\"(,[0-9{}\"a-z:]{0,8})?\\]?".prop_map(String::from),
            "[0-6bx\u{1e}/,\\[\\]{}\"0-9a-zA-Z+=-]{0,40}".prop_map(String::from),
        ]) {
            socketio_packet(text.as_bytes());
        }

        #[test]
        fn tunnel_frame_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let mut framed = u32::try_from(bytes.len()).expect("short").to_le_bytes().to_vec();
            framed.extend_from_slice(&bytes);
            tunnel_frame(&framed);
            tunnel_frame(&bytes);
        }

        #[test]
        fn protobuf_protocol_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            protobuf_protocol(&bytes);
        }

        #[test]
        fn odata_filter_never_panics(text in filter_like()) {
            odata_filter(text.as_bytes());
        }

        #[test]
        fn jwt_never_panics(text in prop_oneof![
            "[A-Za-z0-9_.=-]{0,120}".prop_map(String::from),
            json_like(),
        ]) {
            jwt(text.as_bytes());
        }

        #[test]
        fn rest_request_never_panics(text in "[a-zA-Z0-9/:%?&=._~+ -]{0,80}") {
            rest_request(text.as_bytes());
        }

        #[test]
        fn webhook_response_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256), body in json_like()) {
            webhook_response(&bytes);
            let mut framed = b"\x00\x00content-type: application/json\nce-connectionState: x\n\n".to_vec();
            framed.extend_from_slice(body.as_bytes());
            webhook_response(&framed);
        }
    }

    /// Replays every input kept in `fuzz/regressions/<target>/` and the checked-in corpora:
    /// a crash once found stays fixed. Every target must have its corpus checked in (a
    /// missing or emptied folder fails, instead of replaying nothing), and `fuzz/regressions/`
    /// must exist: it holds the inputs of bugs found outside the fuzzer too.
    #[test]
    fn regressions_and_corpora_replay_without_panics() {
        let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
        let regressions = fuzz.join("regressions");
        assert!(
            regressions.is_dir(),
            "{} is missing: it keeps the inputs of fixed bugs",
            regressions.display()
        );
        let mut kept_regressions = 0;
        for (name, target) in TARGETS {
            let corpus = fuzz.join("corpus").join(name);
            let entries = std::fs::read_dir(&corpus).unwrap_or_else(|e| {
                panic!(
                    "{}: {e}: every target's corpus is checked in",
                    corpus.display()
                )
            });
            let mut replayed = 0;
            for entry in entries {
                target(
                    &std::fs::read(entry.expect("readable directory").path())
                        .expect("readable input"),
                );
                replayed += 1;
            }
            assert!(replayed > 0, "{} is empty", corpus.display());
            // A target without regressions of its own has no folder there.
            if let Ok(entries) = std::fs::read_dir(regressions.join(name)) {
                for entry in entries {
                    target(
                        &std::fs::read(entry.expect("readable directory").path())
                            .expect("readable input"),
                    );
                    kept_regressions += 1;
                }
            }
        }
        assert!(
            kept_regressions > 0,
            "no input replayed from {}",
            regressions.display()
        );
    }
}
