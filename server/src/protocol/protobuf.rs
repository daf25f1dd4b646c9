//! `protobuf.webpubsub.azure.v1` (and its reliable variant): one `UpstreamMessage` or
//! `DownstreamMessage` per binary frame (spec §3.5; `proto/hubcast/v1/client.proto`).
//!
//! Client messages are decoded with the generated prost types and mapped onto the same
//! [`ClientMessage`] as JSON, so both formats share one handler. Data messages, the only
//! messages fanned out to many clients, are encoded by hand: the `DataMessage` is written once,
//! and a reliable client's `sequence_id` (field 4) is appended to the shared bytes when the
//! frame is written, since protobuf fields may come in any order.

use std::borrow::Cow;

use bytes::{BufMut as _, Bytes, BytesMut};
use hubcast_proto::v1::{
    DownstreamMessage, MessageData, StreamError, UpstreamMessage, downstream_message, message_data,
    upstream_message,
};
use prost::Message as _;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};

use super::json::{AckError, ClientMessage, ParseError};
use crate::message::{Data, Message, Source};

/// Field numbers of the hand-encoded messages (client.proto).
mod field {
    pub(super) const DOWNSTREAM_DATA_MESSAGE: u32 = 2;
    pub(super) const DATA_FROM: u32 = 1;
    pub(super) const DATA_GROUP: u32 = 2;
    pub(super) const DATA_DATA: u32 = 3;
    pub(super) const DATA_SEQUENCE_ID: u32 = 4;
    pub(super) const DATA_METADATA: u32 = 5;
    pub(super) const DATA_STREAM: u32 = 100;
    pub(super) const TEXT_DATA: u32 = 1;
    pub(super) const BINARY_DATA: u32 = 2;
    pub(super) const PROTOBUF_DATA: u32 = 3;
    pub(super) const JSON_DATA: u32 = 4;
}

