//! [`Builder`]: where a client connects, which protocol it speaks, and how it behaves when
//! connections drop.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

use crate::client::{Client, Status};
use crate::connection::Worker;
use crate::error::{BoxError, Error, Result};
use crate::event::Events;
use crate::protocol::Protocol;

/// A future that yields a client access URL.
pub(crate) type UrlFuture = Pin<Box<dyn Future<Output = Result<String, BoxError>> + Send>>;

/// Where the client gets its URL from: fixed, or asked anew for every new connection.
#[derive(Clone)]
pub(crate) enum UrlSource {
    Fixed(String),
    Provider(Arc<dyn Fn() -> UrlFuture + Send + Sync>),
}

impl UrlSource {
    pub(crate) fn get(&self) -> UrlFuture {
        match self {
            UrlSource::Fixed(url) => {
                let url = url.clone();
                Box::pin(async move { Ok(url) })
            }
            UrlSource::Provider(provider) => provider(),
        }
    }
}

impl fmt::Debug for UrlSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // The URL carries an access token: never print it.
            UrlSource::Fixed(_) => f.write_str("Fixed(..)"),
            UrlSource::Provider(_) => f.write_str("Provider(..)"),
        }
    }
}

/// The settings of a client; see the [`Builder`] setters for each one's meaning.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub(crate) protocol: Protocol,
    pub(crate) auto_reconnect: bool,
    pub(crate) auto_rejoin_groups: bool,
    pub(crate) reconnect_delay: Duration,
    pub(crate) max_reconnect_delay: Duration,
    pub(crate) max_reconnect_attempts: Option<u32>,
    pub(crate) recovery_timeout: Duration,
    pub(crate) recovery_retry_delay: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) ack_timeout: Duration,
    pub(crate) max_retries: u32,
    pub(crate) keepalive_interval: Duration,
    pub(crate) keepalive_timeout: Duration,
    pub(crate) sequence_ack_interval: Duration,
    pub(crate) sequence_ack_threshold: u64,
    /// `wss://` URLs: the rustls configuration; `None` trusts the Mozilla root certificates.
    #[cfg(feature = "tls")]
    pub(crate) tls_config: Option<std::sync::Arc<rustls::ClientConfig>>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            protocol: Protocol::default(),
            auto_reconnect: true,
            auto_rejoin_groups: true,
            reconnect_delay: Duration::from_secs(1),
            max_reconnect_delay: Duration::from_secs(30),
            max_reconnect_attempts: None,
            recovery_timeout: Duration::from_secs(30),
            recovery_retry_delay: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(10),
            ack_timeout: Duration::from_secs(10),
            max_retries: 3,
            keepalive_interval: Duration::from_secs(20),
            keepalive_timeout: Duration::from_secs(120),
            sequence_ack_interval: Duration::from_secs(1),
            sequence_ack_threshold: 300,
            #[cfg(feature = "tls")]
            tls_config: None,
        }
    }
}

/// Configures and starts a [`Client`]. Made by [`Client::builder`] or
/// [`Client::builder_with_url_provider`]; each `with_*` setter documents its default.
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use hubcast_sdk::{Client, Protocol};
///
/// # async fn run() -> hubcast_sdk::Result<()> {
/// let (client, events) = Client::builder("ws://127.0.0.1:8080/client/hubs/chat?access_token=...")
///     .with_protocol(Protocol::ProtobufReliable)
///     .with_keepalive_interval(Duration::from_secs(10))
///     .connect()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
#[must_use = "a builder does nothing until `connect` or `spawn`"]
pub struct Builder {
    url: UrlSource,
    options: Options,
}

impl Builder {
    pub(crate) fn new(url: UrlSource) -> Self {
        Self {
            url,
            options: Options::default(),
        }
    }

    /// The subprotocol. Default: [`Protocol::JsonReliable`].
    pub fn with_protocol(mut self, protocol: Protocol) -> Self {
        self.options.protocol = protocol;
        self
    }

    /// Start a new connection when a connection ends and cannot be recovered. Default: on.
    /// Off, the client stops instead.
    pub fn with_auto_reconnect(mut self, on: bool) -> Self {
        self.options.auto_reconnect = on;
        self
    }

