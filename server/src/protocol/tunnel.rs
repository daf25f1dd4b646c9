//! Azure's tunnel frames (`/server/tunnel`, spec part 2 §2.4 and §2.4a): what a backend that
//! dials in (`@azure/web-pubsub-socket.io`, Azure's tunnel tool) and the service exchange.
//!
//! One frame per binary WebSocket message: a little-endian `u32` length, then a msgpack array
//! `[type, json, content]`. `json` is a JSON object with the frame's fields (and `"Type"`
//! again: the package acts on the JSON's `Type`), `content` the body bytes or nil. Decoding
//! checks every part and says what is wrong; nothing is guessed.

use std::collections::BTreeMap;

use bytes::Bytes;
use rmpv::Value;
use serde::{Deserialize, Serialize};

/// Largest frame (the package's own limit: 1 MiB), length prefix excluded.
pub const MAX_FRAME_BYTES: usize = 1024 * 1024;

/// Frame types (the package's `TunnelMessageType`).
pub mod kind {
    /// A request: a CloudEvent to the backend, or a REST call from it.
    pub const HTTP_REQUEST: u8 = 1;
    /// The answer to a request (in parts while `NotCompleted`).
    pub const HTTP_RESPONSE: u8 = 2;
    /// Service status (the keep-alive; the package ignores its content).
    pub const SERVICE_STATUS: u8 = 5;
    /// Asks the backend to open a new tunnel (and close this one).
    pub const CONNECTION_RECONNECT: u8 = 6;
    /// Ends the tunnel for good: the package never reconnects after it.
    pub const CONNECTION_CLOSE: u8 = 7;
    /// Asks the backend to open one more tunnel.
    pub const CONNECTION_REBALANCE: u8 = 8;
    /// The first frame the service sends.
    pub const CONNECTION_CONNECTED: u8 = 10;
}

/// Headers as the tunnel carries them: `{name: [values]}`.
pub type Headers = BTreeMap<String, Vec<String>>;

/// An HTTP request frame.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HttpRequest {
    /// Numbered by the sender, from 1; the response repeats it.
    pub ack_id: u64,
    /// Set by the package on its REST calls; repeated in the answer.
    #[serde(default)]
    pub local_routing: bool,
    /// Repeated in the answer.
    #[serde(default)]
    pub channel_name: Option<String>,
    /// `GET`, `POST`, ...
    pub http_method: String,
    /// An absolute URL (the package uses only its path and query).
    pub url: String,
    /// `{name: [values]}`.
    #[serde(default)]
    pub headers: Headers,
    /// The body (the frame's third element).
    #[serde(skip)]
    pub content: Bytes,
}

/// An HTTP response frame (one part of it while `not_completed`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HttpResponse {
    /// The request's `AckId`.
    pub ack_id: u64,
    /// Set by the package on its REST calls; repeated in the answer.
    #[serde(default)]
    pub local_routing: bool,
    /// The HTTP status (the first part's counts).
    pub status_code: u16,
    /// Repeated in the answer.
    #[serde(default)]
    pub channel_name: Option<String>,
    /// More parts follow.
    #[serde(default)]
    pub not_completed: bool,
    /// `{name: [values]}`.
    #[serde(default)]
    pub headers: Headers,
    /// The body (the frame's third element).
    #[serde(skip)]
    pub content: Bytes,
}

/// A decoded frame.
#[derive(Debug, Clone, PartialEq)]
pub enum TunnelFrame {
    /// A REST call (from a backend) or an event (to it).
    Request(HttpRequest),
    /// An answer, or a part of one.
    Response(HttpResponse),
    /// A frame type the service sends (5–10); a backend has no reason to send one.
    ServiceOnly(u8),
}

/// Why a frame is refused: the reason the tunnel is closed with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[allow(missing_docs)] // The messages say it.
pub enum FrameError {
    #[error("the frame is shorter than its 4-byte length prefix")]
    Truncated,
    #[error("the length prefix says {declared} bytes but {actual} follow")]
    LengthMismatch { declared: usize, actual: usize },
    #[error("the frame is {0} bytes; at most {MAX_FRAME_BYTES} are allowed")]
    TooLarge(usize),
    #[error("the frame is not msgpack: {0}")]
    NotMsgpack(String),
    #[error("the frame must be a msgpack array [type, json, content]")]
    NotAnArray,
    #[error("unknown frame type {0}")]
    UnknownType(i64),
    #[error("the JSON of a type {kind} frame is invalid: {message}")]
    BadJson { kind: u8, message: String },
    #[error("the content of a frame must be msgpack bin, str or nil")]
    BadContent,
}