/// Parses one binary frame from a protobuf client.
///
/// # Errors
/// [`ParseError::Malformed`] when the bytes are not an `UpstreamMessage`;
/// [`ParseError::Invalid`] when a message lacks what it needs (no data, JSON that is not
/// JSON).
pub fn parse(frame: &Bytes) -> Result<ClientMessage<'static>, ParseError> {
    let message =
        UpstreamMessage::decode(frame.clone()).map_err(|e| ParseError::Malformed(e.to_string()))?;
    use upstream_message::Message as M;
    Ok(match message.message {
        Some(M::JoinGroupMessage(m)) => ClientMessage::JoinGroup {
            group: Cow::Owned(m.group),
            ack_id: m.ack_id,
        },
        Some(M::LeaveGroupMessage(m)) => ClientMessage::LeaveGroup {
            group: Cow::Owned(m.group),
            ack_id: m.ack_id,
        },
        Some(M::SendToGroupMessage(m)) if m.stream.is_some() => {
            let stream = m.stream.unwrap_or_default();
            if m.data.is_some() {
                return Err(ParseError::InvalidStreamStart {
                    stream_id: stream.stream_id,
                    message: "A 'sendToGroup' that opens a stream carries no 'data': send it with 'streamData'."
                        .into(),
                });
            }
            if stream.stream_id.is_empty() {
                return Err(ParseError::Invalid {
                    ack_id: m.ack_id,
                    message: "'stream' requires a non-empty 'streamId'".into(),
                });
            }
            ClientMessage::StreamStart {
                group: Cow::Owned(m.group),
                no_echo: m.no_echo.unwrap_or(false),
                stream_id: Cow::Owned(stream.stream_id),
                idle_timeout_ms: stream.idle_timeout_ms.map(u64::from),
            }
        }
        Some(M::SendToGroupMessage(m)) => {
            let invalid = |message: String| ParseError::Invalid {
                ack_id: m.ack_id,
                message,
            };
            let data = m
                .data
                .ok_or_else(|| invalid("'sendToGroup' requires 'data'".into()))
                .and_then(|d| decode_data(d).map_err(invalid))?;
            ClientMessage::SendToGroup {
                group: Cow::Owned(m.group),
                ack_id: m.ack_id,
                no_echo: m.no_echo.unwrap_or(false),
                data,
            }
        }
        Some(M::EventMessage(m)) => {
            if m.event.is_empty() {
                return Err(ParseError::Invalid {
                    ack_id: m.ack_id,
                    message: "'event' requires a non-empty 'event' name".into(),
                });
            }
            let data =
                m.data
                    .map(decode_data)
                    .transpose()
                    .map_err(|message| ParseError::Invalid {
                        ack_id: m.ack_id,
                        message,
                    })?;
            let metadata = crate::message::metadata_from(m.metadata).map_err(|message| {
                ParseError::Invalid {
                    ack_id: m.ack_id,
                    message,
                }
            })?;
            ClientMessage::Event {
                event: Cow::Owned(m.event),
                ack_id: m.ack_id,
                data,
                metadata,
            }
        }
        Some(M::SequenceAckMessage(m)) => ClientMessage::SequenceAck {
            sequence_id: m.sequence_id,
        },
        Some(M::PingMessage(_)) => ClientMessage::Ping,
        Some(M::InvokeMessage(m)) => {
            if m.invocation_id.is_empty() {
                return Err(ParseError::Malformed(
                    "'invoke' requires a non-empty 'invocationId'".into(),
                ));
            }
            let invalid = |message: String| ParseError::InvalidInvocation {
                invocation_id: m.invocation_id.clone(),
                message,
            };
            if !m.target.is_empty() && !m.target.eq_ignore_ascii_case("event") {
                return Err(invalid(format!(
                    "Unsupported invoke target '{}': the only target is 'event'.",
                    m.target
                )));
            }
            if m.event.is_empty() {
                return Err(invalid("'invoke' requires a non-empty 'event' name".into()));
            }
            let data = m.data.map(decode_data).transpose().map_err(invalid)?;
            let metadata = crate::message::metadata_from(m.metadata).map_err(invalid)?;
            ClientMessage::Invoke {
                invocation_id: Cow::Owned(m.invocation_id),
                event: Cow::Owned(m.event),
                data,
                metadata,
            }
        }
        Some(M::CancelInvocationMessage(m)) => {
            if m.invocation_id.is_empty() {
                return Err(ParseError::Malformed(
                    "'cancelInvocation' requires a non-empty 'invocationId'".into(),
                ));
            }
            ClientMessage::CancelInvocation {
                invocation_id: Cow::Owned(m.invocation_id),
            }
        }
        Some(M::StreamDataMessage(m)) => {
            if m.stream_id.is_empty() {
                return Err(ParseError::Malformed(
                    "'streamData' requires a non-empty 'streamId'".into(),
                ));
            }
            let invalid = |message: String| ParseError::InvalidStreamData {
                stream_id: m.stream_id.clone(),
                message,
            };
            let chunk = match (m.stream_sequence_id, m.data) {
                (None, None) => None,
                (Some(id), Some(data)) if id > 0 => Some((id, decode_data(data).map_err(invalid)?)),
                _ => {
                    return Err(invalid(
                        "'streamData' takes a 'streamSequenceId' (from 1) with 'data', or neither (a keep-alive)"
                            .into(),
                    ));
                }
            };
            ClientMessage::StreamData {
                stream_id: Cow::Owned(m.stream_id),
                chunk,
            }
        }
        Some(M::StreamEndMessage(m)) => {
            if m.stream_id.is_empty() {
                return Err(ParseError::Malformed(
                    "'streamEnd' requires a non-empty 'streamId'".into(),
                ));
            }
            ClientMessage::StreamEnd {
                stream_id: Cow::Owned(m.stream_id),
                error: m.error.map(|e| {
                    (
                        e.message.unwrap_or_else(|| {
                            "The publisher ended the stream with an error.".into()
                        }),
                        e.user_error_code,
                    )
                }),
            }
        }
        None => ClientMessage::Unsupported {
            kind: Cow::Borrowed("(empty or unknown message)"),
            ack_id: None,
        },
    })
}

