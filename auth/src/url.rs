//! The small URL handling audiences, connection strings and client URLs need, and the one
//! way a request path splits into segments.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

/// The parts of an `http(s)://` URL that audience checks and connection strings need.
///
/// Deliberately small: no userinfo (refused), IPv6 hosts in brackets, digits-only ports.
pub(crate) struct HttpUrl<'a> {
    /// `http` or `https`, as written.
    pub(crate) scheme: &'a str,
    /// The host as written (brackets kept for IPv6).
    pub(crate) host: &'a str,
    /// The explicit port, if any. Only audience checks compare it.
    #[cfg_attr(not(feature = "verify"), allow(dead_code))]
    port: Option<u16>,
    /// The path, still percent-encoded; empty or starting with `/`.
    pub(crate) path: &'a str,
    /// The query string and/or fragment, with their leading `?`/`#`; usually empty.
    pub(crate) rest: &'a str,
}

impl<'a> HttpUrl<'a> {
    pub(crate) fn parse(url: &'a str) -> Option<Self> {
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

    pub(crate) fn default_port(&self) -> u16 {
        if self.scheme.eq_ignore_ascii_case("https") {
            443
        } else {
            80
        }
    }

    /// Same scheme, host and effective port (an explicit default port equals none).
    #[cfg(feature = "verify")]
    pub(crate) fn same_origin(&self, other: &HttpUrl<'_>) -> bool {
        self.scheme.eq_ignore_ascii_case(other.scheme)
            && self.host.eq_ignore_ascii_case(other.host)
            && self.port.unwrap_or(self.default_port())
                == other.port.unwrap_or(other.default_port())
    }
}

/// Parses a port made of ASCII digits only (`u16::from_str` would also take a `+`).
pub(crate) fn parse_port(port: &str) -> Option<u16> {
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

/// Decodes `%XX` escapes of one URL path segment; `None` when the result is not UTF-8. A
/// `%` not followed by two hex digits stays as it is, as browsers do. `+` stays a `+` (this
/// is for paths, not forms).
///
/// Decode a path segment by segment ([`path_segments`]), never as a whole: a `%2F` decoded
/// before the split would become a separator.
pub fn percent_decode(s: &str) -> Option<String> {
    percent_decode_str(s)
        .decode_utf8()
        .ok()
        .map(|c| c.into_owned())
}

/// Splits a percent-encoded URL path (no query string) into its segments, each decoded on
/// its own, after dropping one trailing `/`; `None` when a segment is not valid
/// percent-encoded UTF-8.
///
/// Only a literal `/` separates: `a%2Fb` is the one segment `a/b`. The REST edge routes a
/// request with this function and service-token audiences are compared with it, so a token
/// for the group `a%2Fconnections%2Fc1` cannot name the path `.../groups/a/connections/c1`.
/// A path starting with `/` yields an empty first segment.
pub fn path_segments(path: &str) -> Option<Vec<String>> {
    let path = path.strip_suffix('/').unwrap_or(path);
    path.split('/').map(percent_decode).collect()
}

/// Whether two segment lists name the same path: same length, and each pair of segments
/// equal ASCII case-insensitively (hub names are case-insensitive; so are Azure's paths).
#[cfg(feature = "verify")]
pub(crate) fn same_segments(a: &[String], b: &[String]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(a, b)| a.eq_ignore_ascii_case(b))
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

/// The URL a client connects to: `endpoint` with `http`→`ws` and `https`→`wss`, plus
/// `/client/hubs/{hub}?access_token={token}`.
///
/// The hub is percent-encoded where needed; the token is a JWT and so already URL-safe.
pub fn client_url(endpoint: &str, hub: &str, token: &str) -> String {
    client_url_for(endpoint, crate::ClientProtocol::Default, hub, token)
}

/// [`client_url`] for the endpoint of `protocol` (e.g. `/clients/mqtt/hubs/{hub}`).
pub fn client_url_for(
    endpoint: &str,
    protocol: crate::ClientProtocol,
    hub: &str,
    token: &str,
) -> String {
    let endpoint = endpoint.trim_end_matches('/');
    let endpoint = if let Some(rest) = strip_prefix_ignore_ascii_case(endpoint, "https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = strip_prefix_ignore_ascii_case(endpoint, "http://") {
        format!("ws://{rest}")
    } else {
        endpoint.to_owned()
    };
    format!(
        "{endpoint}/{}/hubs/{}?access_token={token}",
        protocol.path(),
        percent_encode_segment(hub)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_helpers() {
        assert_eq!(percent_decode("a%20b%2Fc").as_deref(), Some("a b/c"));
        assert_eq!(percent_decode("%C3%A9").as_deref(), Some("é"));
        assert_eq!(percent_decode("%4").as_deref(), Some("%4"));
        assert_eq!(percent_decode("%FF"), None);
        assert_eq!(percent_encode_segment("chat_1-a.b~"), "chat_1-a.b~");
        assert_eq!(percent_encode_segment("é"), "%C3%A9");
    }

    #[test]
    fn an_encoded_slash_stays_inside_its_segment() {
        assert_eq!(
            path_segments("/api/hubs/chat/groups/a%2Fconnections%2Fc1").as_deref(),
            Some(&["", "api", "hubs", "chat", "groups", "a/connections/c1"].map(String::from)[..])
        );
        assert_eq!(
            path_segments("/api/hubs/chat/groups/a/connections/c1/").as_deref(),
            Some(
                &[
                    "",
                    "api",
                    "hubs",
                    "chat",
                    "groups",
                    "a",
                    "connections",
                    "c1"
                ]
                .map(String::from)[..]
            )
        );
        assert_eq!(
            path_segments("chat/a%20b").as_deref(),
            Some(&["chat", "a b"].map(String::from)[..])
        );
        assert_eq!(path_segments("chat/%FF"), None);
        assert_eq!(path_segments("").as_deref(), Some(&[String::new()][..]));
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
}
