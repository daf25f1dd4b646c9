//! Verification of client access tokens and service tokens (feature `verify`).
//!
//! Every verifier checks, in this order: a three-segment JWT whose header says HS256 (`none`,
//! HS384/HS512 and asymmetric algorithms are refused before any key is tried, so no algorithm
//! confusion is possible); the signature, with each key of the ring in turn; `exp` (required)
//! and `nbf` with [`CLOCK_SKEW`] leeway; then `aud`, a string or an array of which one entry
//! must match.
//!
//! Audiences are compared tolerantly of how SDKs spell a URL and strictly about what it
//! names: scheme, host and port ASCII case-insensitively (an explicit default port equals
//! none); the path segment by segment ([`path_segments`]), each segment percent-decoded on
//! its own and compared ASCII case-insensitively; a query string, a fragment and one trailing
//! `/` are ignored. A `%2F` inside a segment never becomes a separator, so a token for the
//! group `a%2Fb` does not name the path `.../groups/a/b`. A client access token (audience
//! `.../client/hubs/{hub}`) therefore never opens the control plane, and a service token
//! names exactly the one request path it was minted for.

use std::sync::LazyLock;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::url::{HttpUrl, path_segments, percent_decode, same_segments};
use crate::{AuthError, CLOCK_SKEW, ClientProtocol, KeyRing};

/// Validation shared by client and service tokens: HS256 only, `exp` required, `exp`/`nbf`
/// checked with [`CLOCK_SKEW`]. `aud` is checked by [`audience_matches`] and
/// [`service_audience_matches`] instead.
static VALIDATION: LazyLock<Validation> = LazyLock::new(|| {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = CLOCK_SKEW.as_secs();
    validation.validate_exp = true;
    validation.validate_nbf = true;
    validation.validate_aud = false;
    validation.set_required_spec_claims(&["exp"]);
    validation
});

/// Checks the header, then the signature with each key of `keys` in turn and the time
/// claims per `validation`; returns the claims of the first key that verifies.
pub(crate) fn decode<T: DeserializeOwned>(
    token: &str,
    keys: &KeyRing,
    validation: &Validation,
) -> Result<T, AuthError> {
    check_header(token)?;
    for key in keys.keys() {
        let key = DecodingKey::from_secret(key.as_bytes());
        match jsonwebtoken::decode::<T>(token, &key, validation) {
            Ok(data) => return Ok(data.claims),
            Err(error) if matches!(error.kind(), ErrorKind::InvalidSignature) => continue,
            Err(error) => return Err(jwt_error(error.kind(), token)),
        }
    }
    Err(AuthError::BadSignature)
}

/// Refuses anything but a three-segment JWT whose header says HS256, before any key is tried.
fn check_header(token: &str) -> Result<(), AuthError> {
    let mut segments = token.split('.');
    let (Some(header), Some(_), Some(_), None) = (
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
    ) else {
        return Err(AuthError::Malformed);
    };
    let header = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| AuthError::Malformed)?;
    let header: Map<String, Value> =
        serde_json::from_slice(&header).map_err(|_| AuthError::Malformed)?;
    match header.get("alg") {
        Some(Value::String(alg)) if alg == "HS256" => Ok(()),
        Some(_) => Err(AuthError::UnsupportedAlgorithm),
        None => Err(AuthError::Malformed),
    }
}

/// Maps a `jsonwebtoken` failure (other than a bad signature) to what the client is told.
fn jwt_error(kind: &ErrorKind, token: &str) -> AuthError {
    match kind {
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        // `jsonwebtoken` also reports an `exp` it cannot read as a number (a string, a negative
        // number) as missing; tell the client which it is. The signature has been verified.
        ErrorKind::MissingRequiredClaim(_) => {
            let present =
                jsonwebtoken::dangerous::insecure_decode_claims::<Map<String, Value>>(token)
                    .is_ok_and(|claims| claims.get("exp").is_some_and(|exp| !exp.is_null()));
            if present {
                AuthError::InvalidClaim("exp")
            } else {
                AuthError::MissingClaim("exp")
            }
        }
        ErrorKind::InvalidClaimFormat(claim) if claim == "nbf" => AuthError::InvalidClaim("nbf"),
        ErrorKind::InvalidClaimFormat(_) => AuthError::InvalidClaim("exp"),
        ErrorKind::InvalidAlgorithm
        | ErrorKind::UnsupportedAlgorithm
        | ErrorKind::InvalidAlgorithmName
        | ErrorKind::MissingAlgorithm => AuthError::UnsupportedAlgorithm,
        _ => AuthError::Malformed,
    }
}

/// Reads a claim that may be absent, null, a string, or an array of strings.
fn string_or_array(value: Option<&Value>, claim: &'static str) -> Result<Vec<String>, AuthError> {
    match value {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                Value::String(s) => Ok(s.clone()),
                _ => Err(AuthError::InvalidClaim(claim)),
            })
            .collect(),
        Some(_) => Err(AuthError::InvalidClaim(claim)),
    }
}

