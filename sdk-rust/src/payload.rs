//! Message payloads: text, JSON, binary or protobuf, as Azure Web PubSub's `dataType`s.

use bytes::Bytes;
use prost_types::Any;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Kind, Result};

/// The data type of a [`Payload`] (Azure's `dataType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DataType {
    /// UTF-8 text.
    Text,
    /// A JSON document.
    Json,
    /// Raw bytes.
    Binary,
    /// A protobuf message wrapped in `google.protobuf.Any`.
    Protobuf,
}

impl DataType {
    /// The protocol name: `text`, `json`, `binary` or `protobuf`.
    pub fn as_str(self) -> &'static str {
        match self {
            DataType::Text => "text",
            DataType::Json => "json",
            DataType::Binary => "binary",
            DataType::Protobuf => "protobuf",
        }
    }
}

/// The content of a message, sent or received.
///
/// Build one with the `From` conversions (`&str`/`String` → text, [`serde_json::Value`] →
/// JSON, `Vec<u8>`/[`Bytes`] → binary, [`Any`] → protobuf) or with [`Payload::json`] for any
/// `Serialize` type. Read one with the `as_*` accessors or [`Payload::to_json`].
///
/// Every payload travels on every protocol: on the JSON protocols binary and protobuf
/// payloads are base64 strings, on the protobuf protocols JSON travels as text in
/// `json_data`; the receiver gets back the same data type.
///
/// # Examples
///
/// ```
/// use hubcast_sdk::Payload;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize, PartialEq, Debug)]
/// struct Move { x: i32, y: i32 }
///
/// let payload = Payload::json(&Move { x: 1, y: 2 })?;
/// assert_eq!(payload.to_json::<Move>()?, Move { x: 1, y: 2 });
/// assert_eq!(Payload::from("hi").as_text(), Some("hi"));
/// # Ok::<(), hubcast_sdk::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Payload {
    /// UTF-8 text (`dataType` `text`).
    Text(String),
    /// A JSON document (`dataType` `json`).
    Json(serde_json::Value),
    /// Raw bytes (`dataType` `binary`).
    Binary(Bytes),
    /// A protobuf message (`dataType` `protobuf`).
    Protobuf(Any),
}

impl Payload {
    /// A text payload.
    pub fn text(text: impl Into<String>) -> Self {
        Payload::Text(text.into())
    }

    /// A JSON payload holding `value` serialized with serde.
    ///
    /// # Errors
    /// [`Error::is_encode`]: `value` cannot be represented as JSON (a map with non-string
    /// keys, a failing `Serialize` impl).
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<Self> {
        serde_json::to_value(value)
            .map(Payload::Json)
            .map_err(|e| Error::with_source(Kind::Encode, e))
    }

    /// A binary payload.
    pub fn binary(bytes: impl Into<Bytes>) -> Self {
        Payload::Binary(bytes.into())
    }

    /// A protobuf payload: `message` packed in a `google.protobuf.Any`.
    ///
    /// # Errors
    /// [`Error::is_encode`]: the message cannot be encoded.
    pub fn protobuf<M: prost::Name>(message: &M) -> Result<Self> {
        Any::from_msg(message)
            .map(Payload::Protobuf)
            .map_err(|e| Error::with_source(Kind::Encode, e))
    }

    /// Its data type.
    pub fn data_type(&self) -> DataType {
        match self {
            Payload::Text(_) => DataType::Text,
            Payload::Json(_) => DataType::Json,
            Payload::Binary(_) => DataType::Binary,
            Payload::Protobuf(_) => DataType::Protobuf,
        }
    }

    /// The text of a text payload.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Payload::Text(text) => Some(text),
            _ => None,
        }
    }

    /// The document of a JSON payload.
    pub fn as_json(&self) -> Option<&serde_json::Value> {
        match self {
            Payload::Json(value) => Some(value),
            _ => None,
        }
    }

    /// The bytes of a binary payload.
    pub fn as_binary(&self) -> Option<&Bytes> {
        match self {
            Payload::Binary(bytes) => Some(bytes),
            _ => None,
        }
    }

    /// The `Any` of a protobuf payload; unpack it with [`Any::to_msg`].
    pub fn as_protobuf(&self) -> Option<&Any> {
        match self {
            Payload::Protobuf(any) => Some(any),
            _ => None,
        }
    }

    /// Deserializes a JSON payload (or a text payload holding JSON) into `T`.
    ///
    /// # Errors
    /// [`Error::is_decode`]: the payload is binary or protobuf, or its JSON does not fit `T`.
    pub fn to_json<T: DeserializeOwned>(&self) -> Result<T> {
        let decoded = match self {
            Payload::Json(value) => T::deserialize(value),
            Payload::Text(text) => serde_json::from_str(text),
            other => {
                return Err(Error::with_source(
                    Kind::Decode,
                    format!("a {} payload is not JSON", other.data_type().as_str()),
                ));
            }
        };
        decoded.map_err(|e| Error::with_source(Kind::Decode, e))
    }
}

impl From<&str> for Payload {
    fn from(text: &str) -> Self {
        Payload::Text(text.to_owned())
    }
}

impl From<String> for Payload {
    fn from(text: String) -> Self {
        Payload::Text(text)
    }
}

impl From<serde_json::Value> for Payload {
    fn from(value: serde_json::Value) -> Self {
        Payload::Json(value)
    }
}

impl From<Bytes> for Payload {
    fn from(bytes: Bytes) -> Self {
        Payload::Binary(bytes)
    }
}

impl From<Vec<u8>> for Payload {
    fn from(bytes: Vec<u8>) -> Self {
        Payload::Binary(bytes.into())
    }
}

impl From<&[u8]> for Payload {
    fn from(bytes: &[u8]) -> Self {
        Payload::Binary(Bytes::copy_from_slice(bytes))
    }
}

impl From<Any> for Payload {
    fn from(any: Any) -> Self {
        Payload::Protobuf(any)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_pick_the_data_type() {
        assert_eq!(Payload::from("a").data_type(), DataType::Text);
        assert_eq!(
            Payload::from(serde_json::json!({"a": 1})).data_type(),
            DataType::Json
        );
        assert_eq!(Payload::from(vec![1u8]).data_type(), DataType::Binary);
        assert_eq!(
            Payload::from(Any::default()).data_type(),
            DataType::Protobuf
        );
    }

    #[test]
    fn typed_json_round_trips_and_refuses_binary() {
        let p = Payload::json(&vec![1, 2, 3]).expect("encodes");
        assert_eq!(p.to_json::<Vec<u8>>().expect("decodes"), vec![1, 2, 3]);
        let err = Payload::binary(vec![0u8]).to_json::<Vec<u8>>().unwrap_err();
        assert!(err.is_decode());
        let err = p.to_json::<String>().unwrap_err();
        assert!(err.is_decode());
    }

    #[test]
    fn protobuf_payload_packs_any() {
        let ts = prost_types::Timestamp {
            seconds: 5,
            nanos: 0,
        };
        let p = Payload::protobuf(&ts).expect("encodes");
        let any = p.as_protobuf().expect("protobuf");
        assert_eq!(
            any.type_url,
            "type.googleapis.com/google.protobuf.Timestamp"
        );
        assert_eq!(any.to_msg::<prost_types::Timestamp>().expect("unpacks"), ts);
    }
}
