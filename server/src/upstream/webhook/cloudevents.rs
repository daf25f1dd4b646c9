//! CloudEvents HTTP binary mode as Azure Web PubSub writes it (spec §6.3): the `ce-*` headers,
//! the signature over every access key, and the bodies.

use bytes::Bytes;
use hmac::{Hmac, KeyInit as _, Mac};
use http::{HeaderMap, HeaderName, HeaderValue, header};
use sha2::Sha256;

use super::super::event::{Event, EventKind};
use crate::message::Data;
use crate::timestamp;
use hubcast_auth::KeyRing;

/// `Content-Type` of system events.
const SYSTEM_CONTENT_TYPE: &str = "application/json; charset=utf-8";

/// The header `ce-awpsversion` and its only value, required by the JS middleware.
pub(crate) const AWPS_VERSION: (&str, &str) = ("ce-awpsversion", "1.0");

/// The header naming the service host (spec §6.2), sent on every request.
pub(crate) const REQUEST_ORIGIN: &str = "webhook-request-origin";

/// The response header that replaces the connection state.
pub(crate) const CONNECTION_STATE: &str = "ce-connectionstate";

/// The headers of an event POST.
pub(crate) fn headers(event: &Event, origin: &HeaderValue, keys: &KeyRing) -> HeaderMap {
    let name = event.kind.name();
    let mut h = HeaderMap::with_capacity(16);
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(&event.kind)),
    );
    h.insert(REQUEST_ORIGIN, origin.clone());
    h.insert("ce-specversion", HeaderValue::from_static("1.0"));
    h.insert(AWPS_VERSION.0, HeaderValue::from_static(AWPS_VERSION.1));
    // Socket.IO user events are all `azure.webpubsub.user.message`; `ce-eventName` names
    // the Socket.IO event (Azure's serverless mode).
    match (&event.socketio, &event.kind) {
        (Some(_), EventKind::User { .. }) => {
            h.insert(
                "ce-type",
                HeaderValue::from_static("azure.webpubsub.user.message"),
            );
        }
        _ => put(&mut h, "ce-type", &name.ce_type()),
    }
    let source = match &event.mqtt {
        Some(mqtt) => format!(
            "/hubs/{}/client/{}/{}",
            event.hub, event.connection_id, mqtt.physical_connection_id
        ),
        None => format!("/hubs/{}/client/{}", event.hub, event.connection_id),
    };
    put(&mut h, "ce-source", &source);
    put(&mut h, "ce-id", &event.sequence.to_string());
    put(&mut h, "ce-time", &timestamp::rfc3339_seconds(event.time));
    put(
        &mut h,
        "ce-signature",
        &signature(event.connection_id.as_str(), keys),
    );
    if let Some(user) = &event.user_id {
        put(&mut h, "ce-userid", user);
    }
    put(&mut h, "ce-connectionid", event.connection_id.as_str());
    put(&mut h, "ce-hub", &event.hub);
    put(&mut h, "ce-eventname", &name.to_string());
    if let Some(socket) = &event.socketio {
        put(&mut h, "ce-namespace", &socket.namespace);
        put(&mut h, "ce-socketid", &socket.socket_id);
    }
    if let Some(mqtt) = &event.mqtt {
        put(
            &mut h,
            "ce-physicalconnectionid",
            &mqtt.physical_connection_id,
        );
        // No session exists while `connect` is decided.
        if !matches!(event.kind, EventKind::Connect(_)) {
            put(&mut h, "ce-sessionid", &mqtt.session_id);
        }
    }
    if let Some(subprotocol) = &event.subprotocol {
        put(&mut h, "ce-subprotocol", subprotocol);
    }
    if let (Some(state), false) = (&event.state, matches!(event.kind, EventKind::Connect(_))) {
        put(&mut h, CONNECTION_STATE, state);
    }
    if let EventKind::User {
        metadata: Some(metadata),
        ..
    } = &event.kind
    {
        for (key, value) in metadata.iter() {
            // Keys were checked to be header-name characters (`message::metadata_from`).
            let Ok(name) = HeaderName::from_bytes(format!("{METADATA_PREFIX}{key}").as_bytes())
            else {
                continue;
            };
            match HeaderValue::from_str(value) {
                Ok(value) => {
                    h.insert(name, value);
                }
                Err(_) => {
                    tracing::debug!(key = %key, "metadata value is no header value; left out")
                }
            }
        }
    }
    for property in &event.mqtt_properties {
        // MQTT allows any UTF-8 in a name and value; what a header cannot carry is left out.
        match (
            HeaderName::from_bytes(format!("{MQTT_PROPERTY_PREFIX}{}", property.name).as_bytes()),
            HeaderValue::from_str(&property.value),
        ) {
            (Ok(name), Ok(value)) => {
                h.append(name, value);
            }
            _ => {
                tracing::debug!(name = %property.name, "MQTT user property is no header; left out")
            }
        }
    }
    h
}