/// The `aud` claim as a non-empty list.
fn audiences(claims: &Map<String, Value>) -> Result<Vec<String>, AuthError> {
    let audiences = string_or_array(claims.get("aud"), "aud")?;
    if audiences.is_empty() {
        return Err(AuthError::MissingClaim("aud"));
    }
    Ok(audiences)
}

/// Whether `aud` is a URL on `endpoint`'s origin whose path has the segments `wanted`
/// computes from `endpoint`'s path (without its trailing `/`).
fn names(aud: &str, endpoint: &str, wanted: impl FnOnce(&str) -> Option<Vec<String>>) -> bool {
    let (Some(aud), Some(endpoint)) = (HttpUrl::parse(aud), HttpUrl::parse(endpoint)) else {
        return false;
    };
    if !aud.same_origin(&endpoint) {
        return false;
    }
    let (Some(found), Some(wanted)) = (
        path_segments(aud.path),
        wanted(endpoint.path.trim_end_matches('/')),
    ) else {
        return false;
    };
    same_segments(&found, &wanted)
}

// === client tokens ===

/// What a verified client access token says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientClaims {
    /// The `sub` claim: the connection's user id. `None` if absent or empty.
    pub user_id: Option<String>,
    /// The `role` claim (array, or a single string), as written: the service turns it into
    /// permissions.
    pub roles: Vec<String>,
    /// The `webpubsub.group` claim (array, or a single string): groups joined at connect.
    pub groups: Vec<String>,
}

/// Verifies a client access token presented for `hub` on this service.
///
/// - The header must say `alg: HS256`; `none`, HS384/HS512 and asymmetric algorithms are
///   refused before any key is tried, so no algorithm confusion is possible.
/// - The signature must verify with one of `keys` (primary or secondary).
/// - `exp` is required; `exp` and `nbf` (if present) are checked with [`CLOCK_SKEW`] leeway.
/// - `aud` is required (a string, or an array of which one entry must match) and must name
///   `endpoint` and `hub`: its scheme and host\[:port\] are compared ASCII case-insensitively
///   with `endpoint` (e.g. `http://127.0.0.1:8080`; an explicit default port equals none), and
///   its path, segment by segment, with `{endpoint path}/client/hubs/{hub}` (ASCII
///   case-insensitive), ignoring a query string, a fragment and one trailing `/`.
///   `hub` may be given raw or percent-encoded; it is one segment.
/// - `sub` becomes the user id; `role` and `webpubsub.group` may be arrays of strings or
///   single strings.
///
/// # Errors
///
/// The [`AuthError`] to answer with (401), checked in the order above.
pub fn verify_client_token(
    token: &str,
    keys: &KeyRing,
    endpoint: &str,
    hub: &str,
) -> Result<ClientClaims, AuthError> {
    verify_client_token_for(token, keys, endpoint, ClientProtocol::Default, hub)
}

/// [`verify_client_token`] for the endpoint of `protocol`: the audience's path must be
/// `{endpoint path}/{protocol path}/hubs/{hub}` (e.g. `.../clients/mqtt/hubs/{hub}`).
///
/// # Errors
/// As [`verify_client_token`].
pub fn verify_client_token_for(
    token: &str,
    keys: &KeyRing,
    endpoint: &str,
    protocol: ClientProtocol,
    hub: &str,
) -> Result<ClientClaims, AuthError> {
    let claims: Map<String, Value> = decode(token, keys, &VALIDATION)?;
    client_claims(&claims, endpoint, protocol, hub)
}

/// Checks `aud` and extracts the claims Hubcast uses from verified claims.
fn client_claims(
    claims: &Map<String, Value>,
    endpoint: &str,
    protocol: ClientProtocol,
    hub: &str,
) -> Result<ClientClaims, AuthError> {
    let audiences = audiences(claims)?;
    if !audiences
        .iter()
        .any(|aud| audience_matches(aud, endpoint, protocol, hub))
    {
        return Err(AuthError::WrongAudience {
            expected: format!(
                "{}/{}/hubs/{hub}",
                endpoint.trim_end_matches('/'),
                protocol.path()
            ),
            found: audiences.join(", "),
        });
    }
    let user_id = match claims.get("sub") {
        None | Some(Value::Null) => None,
        Some(Value::String(sub)) if sub.is_empty() => None,
        Some(Value::String(sub)) => Some(sub.clone()),
        Some(_) => return Err(AuthError::InvalidClaim("sub")),
    };
    Ok(ClientClaims {
        user_id,
        roles: string_or_array(claims.get("role"), "role")?,
        groups: string_or_array(claims.get("webpubsub.group"), "webpubsub.group")?,
    })
}

