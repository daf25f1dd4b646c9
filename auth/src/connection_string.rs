//! Azure-style connection strings: `Endpoint=...;AccessKey=...;Version=1.0;`.

use std::fmt;

use crate::AuthError;
use crate::url::{HttpUrl, parse_port};

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

#[cfg(test)]
mod tests {
    use super::*;

    const KEY1: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ABCDEFGH";
    const ENDPOINT: &str = "http://127.0.0.1:8080";

    #[test]
    fn debug_redacts_the_key() {
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
}