/// Maps `MessageData` onto a payload. `json_data` must be JSON: it reaches JSON clients
/// verbatim.
fn decode_data(data: MessageData) -> Result<Data, String> {
    use message_data::Data as D;
    match data.data {
        Some(D::TextData(text)) => Ok(Data::Text(text.into())),
        Some(D::BinaryData(bytes)) => Ok(Data::Binary(bytes)),
        Some(D::ProtobufData(any)) => Ok(Data::Protobuf(Bytes::from(any.encode_to_vec()))),
        Some(D::JsonData(json)) => {
            serde_json::from_str::<serde::de::IgnoredAny>(&json)
                .map_err(|e| format!("'json_data' is not valid JSON: {e}"))?;
            Ok(Data::Json(json.into()))
        }
        None => Err("'data' has no payload set".into()),
    }
}

/// Renders a data message as a `DownstreamMessage` frame. The `DataMessage` has no
/// `fromUserId` in this protocol.
pub fn encode_message(message: &Message) -> Bytes {
    let inner = encode_data_message(message);
    let mut frame = BytesMut::with_capacity(inner.len() + 6);
    put_bytes(&mut frame, field::DOWNSTREAM_DATA_MESSAGE, &inner);
    frame.freeze()
}

/// The `DataMessage` of a data message, without the `DownstreamMessage` around it: what
/// reliable clients share, each writer putting its own head with the sequence id in front
/// ([`sequence_head`]).
pub fn encode_data_message(message: &Message) -> Bytes {
    let mut inner = BytesMut::with_capacity(message.data.len() + 64);
    let (from, group) = match &message.source {
        Source::Group { group, .. } => ("group", Some(&**group)),
        Source::Server => ("server", None),
    };
    put_bytes(&mut inner, field::DATA_FROM, from.as_bytes());
    if let Some(group) = group {
        put_bytes(&mut inner, field::DATA_GROUP, group.as_bytes());
    }
    let (tag, payload): (u32, &[u8]) = match &message.data {
        Data::Text(t) => (field::TEXT_DATA, t.as_bytes()),
        Data::Json(t) => (field::JSON_DATA, t.as_bytes()),
        Data::Binary(b) => (field::BINARY_DATA, b),
        // The serialized `google.protobuf.Any` is exactly the embedded message's bytes.
        Data::Protobuf(b) => (field::PROTOBUF_DATA, b),
    };
    let data_len = key_len(tag) + encoded_len_varint(payload.len() as u64) + payload.len();
    encode_key(field::DATA_DATA, WireType::LengthDelimited, &mut inner);
    encode_varint(data_len as u64, &mut inner);
    put_bytes(&mut inner, tag, payload);
    // A map field is a repeated entry message: key = 1, value = 2.
    for (key, value) in message.metadata.iter().flat_map(|m| m.iter()) {
        let mut entry = BytesMut::with_capacity(key.len() + value.len() + 4);
        put_bytes(&mut entry, 1, key.as_bytes());
        put_bytes(&mut entry, 2, value.as_bytes());
        put_bytes(&mut inner, field::DATA_METADATA, &entry);
    }
    if let Some(stream) = &message.stream {
        let info = downstream_message::StreamInfo {
            stream_id: stream.stream_id.to_string(),
            stream_sequence_id: stream.sequence_id,
            end_of_stream: stream.end.then_some(true),
            error: stream.error.as_ref().map(|e| StreamError {
                name: e.name.to_owned(),
                message: e.message.clone(),
                user_error_code: e.user_error_code.clone(),
            }),
        };
        put_bytes(&mut inner, field::DATA_STREAM, &info.encode_to_vec());
    }
    inner.freeze()
}

/// Writes the head of a numbered data message for a reliable client: the `data_message`
/// key, the length, and `sequence_id` as the first field of the `DataMessage` (protobuf
/// fields may come in any order). The shared [`encode_data_message`] bytes (`body_len` of
/// them) follow it.
pub fn sequence_head(id: u64, body_len: usize, head: &mut BytesMut) {
    let extra = key_len(field::DATA_SEQUENCE_ID) + encoded_len_varint(id);
    encode_key(
        field::DOWNSTREAM_DATA_MESSAGE,
        WireType::LengthDelimited,
        head,
    );
    encode_varint((body_len + extra) as u64, head);
    encode_key(field::DATA_SEQUENCE_ID, WireType::Varint, head);
    encode_varint(id, head);
}

fn key_len(tag: u32) -> usize {
    encoded_len_varint(u64::from(tag << 3))
}