/// Whether one `aud` value names `endpoint` and `hub` (see [`verify_client_token`]).
fn audience_matches(aud: &str, endpoint: &str, protocol: ClientProtocol, hub: &str) -> bool {
    let hub = percent_decode(hub).unwrap_or_else(|| hub.to_owned());
    names(aud, endpoint, |prefix| {
        let mut segments = path_segments(prefix)?;
        segments.extend(protocol.path().split('/').map(str::to_owned));
        segments.extend(["hubs".to_owned(), hub]);
        Some(segments)
    })
}

// === service tokens ===

/// Verifies a service token (spec §4.6) presented for `path` on the service at `endpoint`.
///
/// A service token is what backend services present to the REST and gRPC control planes:
/// its `aud` names the endpoint and the path of what it may call, for REST the request URL
/// (e.g. `http://host:port/api/hubs/chat/:send?api-version=2024-12-01`; the Azure SDKs sign
/// the full URL including the query), for gRPC the endpoint followed by
/// [`GRPC_AUDIENCE_PATH`](crate::GRPC_AUDIENCE_PATH) or
/// [`EVENTS_AUDIENCE_PATH`](crate::EVENTS_AUDIENCE_PATH).
///
/// `path` is the request path as sent, still percent-encoded. Header, signature, `exp` and
/// `nbf` are checked as by [`verify_client_token`], then `aud`: its origin must be
/// `endpoint`'s, and its path must have the segments of `endpoint`'s path followed by
/// `path`'s, each decoded on its own (so `%2F` stays inside its segment) and compared ASCII
/// case-insensitively; a query, a fragment and one trailing `/` are ignored on both sides.
///
/// # Errors
/// The [`AuthError`] to answer with (401 / `UNAUTHENTICATED`).
pub fn verify_service_token(
    token: &str,
    keys: &KeyRing,
    endpoint: &str,
    path: &str,
) -> Result<(), AuthError> {
    let claims: Map<String, Value> = decode(token, keys, &VALIDATION)?;
    let audiences = audiences(&claims)?;
    if audiences
        .iter()
        .any(|aud| service_audience_matches(aud, endpoint, path))
    {
        Ok(())
    } else {
        Err(AuthError::WrongAudience {
            expected: format!("{}{path}", endpoint.trim_end_matches('/')),
            found: audiences.join(", "),
        })
    }
}

/// Verifies the token of a backend that opens Azure's tunnel (`/server/tunnel?hub=…`): a
/// service token whose `aud` is the tunnel URL itself, with the `ws`/`wss` scheme Azure's
/// packages put there (spec part 2 §2.4a). The scheme is read as `http`/`https` and the rest
/// is checked as by [`verify_service_token`] (the query, which names the hub, is ignored there
/// as for REST; the hub the tunnel serves is the request's).
///
/// # Errors
/// The [`AuthError`] to answer with (401).
pub fn verify_tunnel_token(
    token: &str,
    keys: &KeyRing,
    endpoint: &str,
    path: &str,
) -> Result<(), AuthError> {
    let claims: Map<String, Value> = decode(token, keys, &VALIDATION)?;
    let audiences = audiences(&claims)?;
    let as_http = |aud: &str| {
        let lower = aud
            .get(..6)
            .map(str::to_ascii_lowercase)
            .unwrap_or_default();
        if lower.starts_with("wss://") {
            format!("https://{}", &aud[6..])
        } else if lower.starts_with("ws://") {
            format!("http://{}", &aud[5..])
        } else {
            aud.to_owned()
        }
    };
    if audiences
        .iter()
        .any(|aud| service_audience_matches(&as_http(aud), endpoint, path))
    {
        Ok(())
    } else {
        Err(AuthError::WrongAudience {
            expected: format!("{}{path}", endpoint.trim_end_matches('/')),
            found: audiences.join(", "),
        })
    }
}