/// Decodes one WebSocket message.
///
/// # Errors
/// What is wrong with it ([`FrameError`]).
pub fn decode(message: &[u8]) -> Result<TunnelFrame, FrameError> {
    let (prefix, rest) = message
        .split_first_chunk::<4>()
        .ok_or(FrameError::Truncated)?;
    let declared = u32::from_le_bytes(*prefix) as usize;
    if declared > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge(declared));
    }
    if declared != rest.len() {
        return Err(FrameError::LengthMismatch {
            declared,
            actual: rest.len(),
        });
    }
    let mut reader = rest;
    let value =
        rmpv::decode::read_value(&mut reader).map_err(|e| FrameError::NotMsgpack(e.to_string()))?;
    if !reader.is_empty() {
        return Err(FrameError::NotMsgpack(
            "bytes follow the msgpack array".into(),
        ));
    }
    let Value::Array(parts) = value else {
        return Err(FrameError::NotAnArray);
    };
    let mut parts = parts.into_iter();
    let kind = parts
        .next()
        .and_then(|v| v.as_i64())
        .ok_or(FrameError::NotAnArray)?;
    let kind = match u8::try_from(kind) {
        Ok(
            k @ (kind::HTTP_REQUEST
            | kind::HTTP_RESPONSE
            | kind::SERVICE_STATUS
            | kind::CONNECTION_RECONNECT
            | kind::CONNECTION_CLOSE
            | kind::CONNECTION_REBALANCE
            | kind::CONNECTION_CONNECTED),
        ) => k,
        _ => return Err(FrameError::UnknownType(kind)),
    };
    let json = match parts.next() {
        Some(Value::String(s)) => s.into_str().ok_or(FrameError::BadJson {
            kind,
            message: "not UTF-8".into(),
        })?,
        _ => {
            return Err(FrameError::BadJson {
                kind,
                message: "the second element must be a string".into(),
            });
        }
    };
    let content = match parts.next() {
        None | Some(Value::Nil) => Bytes::new(),
        Some(Value::Binary(b)) => Bytes::from(b),
        Some(Value::String(s)) => Bytes::from(s.into_bytes()),
        Some(_) => return Err(FrameError::BadContent),
    };
    let bad_json = |e: serde_json::Error| FrameError::BadJson {
        kind,
        message: e.to_string(),
    };
    Ok(match kind {
        kind::HTTP_REQUEST => {
            let mut request: HttpRequest = serde_json::from_str(&json).map_err(bad_json)?;
            request.content = content;
            TunnelFrame::Request(request)
        }
        kind::HTTP_RESPONSE => {
            let mut response: HttpResponse = serde_json::from_str(&json).map_err(bad_json)?;
            response.content = content;
            TunnelFrame::Response(response)
        }
        other => TunnelFrame::ServiceOnly(other),
    })
}

/// Encodes a frame of `kind` with the JSON `fields` (an object; `Type` is added) and
/// `content`.
fn encode(kind: u8, fields: serde_json::Value, content: &[u8]) -> Bytes {
    let mut fields = fields;
    if let serde_json::Value::Object(map) = &mut fields {
        map.insert("Type".into(), kind.into());
    }
    let array = Value::Array(vec![
        Value::from(kind),
        Value::from(fields.to_string()),
        if content.is_empty() {
            Value::Nil
        } else {
            Value::Binary(content.to_vec())
        },
    ]);
    let mut out = vec![0u8; 4];
    rmpv::encode::write_value(&mut out, &array).expect("writing to a Vec cannot fail");
    let len = u32::try_from(out.len() - 4).unwrap_or(u32::MAX);
    out[..4].copy_from_slice(&len.to_le_bytes());
    Bytes::from(out)
}

/// `HttpRequest`.
pub fn encode_request(request: &HttpRequest) -> Bytes {
    let fields = serde_json::to_value(request).expect("requests serialize");
    encode(kind::HTTP_REQUEST, fields, &request.content)
}

/// `HttpResponse`.
pub fn encode_response(response: &HttpResponse) -> Bytes {
    let fields = serde_json::to_value(response).expect("responses serialize");
    encode(kind::HTTP_RESPONSE, fields, &response.content)
}

/// `ConnectionConnected`, the first frame of a tunnel.
pub fn encode_connected(connection_id: &str) -> Bytes {
    encode(
        kind::CONNECTION_CONNECTED,
        serde_json::json!({ "ConnectionId": connection_id }),
        &[],
    )
}

/// `ServiceStatus`, the keep-alive.
pub fn encode_status(message: &str) -> Bytes {
    encode(
        kind::SERVICE_STATUS,
        serde_json::json!({ "Message": message }),
        &[],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trips() {
        let request = HttpRequest {
            ack_id: 7,
            local_routing: true,
            channel_name: Some(String::new()),
            http_method: "POST".into(),
            url: "https://h/api/hubs/a/:send".into(),
            headers: [("Content-Type".to_owned(), vec!["text/plain".to_owned()])].into(),
            content: Bytes::from_static(b"hello"),
        };
        let frame = encode_request(&request);
        assert_eq!(decode(&frame), Ok(TunnelFrame::Request(request)));
    }

    #[test]
    fn json_repeats_the_type() {
        let frame = encode_connected("c1");
        let mut rest = &frame[4..];
        let Value::Array(parts) = rmpv::decode::read_value(&mut rest).expect("msgpack") else {
            panic!("not an array");
        };
        assert_eq!(parts[0], Value::from(10));
        let json: serde_json::Value =
            serde_json::from_str(parts[1].as_str().expect("str")).expect("json");
        assert_eq!(json["Type"], 10);
        assert_eq!(json["ConnectionId"], "c1");
        assert_eq!(parts[2], Value::Nil);
        assert_eq!(decode(&frame), Ok(TunnelFrame::ServiceOnly(10)));
    }

    #[test]
    fn bad_frames_say_why() {
        assert_eq!(decode(b"\x01"), Err(FrameError::Truncated));
        assert!(matches!(
            decode(b"\x05\0\0\0\x91"),
            Err(FrameError::LengthMismatch { .. })
        ));
        assert!(matches!(
            decode(&[0, 0, 0x20, 0]),
            Err(FrameError::TooLarge(_))
        ));
        // [3, "{}", nil]
        assert_eq!(
            decode(b"\x06\0\0\0\x93\x03\xa2{}\xc0"),
            Err(FrameError::UnknownType(3))
        );
        // [1, "{}", nil]: an HttpRequest without its fields.
        assert!(matches!(
            decode(b"\x06\0\0\0\x93\x01\xa2{}\xc0"),
            Err(FrameError::BadJson { kind: 1, .. })
        ));
        assert_eq!(decode(b"\x01\0\0\0\x01"), Err(FrameError::NotAnArray));
    }
}