/// Prefix of the headers that carry metadata: a user event's upstream, and a handler's
/// answer for the message to its sender.
pub(crate) const METADATA_PREFIX: &str = "x-webpubsub-metadata-";

/// Prefix of the headers that carry the MQTT 5 user properties of a request on
/// `$webpubsub/server/events/{event}`, and of the reply to it.
pub(crate) const MQTT_PROPERTY_PREFIX: &str = "mqtt-";

/// Sets a header whose value comes from a client or a backend (user ids, state). Values
/// that cannot be header values (control characters) are left out and logged.
fn put(headers: &mut HeaderMap, name: &'static str, value: &str) {
    match HeaderValue::from_bytes(value.as_bytes()) {
        Ok(v) => {
            headers.insert(HeaderName::from_static(name), v);
        }
        Err(_) => tracing::warn!(header = name, "value cannot be sent as a header; left out"),
    }
}

/// The `Content-Type` of an event's body (spec §3.3).
fn content_type(kind: &EventKind) -> &'static str {
    match kind {
        EventKind::User { data, .. } => match data {
            Some(Data::Json(_)) => "application/json",
            Some(Data::Binary(_)) => "application/octet-stream",
            Some(Data::Protobuf(_)) => "application/x-protobuf",
            Some(Data::Text(_)) | None => "text/plain",
        },
        _ => SYSTEM_CONTENT_TYPE,
    }
}

/// The body of an event POST.
pub(crate) fn body(kind: &EventKind) -> Bytes {
    match kind {
        EventKind::Connect(body) => serde_json::to_vec(body)
            .expect("maps of strings serialize")
            .into(),
        EventKind::Connected => Bytes::from_static(b"{}"),
        EventKind::Disconnected {
            reason,
            mqtt: Some(mqtt),
        } => serde_json::to_vec(&serde_json::json!({ "reason": reason, "mqtt": mqtt }))
            .expect("strings and numbers serialize")
            .into(),
        EventKind::Disconnected { reason, mqtt: None } => match reason {
            Some(reason) => serde_json::to_vec(&serde_json::json!({ "reason": reason }))
                .expect("a string serializes")
                .into(),
            None => Bytes::from_static(b"{}"),
        },
        EventKind::GroupJoined { group } | EventKind::GroupLeft { group } => {
            serde_json::to_vec(&serde_json::json!({ "group": group }))
                .expect("a string serializes")
                .into()
        }
        EventKind::User { data, .. } => match data {
            Some(Data::Text(t) | Data::Json(t)) => Bytes::copy_from_slice(t.as_bytes()),
            Some(Data::Binary(b) | Data::Protobuf(b)) => b.clone(),
            None => Bytes::new(),
        },
    }
}

/// `ce-signature`: `sha256=<hex HMAC-SHA256(key, connectionId)>` for every key, primary
/// first, comma-separated (spec appendix A.4). The key is its UTF-8 bytes.
pub(crate) fn signature(connection_id: &str, keys: &KeyRing) -> String {
    keys.keys()
        .map(|key| {
            let mut mac =
                Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("HMAC takes any key length");
            mac.update(connection_id.as_bytes());
            let digest = mac.finalize().into_bytes();
            let mut out = String::with_capacity(7 + 64);
            out.push_str("sha256=");
            for byte in digest {
                out.push_str(&format!("{byte:02x}"));
            }
            out
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_covers_every_key_in_order() {
        let keys = KeyRing::new(vec!["a".repeat(32), "b".repeat(32)]).expect("valid keys");
        let sig = signature("conn1", &keys);
        let parts: Vec<&str> = sig.split(',').collect();
        assert_eq!(parts.len(), 2);
        let mut mac = Hmac::<Sha256>::new_from_slice("a".repeat(32).as_bytes()).expect("key");
        mac.update(b"conn1");
        let expected: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(parts[0], format!("sha256={expected}"));
        assert_ne!(parts[0], parts[1]);
    }
}
