//! The message model: messages on their way to clients, and the frames they become.
//!
//! A [`Message`] is format-agnostic: who it is from and what it carries. The codecs
//! ([`crate::protocol`]) render it into [`Frame`]s; the router queues those frames as
//! [`Queued`] items. This module sits below both, so the fan-out path points one way:
//! router → protocol → message.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use tokio::time::Instant;
pub use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::telemetry::Protocol;
use crate::telemetry::trace::TraceParent;

pub mod close;

/// The wire format a connection speaks, which decides how a message is rendered for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WireFormat {
    /// A simple WebSocket client: data arrives as raw text or binary frames.
    Simple,
    /// `json(.reliable).webpubsub.azure.v1`: one JSON object per text frame.
    Json,
    /// `protobuf(.reliable).webpubsub.azure.v1`: one protobuf message per binary frame.
    Protobuf,
    /// An MQTT client (`/clients/mqtt`): a message is queued as the shared part of a PUBLISH
    /// packet ([`crate::protocol::mqtt`]); the MQTT writer adds the per-session header.
    Mqtt,
    /// A Socket.IO client (Engine.IO v4): every frame is an Engine.IO payload (packets joined
    /// by `\x1e`), written as is to a long-polling client and split into one WebSocket frame
    /// per packet for a WebSocket client. Only text messages that are valid payloads reach
    /// it (Azure's serverless mode sends `text/plain` Engine.IO payloads).
    SocketIo,
}

impl WireFormat {
    /// The client protocol (the edge) a connection of this format came in through, for the
    /// `protocol` label of metrics.
    pub fn protocol(self) -> Protocol {
        match self {
            WireFormat::Simple | WireFormat::Json | WireFormat::Protobuf => Protocol::Default,
            WireFormat::Mqtt => Protocol::Mqtt,
            WireFormat::SocketIo => Protocol::SocketIo,
        }
    }
}

/// One WebSocket data frame, ready to write. Cloning shares the bytes.
///
/// Text frames hold [`Utf8Bytes`] (already validated UTF-8) so the socket writer never
/// re-validates a payload that was encoded once for many recipients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A text frame.
    Text(Utf8Bytes),
    /// A binary frame.
    Binary(Bytes),
}