fn put_bytes(buf: &mut BytesMut, tag: u32, bytes: &[u8]) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(bytes.len() as u64, buf);
    buf.put_slice(bytes);
}

fn downstream(message: downstream_message::Message) -> Bytes {
    Bytes::from(
        DownstreamMessage {
            message: Some(message),
        }
        .encode_to_vec(),
    )
}

/// The `connected` system message.
pub fn encode_connected(
    user_id: Option<&str>,
    connection_id: &str,
    reconnection_token: Option<&str>,
) -> Bytes {
    use downstream_message::system_message::{ConnectedMessage, Message as S};
    downstream(downstream_message::Message::SystemMessage(
        downstream_message::SystemMessage {
            message: Some(S::ConnectedMessage(ConnectedMessage {
                connection_id: connection_id.to_owned(),
                user_id: user_id.unwrap_or_default().to_owned(),
                reconnection_token: reconnection_token.map(str::to_owned),
            })),
        },
    ))
}

/// The `disconnected` system message.
pub fn encode_disconnected(reason: &str) -> Bytes {
    use downstream_message::system_message::{DisconnectedMessage, Message as S};
    downstream(downstream_message::Message::SystemMessage(
        downstream_message::SystemMessage {
            message: Some(S::DisconnectedMessage(DisconnectedMessage {
                reason: reason.to_owned(),
            })),
        },
    ))
}

/// An ack.
pub fn encode_ack(ack_id: u64, error: Option<(AckError, &str)>) -> Bytes {
    use downstream_message::ack_message::ErrorMessage;
    downstream(downstream_message::Message::AckMessage(
        downstream_message::AckMessage {
            ack_id,
            success: error.is_none(),
            error: error.map(|(name, message)| ErrorMessage {
                name: name.name().to_owned(),
                message: message.to_owned(),
            }),
        },
    ))
}

/// A payload as the generated `MessageData`.
fn message_data(data: &Data) -> MessageData {
    use message_data::Data as D;
    MessageData {
        data: Some(match data {
            Data::Text(t) => D::TextData(t.to_string()),
            Data::Json(t) => D::JsonData(t.to_string()),
            Data::Binary(b) => D::BinaryData(b.clone()),
            Data::Protobuf(b) => {
                D::ProtobufData(prost_types::Any::decode(b.clone()).unwrap_or_default())
            }
        }),
    }
}

/// The answer to an invocation.
pub fn encode_invoke_response(
    invocation_id: &str,
    result: Result<Option<&Data>, (&str, &str)>,
) -> Bytes {
    use downstream_message::invoke_response_message::InvokeError;
    let (success, data, error) = match result {
        Ok(data) => (true, data.map(message_data), None),
        Err((name, message)) => (
            false,
            None,
            Some(InvokeError {
                name: name.to_owned(),
                message: message.to_owned(),
            }),
        ),
    };
    downstream(downstream_message::Message::InvokeResponseMessage(
        downstream_message::InvokeResponseMessage {
            invocation_id: invocation_id.to_owned(),
            success,
            data,
            error,
        },
    ))
}

/// `streamAck`.
pub fn encode_stream_ack(stream_id: &str, expected: u64) -> Bytes {
    downstream(downstream_message::Message::StreamAckMessage(
        downstream_message::StreamAckMessage {
            stream_id: stream_id.to_owned(),
            expected_sequence_id: expected,
        },
    ))
}

/// `streamNack`.
pub fn encode_stream_nack(stream_id: &str, name: &str, message: &str, expected: u64) -> Bytes {
    downstream(downstream_message::Message::StreamNackMessage(
        downstream_message::StreamNackMessage {
            stream_id: stream_id.to_owned(),
            name: name.to_owned(),
            message: message.to_owned(),
            expected_sequence_id: expected,
        },
    ))
}

/// `streamClosed`.
pub fn encode_stream_closed(stream_id: &str, error: Option<(&str, &str)>) -> Bytes {
    downstream(downstream_message::Message::StreamClosedMessage(
        downstream_message::StreamClosedMessage {
            stream_id: stream_id.to_owned(),
            error: error.map(|(name, message)| StreamError {
                name: name.to_owned(),
                message: message.to_owned(),
                user_error_code: None,
            }),
        },
    ))
}

