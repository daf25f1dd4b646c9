//! Access keys, client access tokens and connection strings (spec §4.1, §4.2, §4.4).
//!
//! Client access tokens are HS256 JWTs signed with one of the service's access keys, used as
//! raw UTF-8 bytes (never base64-decoded), exactly as Azure's server SDKs sign them. Either
//! key verifies a token, which is how key rotation works.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use std::fmt;
use std::sync::LazyLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Validation};
use serde::Serialize;
use serde_json::{Map, Value};

mod service;

pub use service::{
    EVENTS_AUDIENCE_PATH, GRPC_AUDIENCE_PATH, mint_service_token, verify_service_token,
};

/// Leeway applied to `exp` and `nbf` so that clocks a few minutes apart still agree.
pub const CLOCK_SKEW: Duration = Duration::from_secs(300);

/// Shortest accepted access key, in UTF-8 bytes (the Azure emulator's rule).
pub const MIN_KEY_LEN: usize = 32;

/// Token lifetime the Azure SDKs use when the caller does not choose one.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(60 * 60);

/// The JOSE header every Azure SDK writes, byte for byte.
const TOKEN_HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

/// Why a key, token or connection string was refused.
///
/// The `Display` text of the token variants is what the client sees in the 401 body: precise
/// enough to fix the token, and never containing a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// An access key is unusable (empty key list, too short, or not fit for a connection
    /// string). The message names the key by position, never by value.
    #[error("invalid access key: {0}")]
    InvalidKey(String),
    /// A connection string could not be parsed. The message never contains the key.
    #[error("invalid connection string: {0}")]
    InvalidConnectionString(String),
    /// No token was presented where one is required (for edges that check this).
    #[error(
        "no access token: pass `access_token` in the query string or an `Authorization: Bearer` header"
    )]
    MissingToken,
    /// The token is not a JWT: not three base64url segments, or a header/payload that is not
    /// a JSON object.
    #[error(
        "malformed access token: expected a JWT (three base64url segments with a JSON header and claims)"
    )]
    Malformed,
    /// The token header names an algorithm other than HS256 (including `none`).
    #[error("unsupported access token algorithm: only HS256 is accepted")]
    UnsupportedAlgorithm,
    /// The signature does not verify with any access key of this service.
    #[error("invalid access token signature: not signed with an access key of this service")]
    BadSignature,
    /// `exp` is in the past by more than [`CLOCK_SKEW`].
    #[error("access token has expired")]
    Expired,
    /// `nbf` is in the future by more than [`CLOCK_SKEW`].
    #[error("access token is not valid yet (`nbf` is in the future)")]
    NotYetValid,
    /// A required claim (`exp`, `aud`) is absent.
    #[error("access token has no `{0}` claim")]
    MissingClaim(&'static str),
    /// A claim has the wrong JSON type (e.g. a number where a string is expected).
    #[error("access token claim `{0}` has an invalid value")]
    InvalidClaim(&'static str),
    /// The `aud` claim names another endpoint or hub.
    #[error("access token audience `{found}` does not match `{expected}`")]
    WrongAudience {
        /// The audience this endpoint and hub expect.
        expected: String,
        /// The audience found in the token.
        found: String,
    },
}

// === impl KeyRing ===

/// The service's access keys, primary first.
///
/// Tokens are signed with the primary key and verified with every key. The HMAC key bytes
/// are the UTF-8 bytes of the key string, not its base64 decoding. `Debug` redacts the keys.
#[derive(Clone)]
pub struct KeyRing {
    /// Never empty; every key passed [`validate_key`].
    keys: Vec<String>,
}

impl KeyRing {
    /// Builds a key ring from the configured keys, primary first.
    ///
    /// # Errors
    ///
    /// [`AuthError::InvalidKey`] if the list is empty, or a key is shorter than
    /// [`MIN_KEY_LEN`] bytes, starts or ends with whitespace, or contains `;` or a control
    /// character (it must fit in a connection string and survive its parsing).
    pub fn new(keys: Vec<String>) -> Result<Self, AuthError> {
        if keys.is_empty() {
            return Err(AuthError::InvalidKey(
                "no access key configured; at least one is required".to_owned(),
            ));
        }
        for (index, key) in keys.iter().enumerate() {
            validate_key(index + 1, key)?;
        }
        Ok(Self { keys })
    }

    /// A ring with one random key, for development: 32 random bytes as padded URL-safe
    /// base64, so 44 characters with no `;`.
    pub fn random_dev() -> Self {
        let bytes: [u8; 32] = rand::random();
        Self {
            keys: vec![URL_SAFE.encode(bytes)],
        }
    }

    /// The primary key: the one new tokens are signed with.
    pub fn primary(&self) -> &str {
        // `new` and `random_dev` never build an empty ring.
        &self.keys[0]
    }

    /// Every key, primary first; a token signed with any of them is valid.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(String::as_str)
    }
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("keys", &format_args!("<{} redacted>", self.keys.len()))
            .finish()
    }
}

