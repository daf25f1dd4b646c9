//! `json.webpubsub.azure.v1`: client messages in, server messages out (spec §3.1–3.3).
//!
//! Parsing borrows from the frame and keeps a `json` payload as its raw text, so a message
//! that is forwarded to a group is never re-serialized. Encoding writes the envelope by hand
//! around that raw text, in the field order Azure uses.

use std::borrow::Cow;

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use bytes::{Bytes, BytesMut};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::message::{Data, GroupStateItem, Message, Metadata, Source, Utf8Bytes, metadata_from};

/// Standard base64 (Azure's `binary` and `protobuf` payloads), tolerant of missing padding
/// on input, always padded on output.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A message from a JSON client.
#[derive(Debug, PartialEq, Eq)]
pub enum ClientMessage<'a> {
    /// `joinGroup`.
    JoinGroup {
        /// The group.
        group: Cow<'a, str>,
        /// Ack requested with this id.
        ack_id: Option<u64>,
    },
    /// `leaveGroup`.
    LeaveGroup {
        /// The group.
        group: Cow<'a, str>,
        /// Ack requested with this id.
        ack_id: Option<u64>,
    },
    /// `sendToGroup`.
    SendToGroup {
        /// The group.
        group: Cow<'a, str>,
        /// Ack requested with this id.
        ack_id: Option<u64>,
        /// Do not deliver to the sender.
        no_echo: bool,
        /// The payload.
        data: Data,
    },
    /// `event`: a user event for the upstream handler.
    Event {
        /// The event name.
        event: Cow<'a, str>,
        /// Ack requested with this id.
        ack_id: Option<u64>,
        /// The payload, if any.
        data: Option<Data>,
        /// Its metadata, if any (`x-webpubsub-metadata-<key>` upstream).
        metadata: Option<Metadata>,
    },
    /// `sequenceAck` (reliable subprotocols only).
    SequenceAck {
        /// Everything up to this id has been received.
        sequence_id: u64,
    },
    /// `ping`: answered with `pong`.
    Ping,
    /// `invoke` with `target` `event` (or none): a user event whose answer goes back to the
    /// client as `invokeResponse` with the same `invocationId`.
    Invoke {
        /// The client's id of the call, echoed in the answer.
        invocation_id: Cow<'a, str>,
        /// The event name.
        event: Cow<'a, str>,
        /// The payload, if any.
        data: Option<Data>,
        /// Its metadata, if any.
        metadata: Option<Metadata>,
    },
    /// `setGroupState`: sets (or, without `state`, clears) this connection's state in a group.
    SetGroupState {
        /// The group.
        group: Cow<'a, str>,
        /// Ack requested with this id.
        ack_id: Option<u64>,
        /// The new state; `None` clears it.
        state: Option<std::collections::BTreeMap<String, String>>,
    },
    /// `subscribeGroupState`: a `groupStateSnapshot` now, `groupStateUpdate`s from then on.
    SubscribeGroupState {
        /// The group.
        group: Cow<'a, str>,
        /// Ack requested with this id.
        ack_id: Option<u64>,
    },
    /// `unsubscribeGroupState`.
    UnsubscribeGroupState {
        /// The group.
        group: Cow<'a, str>,
        /// Ack requested with this id.
        ack_id: Option<u64>,
    },
    /// `sendToGroup` with `stream{streamId, idleTimeoutMs?}` and no data: opens a group
    /// stream.
    StreamStart {
        /// The group.
        group: Cow<'a, str>,
        /// Do not deliver to the sender.
        no_echo: bool,
        /// The stream's id.
        stream_id: Cow<'a, str>,
        /// Milliseconds without `streamData` after which the stream is closed.
        idle_timeout_ms: Option<u64>,
    },
    /// `streamData`: a chunk (`streamSequenceId` with data), or a keep-alive (neither).
    StreamData {
        /// The stream's id.
        stream_id: Cow<'a, str>,
        /// The chunk's number and payload; `None` for a keep-alive.
        chunk: Option<(u64, Data)>,
    },
    /// `streamEnd`, with the publisher's error if it gives up.
    StreamEnd {
        /// The stream's id.
        stream_id: Cow<'a, str>,
        /// `error{message, userErrorCode}`.
        error: Option<(String, Option<String>)>,
    },
    /// `cancelInvocation`: the client no longer waits for this call.
    CancelInvocation {
        /// The id of the call.
        invocation_id: Cow<'a, str>,
    },
    /// A well-formed message of a type this server does not handle.
    Unsupported {
        /// The `type` as sent.
        kind: Cow<'a, str>,
        /// Ack requested with this id.
        ack_id: Option<u64>,
    },
}