    /// Join again, on a new connection, every group joined with [`Client::join_group`] (and
    /// not left). Default: on. Failures are reported as
    /// [`crate::Event::RejoinGroupFailed`]. A recovered connection keeps its groups and needs
    /// no rejoin.
    pub fn with_auto_rejoin_groups(mut self, on: bool) -> Self {
        self.options.auto_rejoin_groups = on;
        self
    }

    /// The wait before a new connection attempt after a failed one; it doubles with every
    /// consecutive failure up to [`Builder::with_max_reconnect_delay`]. The first attempt
    /// after a connection that was up for at least this long is immediate. Default: 1 s.
    pub fn with_reconnect_delay(mut self, delay: Duration) -> Self {
        self.options.reconnect_delay = delay;
        self
    }

    /// The longest wait between connection attempts. Default: 30 s.
    pub fn with_max_reconnect_delay(mut self, delay: Duration) -> Self {
        self.options.max_reconnect_delay = delay;
        self
    }

    /// How many consecutive failed connection attempts the client makes before it stops.
    /// Default: `None`, without limit.
    pub fn with_max_reconnect_attempts(mut self, attempts: Option<u32>) -> Self {
        self.options.max_reconnect_attempts = attempts;
        self
    }

    /// Reliable protocols: how long the client tries to recover a dropped connection before
    /// it gives up and starts a new one (it also gives up at once when the service refuses
    /// with close code 1008). Default: 30 s, the time Azure keeps a dropped connection.
    pub fn with_recovery_timeout(mut self, timeout: Duration) -> Self {
        self.options.recovery_timeout = timeout;
        self
    }

    /// Reliable protocols: the wait between recovery attempts. The first attempt is
    /// immediate. Default: 1 s.
    pub fn with_recovery_retry_delay(mut self, delay: Duration) -> Self {
        self.options.recovery_retry_delay = delay;
        self
    }