/// The answer to a ping.
pub fn encode_pong() -> Bytes {
    downstream(downstream_message::Message::PongMessage(
        downstream_message::PongMessage {},
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hubcast_proto::v1::downstream_message::Message as Down;

    fn decode(bytes: &Bytes) -> downstream_message::Message {
        DownstreamMessage::decode(bytes.clone())
            .expect("valid DownstreamMessage")
            .message
            .expect("a message")
    }

    #[test]
    fn parses_azure_encoded_frames() {
        // joinGroup{group:"g", ackId:1} exactly as Azure's clients encode it.
        let frame = Bytes::from_static(&[0x32, 0x05, 0x0a, 0x01, b'g', 0x10, 0x01]);
        assert_eq!(
            parse(&frame),
            Ok(ClientMessage::JoinGroup {
                group: "g".into(),
                ack_id: Some(1)
            })
        );
        assert!(matches!(
            parse(&Bytes::from_static(&[0xff, 0xff])),
            Err(ParseError::Malformed(_))
        ));
    }

    #[test]
    fn maps_every_payload_kind() {
        use upstream_message::{Message as M, SendToGroupMessage};
        let send = |data: message_data::Data| {
            let m = UpstreamMessage {
                message: Some(M::SendToGroupMessage(SendToGroupMessage {
                    group: "g".into(),
                    ack_id: Some(3),
                    data: Some(MessageData { data: Some(data) }),
                    no_echo: Some(true),
                    ..Default::default()
                })),
            };
            parse(&Bytes::from(m.encode_to_vec()))
        };
        let data_of = |r: Result<ClientMessage<'static>, ParseError>| match r {
            Ok(ClientMessage::SendToGroup { data, no_echo, .. }) => {
                assert!(no_echo);
                Ok(data)
            }
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e),
        };
        use message_data::Data as D;
        assert_eq!(
            data_of(send(D::TextData("hi".into()))),
            Ok(Data::Text("hi".into()))
        );
        assert_eq!(
            data_of(send(D::JsonData("{\"a\":1}".into()))),
            Ok(Data::Json("{\"a\":1}".into()))
        );
        assert!(matches!(
            data_of(send(D::JsonData("{nope".into()))),
            Err(ParseError::Invalid {
                ack_id: Some(3),
                ..
            })
        ));
        let any = prost_types::Any {
            type_url: "type.googleapis.com/x.Y".into(),
            value: vec![1, 2, 3],
        };
        assert_eq!(
            data_of(send(D::ProtobufData(any.clone()))),
            Ok(Data::Protobuf(Bytes::from(any.encode_to_vec())))
        );
    }

    #[test]
    fn invocations_and_streams_parse_and_answer() {
        use upstream_message::Message as M;
        let frame = |m: M| Bytes::from(UpstreamMessage { message: Some(m) }.encode_to_vec());
        let invoke = frame(M::InvokeMessage(upstream_message::InvokeMessage {
            invocation_id: "i".into(),
            target: "event".into(),
            event: "e".into(),
            data: Some(MessageData {
                data: Some(message_data::Data::TextData("x".into())),
            }),
            metadata: Default::default(),
        }));
        assert!(matches!(
            parse(&invoke),
            Ok(ClientMessage::Invoke { invocation_id, data: Some(Data::Text(_)), .. }) if invocation_id == "i"
        ));
        let no_id = frame(M::InvokeMessage(upstream_message::InvokeMessage {
            event: "e".into(),
            ..Default::default()
        }));
        assert!(matches!(parse(&no_id), Err(ParseError::Malformed(_))));
        let chunk = frame(M::StreamDataMessage(upstream_message::StreamDataMessage {
            stream_id: "s".into(),
            stream_sequence_id: Some(2),
            data: Some(MessageData {
                data: Some(message_data::Data::TextData("c".into())),
            }),
        }));
        assert!(matches!(
            parse(&chunk),
            Ok(ClientMessage::StreamData {
                chunk: Some((2, _)),
                ..
            })
        ));
        let Down::InvokeResponseMessage(r) =
            decode(&encode_invoke_response("i", Err(("Timeout", "late"))))
        else {
            panic!("invokeResponse expected");
        };
        assert_eq!(
            (r.success, r.error.map(|e| e.name)),
            (false, Some("Timeout".into()))
        );
        let Down::StreamNackMessage(n) =
            decode(&encode_stream_nack("s", "InvalidSequenceId", "m", 3))
        else {
            panic!("streamNack expected");
        };
        assert_eq!(n.expected_sequence_id, 3);
        let message = Message::to_group("g", None, Data::Text("c".into())).with_stream(Some(
            std::sync::Arc::new(crate::message::StreamInfo {
                stream_id: "s".into(),
                sequence_id: 5,
                end: true,
                error: None,
            }),
        ));
        let Down::DataMessage(m) = decode(&encode_message(&message)) else {
            panic!("data message expected");
        };
        let stream = m.stream.expect("stream info");
        assert_eq!(
            (
                stream.stream_id.as_str(),
                stream.stream_sequence_id,
                stream.end_of_stream
            ),
            ("s", 5, Some(true))
        );
    }

    #[test]
    fn metadata_is_the_data_message_map() {
        let metadata = crate::message::metadata_from([
            ("A".to_owned(), "1".to_owned()),
            ("b".to_owned(), "two".to_owned()),
        ])
        .expect("valid");
        let message = Message::from_server(Data::Text("x".into())).with_metadata(metadata);
        let Down::DataMessage(m) = decode(&encode_message(&message)) else {
            panic!("data message expected");
        };
        assert_eq!(
            m.metadata,
            [("a".into(), "1".into()), ("b".into(), "two".into())]
                .into_iter()
                .collect()
        );
    }

    #[test]
    fn data_messages_decode_with_the_generated_types() {
        let any = prost_types::Any {
            type_url: "type.googleapis.com/x.Y".into(),
            value: vec![9],
        };
        for data in [
            Data::Text("hé".into()),
            Data::Json("[1]".into()),
            Data::Binary(Bytes::from_static(&[0, 1])),
            Data::Protobuf(Bytes::from(any.encode_to_vec())),
        ] {
            let frame = encode_message(&Message::to_group("room", Some("u".into()), data.clone()));
            let Down::DataMessage(m) = decode(&frame) else {
                panic!("data message expected");
            };
            assert_eq!(m.from, "group");
            assert_eq!(m.group.as_deref(), Some("room"));
            assert_eq!(m.sequence_id, None);
            let body = encode_data_message(&Message::to_group("room", None, data.clone()));
            let expected = match data {
                Data::Text(t) => message_data::Data::TextData(t.to_string()),
                Data::Json(t) => message_data::Data::JsonData(t.to_string()),
                Data::Binary(b) => message_data::Data::BinaryData(b),
                Data::Protobuf(_) => message_data::Data::ProtobufData(any.clone()),
            };
            assert_eq!(m.data.and_then(|d| d.data), Some(expected));

            let mut head = BytesMut::new();
            sequence_head(300, body.len(), &mut head);
            let spliced = Bytes::from([&head[..], &body[..]].concat());
            let Down::DataMessage(m) = decode(&spliced) else {
                panic!("data message expected");
            };
            assert_eq!(m.sequence_id, Some(300));
            assert_eq!(m.group.as_deref(), Some("room"));
        }
        let server = encode_message(&Message::from_server(Data::Text("x".into())));
        let Down::DataMessage(m) = decode(&server) else {
            panic!("data message expected");
        };
        assert_eq!((m.from.as_str(), m.group), ("server", None));
    }

    #[test]
    fn system_messages_and_acks_round_trip() {
        use downstream_message::system_message::Message as S;
        let Down::SystemMessage(s) = decode(&encode_connected(Some("u"), "c", Some("t"))) else {
            panic!()
        };
        let Some(S::ConnectedMessage(c)) = s.message else {
            panic!()
        };
        assert_eq!((c.connection_id.as_str(), c.user_id.as_str()), ("c", "u"));
        assert_eq!(c.reconnection_token.as_deref(), Some("t"));
        let Down::AckMessage(a) = decode(&encode_ack(5, Some((AckError::Forbidden, "no")))) else {
            panic!()
        };
        assert_eq!((a.ack_id, a.success), (5, false));
        assert_eq!(a.error.map(|e| e.name), Some("Forbidden".into()));
        assert!(matches!(decode(&encode_pong()), Down::PongMessage(_)));
    }
}