/// Why a client frame was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Not a JSON object with a string `type`, or a field of the wrong JSON type: the
    /// connection is closed with 1007, as Azure does.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// Well-formed but invalid (missing group, bad base64, unknown dataType, ...): answered
    /// with a `BadRequest` ack when the message asked for one.
    #[error("{message}")]
    Invalid {
        /// The request's ack id, if any.
        ack_id: Option<u64>,
        /// What is wrong.
        message: String,
    },
    /// A `streamData` that names its stream but is invalid (a number without data, bad data):
    /// answered with a `streamNack` (`BadRequest`) when the stream is open.
    #[error("{message}")]
    InvalidStreamData {
        /// The stream's id.
        stream_id: String,
        /// What is wrong.
        message: String,
    },
    /// A stream start (`sendToGroup` with `stream`) that is invalid (it carries data):
    /// answered with `streamClosed` (`BadRequest`).
    #[error("{message}")]
    InvalidStreamStart {
        /// The stream's id.
        stream_id: String,
        /// What is wrong.
        message: String,
    },
    /// An `invoke` that names its call but is invalid (unknown `target`, no `event`, bad
    /// data): answered with a failed `invokeResponse` of that id.
    #[error("{message}")]
    InvalidInvocation {
        /// The call's id.
        invocation_id: String,
        /// What is wrong.
        message: String,
    },
}

#[derive(Deserialize)]
struct Raw<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(rename = "ackId", default)]
    ack_id: Option<u64>,
    #[serde(borrow, default)]
    group: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    event: Option<Cow<'a, str>>,
    #[serde(rename = "dataType", borrow, default)]
    data_type: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
    #[serde(rename = "noEcho", default)]
    no_echo: Option<bool>,
    #[serde(rename = "sequenceId", default)]
    sequence_id: Option<u64>,
    #[serde(rename = "invocationId", borrow, default)]
    invocation_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    target: Option<Cow<'a, str>>,
    #[serde(default)]
    metadata: Option<std::collections::BTreeMap<String, String>>,
    #[serde(default)]
    state: Option<std::collections::BTreeMap<String, String>>,
    #[serde(default)]
    stream: Option<RawStreamStart>,
    #[serde(rename = "streamId", borrow, default)]
    stream_id: Option<Cow<'a, str>>,
    #[serde(rename = "streamSequenceId", default)]
    stream_sequence_id: Option<u64>,
    #[serde(default)]
    error: Option<RawStreamError>,
}

#[derive(Deserialize)]
struct RawStreamStart {
    #[serde(rename = "streamId")]
    stream_id: String,
    #[serde(rename = "idleTimeoutMs", default)]
    idle_timeout_ms: Option<u64>,
}

#[derive(Deserialize)]
struct RawStreamError {
    #[serde(default)]
    message: Option<String>,
    #[serde(rename = "userErrorCode", default)]
    user_error_code: Option<String>,
}

