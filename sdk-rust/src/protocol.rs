//! The client subprotocols: which one a client speaks, and how its messages are encoded and
//! decoded (Azure Web PubSub's `json.webpubsub.azure.v1`, `protobuf.webpubsub.azure.v1` and
//! their reliable variants).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use hubcast_proto::v1::{
    DownstreamMessage, MessageData, UpstreamMessage, downstream_message, message_data,
    upstream_message,
};
use prost::Message as _;
use prost_types::Any;
use serde::Deserialize;
use serde_json::{Map, Value};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::error::{Error, Kind, Result};
use crate::payload::Payload;

/// The WebSocket subprotocol a [`crate::Client`] speaks.
///
/// The reliable variants (the default is [`Protocol::JsonReliable`]) number every data
/// message, so the client can acknowledge what it received, drop duplicates and, after a
/// dropped connection, *recover* the same connection (same connection id, same groups) and
/// receive every message it missed. The others lose the connection, its groups and any
/// message in flight when the socket drops; the client then starts a new connection and
/// rejoins its groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Protocol {
    /// `json.reliable.webpubsub.azure.v1`: JSON text frames, recoverable. The default, as in
    /// Azure's JavaScript client.
    #[default]
    JsonReliable,
    /// `json.webpubsub.azure.v1`: JSON text frames.
    Json,
    /// `protobuf.reliable.webpubsub.azure.v1`: protobuf binary frames, recoverable. The most
    /// compact encoding.
    ProtobufReliable,
    /// `protobuf.webpubsub.azure.v1`: protobuf binary frames.
    Protobuf,
}

impl Protocol {
    /// The subprotocol name offered in `Sec-WebSocket-Protocol`.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::JsonReliable => "json.reliable.webpubsub.azure.v1",
            Protocol::Json => "json.webpubsub.azure.v1",
            Protocol::ProtobufReliable => "protobuf.reliable.webpubsub.azure.v1",
            Protocol::Protobuf => "protobuf.webpubsub.azure.v1",
        }
    }

    /// Whether data messages are numbered and the connection can be recovered after a drop.
    pub fn is_reliable(self) -> bool {
        matches!(self, Protocol::JsonReliable | Protocol::ProtobufReliable)
    }

    fn is_protobuf(self) -> bool {
        matches!(self, Protocol::ProtobufReliable | Protocol::Protobuf)
    }
}

/// A message from the client to the service.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Request<'a> {
    JoinGroup {
        group: &'a str,
        ack_id: Option<u64>,
    },
    LeaveGroup {
        group: &'a str,
        ack_id: Option<u64>,
    },
    SendToGroup {
        group: &'a str,
        ack_id: Option<u64>,
        no_echo: bool,
        payload: &'a Payload,
    },
    Event {
        event: &'a str,
        ack_id: Option<u64>,
        payload: Option<&'a Payload>,
    },
    SequenceAck(u64),
    Ping,
    Invoke {
        invocation_id: &'a str,
        event: &'a str,
        payload: &'a Payload,
    },
    CancelInvocation(&'a str),
    StreamStart {
        group: &'a str,
        stream_id: &'a str,
        no_echo: bool,
        idle_timeout_ms: Option<u32>,
    },
    /// A chunk, or a keep-alive (`None`).
    StreamData {
        stream_id: &'a str,
        chunk: Option<(u64, &'a Payload)>,
    },
    StreamEnd {
        stream_id: &'a str,
        /// The publisher's error message and code.
        error: Option<(&'a str, Option<&'a str>)>,
    },
}

/// A group message's place in a group stream, as the service sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StreamPlace {
    pub(crate) stream_id: String,
    pub(crate) sequence_id: u64,
    pub(crate) end: bool,
    /// Name, message and the publisher's code.
    pub(crate) error: Option<(String, String, Option<String>)>,
}

/// A data message from the service.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Data {
    /// The group, for group messages; `None` for server messages.
    pub(crate) group: Option<String>,
    pub(crate) from_user_id: Option<String>,
    pub(crate) payload: Payload,
    pub(crate) sequence_id: Option<u64>,
    pub(crate) stream: Option<StreamPlace>,
}

