//! [`HubKey`]: a hub's name, validated and lower-cased once, where it enters the server.

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use super::RouterError;

/// Longest hub name (Azure's pattern allows 128 characters).
const MAX_HUB_NAME_CHARS: usize = 128;

/// A hub's routing key: a valid hub name (Azure's pattern `^[A-Za-z][A-Za-z0-9_`,.[\]]{0,127}$`),
/// lower-cased, since hub names are case-insensitive as in Azure.
///
/// Every router operation that names a hub takes one, so a name that was not validated and
/// lower-cased cannot reach the router's indexes (a mixed-case name once made a second,
/// empty hub). Cheap to clone (a shared string).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HubKey(Arc<str>);

impl HubKey {
    /// Validates `name` and lower-cases it.
    ///
    /// # Errors
    /// [`RouterError::InvalidHub`] when the name does not match Azure's hub name pattern.
    pub fn new(name: &str) -> Result<Self, RouterError> {
        let mut chars = name.chars();
        let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
            && name.len() <= MAX_HUB_NAME_CHARS
            && chars.all(|c| c.is_ascii_alphanumeric() || "_`,.[]".contains(c));
        if !valid {
            return Err(RouterError::InvalidHub(name.chars().take(140).collect()));
        }
        Ok(if name.bytes().any(|b| b.is_ascii_uppercase()) {
            Self(name.to_ascii_lowercase().into())
        } else {
            Self(name.into())
        })
    }

    /// The key as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key as a shared string (for maps and messages that keep it).
    pub fn shared(&self) -> Arc<str> {
        self.0.clone()
    }
}

impl Deref for HubKey {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for HubKey {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Lets maps keyed by `Arc<str>` or `HubKey` be searched with a `&str` (same hash: the
/// key's string).
impl Borrow<str> for HubKey {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for HubKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for HubKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl From<HubKey> for Arc<str> {
    fn from(key: HubKey) -> Self {
        key.0
    }
}

/// A hub key from a name known to be valid (unit tests).
#[cfg(test)]
pub(crate) fn key(name: &str) -> HubKey {
    HubKey::new(name).expect("a valid hub name")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hub_key_is_the_lower_cased_name() {
        assert_eq!(
            HubKey::new("Chat_1.a[b]").expect("valid").as_str(),
            "chat_1.a[b]"
        );
        assert_eq!(HubKey::new("chat").expect("valid").as_str(), "chat");
    }

    #[test]
    fn names_outside_azures_pattern_are_refused() {
        let long = "a".repeat(129);
        for bad in [
            "",
            "1chat",
            "_chat",
            "chat room",
            "chat/x",
            "ch%61t",
            long.as_str(),
        ] {
            assert!(HubKey::new(bad).is_err(), "{bad}");
        }
        assert!(HubKey::new(&"a".repeat(128)).is_ok());
    }
}
