//! Reconnection tokens (feature `verify`): what a reliable connection presents to resume.
//!
//! Only the service mints and reads them (clients pass them back as they got them), so they
//! come with verification rather than with minting.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, Validation};
use serde::{Deserialize, Serialize};

use crate::mint::{now_secs, sign_hs256};
use crate::verify::decode;
use crate::{AuthError, KeyRing};

/// Audience of reconnection tokens: they are accepted nowhere else.
const RECONNECT_AUDIENCE: &str = "hubcast:reconnect";

/// Lifetime of a reconnection token (Azure: about a week). The recovery window, not the
/// token, bounds how long a dropped connection can be resumed.
pub const RECONNECTION_TOKEN_TTL: Duration = Duration::from_secs(7 * 24 * 60 * 60);

#[derive(Serialize, Deserialize)]
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
    let iat = now_secs();
    let claims = ReconnectClaims {
        aud: RECONNECT_AUDIENCE.into(),
        sub: connection_id.into(),
        iat,
        exp: iat.saturating_add(RECONNECTION_TOKEN_TTL.as_secs()),
        jti: URL_SAFE_NO_PAD.encode(rand::random::<[u8; 12]>()),
    };
    sign_hs256(key, &claims)
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
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_audience(&[RECONNECT_AUDIENCE]);
    validation.set_required_spec_claims(&["exp", "aud", "sub"]);
    let claims: ReconnectClaims = decode(token, keys, &validation)?;
    if claims.sub == connection_id {
        Ok(())
    } else {
        Err(AuthError::WrongAudience {
            expected: connection_id.into(),
            found: claims.sub,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY1: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ABCDEFGH";
    const KEY2: &str = "secondary-key-secondary-key-secondary-key-00";

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
    fn reconnection_tokens_are_distinct_and_refused_as_client_tokens() {
        let keys = KeyRing::new(vec![KEY1.into()]).expect("valid keys");
        let token = mint_reconnection_token(KEY1, "conn-1");
        assert_ne!(token, mint_reconnection_token(KEY1, "conn-1"));
        assert!(matches!(
            crate::verify_client_token(&token, &keys, "http://127.0.0.1:8080", "chat"),
            Err(AuthError::WrongAudience { .. })
        ));
    }
}