/// Whether `aud` names `path` on `endpoint` (see [`verify_service_token`]).
fn service_audience_matches(aud: &str, endpoint: &str, path: &str) -> bool {
    // A request path that is not valid percent-encoded UTF-8 names nothing.
    names(aud, endpoint, |prefix| {
        path_segments(&format!("{prefix}{path}"))
    })
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    use super::verify_tunnel_token;
    use super::*;
    use crate::mint::TOKEN_HEADER;
    use crate::{GRPC_AUDIENCE_PATH, TokenRequest, mint_client_token, mint_service_token};

    const KEY1: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ABCDEFGH";
    const KEY2: &str = "secondary-key-secondary-key-secondary-key-00";
    const ENDPOINT: &str = "http://127.0.0.1:8080";

    fn ring() -> KeyRing {
        KeyRing::new(vec![KEY1.to_owned(), KEY2.to_owned()]).expect("valid keys")
    }

    fn now() -> i64 {
        i64::try_from(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .expect("clock after 1970")
                .as_secs(),
        )
        .expect("fits")
    }

    fn sign_with(alg: Algorithm, key: &str, claims: &Value) -> String {
        jsonwebtoken::encode(
            &Header::new(alg),
            claims,
            &EncodingKey::from_secret(key.as_bytes()),
        )
        .expect("encode")
    }

    fn sign(key: &str, claims: &Value) -> String {
        sign_with(Algorithm::HS256, key, claims)
    }

    fn claims_with_aud(aud: &str) -> Value {
        json!({ "aud": aud, "exp": now() + 3600, "iat": now(), "sub": "alice" })
    }

    fn verify(token: &str, hub: &str) -> Result<ClientClaims, AuthError> {
        verify_client_token(token, &ring(), ENDPOINT, hub)
    }

    fn verify_aud(aud: &str, hub: &str) -> Result<ClientClaims, AuthError> {
        verify(&sign(KEY1, &claims_with_aud(aud)), hub)
    }

    #[test]
    fn valid_token() {
        let token = sign(
            KEY1,
            &json!({
                "aud": "http://127.0.0.1:8080/client/hubs/chat",
                "exp": now() + 60,
                "iat": now(),
                "sub": "alice",
                "role": ["webpubsub.sendToGroup.room1", "webpubsub.joinLeaveGroup"],
                "webpubsub.group": ["room1"],
            }),
        );
        let claims = verify(&token, "chat").expect("valid");
        assert_eq!(
            claims,
            ClientClaims {
                user_id: Some("alice".to_owned()),
                roles: vec![
                    "webpubsub.sendToGroup.room1".to_owned(),
                    "webpubsub.joinLeaveGroup".to_owned()
                ],
                groups: vec!["room1".to_owned()],
            }
        );
    }

    #[test]
    fn socketio_tokens_open_only_the_socketio_endpoint() {
        let request = TokenRequest::new("chat");
        let sio = crate::mint_client_token_for(KEY1, ENDPOINT, ClientProtocol::SocketIo, &request);
        let payload: Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(sio.split('.').nth(1).expect("payload"))
                .expect("base64"),
        )
        .expect("JSON");
        assert_eq!(
            payload["aud"],
            "http://127.0.0.1:8080/clients/socketio/hubs/chat"
        );
        verify_client_token_for(&sio, &ring(), ENDPOINT, ClientProtocol::SocketIo, "chat")
            .expect("a Socket.IO token opens the Socket.IO endpoint");
        assert!(matches!(
            verify_client_token(&sio, &ring(), ENDPOINT, "chat"),
            Err(AuthError::WrongAudience { .. })
        ));
        let default = mint_client_token(KEY1, ENDPOINT, &request);
        let refused = verify_client_token_for(
            &default,
            &ring(),
            ENDPOINT,
            ClientProtocol::SocketIo,
            "chat",
        );
        match refused {
            Err(AuthError::WrongAudience { expected, .. }) => {
                assert_eq!(expected, "http://127.0.0.1:8080/clients/socketio/hubs/chat");
            }
            other => panic!("a /client token must not open the Socket.IO endpoint: {other:?}"),
        }
        assert_eq!(
            crate::client_url_for(ENDPOINT, ClientProtocol::SocketIo, "chat", "t"),
            "ws://127.0.0.1:8080/clients/socketio/hubs/chat?access_token=t"
        );
    }

    #[test]
    fn minimal_token_has_no_user() {
        let token = sign(
            KEY1,
            &json!({ "aud": "http://127.0.0.1:8080/client/hubs/chat", "exp": now() + 60 }),
        );
        assert_eq!(verify(&token, "chat"), Ok(ClientClaims::default()));
    }

    #[test]
    fn second_key_accepted() {
        let token = sign(
            KEY2,
            &claims_with_aud("http://127.0.0.1:8080/client/hubs/chat"),
        );
        assert!(verify(&token, "chat").is_ok());
    }

    #[test]
    fn wrong_key_refused() {
        let token = sign(
            "some-other-key-some-other-key-some-other-key",
            &claims_with_aud("http://127.0.0.1:8080/client/hubs/chat"),
        );
        assert_eq!(verify(&token, "chat"), Err(AuthError::BadSignature));
    }

    #[test]
    fn tampered_payload_refused() {
        let token = sign(
            KEY1,
            &claims_with_aud("http://127.0.0.1:8080/client/hubs/chat"),
        );
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode(
            claims_with_aud("http://127.0.0.1:8080/client/hubs/chat")
                .to_string()
                .replace("alice", "admin"),
        );
        parts[1] = &forged;
        assert_eq!(
            verify(&parts.join("."), "chat"),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn expiry_with_clock_skew() {
        let aud = "http://127.0.0.1:8080/client/hubs/chat";
        let expired = sign(KEY1, &json!({ "aud": aud, "exp": now() - 400 }));
        assert_eq!(verify(&expired, "chat"), Err(AuthError::Expired));
        let within_skew = sign(KEY1, &json!({ "aud": aud, "exp": now() - 100 }));
        assert!(verify(&within_skew, "chat").is_ok());
    }

    #[test]
    fn exp_required() {
        let token = sign(
            KEY1,
            &json!({ "aud": "http://127.0.0.1:8080/client/hubs/chat" }),
        );
        assert_eq!(verify(&token, "chat"), Err(AuthError::MissingClaim("exp")));
        let token = sign(
            KEY1,
            &json!({ "aud": "http://127.0.0.1:8080/client/hubs/chat", "exp": "soon" }),
        );
        assert_eq!(verify(&token, "chat"), Err(AuthError::InvalidClaim("exp")));
        let token = sign(
            KEY1,
            &json!({ "aud": "http://127.0.0.1:8080/client/hubs/chat", "exp": -5 }),
        );
        assert_eq!(verify(&token, "chat"), Err(AuthError::InvalidClaim("exp")));
        let token = sign(
            KEY1,
            &json!({ "aud": "http://127.0.0.1:8080/client/hubs/chat", "exp": null }),
        );
        assert_eq!(verify(&token, "chat"), Err(AuthError::MissingClaim("exp")));
    }

    #[test]
    fn not_before() {
        let aud = "http://127.0.0.1:8080/client/hubs/chat";
        let future = sign(
            KEY1,
            &json!({ "aud": aud, "exp": now() + 3600, "nbf": now() + 400 }),
        );
        assert_eq!(verify(&future, "chat"), Err(AuthError::NotYetValid));
        let within_skew = sign(
            KEY1,
            &json!({ "aud": aud, "exp": now() + 3600, "nbf": now() + 100 }),
        );
        assert!(verify(&within_skew, "chat").is_ok());
    }

    #[test]
    fn alg_none_refused() {
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD
            .encode(claims_with_aud("http://127.0.0.1:8080/client/hubs/chat").to_string());
        let token = format!("{header}.{payload}.");
        assert_eq!(verify(&token, "chat"), Err(AuthError::UnsupportedAlgorithm));
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"None"}"#);
        let token = format!("{header}.{payload}.");
        assert_eq!(verify(&token, "chat"), Err(AuthError::UnsupportedAlgorithm));
    }

    #[test]
    fn other_hmac_algorithms_refused() {
        let claims = claims_with_aud("http://127.0.0.1:8080/client/hubs/chat");
        for alg in [Algorithm::HS384, Algorithm::HS512] {
            let token = sign_with(alg, KEY1, &claims);
            assert_eq!(
                verify(&token, "chat"),
                Err(AuthError::UnsupportedAlgorithm),
                "{alg:?}"
            );
        }
    }

    /// Algorithm confusion: a token whose header names an asymmetric algorithm but which is
    /// HMAC-signed with the access key (what an attacker does when a verifier uses the
    /// header's algorithm with the key as a "public key") is refused before any key is tried.
    #[test]
    fn asymmetric_algorithm_headers_are_refused_even_with_a_valid_hmac() {
        use hmac::{Hmac, KeyInit as _, Mac};
        let payload = URL_SAFE_NO_PAD
            .encode(claims_with_aud("http://127.0.0.1:8080/client/hubs/chat").to_string());
        for alg in ["RS256", "ES256", "PS256", "EdDSA", "hs256"] {
            let header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#));
            let message = format!("{header}.{payload}");
            let mut mac =
                Hmac::<sha2::Sha256>::new_from_slice(KEY1.as_bytes()).expect("any key length");
            mac.update(message.as_bytes());
            let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
            assert_eq!(
                verify(&format!("{message}.{signature}"), "chat"),
                Err(AuthError::UnsupportedAlgorithm),
                "{alg}"
            );
        }
    }

    #[test]
    fn malformed_tokens() {
        for token in ["", "abc", "a.b", "a.b.c.d", "!!!.e30.sig", "e30.e30.sig"] {
            assert_eq!(
                verify(token, "chat"),
                Err(AuthError::Malformed),
                "{token:?}"
            );
        }
        // A header without `alg`.
        let header = URL_SAFE_NO_PAD.encode(r#"{"typ":"JWT"}"#);
        assert_eq!(
            verify(&format!("{header}.e30.sig"), "chat"),
            Err(AuthError::Malformed)
        );
        // A payload that is not a JSON object, correctly signed.
        let header = URL_SAFE_NO_PAD.encode(TOKEN_HEADER);
        let message = format!("{header}.{}", URL_SAFE_NO_PAD.encode("[1]"));
        let signature = jsonwebtoken::crypto::sign(
            message.as_bytes(),
            &EncodingKey::from_secret(KEY1.as_bytes()),
            Algorithm::HS256,
        )
        .expect("sign");
        assert_eq!(
            verify(&format!("{message}.{signature}"), "chat"),
            Err(AuthError::Malformed)
        );
    }

    #[test]
    fn audience_checks() {
        // Accepted variations.
        assert!(verify_aud("http://127.0.0.1:8080/client/hubs/chat/", "chat").is_ok());
        assert!(verify_aud("http://127.0.0.1:8080/client/hubs/chat?x=1&y=2", "chat").is_ok());
        assert!(verify_aud("http://127.0.0.1:8080/client/hubs/chat/?x=1", "chat").is_ok());
        assert!(verify_aud("HTTP://127.0.0.1:8080/client/hubs/Chat", "chat").is_ok());
        assert!(verify_aud("http://127.0.0.1:8080/client/hubs/chat", "CHAT").is_ok());
        assert!(verify_aud("http://127.0.0.1:8080/client/hubs/my%20hub", "my hub").is_ok());
        assert!(verify_aud("http://127.0.0.1:8080/client/hubs/my%20hub", "my%20hub").is_ok());
        assert!(verify_aud("http://127.0.0.1:8080/client/hubs/%63hat", "chat").is_ok());

        // Refused.
        for (aud, hub) in [
            ("http://localhost:8080/client/hubs/chat", "chat"),
            ("http://127.0.0.1:8081/client/hubs/chat", "chat"),
            ("http://127.0.0.1/client/hubs/chat", "chat"),
            ("https://127.0.0.1:8080/client/hubs/chat", "chat"),
            ("ws://127.0.0.1:8080/client/hubs/chat", "chat"),
            ("http://127.0.0.1:8080/client/hubs/other", "chat"),
            ("http://127.0.0.1:8080/client/hubs/chat2", "chat"),
            ("http://127.0.0.1:8080/client/hubs/chat//", "chat"),
            ("http://127.0.0.1:8080/client/hubs", "chat"),
            ("http://127.0.0.1:8080/api/hubs/chat", "chat"),
            ("http://127.0.0.1:8080/clients/mqtt/hubs/chat", "chat"),
            ("http://user@127.0.0.1:8080/client/hubs/chat", "chat"),
            ("http://127.0.0.1:8080/client/hubs/%zz", "chat"),
            ("chat", "chat"),
        ] {
            assert!(
                matches!(verify_aud(aud, hub), Err(AuthError::WrongAudience { .. })),
                "{aud} should be refused for hub {hub}"
            );
        }
        let error =
            verify_aud("http://localhost:8080/client/hubs/chat", "chat").expect_err("wrong");
        assert_eq!(
            error.to_string(),
            "access token audience `http://localhost:8080/client/hubs/chat` does not match \
             `http://127.0.0.1:8080/client/hubs/chat`"
        );
    }

    #[test]
    fn audience_default_ports() {
        let token = sign(
            KEY1,
            &claims_with_aud("http://example.com:80/client/hubs/chat"),
        );
        assert!(verify_client_token(&token, &ring(), "http://example.com", "chat").is_ok());
        let token = sign(
            KEY1,
            &claims_with_aud("https://Example.COM/client/hubs/chat"),
        );
        assert!(verify_client_token(&token, &ring(), "https://example.com:443", "chat").is_ok());
        assert!(verify_client_token(&token, &ring(), "https://example.com/", "chat").is_ok());
        assert!(verify_client_token(&token, &ring(), "http://example.com:443", "chat").is_err());
    }

    #[test]
    fn audience_with_ipv6_and_endpoint_path() {
        let token = sign(KEY1, &claims_with_aud("http://[::1]:8080/client/hubs/chat"));
        assert!(verify_client_token(&token, &ring(), "http://[::1]:8080", "chat").is_ok());
        assert!(verify_client_token(&token, &ring(), "http://[::1]:8081", "chat").is_err());
        let token = sign(
            KEY1,
            &claims_with_aud("https://proxy.example/pubsub/client/hubs/chat"),
        );
        assert!(
            verify_client_token(&token, &ring(), "https://proxy.example/pubsub", "chat").is_ok()
        );
        assert!(verify_client_token(&token, &ring(), "https://proxy.example", "chat").is_err());
    }

    #[test]
    fn audience_required_and_may_be_an_array() {
        let token = sign(KEY1, &json!({ "exp": now() + 60 }));
        assert_eq!(verify(&token, "chat"), Err(AuthError::MissingClaim("aud")));
        let token = sign(
            KEY1,
            &json!({
                "exp": now() + 60,
                "aud": ["http://elsewhere/x", "http://127.0.0.1:8080/client/hubs/chat"],
            }),
        );
        assert!(verify(&token, "chat").is_ok());
        let token = sign(KEY1, &json!({ "exp": now() + 60, "aud": 42 }));
        assert_eq!(verify(&token, "chat"), Err(AuthError::InvalidClaim("aud")));
    }

    #[test]
    fn role_and_group_as_single_strings() {
        let token = sign(
            KEY1,
            &json!({
                "aud": "http://127.0.0.1:8080/client/hubs/chat",
                "exp": now() + 60,
                "role": "webpubsub.joinLeaveGroup",
                "webpubsub.group": "lobby",
            }),
        );
        let claims = verify(&token, "chat").expect("valid");
        assert_eq!(claims.roles, vec!["webpubsub.joinLeaveGroup".to_owned()]);
        assert_eq!(claims.groups, vec!["lobby".to_owned()]);
        assert_eq!(claims.user_id, None);
    }

    #[test]
    fn claims_of_the_wrong_type() {
        let aud = "http://127.0.0.1:8080/client/hubs/chat";
        let token = sign(KEY1, &json!({ "aud": aud, "exp": now() + 60, "role": [1] }));
        assert_eq!(verify(&token, "chat"), Err(AuthError::InvalidClaim("role")));
        let token = sign(KEY1, &json!({ "aud": aud, "exp": now() + 60, "sub": 7 }));
        assert_eq!(verify(&token, "chat"), Err(AuthError::InvalidClaim("sub")));
        let token = sign(
            KEY1,
            &json!({ "aud": aud, "exp": now() + 60, "webpubsub.group": {} }),
        );
        assert_eq!(
            verify(&token, "chat"),
            Err(AuthError::InvalidClaim("webpubsub.group"))
        );
    }

    #[test]
    fn mint_then_verify() {
        let request = TokenRequest {
            hub: "chat".to_owned(),
            user_id: Some("alice".to_owned()),
            roles: vec!["webpubsub.sendToGroup.room1".to_owned()],
            groups: vec!["room1".to_owned()],
            ttl: Duration::from_secs(3600),
        };
        let token = mint_client_token(KEY1, "http://127.0.0.1:8080/", &request);
        let claims = verify(&token, "chat").expect("minted token verifies");
        assert_eq!(claims.user_id.as_deref(), Some("alice"));
        assert_eq!(claims.roles, request.roles);
        assert_eq!(claims.groups, request.groups);
    }

    #[test]
    fn minimal_minted_token_verifies() {
        let token = mint_client_token(KEY1, ENDPOINT, &TokenRequest::new("chat"));
        assert_eq!(verify(&token, "chat"), Ok(ClientClaims::default()));
        // Signed with the secondary key of another ring: refused.
        let other = KeyRing::random_dev();
        assert_eq!(
            verify_client_token(&token, &other, ENDPOINT, "chat"),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn mqtt_tokens_open_the_mqtt_endpoint_only() {
        use crate::{ClientProtocol, mint_client_token_for};
        let request = TokenRequest::new("chat");
        let mqtt = mint_client_token_for(KEY1, ENDPOINT, ClientProtocol::Mqtt, &request);
        let payload = URL_SAFE_NO_PAD
            .decode(mqtt.split('.').nth(1).expect("payload"))
            .expect("base64");
        let payload: Map<String, Value> = serde_json::from_slice(&payload).expect("json");
        assert_eq!(
            payload["aud"],
            "http://127.0.0.1:8080/clients/mqtt/hubs/chat"
        );
        assert!(
            verify_client_token_for(&mqtt, &ring(), ENDPOINT, ClientProtocol::Mqtt, "chat").is_ok()
        );
        assert!(matches!(
            verify(&mqtt, "chat"),
            Err(AuthError::WrongAudience { .. })
        ));
        let default = mint_client_token(KEY1, ENDPOINT, &request);
        assert!(matches!(
            verify_client_token_for(&default, &ring(), ENDPOINT, ClientProtocol::Mqtt, "chat"),
            Err(AuthError::WrongAudience { .. })
        ));
    }

    // === service tokens ===

    fn verify_service(aud: &str, path: &str) -> Result<(), AuthError> {
        let token = mint_service_token(KEY1, aud, Duration::from_secs(60));
        verify_service_token(&token, &ring(), ENDPOINT, path)
    }

    #[test]
    fn tunnel_audiences_use_the_ws_scheme() {
        let verify = |aud: &str| {
            let token = mint_service_token(KEY1, aud, Duration::from_secs(60));
            verify_tunnel_token(&token, &ring(), ENDPOINT, "/server/tunnel")
        };
        assert_eq!(verify("ws://127.0.0.1:8080/server/tunnel?hub=Chat"), Ok(()));
        assert_eq!(verify("WS://127.0.0.1:8080/server/tunnel"), Ok(()));
        assert_eq!(
            verify("http://127.0.0.1:8080/server/tunnel?hub=chat"),
            Ok(())
        );
        for aud in [
            "wss://127.0.0.1:8080/server/tunnel?hub=chat",
            "ws://127.0.0.1:9999/server/tunnel?hub=chat",
            "ws://127.0.0.1:8080/api/hubs/chat",
            "ws",
        ] {
            assert!(
                matches!(verify(aud), Err(AuthError::WrongAudience { .. })),
                "{aud}"
            );
        }
    }

    #[test]
    fn rest_audiences_ignore_query_and_trailing_slash() {
        let path = "/api/hubs/chat/groups/a%20b%2Fc/:send";
        for aud in [
            "http://127.0.0.1:8080/api/hubs/chat/groups/a%20b%2Fc/:send?api-version=2024-12-01&excluded=x",
            "http://127.0.0.1:8080/api/hubs/chat/groups/a%20b%2Fc/:send",
            "http://127.0.0.1:8080/api/hubs/chat/groups/a%20b%2Fc/:send/",
            "HTTP://127.0.0.1:8080/api/hubs/CHAT/groups/a%20b%2fc/:send?x",
            "http://127.0.0.1:8080/api/hubs/chat/groups/a b%2Fc/:send",
        ] {
            assert_eq!(verify_service(aud, path), Ok(()), "{aud}");
        }
        for aud in [
            "http://127.0.0.1:8080/api/hubs/chat/groups/other/:send",
            "http://127.0.0.1:8080/api/hubs/chat/:send",
            "http://127.0.0.1:8081/api/hubs/chat/groups/a%20b%2Fc/:send",
            "https://127.0.0.1:8080/api/hubs/chat/groups/a%20b%2Fc/:send",
            "http://127.0.0.1:8080/client/hubs/chat",
        ] {
            assert!(
                matches!(
                    verify_service(aud, path),
                    Err(AuthError::WrongAudience { .. })
                ),
                "{aud}"
            );
        }
    }

    /// A `%2F` is part of its segment on both sides: a token for the group
    /// `a/connections/c1` does not name the path of connection `c1` in group `a`, nor the
    /// other way round, while each still names its own path.
    #[test]
    fn an_encoded_slash_never_separates_audience_segments() {
        let group = "http://127.0.0.1:8080/api/hubs/chat/groups/a%2Fconnections%2Fc1";
        let member = "http://127.0.0.1:8080/api/hubs/chat/groups/a/connections/c1";
        assert_eq!(
            verify_service(group, "/api/hubs/chat/groups/a%2Fconnections%2Fc1"),
            Ok(())
        );
        assert_eq!(
            verify_service(member, "/api/hubs/chat/groups/a/connections/c1"),
            Ok(())
        );
        assert!(matches!(
            verify_service(group, "/api/hubs/chat/groups/a/connections/c1"),
            Err(AuthError::WrongAudience { .. })
        ));
        assert!(matches!(
            verify_service(member, "/api/hubs/chat/groups/a%2Fconnections%2Fc1"),
            Err(AuthError::WrongAudience { .. })
        ));
        // The same for a client token's hub: one segment, whatever it decodes to.
        assert!(matches!(
            verify_aud("http://127.0.0.1:8080/client%2Fhubs%2Fchat", "chat"),
            Err(AuthError::WrongAudience { .. })
        ));
        // A request path that does not decode to UTF-8 names nothing.
        assert!(matches!(
            verify_service(
                "http://127.0.0.1:8080/api/hubs/chat/groups/%FF",
                "/api/hubs/chat/groups/%FF"
            ),
            Err(AuthError::WrongAudience { .. })
        ));
    }

    #[test]
    fn service_audience_under_an_endpoint_path() {
        let token = mint_service_token(
            KEY1,
            "https://proxy.example/pubsub/api/hubs/chat/:send",
            Duration::from_secs(60),
        );
        let endpoint = "https://proxy.example/pubsub/";
        assert_eq!(
            verify_service_token(&token, &ring(), endpoint, "/api/hubs/chat/:send"),
            Ok(())
        );
        assert!(
            verify_service_token(
                &token,
                &ring(),
                "https://proxy.example",
                "/api/hubs/chat/:send"
            )
            .is_err()
        );
    }

    #[test]
    fn grpc_audience() {
        assert_eq!(
            verify_service(
                "http://127.0.0.1:8080/hubcast.v1.Control",
                GRPC_AUDIENCE_PATH
            ),
            Ok(())
        );
        assert!(
            verify_service("http://127.0.0.1:8080/client/hubs/chat", GRPC_AUDIENCE_PATH).is_err()
        );
    }

    #[test]
    fn service_keys_and_expiry() {
        let token = mint_service_token(KEY2, "http://127.0.0.1:8080/x", Duration::from_secs(60));
        assert_eq!(
            verify_service_token(&token, &ring(), ENDPOINT, "/x"),
            Ok(())
        );
        let other = mint_service_token(
            "some-other-key-some-other-key-some-other-key",
            "http://127.0.0.1:8080/x",
            Duration::from_secs(60),
        );
        assert_eq!(
            verify_service_token(&other, &ring(), ENDPOINT, "/x"),
            Err(AuthError::BadSignature)
        );
        let expired = {
            let header = URL_SAFE_NO_PAD.encode(TOKEN_HEADER);
            let claims = URL_SAFE_NO_PAD
                .encode(r#"{"aud":"http://127.0.0.1:8080/x","exp":1000000000}"#.as_bytes());
            let message = format!("{header}.{claims}");
            let signature = jsonwebtoken::crypto::sign(
                message.as_bytes(),
                &EncodingKey::from_secret(KEY1.as_bytes()),
                Algorithm::HS256,
            )
            .expect("sign");
            format!("{message}.{signature}")
        };
        assert_eq!(
            verify_service_token(&expired, &ring(), ENDPOINT, "/x"),
            Err(AuthError::Expired)
        );
    }
}
