//! Keeping secrets out of logs.
//!
//! URLs reach log lines (webhook retries and validation), and some carry credentials in
//! their query: Azure Functions' `code`, a client's `access_token`, a reliable client's
//! `awps_reconnection_token`, a SAS `sig`. [`Url`] prints a URL with the values of such
//! parameters replaced by `<redacted>`; every log line that shows a URL goes through it.
//! Headers are never logged, so `Authorization` cannot leak that way.

use std::fmt;

/// Query parameters whose values are credentials (compared ASCII case-insensitively).
const SECRET_PARAMETERS: [&str; 7] = [
    "access_token",
    "awps_reconnection_token",
    "code",
    "sig",
    "token",
    "key",
    "api_key",
];

/// A URL that displays with its credentials redacted.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Url<'a>(pub(crate) &'a str);

impl fmt::Display for Url<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (before, fragment) = match self.0.split_once('#') {
            Some((b, frag)) => (b, Some(frag)),
            None => (self.0, None),
        };
        let Some((base, query)) = before.split_once('?') else {
            return f.write_str(self.0);
        };
        f.write_str(base)?;
        f.write_str("?")?;
        for (i, pair) in query.split('&').enumerate() {
            if i > 0 {
                f.write_str("&")?;
            }
            match pair.split_once('=') {
                Some((name, _))
                    if SECRET_PARAMETERS
                        .iter()
                        .any(|s| s.eq_ignore_ascii_case(name)) =>
                {
                    write!(f, "{name}=<redacted>")?;
                }
                _ => f.write_str(pair)?,
            }
        }
        if let Some(fragment) = fragment {
            write!(f, "#{fragment}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_queries_are_redacted_and_the_rest_kept() {
        assert_eq!(
            Url("https://f.example/api/x?code=s3cr3t&hub=chat").to_string(),
            "https://f.example/api/x?code=<redacted>&hub=chat"
        );
        assert_eq!(
            Url("ws://h/client/hubs/c?ACCESS_TOKEN=eyJ.a.b&awps_reconnection_token=t#f")
                .to_string(),
            "ws://h/client/hubs/c?ACCESS_TOKEN=<redacted>&awps_reconnection_token=<redacted>#f"
        );
        assert_eq!(Url("http://h/p").to_string(), "http://h/p");
        assert_eq!(
            Url("http://h/p?flag&x=1").to_string(),
            "http://h/p?flag&x=1"
        );
    }
}
