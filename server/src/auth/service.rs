//! Service tokens: what backend services present to the REST and gRPC control planes
//! (spec §4.6).
//!
//! A service token is an HS256 JWT signed with an access key whose `aud` names the endpoint
//! and the path of what it may call:
//! - REST: the request URL, e.g. `http://host:port/api/hubs/chat/:send?api-version=2024-12-01`
//!   (the Azure SDKs sign the full URL including the query);
//! - gRPC: the endpoint followed by [`GRPC_AUDIENCE_PATH`].
//!
//! The comparison is deliberately tolerant of how SDKs spell a URL and strict about what it
//! names: scheme, host and port are compared ASCII case-insensitively (an explicit default
//! port equals none), paths are percent-decoded and compared ASCII case-insensitively, and a
//! query string, a fragment and one trailing `/` are ignored on both sides. A client access
//! token (audience `.../client/hubs/{hub}`) therefore never opens the control plane.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::DecodingKey;
use jsonwebtoken::errors::ErrorKind;
use serde::Serialize;
use serde_json::{Map, Value};

use super::{
    AuthError, HttpUrl, KeyRing, VALIDATION, check_header, jwt_error, percent_decode,
    string_or_array,
};

/// The path a gRPC control-plane token's audience names after the endpoint: the full name
/// of the service, so `aud` is e.g. `http://127.0.0.1:8080/hubcast.v1.Control`.
pub const GRPC_AUDIENCE_PATH: &str = "/hubcast.v1.Control";

/// The audience path of the gRPC event stream (`hubcast.v1.Events`): a backend that listens
/// to events needs a token for it; a control-plane token or a client's access token does not
/// open the stream.
pub const EVENTS_AUDIENCE_PATH: &str = "/hubcast.v1.Events";

/// Verifies a service token presented for `path` (percent-encoded or not) on the service at
/// `endpoint`.
///
/// Checks, in order: HS256 header, signature with any key of `keys`, `exp` (required) and
/// `nbf` with [`CLOCK_SKEW`](super::CLOCK_SKEW), then `aud` (a string or an array of which
/// one entry must match): its scheme, host and port must equal `endpoint`'s (ASCII
/// case-insensitive, an explicit default port equals none) and its path, percent-decoded,
/// must equal `endpoint`'s path followed by `path` (ASCII case-insensitive); a query, a
/// fragment and one trailing `/` are ignored on both sides.
///
/// # Errors
/// The [`AuthError`] to answer with (401 / `UNAUTHENTICATED`).
pub fn verify_service_token(
    token: &str,
    keys: &KeyRing,
    endpoint: &str,
    path: &str,
) -> Result<(), AuthError> {
    check_header(token)?;
    for key in keys.keys() {
        let key = DecodingKey::from_secret(key.as_bytes());
        match jsonwebtoken::decode::<Map<String, Value>>(token, &key, &VALIDATION) {
            Ok(data) => return check_audience(&data.claims, endpoint, path),
            Err(error) if matches!(error.kind(), ErrorKind::InvalidSignature) => continue,
            Err(error) => return Err(jwt_error(error.kind(), token)),
        }
    }
    Err(AuthError::BadSignature)
}

fn check_audience(
    claims: &Map<String, Value>,
    endpoint: &str,
    path: &str,
) -> Result<(), AuthError> {
    let audiences = string_or_array(claims.get("aud"), "aud")?;
    if audiences.is_empty() {
        return Err(AuthError::MissingClaim("aud"));
    }
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

/// Whether `aud` names `path` on `endpoint` (see the [module docs](self)).
fn service_audience_matches(aud: &str, endpoint: &str, path: &str) -> bool {
    let (Some(aud), Some(endpoint)) = (HttpUrl::parse(aud), HttpUrl::parse(endpoint)) else {
        return false;
    };
    if !aud.same_origin(&endpoint) {
        return false;
    }
    let decode = |p: &str| {
        let p = p.strip_suffix('/').unwrap_or(p);
        percent_decode(p)
    };
    let (Some(found), Some(prefix), Some(path)) = (
        decode(aud.path),
        decode(endpoint.path.trim_end_matches('/')),
        decode(path),
    ) else {
        return false;
    };
    found.eq_ignore_ascii_case(&format!("{prefix}{path}"))
}

/// Service token claims, in the order the JS SDK writes them.
#[derive(Serialize)]
struct ServiceClaims<'a> {
    iat: u64,
    exp: u64,
    aud: &'a str,
}

/// Mints a service token for `audience` (e.g. `{endpoint}/hubcast.v1.Control`, or a REST
/// request URL), valid for `ttl`, signed with `key` as Azure's server SDKs sign theirs:
/// header `{"alg":"HS256","typ":"JWT"}`, claims `iat`, `exp`, `aud`.
pub fn mint_service_token(key: &str, audience: &str, ttl: Duration) -> String {
    let iat = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let claims = ServiceClaims {
        iat,
        exp: iat.saturating_add(ttl.as_secs()),
        aud: audience,
    };
    super::sign_hs256(key, &claims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::TOKEN_HEADER;
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use jsonwebtoken::{Algorithm, EncodingKey};

    const KEY1: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ABCDEFGH";
    const KEY2: &str = "secondary-key-secondary-key-secondary-key-00";
    const ENDPOINT: &str = "http://127.0.0.1:8080";

    fn ring() -> KeyRing {
        KeyRing::new(vec![KEY1.to_owned(), KEY2.to_owned()]).expect("valid keys")
    }

    fn verify(aud: &str, path: &str) -> Result<(), AuthError> {
        let token = mint_service_token(KEY1, aud, Duration::from_secs(60));
        verify_service_token(&token, &ring(), ENDPOINT, path)
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
            assert_eq!(verify(aud, path), Ok(()), "{aud}");
        }
        for aud in [
            "http://127.0.0.1:8080/api/hubs/chat/groups/other/:send",
            "http://127.0.0.1:8080/api/hubs/chat/:send",
            "http://127.0.0.1:8081/api/hubs/chat/groups/a%20b%2Fc/:send",
            "https://127.0.0.1:8080/api/hubs/chat/groups/a%20b%2Fc/:send",
            "http://127.0.0.1:8080/client/hubs/chat",
        ] {
            assert!(
                matches!(verify(aud, path), Err(AuthError::WrongAudience { .. })),
                "{aud}"
            );
        }
    }

    #[test]
    fn grpc_audience() {
        assert_eq!(
            verify(
                "http://127.0.0.1:8080/hubcast.v1.Control",
                GRPC_AUDIENCE_PATH
            ),
            Ok(())
        );
        assert!(verify("http://127.0.0.1:8080/client/hubs/chat", GRPC_AUDIENCE_PATH).is_err());
    }

    #[test]
    fn keys_and_expiry() {
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
