//! Minting: client access tokens and service tokens, signed as Azure's SDKs sign them.
//!
//! Plain HMAC-SHA256 over the base64url header and claims: no JWT library, so that a client
//! that only mints tokens (the SDK, the load generator) links no verification code.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit as _, Mac};
use serde::Serialize;
use sha2::Sha256;

use crate::DEFAULT_TOKEN_TTL;

/// The JOSE header every Azure SDK writes, byte for byte.
pub(crate) const TOKEN_HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

/// Seconds since the Unix epoch (0 for a clock before 1970), for `iat`.
pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// Signs `claims` as an HS256 JWT with the header Azure's SDKs use,
/// `{"alg":"HS256","typ":"JWT"}` (exactly, so tokens look the same whoever minted them),
/// over the UTF-8 bytes of `key`.
///
/// # Panics
///
/// If `claims` cannot be serialized to JSON (a map with non-string keys); the claims of
/// Hubcast's tokens are plain strings and numbers.
pub fn sign_hs256(key: &str, claims: &impl Serialize) -> String {
    let claims = serde_json::to_vec(claims).expect("token claims serialize to JSON");
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(TOKEN_HEADER),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let mut mac =
        Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("HMAC accepts keys of any length");
    mac.update(message.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{message}.{signature}")
}

// === client tokens ===

/// The client endpoint a token is for; its path is part of the token's audience, so a
/// token for one endpoint never opens another (as in Azure, where the SDKs' `clientProtocol`
/// picks the path).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientProtocol {
    /// Web PubSub's own clients: `/client/hubs/{hub}`.
    #[default]
    Default,
    /// MQTT clients: `/clients/mqtt/hubs/{hub}`.
    Mqtt,
    /// Socket.IO clients (Engine.IO v4): `/clients/socketio/hubs/{hub}`.
    SocketIo,
}

impl ClientProtocol {
    /// The path of the endpoint before `/hubs/{hub}`, without slashes at either end.
    pub fn path(self) -> &'static str {
        match self {
            ClientProtocol::Default => "client",
            ClientProtocol::Mqtt => "clients/mqtt",
            ClientProtocol::SocketIo => "clients/socketio",
        }
    }
}

/// What `hubcast token` and the SDKs ask for when minting a client token.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    /// The hub the token is for (it is part of the audience).
    pub hub: String,
    /// The user id (`sub`); `None` for an anonymous-user connection.
    pub user_id: Option<String>,
    /// Role strings (`role`), e.g. `webpubsub.sendToGroup.room1`.
    pub roles: Vec<String>,
    /// Groups joined at connect (`webpubsub.group`).
    pub groups: Vec<String>,
    /// Lifetime: `exp = iat + ttl` (whole seconds).
    pub ttl: Duration,
}

impl TokenRequest {
    /// A request for `hub` with no user, roles or groups and the SDKs' default lifetime
    /// ([`DEFAULT_TOKEN_TTL`]).
    pub fn new(hub: impl Into<String>) -> Self {
        Self {
            hub: hub.into(),
            user_id: None,
            roles: Vec::new(),
            groups: Vec::new(),
            ttl: DEFAULT_TOKEN_TTL,
        }
    }
}

/// Client token claims, in the order the JS SDK writes them (spec example A.1).
#[derive(Serialize)]
struct MintedClaims<'a> {
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    role: &'a [String],
    #[serde(
        rename = "webpubsub.group",
        skip_serializing_if = "<[String]>::is_empty"
    )]
    groups: &'a [String],
    iat: u64,
    exp: u64,
    aud: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    sub: Option<&'a str>,
}

/// Mints a client access token exactly as Azure's SDKs do (spec §4.4, example A.1).
///
/// Header `{"alg":"HS256","typ":"JWT"}`; claims `role` and `webpubsub.group` (only if
/// non-empty), `iat`, `exp`, `aud = "{endpoint}/client/hubs/{hub}"` (endpoint without a
/// trailing `/`, hub as given, like the SDKs) and `sub` (only if set). Signed with HMAC-SHA256
/// over the UTF-8 bytes of `key`.
pub fn mint_client_token(key: &str, endpoint: &str, req: &TokenRequest) -> String {
    mint_client_token_for(key, endpoint, ClientProtocol::Default, req)
}

