//! Access keys: the key ring tokens are signed and verified with.

use std::fmt;

use crate::AuthError;

/// Shortest accepted access key, in UTF-8 bytes (the Azure emulator's rule).
pub const MIN_KEY_LEN: usize = 32;

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
    /// base64, so 44 characters with no `;`. With the `verify` feature (the service's).
    #[cfg(feature = "verify")]
    pub fn random_dev() -> Self {
        use base64::Engine as _;
        use base64::engine::general_purpose::URL_SAFE;

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

#[cfg(test)]
mod tests {
    use super::*;

    const KEY1: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ABCDEFGH";
    const KEY2: &str = "secondary-key-secondary-key-secondary-key-00";

    fn ring() -> KeyRing {
        KeyRing::new(vec![KEY1.to_owned(), KEY2.to_owned()]).expect("valid keys")
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
    #[cfg(feature = "verify")]
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
    }
}