impl Frame {
    /// Payload length in bytes, which is what outbox limits count.
    pub fn len(&self) -> usize {
        match self {
            Frame::Text(t) => t.len(),
            Frame::Binary(b) => b.len(),
        }
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A message payload with its data type (Azure's `dataType`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Data {
    /// `text`: UTF-8 text.
    Text(Utf8Bytes),
    /// `json`: a JSON value, kept as its serialized text and forwarded verbatim.
    Json(Utf8Bytes),
    /// `binary`: raw bytes (base64 in JSON).
    Binary(Bytes),
    /// `protobuf`: a serialized `google.protobuf.Any` (base64 in JSON).
    Protobuf(Bytes),
}

impl Data {
    /// The Azure `dataType` name.
    pub fn data_type(&self) -> &'static str {
        match self {
            Data::Text(_) => "text",
            Data::Json(_) => "json",
            Data::Binary(_) => "binary",
            Data::Protobuf(_) => "protobuf",
        }
    }

    /// Payload size in bytes.
    pub fn len(&self) -> usize {
        match self {
            Data::Text(t) | Data::Json(t) => t.len(),
            Data::Binary(b) | Data::Protobuf(b) => b.len(),
        }
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Where a message comes from, as its recipients see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Published to a group, by a client (with its user id, if any) or by the service API.
    Group {
        /// The group.
        group: Arc<str>,
        /// The sending client's user id; `None` for anonymous clients and the service API.
        from_user: Option<Arc<str>>,
    },
    /// Sent by the service API to all, a user or a connection.
    Server,
}

/// Application metadata of a message or user event: lower-cased keys and their values
/// (Azure's `X-WebPubSub-Metadata-<key>`), checked by [`metadata_from`]. Shared: one fan-out
/// encodes it once per wire format.
pub type Metadata = Arc<BTreeMap<String, String>>;

/// Most metadata entries of one message.
pub const MAX_METADATA_ENTRIES: usize = 16;
/// Most bytes of metadata keys and values together, per message.
pub const MAX_METADATA_BYTES: usize = 4096;
/// Longest metadata key, in characters.
const MAX_METADATA_KEY_CHARS: usize = 64;

/// Checks and collects metadata entries: keys lower-cased (a repeated key: the last value
/// wins), 1–64 characters of `a-z0-9-_.` (they become header names upstream), values
/// without control characters, within [`MAX_METADATA_ENTRIES`] and [`MAX_METADATA_BYTES`].
/// No entries is `None`.
///
/// # Errors
/// What is wrong, naming the key or the bound.
pub fn metadata_from(
    entries: impl IntoIterator<Item = (String, String)>,
) -> Result<Option<Metadata>, String> {
    let mut map = BTreeMap::new();
    for (key, value) in entries {
        let key = key.to_ascii_lowercase();
        if key.is_empty()
            || key.len() > MAX_METADATA_KEY_CHARS
            || !key
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
        {
            return Err(format!(
                "metadata key '{key}' must be 1 to {MAX_METADATA_KEY_CHARS} characters of a-z, 0-9, '-', '_' and '.'"
            ));
        }
        if value.chars().any(char::is_control) {
            return Err(format!(
                "metadata value of '{key}' must not contain control characters"
            ));
        }
        map.insert(key, value);
    }
    if map.len() > MAX_METADATA_ENTRIES {
        return Err(format!(
            "{} metadata entries are more than the limit of {MAX_METADATA_ENTRIES}",
            map.len()
        ));
    }
    let bytes: usize = map.iter().map(|(k, v)| k.len() + v.len()).sum();
    if bytes > MAX_METADATA_BYTES {
        return Err(format!(
            "{bytes} bytes of metadata are more than the limit of {MAX_METADATA_BYTES}"
        ));
    }
    Ok((!map.is_empty()).then(|| Arc::new(map)))
}

/// One connection's state in a group (group presence, spec part 2 §4.3): what
/// `groupStateSnapshot` and `groupStateUpdate` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupStateItem {
    /// The connection.
    pub connection_id: Arc<str>,
    /// Its user, if any.
    pub user_id: Option<Arc<str>>,
    /// Its state; `None` once cleared (by the client, a leave, or its end).
    pub state: Option<Arc<BTreeMap<String, String>>>,
    /// When it changed, in Unix milliseconds.
    pub updated_at: u64,
}

/// Most entries of one connection's state in one group.
pub const MAX_GROUP_STATE_ENTRIES: usize = 16;
/// Most bytes of keys and values of one connection's state in one group.
pub const MAX_GROUP_STATE_BYTES: usize = 1024;

/// Checks a `setGroupState` state: at most [`MAX_GROUP_STATE_ENTRIES`] entries and
/// [`MAX_GROUP_STATE_BYTES`] bytes, keys not empty.
///
/// # Errors
/// What is wrong, naming the bound.
pub fn check_group_state(state: &BTreeMap<String, String>) -> Result<(), String> {
    if state.len() > MAX_GROUP_STATE_ENTRIES {
        return Err(format!(
            "the state has {} entries, more than the limit of {MAX_GROUP_STATE_ENTRIES}",
            state.len()
        ));
    }
    if state.keys().any(String::is_empty) {
        return Err("state keys must not be empty".into());
    }
    let bytes: usize = state.iter().map(|(k, v)| k.len() + v.len()).sum();
    if bytes > MAX_GROUP_STATE_BYTES {
        return Err(format!(
            "the state has {bytes} bytes of keys and values, more than the limit of {MAX_GROUP_STATE_BYTES}"
        ));
    }
    Ok(())
}

/// Where a group message stands in a group stream (spec part 2 §4.2): JSON clients get it
/// as `stream{streamId, streamSequenceId, endOfStream?, error?}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamInfo {
    /// The stream, as its publisher named it.
    pub stream_id: Arc<str>,
    /// 1, 2, 3, … per chunk; the end's is one past the last chunk's.
    pub sequence_id: u64,
    /// The last message of the stream.
    pub end: bool,
    /// Why the stream ended, if it failed.
    pub error: Option<StreamError>,
}

/// Why a group stream ended early: `UserError` (the publisher's `streamEnd` error),
/// `IdleTimeout`, `Cancelled` (the publisher's connection ended).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamError {
    /// The error's name.
    pub name: &'static str,
    /// What happened.
    pub message: String,
    /// The publisher's own code (`UserError`).
    pub user_error_code: Option<String>,
}

impl StreamError {
    /// The error names a stream ends with.
    pub const NAMES: [&'static str; 4] = [
        "UserError",
        "IdleTimeout",
        "Cancelled",
        "InternalServerError",
    ];