/// A message from the service to the client.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Incoming {
    Connected {
        connection_id: String,
        user_id: Option<String>,
        reconnection_token: Option<String>,
    },
    Disconnected {
        reason: String,
    },
    Ack {
        ack_id: u64,
        success: bool,
        /// Error name and message.
        error: Option<(String, String)>,
    },
    Data(Data),
    InvokeResponse {
        invocation_id: String,
        /// The answer's payload, or the error's name and message.
        result: std::result::Result<Option<Payload>, (String, String)>,
    },
    StreamAck {
        stream_id: String,
        expected: u64,
    },
    StreamNack {
        stream_id: String,
        name: String,
        message: String,
        expected: u64,
    },
    StreamClosed {
        stream_id: String,
        /// Name and message, when the service ended the stream.
        error: Option<(String, String)>,
    },
    Pong,
    /// A message this client does not know (a newer protocol feature): ignored, as Azure's
    /// clients do.
    Unknown,
}

/// Encodes a request as one WebSocket frame.
pub(crate) fn encode(protocol: Protocol, request: &Request<'_>) -> WsMessage {
    if protocol.is_protobuf() {
        WsMessage::Binary(Bytes::from(encode_protobuf(request).encode_to_vec()))
    } else {
        WsMessage::Text(encode_json(request).to_string().into())
    }
}

fn encode_json(request: &Request<'_>) -> Value {
    let mut m = Map::new();
    let mut set = |k: &str, v: Value| {
        m.insert(k.to_owned(), v);
    };
    match *request {
        Request::JoinGroup { group, ack_id } | Request::LeaveGroup { group, ack_id } => {
            let kind = if matches!(request, Request::JoinGroup { .. }) {
                "joinGroup"
            } else {
                "leaveGroup"
            };
            set("type", kind.into());
            set("group", group.into());
            if let Some(id) = ack_id {
                set("ackId", id.into());
            }
        }
        Request::SendToGroup {
            group,
            ack_id,
            no_echo,
            payload,
        } => {
            set("type", "sendToGroup".into());
            set("group", group.into());
            if let Some(id) = ack_id {
                set("ackId", id.into());
            }
            if no_echo {
                set("noEcho", true.into());
            }
            set("dataType", payload.data_type().as_str().into());
            set("data", json_data(payload));
        }
        Request::Event {
            event,
            ack_id,
            payload,
        } => {
            set("type", "event".into());
            set("event", event.into());
            if let Some(id) = ack_id {
                set("ackId", id.into());
            }
            if let Some(payload) = payload {
                set("dataType", payload.data_type().as_str().into());
                set("data", json_data(payload));
            }
        }
        Request::SequenceAck(id) => {
            set("type", "sequenceAck".into());
            set("sequenceId", id.into());
        }
        Request::Ping => set("type", "ping".into()),
        Request::Invoke {
            invocation_id,
            event,
            payload,
        } => {
            set("type", "invoke".into());
            set("invocationId", invocation_id.into());
            set("target", "event".into());
            set("event", event.into());
            set("dataType", payload.data_type().as_str().into());
            set("data", json_data(payload));
        }
        Request::CancelInvocation(invocation_id) => {
            set("type", "cancelInvocation".into());
            set("invocationId", invocation_id.into());
        }
        Request::StreamStart {
            group,
            stream_id,
            no_echo,
            idle_timeout_ms,
        } => {
            set("type", "sendToGroup".into());
            set("group", group.into());
            if no_echo {
                set("noEcho", true.into());
            }
            let mut stream = Map::new();
            stream.insert("streamId".into(), stream_id.into());
            if let Some(ms) = idle_timeout_ms {
                stream.insert("idleTimeoutMs".into(), ms.into());
            }
            set("stream", Value::Object(stream));
        }
        Request::StreamData { stream_id, chunk } => {
            set("type", "streamData".into());
            set("streamId", stream_id.into());
            if let Some((sequence_id, payload)) = chunk {
                set("streamSequenceId", sequence_id.into());
                set("dataType", payload.data_type().as_str().into());
                set("data", json_data(payload));
            }
        }
        Request::StreamEnd { stream_id, error } => {
            set("type", "streamEnd".into());
            set("streamId", stream_id.into());
            if let Some((message, code)) = error {
                let mut e = Map::new();
                e.insert("message".into(), message.into());
                if let Some(code) = code {
                    e.insert("userErrorCode".into(), code.into());
                }
                set("error", Value::Object(e));
            }
        }
    }
    Value::Object(m)
}