/// Checks one key; `position` is 1-based and is all the error says about the key.
fn validate_key(position: usize, key: &str) -> Result<(), AuthError> {
    let problem = if key.len() < MIN_KEY_LEN {
        format!(
            "access key #{position} is {} bytes long; at least {MIN_KEY_LEN} are required",
            key.len()
        )
    } else if key.contains(';') {
        format!("access key #{position} contains `;`, which cannot appear in a connection string")
    } else if key.chars().any(char::is_control) {
        format!("access key #{position} contains a control character")
    } else if key.trim() != key {
        format!("access key #{position} starts or ends with whitespace")
    } else {
        return Ok(());
    };
    Err(AuthError::InvalidKey(problem))
}

// === client tokens ===

/// What a verified client access token says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientClaims {
    /// The `sub` claim: the connection's user id. `None` if absent or empty.
    pub user_id: Option<String>,
    /// The `role` claim (array, or a single string), as written; see
    /// [`Permissions::from_roles`](crate::router::permission::Permissions::from_roles).
    pub roles: Vec<String>,
    /// The `webpubsub.group` claim (array, or a single string): groups joined at connect.
    pub groups: Vec<String>,
}

/// Validation shared by every verification: HS256 only, `exp` required, `exp`/`nbf` checked
/// with [`CLOCK_SKEW`]. `aud` is checked by [`audience_matches`] instead.
static VALIDATION: LazyLock<Validation> = LazyLock::new(|| {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = CLOCK_SKEW.as_secs();
    validation.validate_exp = true;
    validation.validate_nbf = true;
    validation.validate_aud = false;
    validation.set_required_spec_claims(&["exp"]);
    validation
});