/// [`mint_client_token`] for the endpoint of `protocol`: `aud` is
/// `"{endpoint}/{protocol path}/hubs/{hub}"` (e.g. `.../clients/mqtt/hubs/{hub}`).
pub fn mint_client_token_for(
    key: &str,
    endpoint: &str,
    protocol: ClientProtocol,
    req: &TokenRequest,
) -> String {
    let iat = now_secs();
    let claims = MintedClaims {
        role: &req.roles,
        groups: &req.groups,
        iat,
        exp: iat.saturating_add(req.ttl.as_secs()),
        aud: format!(
            "{}/{}/hubs/{}",
            endpoint.trim_end_matches('/'),
            protocol.path(),
            req.hub
        ),
        sub: req.user_id.as_deref(),
    };
    sign_hs256(key, &claims)
}

// === service tokens ===

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
///
/// A REST audience is the request URL as sent, percent-encoded: the service compares it
/// segment by segment, so a `/` inside a group name must be written `%2F` in both.
pub fn mint_service_token(key: &str, audience: &str, ttl: Duration) -> String {
    let iat = now_secs();
    let claims = ServiceClaims {
        iat,
        exp: iat.saturating_add(ttl.as_secs()),
        aud: audience,
    };
    sign_hs256(key, &claims)
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    const KEY1: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ABCDEFGH";

    fn payload(token: &str) -> Value {
        let payload = token.split('.').nth(1).expect("payload");
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64")).expect("json")
    }

    /// The example token of RFC 7519's companion site jwt.io, signed with its published
    /// secret: the signature is HMAC-SHA256 as every JWT library computes it.
    #[test]
    fn signs_like_every_jwt_library() {
        #[derive(Serialize)]
        struct Example {
            sub: &'static str,
            name: &'static str,
            iat: u64,
        }
        let token = sign_hs256(
            "your-256-bit-secret",
            &Example {
                sub: "1234567890",
                name: "John Doe",
                iat: 1_516_239_022,
            },
        );
        assert_eq!(
            token,
            "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.\
             eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.\
             SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
        );
    }

    #[test]
    fn client_tokens_have_the_shape_of_the_azure_sdks() {
        let request = TokenRequest {
            hub: "chat".to_owned(),
            user_id: Some("alice".to_owned()),
            roles: vec!["webpubsub.sendToGroup.room1".to_owned()],
            groups: vec!["room1".to_owned()],
            ttl: Duration::from_secs(3600),
        };
        let token = mint_client_token(KEY1, "http://127.0.0.1:8080/", &request);

        // Same shape as the JS SDK (spec A.1).
        let segments: Vec<&str> = token.split('.').collect();
        assert_eq!(segments.len(), 3);
        let header = URL_SAFE_NO_PAD.decode(segments[0]).expect("base64");
        assert_eq!(header, TOKEN_HEADER.as_bytes());
        let payload = payload(&token);
        assert_eq!(payload["aud"], "http://127.0.0.1:8080/client/hubs/chat");
        assert_eq!(payload["sub"], "alice");
        assert_eq!(payload["role"], json!(["webpubsub.sendToGroup.room1"]));
        assert_eq!(payload["webpubsub.group"], json!(["room1"]));
        let iat = payload["iat"].as_u64().expect("iat");
        assert_eq!(payload["exp"].as_u64(), Some(iat + 3600));
    }

    #[test]
    fn minted_client_tokens_omit_empty_claims() {
        let token = mint_client_token(KEY1, "http://127.0.0.1:8080", &TokenRequest::new("chat"));
        let payload = payload(&token);
        let mut keys: Vec<&str> = payload
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(keys, ["aud", "exp", "iat"]);
        let iat = payload["iat"].as_u64().expect("iat");
        assert_eq!(
            payload["exp"].as_u64(),
            Some(iat + DEFAULT_TOKEN_TTL.as_secs())
        );
    }

    #[test]
    fn service_tokens_carry_iat_exp_and_the_audience() {
        let token = mint_service_token(
            KEY1,
            "http://127.0.0.1:8080/hubcast.v1.Control",
            Duration::from_secs(60),
        );
        let payload = payload(&token);
        assert_eq!(payload["aud"], "http://127.0.0.1:8080/hubcast.v1.Control");
        let iat = payload["iat"].as_u64().expect("iat");
        assert_eq!(payload["exp"].as_u64(), Some(iat + 60));
    }
}