fn json_data(payload: &Payload) -> Value {
    match payload {
        Payload::Text(text) => Value::String(text.clone()),
        Payload::Json(value) => value.clone(),
        Payload::Binary(bytes) => Value::String(BASE64.encode(bytes)),
        Payload::Protobuf(any) => Value::String(BASE64.encode(any.encode_to_vec())),
    }
}

fn encode_protobuf(request: &Request<'_>) -> UpstreamMessage {
    use upstream_message::Message as M;
    let message = match *request {
        Request::JoinGroup { group, ack_id } => {
            M::JoinGroupMessage(upstream_message::JoinGroupMessage {
                group: group.to_owned(),
                ack_id,
            })
        }
        Request::LeaveGroup { group, ack_id } => {
            M::LeaveGroupMessage(upstream_message::LeaveGroupMessage {
                group: group.to_owned(),
                ack_id,
            })
        }
        Request::SendToGroup {
            group,
            ack_id,
            no_echo,
            payload,
        } => M::SendToGroupMessage(upstream_message::SendToGroupMessage {
            group: group.to_owned(),
            ack_id,
            data: Some(protobuf_data(payload)),
            no_echo: no_echo.then_some(true),
            ..Default::default()
        }),
        Request::Event {
            event,
            ack_id,
            payload,
        } => M::EventMessage(upstream_message::EventMessage {
            event: event.to_owned(),
            data: payload.map(protobuf_data),
            ack_id,
            ..Default::default()
        }),
        Request::SequenceAck(sequence_id) => {
            M::SequenceAckMessage(upstream_message::SequenceAckMessage { sequence_id })
        }
        Request::Ping => M::PingMessage(upstream_message::PingMessage {}),
        Request::Invoke {
            invocation_id,
            event,
            payload,
        } => M::InvokeMessage(upstream_message::InvokeMessage {
            invocation_id: invocation_id.to_owned(),
            target: "event".into(),
            event: event.to_owned(),
            data: Some(protobuf_data(payload)),
            ..Default::default()
        }),
        Request::CancelInvocation(invocation_id) => {
            M::CancelInvocationMessage(upstream_message::CancelInvocationMessage {
                invocation_id: invocation_id.to_owned(),
            })
        }
        Request::StreamStart {
            group,
            stream_id,
            no_echo,
            idle_timeout_ms,
        } => M::SendToGroupMessage(upstream_message::SendToGroupMessage {
            group: group.to_owned(),
            no_echo: no_echo.then_some(true),
            stream: Some(upstream_message::StreamStartInfo {
                stream_id: stream_id.to_owned(),
                idle_timeout_ms,
            }),
            ..Default::default()
        }),
        Request::StreamData { stream_id, chunk } => {
            M::StreamDataMessage(upstream_message::StreamDataMessage {
                stream_id: stream_id.to_owned(),
                stream_sequence_id: chunk.map(|(id, _)| id),
                data: chunk.map(|(_, payload)| protobuf_data(payload)),
            })
        }
        Request::StreamEnd { stream_id, error } => {
            M::StreamEndMessage(upstream_message::StreamEndMessage {
                stream_id: stream_id.to_owned(),
                error: error.map(|(message, code)| {
                    upstream_message::stream_end_message::StreamEndError {
                        message: Some(message.to_owned()),
                        user_error_code: code.map(str::to_owned),
                    }
                }),
            })
        }
    };
    UpstreamMessage {
        message: Some(message),
    }
}

fn protobuf_data(payload: &Payload) -> MessageData {
    use message_data::Data as D;
    let data = match payload {
        Payload::Text(text) => D::TextData(text.clone()),
        Payload::Json(value) => D::JsonData(value.to_string()),
        Payload::Binary(bytes) => D::BinaryData(bytes.clone()),
        Payload::Protobuf(any) => D::ProtobufData(any.clone()),
    };
    MessageData { data: Some(data) }
}