/// Verifies a client access token presented for `hub` on this service.
///
/// - The header must say `alg: HS256`; `none`, HS384/HS512 and asymmetric algorithms are
///   refused before any key is tried, so no algorithm confusion is possible.
/// - The signature must verify with one of `keys` (primary or secondary).
/// - `exp` is required; `exp` and `nbf` (if present) are checked with [`CLOCK_SKEW`] leeway.
/// - `aud` is required (a string, or an array of which one entry must match) and must name
///   `endpoint` and `hub`: its scheme and host\[:port\] are compared ASCII case-insensitively
///   with `endpoint` (e.g. `http://127.0.0.1:8080`; an explicit default port equals none), and
///   its percent-decoded path with `{endpoint path}/client/hubs/{hub}` (ASCII
///   case-insensitive), ignoring a query string, a fragment and one trailing `/`.
///   `hub` may be given raw or percent-encoded.
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
    check_header(token)?;
    for key in keys.keys() {
        let key = DecodingKey::from_secret(key.as_bytes());
        match jsonwebtoken::decode::<Map<String, Value>>(token, &key, &VALIDATION) {
            Ok(data) => return client_claims(&data.claims, endpoint, hub),
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

/// Checks `aud` and extracts the claims Hubcast uses from verified claims.
fn client_claims(
    claims: &Map<String, Value>,
    endpoint: &str,
    hub: &str,
) -> Result<ClientClaims, AuthError> {
    let audiences = string_or_array(claims.get("aud"), "aud")?;
    if audiences.is_empty() {
        return Err(AuthError::MissingClaim("aud"));
    }
    if !audiences
        .iter()
        .any(|aud| audience_matches(aud, endpoint, hub))
    {
        return Err(AuthError::WrongAudience {
            expected: format!("{}/client/hubs/{hub}", endpoint.trim_end_matches('/')),
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

/// Whether one `aud` value names `endpoint` and `hub` (see [`verify_client_token`]).
fn audience_matches(aud: &str, endpoint: &str, hub: &str) -> bool {
    let (Some(aud), Some(endpoint)) = (HttpUrl::parse(aud), HttpUrl::parse(endpoint)) else {
        return false;
    };
    if !aud.same_origin(&endpoint) {
        return false;
    }
    let path = aud.path.strip_suffix('/').unwrap_or(aud.path);
    let Some(path) = percent_decode(path) else {
        return false;
    };
    let prefix = endpoint.path.trim_end_matches('/');
    let prefix = percent_decode(prefix).unwrap_or_else(|| prefix.to_owned());
    let hub = percent_decode(hub).unwrap_or_else(|| hub.to_owned());
    path.eq_ignore_ascii_case(&format!("{prefix}/client/hubs/{hub}"))
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
    let iat = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let claims = MintedClaims {
        role: &req.roles,
        groups: &req.groups,
        iat,
        exp: iat.saturating_add(req.ttl.as_secs()),
        aud: format!("{}/client/hubs/{}", endpoint.trim_end_matches('/'), req.hub),
        sub: req.user_id.as_deref(),
    };
    sign_hs256(key, &claims)
}

/// Signs `claims` as an HS256 JWT with the header Azure's SDKs use,
/// `{"alg":"HS256","typ":"JWT"}` (exactly, so tokens look the same whoever minted them).
pub(crate) fn sign_hs256(key: &str, claims: &impl Serialize) -> String {
    let claims = serde_json::to_vec(claims).expect("token claims are plain strings and numbers");
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(TOKEN_HEADER),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let signature = jsonwebtoken::crypto::sign(
        message.as_bytes(),
        &EncodingKey::from_secret(key.as_bytes()),
        Algorithm::HS256,
    )
    .expect("HMAC-SHA256 accepts keys of any length");
    format!("{message}.{signature}")
}

/// Audience of reconnection tokens: they are accepted nowhere else.
const RECONNECT_AUDIENCE: &str = "hubcast:reconnect";

/// Lifetime of a reconnection token (Azure: about a week). The recovery window, not the
/// token, bounds how long a dropped connection can be resumed.
pub const RECONNECTION_TOKEN_TTL: Duration = Duration::from_secs(7 * 24 * 60 * 60);

#[derive(Serialize, serde::Deserialize)]
struct ReconnectClaims {
    aud: String,
    sub: String,
    iat: u64,
    exp: u64,
    /// A nonce: every token is distinct, even two minted in the same second.
    jti: String,
}

/// Mints the `reconnectionToken` of a reliable connection: an HS256 JWT whose subject is
/// the connection id, so it can resume that connection and no other.
pub fn mint_reconnection_token(key: &str, connection_id: &str) -> String {
    let iat = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let claims = ReconnectClaims {
        aud: RECONNECT_AUDIENCE.into(),
        sub: connection_id.into(),
        iat,
        exp: iat.saturating_add(RECONNECTION_TOKEN_TTL.as_secs()),
        jti: URL_SAFE_NO_PAD.encode(rand::random::<[u8; 12]>()),
    };
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(key.as_bytes()),
    )
    .expect("HS256 signing of plain claims cannot fail")
}

/// Checks a reconnection token against every key and the connection it claims to resume.
///
/// # Errors
/// [`AuthError::BadSignature`], [`AuthError::Expired`], [`AuthError::Malformed`], or
/// [`AuthError::WrongAudience`] when the token belongs to another connection.
pub fn verify_reconnection_token(
    token: &str,
    keys: &KeyRing,
    connection_id: &str,
) -> Result<(), AuthError> {
    check_header(token)?;
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_audience(&[RECONNECT_AUDIENCE]);
    validation.set_required_spec_claims(&["exp", "aud", "sub"]);
    for key in keys.keys() {
        let key = DecodingKey::from_secret(key.as_bytes());
        match jsonwebtoken::decode::<ReconnectClaims>(token, &key, &validation) {
            Ok(data) if data.claims.sub == connection_id => return Ok(()),
            Ok(data) => {
                return Err(AuthError::WrongAudience {
                    expected: connection_id.into(),
                    found: data.claims.sub,
                });
            }
            Err(error) if matches!(error.kind(), ErrorKind::InvalidSignature) => continue,
            Err(error) => return Err(jwt_error(error.kind(), token)),
        }
    }
    Err(AuthError::BadSignature)
}

/// The URL a client connects to: `endpoint` with `http`→`ws` and `https`→`wss`, plus
/// `/client/hubs/{hub}?access_token={token}`.
///
/// The hub is percent-encoded where needed; the token is a JWT and so already URL-safe.
pub fn client_url(endpoint: &str, hub: &str, token: &str) -> String {
    let endpoint = endpoint.trim_end_matches('/');
    let endpoint = if let Some(rest) = strip_prefix_ignore_ascii_case(endpoint, "https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = strip_prefix_ignore_ascii_case(endpoint, "http://") {
        format!("ws://{rest}")
    } else {
        endpoint.to_owned()
    };
    format!(
        "{endpoint}/client/hubs/{}?access_token={token}",
        percent_encode_segment(hub)
    )
}

// === impl ConnectionString ===

/// A parsed Azure-style connection string:
/// `Endpoint=http://host[:port];AccessKey=...;Version=1.0;[Port=n;]`.
///
/// `Debug` redacts the key.
#[derive(Clone)]
pub struct ConnectionString {
    /// The service endpoint, without a trailing `/`, with `Port=` applied.
    pub endpoint: String,
    /// The access key, as written (used as raw UTF-8 bytes, never base64-decoded).
    pub access_key: String,
}

impl ConnectionString {
    /// Parses a connection string the way the Azure SDKs do.
    ///
    /// Segments are split on `;`, then on their first `=` (so a key may contain `=`); names
    /// are ASCII case-insensitive and surrounding whitespace is ignored. `Endpoint` and
    /// `AccessKey` are required; `Version` and unknown names (e.g. `ClientEndpoint`) are
    /// ignored; `Port` (1..=65535) replaces the endpoint's port. Like the JS SDK, an endpoint
    /// without a scheme gets `https://`.
    ///
    /// # Errors
    ///
    /// [`AuthError::InvalidConnectionString`], whose message never contains the key.
    pub fn parse(s: &str) -> Result<Self, AuthError> {
        let invalid = |message: String| AuthError::InvalidConnectionString(message);
        let mut endpoint = None;
        let mut access_key = None;
        let mut port = None;
        for (index, segment) in s.split(';').enumerate() {
            let segment = segment.trim();
            if segment.is_empty() {
                continue;
            }
            let Some((name, value)) = segment.split_once('=') else {
                return Err(invalid(format!(
                    "segment #{} is not of the form `Name=Value`",
                    index + 1
                )));
            };
            let (name, value) = (name.trim(), value.trim());
            let slot = if name.eq_ignore_ascii_case("Endpoint") {
                &mut endpoint
            } else if name.eq_ignore_ascii_case("AccessKey") {
                &mut access_key
            } else if name.eq_ignore_ascii_case("Port") {
                &mut port
            } else {
                continue;
            };
            if slot.replace(value).is_some() {
                return Err(invalid(format!("`{name}` is given more than once")));
            }
        }

        let endpoint = endpoint
            .filter(|e| !e.is_empty())
            .ok_or_else(|| invalid("`Endpoint` is missing or empty".to_owned()))?;
        let access_key = access_key
            .filter(|k| !k.is_empty())
            .ok_or_else(|| invalid("`AccessKey` is missing or empty".to_owned()))?;

        let endpoint = if endpoint.contains("://") {
            endpoint.to_owned()
        } else {
            format!("https://{endpoint}")
        };
        let url = HttpUrl::parse(&endpoint).ok_or_else(|| {
            invalid(format!(
                "`Endpoint` `{endpoint}` is not an http:// or https:// URL"
            ))
        })?;
        if !url.rest.is_empty() {
            return Err(invalid(format!(
                "`Endpoint` `{endpoint}` must not have a query string or fragment"
            )));
        }
        let endpoint = match port {
            None => endpoint.trim_end_matches('/').to_owned(),
            Some(port) => {
                let port = parse_port(port).filter(|&p| p != 0).ok_or_else(|| {
                    invalid(format!("`Port` `{port}` is not a number from 1 to 65535"))
                })?;
                let port = if port == url.default_port() {
                    String::new()
                } else {
                    format!(":{port}")
                };
                format!(
                    "{}://{}{port}{}",
                    url.scheme,
                    url.host,
                    url.path.trim_end_matches('/')
                )
            }
        };
        Ok(Self {
            endpoint,
            access_key: access_key.to_owned(),
        })
    }

    /// Formats a connection string the SDKs can parse:
    /// `Endpoint={endpoint};AccessKey={key};Version=1.0;`.
    pub fn format(endpoint: &str, key: &str) -> String {
        format!("Endpoint={endpoint};AccessKey={key};Version=1.0;")
    }
}

impl fmt::Debug for ConnectionString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionString")
            .field("endpoint", &self.endpoint)
            .field("access_key", &format_args!("<redacted>"))
            .finish()
    }
}

// === URL helpers ===

/// The parts of an `http(s)://` URL that audience checks and connection strings need.
///
/// Deliberately small: no userinfo (refused), IPv6 hosts in brackets, digits-only ports.
struct HttpUrl<'a> {
    /// `http` or `https`, as written.
    scheme: &'a str,
    /// The host as written (brackets kept for IPv6).
    host: &'a str,
    /// The explicit port, if any.
    port: Option<u16>,
    /// The path, still percent-encoded; empty or starting with `/`.
    path: &'a str,
    /// The query string and/or fragment, with their leading `?`/`#`; usually empty.
    rest: &'a str,
}

impl<'a> HttpUrl<'a> {
    fn parse(url: &'a str) -> Option<Self> {
        let (scheme, after_scheme) = url.split_once("://")?;
        if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
            return None;
        }
        let authority_end = after_scheme
            .find(['/', '?', '#'])
            .unwrap_or(after_scheme.len());
        let (authority, after_authority) = after_scheme.split_at(authority_end);
        let path_end = after_authority
            .find(['?', '#'])
            .unwrap_or(after_authority.len());
        let (path, rest) = after_authority.split_at(path_end);
        if authority.contains('@') {
            return None;
        }
        let (host, port) = if authority.starts_with('[') {
            let close = authority.find(']')?;
            let (host, after) = authority.split_at(close + 1);
            let port = if after.is_empty() {
                None
            } else {
                Some(after.strip_prefix(':')?)
            };
            (host, port)
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return None;
        }
        let port = match port {
            None | Some("") => None,
            Some(port) => Some(parse_port(port)?),
        };
        Some(Self {
            scheme,
            host,
            port,
            path,
            rest,
        })
    }

    fn default_port(&self) -> u16 {
        if self.scheme.eq_ignore_ascii_case("https") {
            443
        } else {
            80
        }
    }

    /// Same scheme, host and effective port (an explicit default port equals none).
    fn same_origin(&self, other: &HttpUrl<'_>) -> bool {
        self.scheme.eq_ignore_ascii_case(other.scheme)
            && self.host.eq_ignore_ascii_case(other.host)
            && self.port.unwrap_or(self.default_port())
                == other.port.unwrap_or(other.default_port())
    }
}

/// Parses a port made of ASCII digits only (`u16::from_str` would also take a `+`).
fn parse_port(port: &str) -> Option<u16> {
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    port.parse().ok()
}

/// Characters a path segment keeps unescaped: RFC 3986 "unreserved".
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Decodes `%XX` escapes of a URL path; `None` when the result is not UTF-8. A `%` not
/// followed by two hex digits stays as it is, as browsers do. `+` stays a `+` (this is for
/// paths, not forms).
pub(crate) fn percent_decode(s: &str) -> Option<String> {
    percent_decode_str(s)
        .decode_utf8()
        .ok()
        .map(|c| c.into_owned())
}

/// Percent-encodes everything but RFC 3986 unreserved characters, for one path segment.
fn percent_encode_segment(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

fn strip_prefix_ignore_ascii_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    // `prefix` is ASCII, so if the bytes match, `prefix.len()` is a char boundary of `s`.
    let head = s.as_bytes().get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix.as_bytes())
        .then(|| &s[prefix.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::Header;
    use serde_json::json;

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
        use hmac::{Hmac, Mac};
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

        // Same shape as the JS SDK (spec A.1).
        let segments: Vec<&str> = token.split('.').collect();
        assert_eq!(segments.len(), 3);
        let header = URL_SAFE_NO_PAD.decode(segments[0]).expect("base64");
        assert_eq!(header, TOKEN_HEADER.as_bytes());
        let payload: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(segments[1]).expect("base64"))
                .expect("json");
        assert_eq!(payload["aud"], "http://127.0.0.1:8080/client/hubs/chat");
        assert_eq!(payload["sub"], "alice");
        assert_eq!(payload["role"], json!(["webpubsub.sendToGroup.room1"]));
        assert_eq!(payload["webpubsub.group"], json!(["room1"]));
        let iat = payload["iat"].as_u64().expect("iat");
        assert_eq!(payload["exp"].as_u64(), Some(iat + 3600));
    }

    #[test]
    fn minted_token_omits_empty_claims() {
        let token = mint_client_token(KEY1, ENDPOINT, &TokenRequest::new("chat"));
        let payload = token.split('.').nth(1).expect("payload");
        let payload: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64"))
                .expect("json");
        let mut keys: Vec<&str> = payload
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(keys, ["aud", "exp", "iat"]);
        assert!(verify(&token, "chat").is_ok());
        // Signed with the secondary key of another ring: refused.
        let other = KeyRing::random_dev();
        assert_eq!(
            verify_client_token(&token, &other, ENDPOINT, "chat"),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn client_urls() {
        assert_eq!(
            client_url("http://localhost:8080", "chat", "a.b.c"),
            "ws://localhost:8080/client/hubs/chat?access_token=a.b.c"
        );
        assert_eq!(
            client_url("https://x.example/", "chat", "t"),
            "wss://x.example/client/hubs/chat?access_token=t"
        );
        assert_eq!(
            client_url("HTTPS://x.example", "my hub/1", "t"),
            "wss://x.example/client/hubs/my%20hub%2F1?access_token=t"
        );
    }

    #[test]
    fn key_ring_validation() {
        assert!(matches!(
            KeyRing::new(vec![]),
            Err(AuthError::InvalidKey(_))
        ));
        let short = KeyRing::new(vec!["short".to_owned()]).expect_err("too short");
        assert!(short.to_string().contains("at least 32"), "{short}");
        let with_semicolon = format!("{KEY1};");
        let error = KeyRing::new(vec![KEY1.to_owned(), with_semicolon.clone()]).expect_err("`;`");
        assert!(error.to_string().contains("#2"), "{error}");
        assert!(!error.to_string().contains(KEY1));
        assert!(KeyRing::new(vec![format!("{KEY1}\n")]).is_err());
        assert!(KeyRing::new(vec![format!(" {KEY1}")]).is_err());

        let ring = ring();
        assert_eq!(ring.primary(), KEY1);
        assert_eq!(ring.keys().collect::<Vec<_>>(), [KEY1, KEY2]);
    }

    #[test]
    fn random_dev_key() {
        let ring = KeyRing::random_dev();
        let key = ring.primary();
        assert_eq!(key.len(), 44);
        assert!(!key.contains(';'));
        assert!(KeyRing::new(vec![key.to_owned()]).is_ok());
        assert_ne!(key, KeyRing::random_dev().primary());
    }

    #[test]
    fn debug_redacts_keys() {
        let debug = format!("{:?}", ring());
        assert!(!debug.contains(KEY1) && !debug.contains(KEY2), "{debug}");
        let cs = ConnectionString::parse(&ConnectionString::format(ENDPOINT, KEY1)).expect("parse");
        let debug = format!("{cs:?}");
        assert!(!debug.contains(KEY1), "{debug}");
        assert!(debug.contains(ENDPOINT), "{debug}");
    }

    #[test]
    fn connection_string_parse() {
        let cs = ConnectionString::parse(
            "Endpoint=http://localhost:8080;AccessKey=ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ABCDEFGH;Version=1.0;",
        )
        .expect("valid");
        assert_eq!(cs.endpoint, "http://localhost:8080");
        assert_eq!(cs.access_key, KEY1);

        // Case-insensitive names, `=` inside the key, trailing slash, no trailing `;`.
        let cs = ConnectionString::parse("endpoint=https://x.example/;accesskey=abc==;VERSION=1.0")
            .expect("valid");
        assert_eq!(cs.endpoint, "https://x.example");
        assert_eq!(cs.access_key, "abc==");

        // Port overrides the URL port; the default port is dropped.
        let cs = ConnectionString::parse("Endpoint=http://localhost:8080;AccessKey=k;Port=9000;")
            .expect("valid");
        assert_eq!(cs.endpoint, "http://localhost:9000");
        let cs = ConnectionString::parse("Endpoint=http://localhost;AccessKey=k;Port=8081;")
            .expect("valid");
        assert_eq!(cs.endpoint, "http://localhost:8081");
        let cs = ConnectionString::parse("Endpoint=https://x.example:8443/;AccessKey=k;port=443")
            .expect("valid");
        assert_eq!(cs.endpoint, "https://x.example");

        // No scheme: https, like the JS SDK. Unknown names are ignored.
        let cs = ConnectionString::parse("Endpoint=x.example;AccessKey=k;ClientEndpoint=http://y")
            .expect("valid");
        assert_eq!(cs.endpoint, "https://x.example");
    }

    #[test]
    fn connection_string_errors() {
        let secret = "super-secret-key-value";
        for s in [
            "Endpoint=http://localhost:8080;Version=1.0;".to_owned(),
            "Endpoint=http://localhost:8080;AccessKey=;".to_owned(),
            format!("AccessKey={secret};"),
            format!("Endpoint=ftp://x;AccessKey={secret};"),
            format!("Endpoint=http://x?a=1;AccessKey={secret};"),
            format!("Endpoint=http://x;AccessKey={secret};Port=0;"),
            format!("Endpoint=http://x;AccessKey={secret};Port=70000;"),
            format!("Endpoint=http://x;AccessKey={secret};Port=+80;"),
            format!("Endpoint=http://x;AccessKey={secret};AccessKey={secret};"),
            format!("Endpoint=http://x;{secret};"),
        ] {
            let error = ConnectionString::parse(&s).expect_err(&s);
            assert!(
                matches!(error, AuthError::InvalidConnectionString(_)),
                "{s}"
            );
            assert!(!error.to_string().contains(secret), "{error}");
        }
        let error = ConnectionString::parse("Endpoint=http://localhost:8080;").expect_err("no key");
        assert!(error.to_string().contains("AccessKey"), "{error}");
    }

    #[test]
    fn connection_string_round_trip() {
        let s = ConnectionString::format("http://localhost:8080", KEY1);
        assert_eq!(
            s,
            "Endpoint=http://localhost:8080;AccessKey=ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ABCDEFGH;Version=1.0;"
        );
        let cs = ConnectionString::parse(&s).expect("valid");
        assert_eq!(cs.endpoint, "http://localhost:8080");
        assert_eq!(cs.access_key, KEY1);
        assert_eq!(ConnectionString::format(&cs.endpoint, &cs.access_key), s);
    }

    #[test]
    fn reconnection_tokens_are_scoped_to_their_connection() {
        let keys = KeyRing::new(vec![KEY1.into(), KEY2.into()]).expect("valid keys");
        let token = mint_reconnection_token(KEY2, "conn-1");
        assert_eq!(verify_reconnection_token(&token, &keys, "conn-1"), Ok(()));
        assert!(matches!(
            verify_reconnection_token(&token, &keys, "conn-2"),
            Err(AuthError::WrongAudience { .. })
        ));
        let other = KeyRing::new(vec![KEY1.into()]).expect("valid keys");
        assert_eq!(
            verify_reconnection_token(&token, &other, "conn-1"),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            verify_reconnection_token("garbage", &keys, "conn-1"),
            Err(AuthError::Malformed)
        );
    }

    #[test]
    fn percent_helpers() {
        assert_eq!(percent_decode("a%20b%2Fc").as_deref(), Some("a b/c"));
        assert_eq!(percent_decode("%C3%A9").as_deref(), Some("é"));
        assert_eq!(percent_decode("%4").as_deref(), Some("%4"));
        assert_eq!(percent_decode("%FF"), None);
        assert_eq!(percent_encode_segment("chat_1-a.b~"), "chat_1-a.b~");
        assert_eq!(percent_encode_segment("é"), "%C3%A9");
    }
}