    /// How long one connection attempt (TCP, WebSocket handshake, and the service's
    /// `connected` message) may take. Default: 10 s.
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.options.connect_timeout = timeout;
        self
    }

    /// How long to wait for the ack of a request before sending it again, with the same ack
    /// id (so the service answers `Duplicate` instead of carrying it out twice). Time spent
    /// disconnected does not count: requests wait for the next connection and are sent again
    /// on it. Default: 10 s.
    pub fn with_ack_timeout(mut self, timeout: Duration) -> Self {
        self.options.ack_timeout = timeout;
        self
    }

    /// How many times a request is sent again after an ack timeout or an
    /// `InternalServerError` ack before it fails. Default: 3.
    pub fn with_max_retries(mut self, retries: u32) -> Self {
        self.options.max_retries = retries;
        self
    }

    /// The interval of protocol `ping` messages, which keep idle connections open through
    /// proxies and prove the service alive. Zero disables them. Default: 20 s.
    pub fn with_keepalive_interval(mut self, interval: Duration) -> Self {
        self.options.keepalive_interval = interval;
        self
    }

    /// A connection on which nothing at all arrives for this long is taken as dead, and
    /// recovered or replaced. Zero disables the check. Default: 120 s.
    pub fn with_keepalive_timeout(mut self, timeout: Duration) -> Self {
        self.options.keepalive_timeout = timeout;
        self
    }

    /// Reliable protocols: how often received sequence ids are acknowledged, when new ones
    /// arrived. Default: 1 s.
    pub fn with_sequence_ack_interval(mut self, interval: Duration) -> Self {
        self.options.sequence_ack_interval = interval;
        self
    }

    /// Reliable protocols: acknowledge at once when this many messages arrived since the
    /// last acknowledgement, so the service's buffer of unacknowledged messages (1000 on
    /// Azure) never fills under load. Default: 300.
    pub fn with_sequence_ack_threshold(mut self, messages: u64) -> Self {
        self.options.sequence_ack_threshold = messages;
        self
    }

    /// `wss://` URLs: the rustls client configuration to use, for example one that trusts
    /// the private certificate authority that signed a self-hosted Hubcast's certificate
    /// ([`rustls`](crate::rustls) is re-exported so the versions match). Default: rustls with
    /// the Mozilla root certificates (webpki-roots).
    #[cfg(feature = "tls")]
    pub fn with_tls_config(mut self, config: std::sync::Arc<rustls::ClientConfig>) -> Self {
        self.options.tls_config = Some(config);
        self
    }

    fn validate(&self) -> Result<()> {
        if let UrlSource::Fixed(url) = &self.url {
            check_url(url)?;
        }
        let o = &self.options;
        let positive = [
            (o.reconnect_delay, "reconnect_delay"),
            (o.recovery_retry_delay, "recovery_retry_delay"),
            (o.connect_timeout, "connect_timeout"),
            (o.ack_timeout, "ack_timeout"),
            (o.sequence_ack_interval, "sequence_ack_interval"),
        ];
        if let Some((_, name)) = positive.iter().find(|(d, _)| d.is_zero()) {
            return Err(Error::invalid_argument(format!("{name} must not be zero")));
        }
        if o.max_reconnect_delay < o.reconnect_delay {
            return Err(Error::invalid_argument(
                "max_reconnect_delay must be at least reconnect_delay",
            ));
        }
        if o.sequence_ack_threshold == 0 {
            return Err(Error::invalid_argument(
                "sequence_ack_threshold must not be zero",
            ));
        }
        Ok(())
    }

    fn start(self, first: Option<oneshot::Sender<Result<()>>>) -> Result<(Client, Events)> {
        self.validate()?;
        let (commands_tx, commands_rx) = mpsc::unbounded_channel();
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let (status_tx, status_rx) = watch::channel(Status::default());
        let worker = Worker::new(
            Arc::new(self.options),
            self.url,
            commands_rx,
            events_tx,
            status_tx,
            first,
        );
        // The task ends when the client stops, which happens at the latest when every
        // `Client` handle is dropped (the command channel closes).
        tokio::spawn(worker.run());
        Ok((Client::new(commands_tx, status_rx), Events::new(events_rx)))
    }

    /// Connects, and returns once the connection is established (the first event in
    /// [`Events`] is then [`crate::Event::Connected`]).
    ///
    /// # Errors
    /// An invalid option ([`Error::is_invalid_argument`]), or the first connection attempt
    /// failed: [`Error::is_unauthorized`], [`Error::is_connect`], [`Error::is_timeout`],
    /// [`Error::is_closed`], [`Error::is_url_provider`]. The client does not retry a failed
    /// first connection; use [`Builder::spawn`] for that.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub async fn connect(self) -> Result<(Client, Events)> {
        let (tx, rx) = oneshot::channel();
        let (client, events) = self.start(Some(tx))?;
        rx.await.unwrap_or_else(|_| Err(Error::stopped()))?;
        Ok((client, events))
    }

    /// Starts the client in the background and returns at once. It connects, and keeps
    /// trying per the reconnect settings when it cannot, so it suits devices that may start
    /// before the service is reachable. Requests made before the connection is up wait for it.
    ///
    /// # Errors
    /// An invalid option ([`Error::is_invalid_argument`]).
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn spawn(self) -> Result<(Client, Events)> {
        self.start(None)
    }
}

/// Checks that `url` is a WebSocket URL.
pub(crate) fn check_url(url: &str) -> Result<()> {
    let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
    match scheme.as_deref() {
        Some("ws" | "wss") => Ok(()),
        _ => Err(Error::invalid_argument(
            "the client URL must start with ws:// or wss://",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_bad_urls_and_zero_durations() {
        assert!(check_url("ws://h/client/hubs/x").is_ok());
        assert!(check_url("WSS://h").is_ok());
        assert!(check_url("http://h").unwrap_err().is_invalid_argument());
        let b = Builder::new(UrlSource::Fixed("ws://h".into())).with_ack_timeout(Duration::ZERO);
        assert!(b.validate().unwrap_err().is_invalid_argument());
        let b = Builder::new(UrlSource::Fixed("ws://h".into()))
            .with_reconnect_delay(Duration::from_secs(5))
            .with_max_reconnect_delay(Duration::from_secs(1));
        assert!(b.validate().unwrap_err().is_invalid_argument());
    }
}