/// Parses one text frame from a JSON client. Message types match case-insensitively.
///
/// # Errors
/// [`ParseError::Malformed`] for anything that is not a message object;
/// [`ParseError::Invalid`] for a message missing what its type requires.
pub fn parse(text: &str) -> Result<ClientMessage<'_>, ParseError> {
    let raw: Raw<'_> =
        serde_json::from_str(text).map_err(|e| ParseError::Malformed(e.to_string()))?;
    let ack_id = raw.ack_id;
    let invalid = |message: String| ParseError::Invalid { ack_id, message };
    let kind = raw.kind.as_ref();
    let is = |name: &str| kind.eq_ignore_ascii_case(name);
    if is("joinGroup") || is("leaveGroup") {
        let group = raw
            .group
            .ok_or_else(|| invalid(format!("'{kind}' requires a 'group'")))?;
        return Ok(if is("joinGroup") {
            ClientMessage::JoinGroup { group, ack_id }
        } else {
            ClientMessage::LeaveGroup { group, ack_id }
        });
    }
    if is("setGroupState") || is("subscribeGroupState") || is("unsubscribeGroupState") {
        let group = raw
            .group
            .ok_or_else(|| invalid(format!("'{kind}' requires a 'group'")))?;
        return Ok(if is("setGroupState") {
            if let Some(state) = &raw.state {
                crate::message::check_group_state(state).map_err(invalid)?;
            }
            ClientMessage::SetGroupState {
                group,
                ack_id,
                state: raw.state,
            }
        } else if is("subscribeGroupState") {
            ClientMessage::SubscribeGroupState { group, ack_id }
        } else {
            ClientMessage::UnsubscribeGroupState { group, ack_id }
        });
    }
    if is("streamData") || is("streamEnd") {
        // Without a stream id no answer can reach the publisher: the frame is malformed.
        let stream_id = raw.stream_id.filter(|id| !id.is_empty()).ok_or_else(|| {
            ParseError::Malformed(format!("'{kind}' requires a non-empty string 'streamId'"))
        })?;
        if is("streamEnd") {
            let error = raw.error.map(|e| {
                (
                    e.message
                        .unwrap_or_else(|| "The publisher ended the stream with an error.".into()),
                    e.user_error_code,
                )
            });
            return Ok(ClientMessage::StreamEnd { stream_id, error });
        }
        let invalid = |message: String| ParseError::InvalidStreamData {
            stream_id: stream_id.clone().into_owned(),
            message,
        };
        let chunk = match (raw.stream_sequence_id, raw.data) {
            (None, None) => None,
            (Some(id), Some(data)) if id > 0 => Some((
                id,
                decode_data(raw.data_type.as_deref(), data).map_err(invalid)?,
            )),
            _ => {
                return Err(invalid(
                    "'streamData' takes a 'streamSequenceId' (from 1) with 'data', or neither (a keep-alive)"
                        .into(),
                ));
            }
        };
        return Ok(ClientMessage::StreamData { stream_id, chunk });
    }
    if is("sendToGroup") {
        let group = raw
            .group
            .ok_or_else(|| invalid("'sendToGroup' requires a 'group'".into()))?;
        if let Some(stream) = raw.stream {
            if raw.data.is_some() {
                return Err(ParseError::InvalidStreamStart {
                    stream_id: stream.stream_id,
                    message: "A 'sendToGroup' that opens a stream carries no 'data': send it with 'streamData'."
                        .into(),
                });
            }
            if stream.stream_id.is_empty() {
                return Err(invalid("'stream' requires a non-empty 'streamId'".into()));
            }
            return Ok(ClientMessage::StreamStart {
                group,
                no_echo: raw.no_echo.unwrap_or(false),
                stream_id: Cow::Owned(stream.stream_id),
                idle_timeout_ms: stream.idle_timeout_ms,
            });
        }
        let data = raw
            .data
            .ok_or_else(|| invalid("'sendToGroup' requires non-null 'data'".into()))?;
        let data = decode_data(raw.data_type.as_deref(), data).map_err(invalid)?;
        return Ok(ClientMessage::SendToGroup {
            group,
            ack_id,
            no_echo: raw.no_echo.unwrap_or(false),
            data,
        });
    }
    if is("event") {
        let event = raw
            .event
            .filter(|e| !e.is_empty())
            .ok_or_else(|| invalid("'event' requires a non-empty 'event' name".into()))?;
        let data = raw
            .data
            .map(|d| decode_data(raw.data_type.as_deref(), d))
            .transpose()
            .map_err(invalid)?;
        let metadata = metadata_from(raw.metadata.into_iter().flatten()).map_err(invalid)?;
        return Ok(ClientMessage::Event {
            event,
            ack_id,
            data,
            metadata,
        });
    }
    if is("sequenceAck") {
        let sequence_id = raw
            .sequence_id
            .ok_or_else(|| invalid("'sequenceAck' requires a 'sequenceId'".into()))?;
        return Ok(ClientMessage::SequenceAck { sequence_id });
    }
    if is("ping") {
        return Ok(ClientMessage::Ping);
    }
    if is("invoke") || is("cancelInvocation") {
        // Without an id no answer can reach the caller: the frame is malformed.
        let invocation_id = raw
            .invocation_id
            .filter(|id| !id.is_empty())
            .ok_or_else(|| {
                ParseError::Malformed(format!(
                    "'{kind}' requires a non-empty string 'invocationId'"
                ))
            })?;
        if is("cancelInvocation") {
            return Ok(ClientMessage::CancelInvocation { invocation_id });
        }
        let invalid = |message: String| ParseError::InvalidInvocation {
            invocation_id: invocation_id.clone().into_owned(),
            message,
        };
        if let Some(target) = raw.target.as_deref()
            && !target.eq_ignore_ascii_case("event")
        {
            return Err(invalid(format!(
                "Unsupported invoke target '{target}': the only target is 'event'."
            )));
        }
        let event = raw
            .event
            .filter(|e| !e.is_empty())
            .ok_or_else(|| invalid("'invoke' requires a non-empty 'event' name".into()))?;
        let data = raw
            .data
            .map(|d| decode_data(raw.data_type.as_deref(), d))
            .transpose()
            .map_err(invalid)?;
        let metadata = metadata_from(raw.metadata.into_iter().flatten()).map_err(invalid)?;
        return Ok(ClientMessage::Invoke {
            invocation_id,
            event,
            data,
            metadata,
        });
    }
    Ok(ClientMessage::Unsupported {
        kind: raw.kind,
        ack_id,
    })
}

/// Decodes `data` by `dataType` (default `json`).
fn decode_data(data_type: Option<&str>, data: &RawValue) -> Result<Data, String> {
    let data_type = data_type.unwrap_or("json");
    let string = || {
        serde_json::from_str::<String>(data.get())
            .map_err(|_| format!("dataType '{data_type}' requires 'data' to be a string"))
    };
    let base64 = |s: String| {
        BASE64
            .decode(s.as_bytes())
            .map(Bytes::from)
            .map_err(|e| format!("'data' is not valid base64: {e}"))
    };
    if data_type.eq_ignore_ascii_case("json") {
        Ok(Data::Json(Utf8Bytes::from(data.get().to_owned())))
    } else if data_type.eq_ignore_ascii_case("text") {
        Ok(Data::Text(string()?.into()))
    } else if data_type.eq_ignore_ascii_case("binary") {
        Ok(Data::Binary(base64(string()?)?))
    } else if data_type.eq_ignore_ascii_case("protobuf") {
        Ok(Data::Protobuf(base64(string()?)?))
    } else {
        Err(format!(
            "unknown dataType '{data_type}': expected json, text, binary or protobuf"
        ))
    }
}