    /// `name` as one of [`StreamError::NAMES`] (another node's), else `InternalServerError`.
    pub fn known_name(name: &str) -> &'static str {
        Self::NAMES
            .into_iter()
            .find(|n| *n == name)
            .unwrap_or("InternalServerError")
    }
}

/// A message to deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Who it is from.
    pub source: Source,
    /// What it carries.
    pub data: Data,
    /// Its application metadata, if any.
    pub metadata: Option<Metadata>,
    /// Its place in a group stream, if it belongs to one.
    pub stream: Option<Arc<StreamInfo>>,
    /// The QoS of the MQTT PUBLISH it came from: an MQTT subscriber gets it at the lower of
    /// this and its subscription's QoS. `None` for every other message, which MQTT
    /// subscribers get at QoS 1 at most (Azure's cross-protocol rule).
    pub mqtt_qos: Option<u8>,
    /// The MQTT 5 Message Expiry Interval (seconds) of the PUBLISH it came from: MQTT
    /// subscribers do not get it once that has passed, and get what remains of it.
    pub mqtt_expiry: Option<u32>,
}

impl Message {
    /// A message published to `group`.
    pub fn to_group(group: impl Into<Arc<str>>, from_user: Option<Arc<str>>, data: Data) -> Self {
        Self {
            source: Source::Group {
                group: group.into(),
                from_user,
            },
            data,
            metadata: None,
            stream: None,
            mqtt_qos: None,
            mqtt_expiry: None,
        }
    }

    /// A message from the service (send to all, user or connection).
    pub fn from_server(data: Data) -> Self {
        Self {
            source: Source::Server,
            data,
            metadata: None,
            stream: None,
            mqtt_qos: None,
            mqtt_expiry: None,
        }
    }

    /// The same message as a chunk (or the end) of a group stream.
    #[must_use]
    pub fn with_stream(mut self, stream: Option<Arc<StreamInfo>>) -> Self {
        self.stream = stream;
        self
    }

    /// The same message as published by an MQTT client at `qos`, with its Message Expiry
    /// Interval `expiry`.
    #[must_use]
    pub fn with_mqtt(mut self, qos: Option<u8>, expiry: Option<u32>) -> Self {
        self.mqtt_qos = qos;
        self.mqtt_expiry = expiry;
        self
    }

    /// The same message with `metadata`.
    #[must_use]
    pub fn with_metadata(mut self, metadata: Option<Metadata>) -> Self {
        self.metadata = metadata;
        self
    }
}

/// A frame in the queue, with the sequence id it carries on a reliable connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    /// The shared frame.
    pub frame: Frame,
    /// `Some` for data messages to reliable connections: the writer splices it in.
    pub sequence_id: Option<u64>,
    /// For a message sent with a TTL (non-reliable connections only): when it stops being
    /// worth writing. the outbox drops it from then on.
    pub expires: Option<Instant>,
    /// For a data message: when fan-out started, for the publish-to-write latency
    /// (`hubcast_fanout_latency_seconds`). `None` for control frames and resends.
    pub published: Option<Instant>,
    /// For a traced data message: the fan-out span, parent of the writer's delivery span.
    pub trace: Option<TraceParent>,
}

/// Where a data message comes from, carried beside each recipient's copy.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    /// When fan-out started.
    pub published: Option<Instant>,
    /// The fan-out span, when the message is traced.
    pub trace: Option<TraceParent>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_is_checked_and_bounded() {
        let pair = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        let m = metadata_from([pair("Trace-ID", "1"), pair("trace-id", "2")])
            .expect("valid")
            .expect("some");
        assert_eq!(m.len(), 1, "keys are lower-cased and the last wins");
        assert_eq!(m["trace-id"], "2");
        assert_eq!(metadata_from([]), Ok(None));
        for bad in [
            pair("", "v"),
            pair("a b", "v"),
            pair("é", "v"),
            pair("k", "a\nb"),
        ] {
            assert!(metadata_from([bad.clone()]).is_err(), "{bad:?}");
        }
        assert!(metadata_from([pair(&"k".repeat(65), "v")]).is_err());
        let many = (0..=MAX_METADATA_ENTRIES).map(|i| pair(&format!("k{i}"), "v"));
        assert!(
            metadata_from(many)
                .expect_err("too many")
                .contains("limit of 16")
        );
        let big = [pair("k", &"v".repeat(MAX_METADATA_BYTES))];
        assert!(metadata_from(big).expect_err("too big").contains("4096"));
        let fits = [pair("k", &"v".repeat(MAX_METADATA_BYTES - 1))];
        assert!(metadata_from(fits).is_ok());
    }
}