/// Decodes a text or binary frame from the service.
///
/// # Errors
/// [`Error::is_decode`]: the frame is not a message of `protocol` (wrong frame type,
/// malformed, a payload that does not match its data type).
pub(crate) fn decode(protocol: Protocol, frame: &WsMessage) -> Result<Incoming> {
    match (frame, protocol.is_protobuf()) {
        (WsMessage::Text(text), false) => decode_json(text.as_str()),
        (WsMessage::Binary(bytes), true) => decode_protobuf(bytes.clone()),
        _ => Err(decode_error("unexpected frame type for the subprotocol")),
    }
}

fn decode_error(why: impl Into<crate::error::BoxError>) -> Error {
    Error::with_source(Kind::Decode, why)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawIncoming {
    #[serde(rename = "type")]
    kind: String,
    event: Option<String>,
    user_id: Option<String>,
    connection_id: Option<String>,
    reconnection_token: Option<String>,
    message: Option<String>,
    ack_id: Option<u64>,
    success: Option<bool>,
    error: Option<RawAckError>,
    from: Option<String>,
    group: Option<String>,
    from_user_id: Option<String>,
    data_type: Option<String>,
    data: Option<Value>,
    sequence_id: Option<u64>,
    invocation_id: Option<String>,
    stream_id: Option<String>,
    expected_sequence_id: Option<u64>,
    name: Option<String>,
    stream: Option<RawStream>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawStream {
    stream_id: String,
    stream_sequence_id: u64,
    #[serde(default)]
    end_of_stream: bool,
    error: Option<RawStreamError>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawStreamError {
    #[serde(default)]
    name: String,
    #[serde(default)]
    message: String,
    user_error_code: Option<String>,
}

#[derive(Deserialize)]
struct RawAckError {
    #[serde(default)]
    name: String,
    #[serde(default)]
    message: String,
}

fn decode_json(text: &str) -> Result<Incoming> {
    let raw: RawIncoming = serde_json::from_str(text).map_err(decode_error)?;
    Ok(match raw.kind.as_str() {
        "system" => match raw.event.as_deref() {
            Some("connected") => Incoming::Connected {
                connection_id: raw
                    .connection_id
                    .ok_or_else(|| decode_error("`connected` without a connectionId"))?,
                user_id: raw.user_id,
                reconnection_token: raw.reconnection_token,
            },
            Some("disconnected") => Incoming::Disconnected {
                reason: raw.message.unwrap_or_default(),
            },
            _ => Incoming::Unknown,
        },
        "ack" => Incoming::Ack {
            ack_id: raw
                .ack_id
                .ok_or_else(|| decode_error("`ack` without an ackId"))?,
            success: raw.success.unwrap_or(false),
            error: raw.error.map(|e| (e.name, e.message)),
        },
        "message" => {
            let payload = json_payload(raw.data_type.as_deref(), raw.data)?;
            let group = match raw.from.as_deref() {
                Some("group") => Some(
                    raw.group
                        .ok_or_else(|| decode_error("group message without a group"))?,
                ),
                _ => None,
            };
            Incoming::Data(Data {
                group,
                from_user_id: raw.from_user_id,
                payload,
                sequence_id: raw.sequence_id,
                stream: raw.stream.map(|s| StreamPlace {
                    stream_id: s.stream_id,
                    sequence_id: s.stream_sequence_id,
                    end: s.end_of_stream,
                    error: s.error.map(|e| (e.name, e.message, e.user_error_code)),
                }),
            })
        }
        "invokeResponse" => {
            let invocation_id = raw
                .invocation_id
                .ok_or_else(|| decode_error("`invokeResponse` without an invocationId"))?;
            let result = if raw.success == Some(true) {
                match raw.data_type.as_deref() {
                    Some(data_type) => Ok(Some(json_payload(Some(data_type), raw.data)?)),
                    None => Ok(None),
                }
            } else {
                let error = raw.error.unwrap_or(RawAckError {
                    name: String::new(),
                    message: String::new(),
                });
                Err((error.name, error.message))
            };
            Incoming::InvokeResponse {
                invocation_id,
                result,
            }
        }
        "streamAck" | "streamNack" | "streamClosed" => {
            let stream_id = raw
                .stream_id
                .ok_or_else(|| decode_error("a stream message without a streamId"))?;
            let expected = || {
                raw.expected_sequence_id
                    .ok_or_else(|| decode_error("a stream message without an expectedSequenceId"))
            };
            match raw.kind.as_str() {
                "streamAck" => Incoming::StreamAck {
                    stream_id,
                    expected: expected()?,
                },
                "streamNack" => Incoming::StreamNack {
                    expected: expected()?,
                    stream_id,
                    name: raw.name.unwrap_or_default(),
                    message: raw.message.unwrap_or_default(),
                },
                _ => Incoming::StreamClosed {
                    stream_id,
                    error: raw.error.map(|e| (e.name, e.message)),
                },
            }
        }
        "pong" => Incoming::Pong,
        _ => Incoming::Unknown,
    })
}

fn json_payload(data_type: Option<&str>, data: Option<Value>) -> Result<Payload> {
    let data = data.unwrap_or(Value::Null);
    let string = |data: Value| match data {
        Value::String(s) => Ok(s),
        _ => Err(decode_error("`data` must be a string for this dataType")),
    };
    let base64 = |data: Value| {
        BASE64
            .decode(string(data)?)
            .map(Bytes::from)
            .map_err(decode_error)
    };
    match data_type.unwrap_or("json") {
        "json" => Ok(Payload::Json(data)),
        "text" => Ok(Payload::Text(string(data)?)),
        "binary" => Ok(Payload::Binary(base64(data)?)),
        "protobuf" => Any::decode(base64(data)?)
            .map(Payload::Protobuf)
            .map_err(decode_error),
        other => Err(decode_error(format!("unknown dataType `{other}`"))),
    }
}

fn decode_protobuf(bytes: Bytes) -> Result<Incoming> {
    use downstream_message::Message as M;
    use downstream_message::system_message::Message as S;
    let message = DownstreamMessage::decode(bytes).map_err(decode_error)?;
    Ok(match message.message {
        Some(M::SystemMessage(system)) => match system.message {
            Some(S::ConnectedMessage(c)) => Incoming::Connected {
                connection_id: c.connection_id,
                user_id: Some(c.user_id).filter(|u| !u.is_empty()),
                reconnection_token: c.reconnection_token,
            },
            Some(S::DisconnectedMessage(d)) => Incoming::Disconnected { reason: d.reason },
            None => Incoming::Unknown,
        },
        Some(M::AckMessage(ack)) => Incoming::Ack {
            ack_id: ack.ack_id,
            success: ack.success,
            error: ack.error.map(|e| (e.name, e.message)),
        },
        Some(M::DataMessage(data)) => {
            let payload = match data.data.and_then(|d| d.data) {
                Some(d) => protobuf_payload(d)?,
                None => return Err(decode_error("data message without data")),
            };
            let group = if data.from == "group" {
                Some(
                    data.group
                        .ok_or_else(|| decode_error("group message without a group"))?,
                )
            } else {
                None
            };
            Incoming::Data(Data {
                group,
                // Azure's protobuf protocol does not carry the sender's user id.
                from_user_id: None,
                payload,
                sequence_id: data.sequence_id,
                stream: data.stream.map(|s| StreamPlace {
                    stream_id: s.stream_id,
                    sequence_id: s.stream_sequence_id,
                    end: s.end_of_stream.unwrap_or(false),
                    error: s.error.map(|e| (e.name, e.message, e.user_error_code)),
                }),
            })
        }
        Some(M::InvokeResponseMessage(r)) => {
            let result = if r.success {
                Ok(r.data
                    .and_then(|d| d.data)
                    .map(protobuf_payload)
                    .transpose()?)
            } else {
                let error = r.error.unwrap_or_default();
                Err((error.name, error.message))
            };
            Incoming::InvokeResponse {
                invocation_id: r.invocation_id,
                result,
            }
        }
        Some(M::PongMessage(_)) => Incoming::Pong,
        Some(M::StreamAckMessage(a)) => Incoming::StreamAck {
            stream_id: a.stream_id,
            expected: a.expected_sequence_id,
        },
        Some(M::StreamNackMessage(n)) => Incoming::StreamNack {
            stream_id: n.stream_id,
            name: n.name,
            message: n.message,
            expected: n.expected_sequence_id,
        },
        Some(M::StreamClosedMessage(c)) => Incoming::StreamClosed {
            stream_id: c.stream_id,
            error: c.error.map(|e| (e.name, e.message)),
        },
        None => Incoming::Unknown,
    })
}

fn protobuf_payload(data: message_data::Data) -> Result<Payload> {
    use message_data::Data as D;
    Ok(match data {
        D::TextData(text) => Payload::Text(text),
        D::BinaryData(bytes) => Payload::Binary(bytes),
        D::ProtobufData(any) => Payload::Protobuf(any),
        D::JsonData(json) => Payload::Json(serde_json::from_str(&json).map_err(decode_error)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn json_of(message: WsMessage) -> Value {
        match message {
            WsMessage::Text(t) => serde_json::from_str(t.as_str()).expect("JSON"),
            other => panic!("expected text, got {other:?}"),
        }
    }

    #[test]
    fn invocations_encode_and_their_answers_decode() {
        let payload = Payload::Text("hi".into());
        let request = Request::Invoke {
            invocation_id: "7",
            event: "e",
            payload: &payload,
        };
        assert_eq!(
            json_of(encode(Protocol::Json, &request)),
            json!({"type":"invoke","invocationId":"7","target":"event","event":"e","dataType":"text","data":"hi"})
        );
        assert_eq!(
            json_of(encode(Protocol::Json, &Request::CancelInvocation("7"))),
            json!({"type":"cancelInvocation","invocationId":"7"})
        );
        let ok = decode_json(
            r#"{"type":"invokeResponse","invocationId":"7","success":true,"dataType":"json","data":{"a":1}}"#,
        )
        .expect("decodes");
        assert_eq!(
            ok,
            Incoming::InvokeResponse {
                invocation_id: "7".into(),
                result: Ok(Some(Payload::Json(json!({"a":1})))),
            }
        );
        let failed = decode_json(
            r#"{"type":"invokeResponse","invocationId":"8","success":false,"error":{"name":"Timeout","message":"late"}}"#,
        )
        .expect("decodes");
        assert_eq!(
            failed,
            Incoming::InvokeResponse {
                invocation_id: "8".into(),
                result: Err(("Timeout".into(), "late".into())),
            }
        );
    }

    #[test]
    fn encodes_json_requests_as_azure_does() {
        let p = Protocol::JsonReliable;
        assert_eq!(
            json_of(encode(
                p,
                &Request::JoinGroup {
                    group: "g",
                    ack_id: Some(1)
                }
            )),
            json!({"type": "joinGroup", "group": "g", "ackId": 1})
        );
        let payload = Payload::binary(vec![0u8, 1, 255]);
        assert_eq!(
            json_of(encode(
                p,
                &Request::SendToGroup {
                    group: "g",
                    ack_id: None,
                    no_echo: true,
                    payload: &payload
                }
            )),
            json!({"type": "sendToGroup", "group": "g", "noEcho": true,
                   "dataType": "binary", "data": "AAH/"})
        );
        assert_eq!(
            json_of(encode(p, &Request::SequenceAck(7))),
            json!({"type": "sequenceAck", "sequenceId": 7})
        );
        let payload = Payload::Json(json!({"a": [1]}));
        assert_eq!(
            json_of(encode(
                p,
                &Request::Event {
                    event: "e",
                    ack_id: Some(2),
                    payload: Some(&payload)
                }
            )),
            json!({"type": "event", "event": "e", "ackId": 2, "dataType": "json", "data": {"a": [1]}})
        );
    }

    #[test]
    fn decodes_json_messages() {
        let p = Protocol::JsonReliable;
        let text = |s: &str| WsMessage::Text(s.to_owned().into());
        assert_eq!(
            decode(
                p,
                &text(
                    r#"{"type":"system","event":"connected","userId":null,"connectionId":"c","reconnectionToken":"t"}"#
                )
            )
            .expect("decodes"),
            Incoming::Connected {
                connection_id: "c".into(),
                user_id: None,
                reconnection_token: Some("t".into())
            }
        );
        assert_eq!(
            decode(
                p,
                &text(
                    r#"{"type":"ack","ackId":3,"success":false,"error":{"name":"Duplicate","message":"m"}}"#
                )
            )
            .expect("decodes"),
            Incoming::Ack {
                ack_id: 3,
                success: false,
                error: Some(("Duplicate".into(), "m".into()))
            }
        );
        assert_eq!(
            decode(
                p,
                &text(
                    r#"{"type":"message","from":"group","fromUserId":"u","group":"g","dataType":"text","data":"hi","sequenceId":9}"#
                )
            )
            .expect("decodes"),
            Incoming::Data(Data {
                group: Some("g".into()),
                from_user_id: Some("u".into()),
                payload: Payload::Text("hi".into()),
                sequence_id: Some(9),
                stream: None
            })
        );
        assert_eq!(
            decode(
                p,
                &text(r#"{"type":"message","from":"server","dataType":"json","data":[1]}"#)
            )
            .expect("decodes"),
            Incoming::Data(Data {
                group: None,
                from_user_id: None,
                payload: Payload::Json(json!([1])),
                sequence_id: None,
                stream: None
            })
        );
        assert_eq!(
            decode(p, &text(r#"{"type":"somethingNew"}"#)).expect("decodes"),
            Incoming::Unknown
        );
        assert!(decode(p, &text("nope")).unwrap_err().is_decode());
        assert!(
            decode(p, &WsMessage::Binary(Bytes::new()))
                .unwrap_err()
                .is_decode()
        );
    }

    #[test]
    fn protobuf_payloads_survive_the_json_protocol() {
        let any = Any {
            type_url: "type.googleapis.com/x.Y".into(),
            value: vec![1, 2, 3],
        };
        let data = json_data(&Payload::Protobuf(any.clone()));
        assert_eq!(
            json_payload(Some("protobuf"), Some(data)).expect("decodes"),
            Payload::Protobuf(any)
        );
    }

    #[test]
    fn protobuf_round_trips_through_the_proto_types() {
        let payload = Payload::Json(json!({"n": 1}));
        let frame = encode(
            Protocol::ProtobufReliable,
            &Request::SendToGroup {
                group: "g",
                ack_id: Some(4),
                no_echo: false,
                payload: &payload,
            },
        );
        let WsMessage::Binary(bytes) = frame else {
            panic!("binary frame")
        };
        let up = UpstreamMessage::decode(bytes).expect("decodes");
        let Some(upstream_message::Message::SendToGroupMessage(m)) = up.message else {
            panic!("sendToGroup")
        };
        assert_eq!(
            (m.group.as_str(), m.ack_id, m.no_echo),
            ("g", Some(4), None)
        );
        assert_eq!(
            m.data.and_then(|d| d.data),
            Some(message_data::Data::JsonData(r#"{"n":1}"#.into()))
        );

        let down = DownstreamMessage {
            message: Some(downstream_message::Message::DataMessage(
                downstream_message::DataMessage {
                    from: "group".into(),
                    group: Some("g".into()),
                    data: Some(MessageData {
                        data: Some(message_data::Data::JsonData(r#"{"n":2}"#.into())),
                    }),
                    sequence_id: Some(5),
                    metadata: Default::default(),
                    stream: None,
                },
            )),
        };
        let frame = WsMessage::Binary(Bytes::from(down.encode_to_vec()));
        assert_eq!(
            decode(Protocol::ProtobufReliable, &frame).expect("decodes"),
            Incoming::Data(Data {
                group: Some("g".into()),
                from_user_id: None,
                payload: Payload::Json(json!({"n": 2})),
                sequence_id: Some(5),
                stream: None,
            })
        );
    }
}