/// Appends `s` as a JSON string literal, escaped as RFC 8259 requires. Written by hand so
/// encoding builds one `String` without a UTF-8 re-validation pass.
fn push_str(out: &mut String, s: &str) {
    out.push('"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let escape = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0x00..=0x1f => "",
            _ => continue,
        };
        // Every byte matched above is ASCII, so `i` is a char boundary.
        out.push_str(&s[start..i]);
        if escape.is_empty() {
            out.push_str(&format!("\\u{b:04x}"));
        } else {
            out.push_str(escape);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// Appends `"dataType":"..","data":..` for `data`.
fn push_data(out: &mut String, data: &Data) {
    out.push_str(r#""dataType":""#);
    out.push_str(data.data_type());
    out.push_str(r#"","data":"#);
    match data {
        Data::Json(raw) => out.push_str(raw),
        Data::Text(text) => push_str(out, text),
        Data::Binary(b) | Data::Protobuf(b) => {
            out.push('"');
            BASE64.encode_string(b, out);
            out.push('"');
        }
    }
}

/// Renders a data message: `{"type":"message","from":"group","fromUserId":..,"group":..,
/// "dataType":..,"data":..}` or `{"type":"message","from":"server","dataType":..,"data":..}`.
pub fn encode_message(message: &Message) -> Utf8Bytes {
    let mut out = String::with_capacity(96 + message.data.len() * 4 / 3);
    out.push('{');
    push_message_fields(&mut out, message);
    out.into()
}

/// Everything of a data message after its opening brace.
fn push_message_fields(out: &mut String, message: &Message) {
    match &message.source {
        Source::Group { group, from_user } => {
            out.push_str(r#""type":"message","from":"group","fromUserId":"#);
            match from_user {
                Some(user) => push_str(out, user),
                None => out.push_str("null"),
            }
            out.push_str(r#","group":"#);
            push_str(out, group);
            out.push(',');
        }
        Source::Server => out.push_str(r#""type":"message","from":"server","#),
    }
    push_data(out, &message.data);
    if let Some(metadata) = &message.metadata {
        out.push_str(r#","metadata":{"#);
        for (i, (key, value)) in metadata.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            push_str(out, key);
            out.push(':');
            push_str(out, value);
        }
        out.push('}');
    }
    if let Some(stream) = &message.stream {
        out.push_str(r#","stream":{"streamId":"#);
        push_str(out, &stream.stream_id);
        out.push_str(r#","streamSequenceId":"#);
        out.push_str(itoa::Buffer::new().format(stream.sequence_id));
        if stream.end {
            out.push_str(r#","endOfStream":true"#);
        }
        if let Some(error) = &stream.error {
            out.push_str(r#","error":{"name":"#);
            push_str(out, error.name);
            out.push_str(r#","message":"#);
            push_str(out, &error.message);
            if let Some(code) = &error.user_error_code {
                out.push_str(r#","userErrorCode":"#);
                push_str(out, code);
            }
            out.push('}');
        }
        out.push('}');
    }
    out.push('}');
}

/// `{"type":"system","event":"connected","userId":..,"connectionId":..}`, with
/// `"reconnectionToken"` for reliable subprotocols.
pub fn encode_connected(
    user_id: Option<&str>,
    connection_id: &str,
    reconnection_token: Option<&str>,
) -> Utf8Bytes {
    let mut out = String::from(r#"{"type":"system","event":"connected","userId":"#);
    match user_id {
        Some(user) => push_str(&mut out, user),
        None => out.push_str("null"),
    }
    out.push_str(r#","connectionId":"#);
    push_str(&mut out, connection_id);
    if let Some(token) = reconnection_token {
        out.push_str(r#","reconnectionToken":"#);
        push_str(&mut out, token);
    }
    out.push('}');
    out.into()
}

/// A data message for reliable clients, without its opening brace: each recipient's writer
/// puts `{"sequenceId":N,` in front of these shared bytes ([`sequence_head`]).
pub fn encode_numbered_body(message: &Message) -> Utf8Bytes {
    let mut out = String::with_capacity(96 + message.data.len() * 4 / 3);
    push_message_fields(&mut out, message);
    out.into()
}

/// Writes the head of a numbered data message, `{"sequenceId":id,`, to go in front of an
/// [`encode_numbered_body`] encoding.
pub fn sequence_head(id: u64, head: &mut BytesMut) {
    head.extend_from_slice(br#"{"sequenceId":"#);
    head.extend_from_slice(itoa::Buffer::new().format(id).as_bytes());
    head.extend_from_slice(b",");
}

/// `{"type":"system","event":"disconnected","message":..}`, sent before a server-initiated
/// close.
pub fn encode_disconnected(reason: &str) -> Utf8Bytes {
    let mut out = String::from(r#"{"type":"system","event":"disconnected","message":"#);
    push_str(&mut out, reason);
    out.push('}');
    out.into()
}

/// The error names an ack can carry (spec §3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckError {
    /// The connection lacks the permission.
    Forbidden,
    /// The request is invalid.
    BadRequest,
    /// The ack id was already processed; the client must not retry.
    Duplicate,
    /// The server failed; the client may retry.
    InternalServerError,
}

impl AckError {
    /// The wire name.
    pub fn name(self) -> &'static str {
        match self {
            AckError::Forbidden => "Forbidden",
            AckError::BadRequest => "BadRequest",
            AckError::Duplicate => "Duplicate",
            AckError::InternalServerError => "InternalServerError",
        }
    }
}

/// `{"type":"ack","ackId":n,"success":true}` or with `"success":false,"error":{..}`.
pub fn encode_ack(ack_id: u64, error: Option<(AckError, &str)>) -> Utf8Bytes {
    let mut out = format!(r#"{{"type":"ack","ackId":{ack_id},"success":"#);
    match error {
        None => out.push_str("true}"),
        Some((name, message)) => {
            out.push_str(r#"false,"error":{"name":""#);
            out.push_str(name.name());
            out.push_str(r#"","message":"#);
            push_str(&mut out, message);
            out.push_str("}}");
        }
    }
    out.into()
}

/// `{"type":"invokeResponse","invocationId":..,"success":true}` with the answer's
/// `dataType` and `data` when it has some, or `"success":false,"error":{"name","message"}`.
pub fn encode_invoke_response(
    invocation_id: &str,
    result: Result<Option<&Data>, (&str, &str)>,
) -> Utf8Bytes {
    let mut out = String::from(r#"{"type":"invokeResponse","invocationId":"#);
    push_str(&mut out, invocation_id);
    match result {
        Ok(data) => {
            out.push_str(r#","success":true"#);
            if let Some(data) = data {
                out.push(',');
                push_data(&mut out, data);
            }
        }
        Err((name, message)) => {
            out.push_str(r#","success":false,"error":{"name":"#);
            push_str(&mut out, name);
            out.push_str(r#","message":"#);
            push_str(&mut out, message);
            out.push('}');
        }
    }
    out.push('}');
    out.into()
}

/// `{"type":"groupStateSnapshot"|"groupStateUpdate","group":..,"items":[{"connectionId",
/// "userId"?,"state"?,"updatedAt"}]}`.
pub fn encode_group_state(snapshot: bool, group: &str, items: &[GroupStateItem]) -> Utf8Bytes {
    let mut out = String::from(if snapshot {
        r#"{"type":"groupStateSnapshot","group":"#
    } else {
        r#"{"type":"groupStateUpdate","group":"#
    });
    push_str(&mut out, group);
    out.push_str(r#","items":["#);
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(r#"{"connectionId":"#);
        push_str(&mut out, &item.connection_id);
        if let Some(user) = &item.user_id {
            out.push_str(r#","userId":"#);
            push_str(&mut out, user);
        }
        if let Some(state) = &item.state {
            out.push_str(r#","state":{"#);
            for (j, (key, value)) in state.iter().enumerate() {
                if j > 0 {
                    out.push(',');
                }
                push_str(&mut out, key);
                out.push(':');
                push_str(&mut out, value);
            }
            out.push('}');
        }
        out.push_str(r#","updatedAt":"#);
        out.push_str(itoa::Buffer::new().format(item.updated_at));
        out.push('}');
    }
    out.push_str("]}");
    out.into()
}

/// `{"type":"streamAck","streamId":..,"expectedSequenceId":n}`.
pub fn encode_stream_ack(stream_id: &str, expected: u64) -> Utf8Bytes {
    let mut out = String::from(r#"{"type":"streamAck","streamId":"#);
    push_str(&mut out, stream_id);
    out.push_str(r#","expectedSequenceId":"#);
    out.push_str(itoa::Buffer::new().format(expected));
    out.push('}');
    out.into()
}

/// `{"type":"streamNack","streamId":..,"name":..,"message":..,"expectedSequenceId":n}`.
pub fn encode_stream_nack(stream_id: &str, name: &str, message: &str, expected: u64) -> Utf8Bytes {
    let mut out = String::from(r#"{"type":"streamNack","streamId":"#);
    push_str(&mut out, stream_id);
    out.push_str(r#","name":"#);
    push_str(&mut out, name);
    out.push_str(r#","message":"#);
    push_str(&mut out, message);
    out.push_str(r#","expectedSequenceId":"#);
    out.push_str(itoa::Buffer::new().format(expected));
    out.push('}');
    out.into()
}

/// `{"type":"streamClosed","streamId":..}`, with `"error":{"name","message"}` when the
/// service closed it.
pub fn encode_stream_closed(stream_id: &str, error: Option<(&str, &str)>) -> Utf8Bytes {
    let mut out = String::from(r#"{"type":"streamClosed","streamId":"#);
    push_str(&mut out, stream_id);
    if let Some((name, message)) = error {
        out.push_str(r#","error":{"name":"#);
        push_str(&mut out, name);
        out.push_str(r#","message":"#);
        push_str(&mut out, message);
        out.push('}');
    }
    out.push('}');
    out.into()
}

/// `{"type":"pong"}`.
pub fn encode_pong() -> Utf8Bytes {
    Utf8Bytes::from_static(r#"{"type":"pong"}"#)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn value(b: &Utf8Bytes) -> Value {
        serde_json::from_str(b).expect("valid JSON")
    }

    #[test]
    fn parses_every_client_message() {
        assert_eq!(
            parse(r#"{"type":"joinGroup","group":"g1","ackId":1}"#),
            Ok(ClientMessage::JoinGroup {
                group: "g1".into(),
                ack_id: Some(1)
            })
        );
        assert_eq!(
            parse(r#"{"type":"LEAVEGROUP","group":"g1"}"#),
            Ok(ClientMessage::LeaveGroup {
                group: "g1".into(),
                ack_id: None
            })
        );
        assert_eq!(
            parse(
                r#"{"type":"sendToGroup","group":"g","ackId":2,"noEcho":true,"dataType":"text","data":"hi"}"#
            ),
            Ok(ClientMessage::SendToGroup {
                group: "g".into(),
                ack_id: Some(2),
                no_echo: true,
                data: Data::Text("hi".into())
            })
        );
        assert_eq!(
            parse(r#"{"type":"sendToGroup","group":"g","data":{"a": [1, 2]}}"#),
            Ok(ClientMessage::SendToGroup {
                group: "g".into(),
                ack_id: None,
                no_echo: false,
                data: Data::Json(r#"{"a": [1, 2]}"#.into())
            })
        );
        assert_eq!(
            parse(r#"{"type":"sendToGroup","group":"g","dataType":"binary","data":"AAEC"}"#),
            Ok(ClientMessage::SendToGroup {
                group: "g".into(),
                ack_id: None,
                no_echo: false,
                data: Data::Binary(Bytes::from_static(&[0, 1, 2]))
            })
        );
        assert!(matches!(
            parse(r#"{"type":"event","event":"chat","dataType":"json","data":{"a":1}}"#),
            Ok(ClientMessage::Event { .. })
        ));
        assert_eq!(parse(r#"{"type":"ping"}"#), Ok(ClientMessage::Ping));
        assert_eq!(
            parse(r#"{"type":"sequenceAck","sequenceId":57}"#),
            Ok(ClientMessage::SequenceAck { sequence_id: 57 })
        );
        assert_eq!(
            parse(r#"{"type":"setSomething","ackId":9}"#),
            Ok(ClientMessage::Unsupported {
                kind: "setSomething".into(),
                ack_id: Some(9)
            })
        );
        assert_eq!(
            parse(
                r#"{"type":"invoke","invocationId":"7","target":"event","event":"e","dataType":"text","data":"hi"}"#
            ),
            Ok(ClientMessage::Invoke {
                invocation_id: "7".into(),
                event: "e".into(),
                data: Some(Data::Text("hi".into())),
                metadata: None
            })
        );
        assert_eq!(
            parse(r#"{"type":"invoke","invocationId":"8","event":"e"}"#),
            Ok(ClientMessage::Invoke {
                invocation_id: "8".into(),
                event: "e".into(),
                data: None,
                metadata: None
            })
        );
        assert_eq!(
            parse(r#"{"type":"cancelInvocation","invocationId":"7"}"#),
            Ok(ClientMessage::CancelInvocation {
                invocation_id: "7".into()
            })
        );
    }

    #[test]
    fn refuses_malformed_frames() {
        for bad in [
            "not json",
            "[1,2]",
            r#"{"group":"g"}"#,
            r#"{"type":1}"#,
            r#"{"type":"joinGroup","ackId":"1"}"#,
            r#"{"type":"joinGroup","ackId":-1}"#,
            r#"{"type":"joinGroup","group":5}"#,
            r#"{"type":"invoke","event":"e"}"#,
            r#"{"type":"invoke","invocationId":"","event":"e"}"#,
            r#"{"type":"invoke","invocationId":7,"event":"e"}"#,
            r#"{"type":"cancelInvocation"}"#,
        ] {
            assert!(matches!(parse(bad), Err(ParseError::Malformed(_))), "{bad}");
        }
    }

    #[test]
    fn invalid_messages_keep_their_ack_id() {
        for (bad, needle) in [
            (r#"{"type":"joinGroup","ackId":3}"#, "group"),
            (
                r#"{"type":"sendToGroup","group":"g","ackId":3,"data":null}"#,
                "data",
            ),
            (
                r#"{"type":"sendToGroup","group":"g","ackId":3,"dataType":"binary","data":"!!"}"#,
                "base64",
            ),
            (
                r#"{"type":"sendToGroup","group":"g","ackId":3,"dataType":"text","data":1}"#,
                "string",
            ),
            (
                r#"{"type":"sendToGroup","group":"g","ackId":3,"dataType":"xml","data":"a"}"#,
                "dataType",
            ),
        ] {
            match parse(bad) {
                Err(ParseError::Invalid {
                    ack_id: Some(3),
                    message,
                }) => assert!(message.contains(needle), "{bad}: {message}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn invalid_invocations_keep_their_id() {
        for (bad, needle) in [
            (
                r#"{"type":"invoke","invocationId":"i","target":"service","event":"e"}"#,
                "target",
            ),
            (r#"{"type":"invoke","invocationId":"i"}"#, "event"),
            (
                r#"{"type":"invoke","invocationId":"i","event":"e","dataType":"xml","data":"a"}"#,
                "dataType",
            ),
        ] {
            match parse(bad) {
                Err(ParseError::InvalidInvocation {
                    invocation_id,
                    message,
                }) => {
                    assert_eq!(invocation_id, "i");
                    assert!(message.contains(needle), "{bad}: {message}");
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn encodes_invoke_responses() {
        let data = Data::Json(r#"{"a":1}"#.into());
        assert_eq!(
            value(&encode_invoke_response("1", Ok(Some(&data)))),
            json!({"type":"invokeResponse","invocationId":"1","success":true,"dataType":"json","data":{"a":1}})
        );
        assert_eq!(
            value(&encode_invoke_response("2", Ok(None))),
            json!({"type":"invokeResponse","invocationId":"2","success":true})
        );
        assert_eq!(
            value(&encode_invoke_response(
                "3",
                Err(("BadRequest", "no \"x\""))
            )),
            json!({"type":"invokeResponse","invocationId":"3","success":false,"error":{"name":"BadRequest","message":"no \"x\""}})
        );
    }

    #[test]
    fn encodes_group_and_server_messages() {
        let m = Message::to_group("g\"1", Some("alice".into()), Data::Text("hi\n".into()));
        assert_eq!(
            value(&encode_message(&m)),
            json!({"type":"message","from":"group","fromUserId":"alice","group":"g\"1","dataType":"text","data":"hi\n"})
        );
        let m = Message::to_group("g", None, Data::Json(r#"{"a":1}"#.into()));
        assert_eq!(
            value(&encode_message(&m)),
            json!({"type":"message","from":"group","fromUserId":null,"group":"g","dataType":"json","data":{"a":1}})
        );
        let m = Message::from_server(Data::Binary(Bytes::from_static(b"\x00\x01\x02")));
        assert_eq!(
            value(&encode_message(&m)),
            json!({"type":"message","from":"server","dataType":"binary","data":"AAEC"})
        );
    }

    #[test]
    fn group_state_messages_parse_and_encode() {
        match parse(r#"{"type":"setGroupState","group":"g","ackId":1,"state":{"a":"b"}}"#) {
            Ok(ClientMessage::SetGroupState {
                group,
                ack_id: Some(1),
                state: Some(state),
            }) => assert_eq!((group.as_ref(), state["a"].as_str()), ("g", "b")),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(r#"{"type":"setGroupState","group":"g"}"#),
            Ok(ClientMessage::SetGroupState { state: None, .. })
        ));
        assert!(matches!(
            parse(r#"{"type":"subscribeGroupState","ackId":2}"#),
            Err(ParseError::Invalid {
                ack_id: Some(2),
                ..
            })
        ));
        assert!(matches!(
            parse(r#"{"type":"setGroupState","group":"g","state":{"a":1}}"#),
            Err(ParseError::Malformed(_))
        ));
        let items = [
            GroupStateItem {
                connection_id: "c1".into(),
                user_id: Some("u".into()),
                state: Some(std::sync::Arc::new([("k".into(), "v".into())].into())),
                updated_at: 5,
            },
            GroupStateItem {
                connection_id: "c2".into(),
                user_id: None,
                state: None,
                updated_at: 6,
            },
        ];
        assert_eq!(
            value(&encode_group_state(false, "g", &items)),
            json!({"type":"groupStateUpdate","group":"g","items":[
                {"connectionId":"c1","userId":"u","state":{"k":"v"},"updatedAt":5},
                {"connectionId":"c2","updatedAt":6}
            ]})
        );
        assert_eq!(
            value(&encode_group_state(true, "g", &[])),
            json!({"type":"groupStateSnapshot","group":"g","items":[]})
        );
    }

    #[test]
    fn stream_frames_parse_and_encode() {
        assert_eq!(
            parse(
                r#"{"type":"sendToGroup","group":"g","noEcho":true,"stream":{"streamId":"s","idleTimeoutMs":500}}"#
            ),
            Ok(ClientMessage::StreamStart {
                group: "g".into(),
                no_echo: true,
                stream_id: "s".into(),
                idle_timeout_ms: Some(500)
            })
        );
        assert_eq!(
            parse(
                r#"{"type":"streamData","streamId":"s","streamSequenceId":3,"dataType":"text","data":"x"}"#
            ),
            Ok(ClientMessage::StreamData {
                stream_id: "s".into(),
                chunk: Some((3, Data::Text("x".into())))
            })
        );
        assert_eq!(
            parse(r#"{"type":"streamData","streamId":"s"}"#),
            Ok(ClientMessage::StreamData {
                stream_id: "s".into(),
                chunk: None
            })
        );
        assert_eq!(
            parse(
                r#"{"type":"streamEnd","streamId":"s","error":{"message":"m","userErrorCode":"E"}}"#
            ),
            Ok(ClientMessage::StreamEnd {
                stream_id: "s".into(),
                error: Some(("m".into(), Some("E".into())))
            })
        );
        for bad in [
            r#"{"type":"streamData","streamId":"s","streamSequenceId":1}"#,
            r#"{"type":"streamData","streamId":"s","streamSequenceId":0,"dataType":"text","data":"x"}"#,
            r#"{"type":"streamData","streamId":"s","data":"x"}"#,
        ] {
            assert!(
                matches!(parse(bad), Err(ParseError::InvalidStreamData { .. })),
                "{bad}"
            );
        }
        assert!(matches!(
            parse(r#"{"type":"sendToGroup","group":"g","data":"x","stream":{"streamId":"s"}}"#),
            Err(ParseError::InvalidStreamStart { .. })
        ));
        assert!(matches!(
            parse(r#"{"type":"streamEnd"}"#),
            Err(ParseError::Malformed(_))
        ));
        let chunk = Message::to_group("g", None, Data::Text("".into())).with_stream(Some(
            std::sync::Arc::new(crate::message::StreamInfo {
                stream_id: "s".into(),
                sequence_id: 4,
                end: true,
                error: Some(crate::message::StreamError {
                    name: "UserError",
                    message: "m".into(),
                    user_error_code: Some("E".into()),
                }),
            }),
        ));
        assert_eq!(
            value(&encode_message(&chunk))["stream"],
            json!({"streamId":"s","streamSequenceId":4,"endOfStream":true,"error":{"name":"UserError","message":"m","userErrorCode":"E"}})
        );
        assert_eq!(
            value(&encode_stream_ack("s", 2)),
            json!({"type":"streamAck","streamId":"s","expectedSequenceId":2})
        );
        assert_eq!(
            value(&encode_stream_nack("s", "InvalidSequenceId", "m", 2)),
            json!({"type":"streamNack","streamId":"s","name":"InvalidSequenceId","message":"m","expectedSequenceId":2})
        );
        assert_eq!(
            value(&encode_stream_closed("s", None)),
            json!({"type":"streamClosed","streamId":"s"})
        );
    }

    #[test]
    fn metadata_follows_the_data() {
        let metadata = metadata_from([("k".to_owned(), "v\"".to_owned())]).expect("valid");
        let m = Message::from_server(Data::Text("hi".into())).with_metadata(metadata);
        assert_eq!(
            value(&encode_message(&m)),
            json!({"type":"message","from":"server","dataType":"text","data":"hi","metadata":{"k":"v\""}})
        );
        match parse(r#"{"type":"event","event":"e","metadata":{"Key":"v"}}"#) {
            Ok(ClientMessage::Event { metadata, .. }) => {
                assert_eq!(metadata.expect("some")["key"], "v");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(r#"{"type":"event","event":"e","ackId":4,"metadata":{"a b":"v"}}"#),
            Err(ParseError::Invalid {
                ack_id: Some(4),
                ..
            })
        ));
    }

    #[test]
    fn splices_sequence_ids_in_front_of_the_shared_encoding() {
        let body = encode_numbered_body(&Message::to_group("g", None, Data::Text("hi".into())));
        let mut head = BytesMut::new();
        sequence_head(42, &mut head);
        let whole = [&head[..], body.as_bytes()].concat();
        let whole: Value = serde_json::from_slice(&whole).expect("valid JSON");
        assert_eq!(
            whole,
            json!({"sequenceId":42,"type":"message","from":"group","fromUserId":null,"group":"g","dataType":"text","data":"hi"})
        );
    }

    #[test]
    fn escapes_control_characters() {
        let m = Message::from_server(Data::Text("a\u{1}b\"\\".into()));
        assert_eq!(value(&encode_message(&m))["data"], json!("a\u{1}b\"\\"));
    }

    #[test]
    fn encodes_system_messages_and_acks() {
        assert_eq!(
            value(&encode_connected(None, "c1", None)),
            json!({"type":"system","event":"connected","userId":null,"connectionId":"c1"})
        );
        assert_eq!(
            value(&encode_connected(Some("u"), "c1", Some("t"))),
            json!({"type":"system","event":"connected","userId":"u","connectionId":"c1","reconnectionToken":"t"})
        );
        assert_eq!(
            value(&encode_disconnected("bye \"now\"")),
            json!({"type":"system","event":"disconnected","message":"bye \"now\""})
        );
        assert_eq!(
            value(&encode_ack(7, None)),
            json!({"type":"ack","ackId":7,"success":true})
        );
        assert_eq!(
            value(&encode_ack(8, Some((AckError::Duplicate, "done")))),
            json!({"type":"ack","ackId":8,"success":false,"error":{"name":"Duplicate","message":"done"}})
        );
        assert_eq!(value(&encode_pong()), json!({"type":"pong"}));
    }
}
