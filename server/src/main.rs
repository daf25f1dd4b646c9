//! The `hubcast` binary: `hubcast` serves; `hubcast token` prints a client access URL.
//!
//! Precedence of settings: flags, then `HUBCAST_*` environment variables, then the TOML file
//! (`--config`), then defaults.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

mod admin_commands;

use clap::{Args, Parser, Subcommand};
use hubcast_auth::{self as auth, ConnectionString, TokenRequest};
use hubcast_server::telemetry::otlp::{OtlpSettings, TraceExport};
use hubcast_server::{Config, Server};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

/// Exit code for a configuration error (sysexits EX_USAGE).
const EXIT_CONFIG: u8 = 64;

#[derive(Debug, Parser)]
#[command(
    name = "hubcast",
    version,
    about = "Self-hosted real-time messaging, wire-compatible with Azure Web PubSub"
)]
struct Cli {
    #[command(flatten)]
    settings: Settings,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print a client access URL (ws://.../client/hubs/{hub}?access_token=...; with
    /// `--socketio`, ws://.../clients/socketio/hubs/{hub}?access_token=...).
    Token(TokenArgs),
    /// Print a bearer token: for a REST request URL (`--url`), the gRPC `hubcast.v1.Control`
    /// service (`--grpc`), the gRPC event stream `hubcast.v1.Events` (`--events`), or the
    /// live trace (`--admin`: `hubcast.v1.Admin` and `GET /api/trace`).
    ServiceToken(ServiceTokenArgs),
    /// Ask a running server whether it serves (`GET /api/health`): exit 0 on a 2xx answer,
    /// 1 otherwise. For container health checks, where the image has no shell or curl.
    Health(HealthArgs),
    #[command(flatten)]
    Admin(admin_commands::AdminCommand),
}

#[derive(Debug, Args)]
struct HealthArgs {
    /// The URL to ask [default: /api/health on the HTTP listener (--listen), over https
    /// when the listener has TLS, with an unspecified address asked on loopback].
    #[arg(long)]
    url: Option<String>,
    /// How long the whole request may take: a number with s, m, h or d.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    timeout: Duration,
}

#[derive(Debug, Args)]
struct ServiceTokenArgs {
    /// Connection string: the one printed at start for a development key, or
    /// `Endpoint=...;AccessKey=<your key>;Version=1.0;` (overrides --endpoint/--access-key).
    #[arg(long, env = "HUBCAST_CONNECTION_STRING", hide_env_values = true)]
    connection_string: Option<String>,
    /// The REST request URL (or path) the token is for; its query does not matter.
    #[arg(
        long,
        conflicts_with_all = ["grpc", "events", "admin"],
        required_unless_present_any = ["grpc", "events", "admin"]
    )]
    url: Option<String>,
    /// A token for the gRPC control plane (audience `<endpoint>/hubcast.v1.Control`).
    #[arg(long, conflicts_with_all = ["events", "admin"])]
    grpc: bool,
    /// A token for the gRPC event stream (audience `<endpoint>/hubcast.v1.Events`).
    #[arg(long, conflicts_with = "admin")]
    events: bool,
    /// A token for operator tooling: the live trace over gRPC (`hubcast.v1.Admin`) and
    /// `GET /api/trace` (audience `<endpoint>/hubcast.v1.Admin`).
    #[arg(long)]
    admin: bool,
    /// Lifetime: a number with s, m, h or d.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    ttl: Duration,
}

/// Server settings; every one can also come from the environment or the config file.
#[derive(Debug, Args)]
struct Settings {
    /// TOML configuration file (per-hub settings, limits).
    #[arg(long, env = "HUBCAST_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// HTTP listener: client WebSockets and REST [default: 127.0.0.1:8080].
    #[arg(long, env = "HUBCAST_LISTEN", global = true)]
    listen: Option<SocketAddr>,
    /// gRPC listener for the control plane [default: 127.0.0.1:50051].
    #[arg(long, env = "HUBCAST_GRPC_LISTEN", global = true)]
    grpc_listen: Option<SocketAddr>,
    /// Public base URL named by token audiences (default: `http://<listen>`).
    #[arg(long, env = "HUBCAST_ENDPOINT", global = true)]
    endpoint: Option<String>,
    /// Access key (repeatable; primary first). None: a random development key.
    #[arg(
        long = "access-key",
        env = "HUBCAST_ACCESS_KEYS",
        value_delimiter = ',',
        hide_env_values = true,
        global = true
    )]
    access_keys: Vec<String>,
    /// Redis URL for clustering [default: none, single node in memory].
    #[arg(long = "redis", env = "HUBCAST_REDIS_URL", global = true)]
    redis_url: Option<String>,
    /// Seed node of a Redis Cluster for clustering, redis://host:port (repeatable, or
    /// comma-separated in the environment); instead of --redis.
    #[arg(
        long = "redis-cluster-node",
        env = "HUBCAST_REDIS_CLUSTER_NODES",
        value_delimiter = ',',
        global = true
    )]
    redis_cluster_nodes: Vec<String>,
    /// Prefix of the cluster's Redis keys and channels [default: hubcast].
    #[arg(long = "redis-prefix", env = "HUBCAST_REDIS_PREFIX", global = true)]
    redis_prefix: Option<String>,
    /// How long a node that stopped renewing its cluster lease still counts, e.g. 30s
    /// [default: 30s].
    #[arg(long = "cluster-lease", env = "HUBCAST_CLUSTER_LEASE", value_parser = parse_duration, global = true)]
    cluster_lease: Option<Duration>,
    /// Development mode: serve GET /dev/token, which mints client tokens for anyone (for the
    /// demo page at /). Never in production. HUBCAST_DEV takes 1/0, true/false, yes/no,
    /// on/off.
    #[arg(long, env = "HUBCAST_DEV", value_parser = boolean("HUBCAST_DEV"), global = true)]
    dev: bool,
    /// Do not serve GET /metrics (Prometheus text; on by default). OTLP export is configured
    /// by the standard OTEL_* environment variables (off unless an endpoint is set).
    /// HUBCAST_NO_METRICS takes 1/0, true/false, yes/no, on/off.
    #[arg(
        long,
        env = "HUBCAST_NO_METRICS",
        value_parser = boolean("HUBCAST_NO_METRICS"),
        global = true
    )]
    no_metrics: bool,
}

#[derive(Debug, Args)]
struct TokenArgs {
    /// Connection string: the one printed at start for a development key, or
    /// `Endpoint=...;AccessKey=<your key>;Version=1.0;` (overrides --endpoint/--access-key).
    #[arg(long, env = "HUBCAST_CONNECTION_STRING", hide_env_values = true)]
    connection_string: Option<String>,
    /// The hub.
    #[arg(long)]
    hub: String,
    /// The user id (`sub` claim).
    #[arg(long)]
    user: Option<String>,
    /// A role, e.g. webpubsub.joinLeaveGroup or webpubsub.sendToGroup.room1 (repeatable).
    #[arg(long = "role")]
    roles: Vec<String>,
    /// A group to join at connect (repeatable).
    #[arg(long = "group")]
    groups: Vec<String>,
    /// Lifetime: a number with s, m, h or d.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    ttl: Duration,
    /// A token for MQTT clients: its audience and URL name `/clients/mqtt/hubs/<hub>`.
    #[arg(long, conflicts_with = "socketio")]
    mqtt: bool,
    /// A token for a Socket.IO client: audience and URL `.../clients/socketio/hubs/{hub}`
    /// (give the URL's path to `socket.io-client` as `path`, the token as `access_token`).
    #[arg(long)]
    socketio: bool,
}

impl Settings {
    /// Merges flags and environment over the config file.
    fn into_config(self) -> Result<Config, String> {
        let mut config = match &self.config {
            Some(path) => Config::from_file(path).map_err(|e| e.to_string())?,
            None => Config::default(),
        };
        if let Some(listen) = self.listen {
            config.listen = listen;
        }
        if let Some(grpc) = self.grpc_listen {
            config.grpc_listen = grpc;
        }
        if self.endpoint.is_some() {
            config.endpoint = self.endpoint;
        }
        let keys: Vec<String> = self
            .access_keys
            .into_iter()
            .map(|k| k.trim().to_owned())
            .filter(|k| !k.is_empty())
            .collect();
        if !keys.is_empty() {
            config.access_keys = keys;
        }
        if self.redis_url.is_some() {
            config.cluster.redis_url = self.redis_url;
        }
        let seeds: Vec<String> = self
            .redis_cluster_nodes
            .into_iter()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect();
        if !seeds.is_empty() {
            config.cluster.redis_cluster_nodes = seeds;
        }
        if let Some(prefix) = self.redis_prefix {
            config.cluster.key_prefix = prefix;
        }
        if let Some(lease) = self.cluster_lease {
            config.cluster.lease = lease;
        }
        if self.dev {
            config.dev = true;
        }
        if self.no_metrics {
            config.metrics.enabled = false;
        }
        config.otlp = OtlpSettings::from_env(|name| std::env::var(name).ok())
            .map_err(|e| format!("invalid OpenTelemetry setting: {e}"))?;
        Ok(config)
    }
}

/// What every boolean environment variable (`HUBCAST_DEV`, `HUBCAST_NO_METRICS`) takes,
/// in any case; the README's `HUBCAST_DEV=1` among them. Empty is false, as unset.
const BOOL_VALUES: &str = "1, 0, true, false, yes, no, on, off";

/// A boolean flag's value: from its environment variable `var`, or `true` when the flag is
/// given. The error names the variable and what it takes (clap adds the flag).
fn boolean(var: &'static str) -> impl Fn(&str) -> Result<bool, String> + Clone + Send + Sync {
    move |s| {
        parse_bool(s).ok_or_else(|| {
            format!("{var}='{s}' is not a boolean; it takes {BOOL_VALUES} (any case)")
        })
    }
}

fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" | "" => Some(false),
        _ => None,
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (number, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = number
        .parse()
        .map_err(|_| format!("'{s}' is not a duration like 90s, 30m, 1h or 7d"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(format!("'{s}': unknown unit '{unit}' (use s, m, h or d)")),
    };
    Ok(Duration::from_secs(secs))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match cli.settings.into_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("hubcast: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match cli.command {
        Some(Command::Token(args)) => {
            init_logging(None);
            token(&config, args)
        }
        Some(Command::ServiceToken(args)) => {
            init_logging(None);
            service_token(&config, args)
        }
        Some(Command::Health(args)) => health(&config, args),
        Some(Command::Admin(command)) => admin(&config, command),
        None => serve(config),
    }
}

/// Logs to stderr (`RUST_LOG`, default `info`) and, when traces are exported, sends Hubcast's
/// spans to the OTLP layer (which has its own filter, so `RUST_LOG` only governs logs).
fn init_logging(traces: Option<&TraceExport>) {
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")));
    let otel = traces.map(|t| {
        t.layer()
            .with_filter(Targets::new().with_target("hubcast_server", tracing::Level::INFO))
    });
    tracing_subscriber::registry().with(logs).with(otel).init();
}

/// The endpoint and key to sign with: from the connection string, else the configuration.
fn signing_key(
    config: &Config,
    connection_string: Option<String>,
) -> Result<(String, String), ExitCode> {
    match connection_string {
        Some(s) => match ConnectionString::parse(&s) {
            Ok(cs) => Ok((cs.endpoint, cs.access_key)),
            Err(e) => {
                eprintln!("hubcast: invalid --connection-string: {e}");
                Err(ExitCode::from(EXIT_CONFIG))
            }
        },
        None => {
            let Some(key) = config.access_keys.first() else {
                eprintln!(
                    "hubcast: no key to sign with: pass --connection-string (printed by the \
                     server at start for a development key) or --access-key"
                );
                return Err(ExitCode::from(EXIT_CONFIG));
            };
            let endpoint = config
                .endpoint
                .clone()
                .unwrap_or_else(|| format!("http://{}", config.listen));
            Ok((endpoint.trim_end_matches('/').to_owned(), key.clone()))
        }
    }
}

fn service_token(config: &Config, args: ServiceTokenArgs) -> ExitCode {
    let (endpoint, key) = match signing_key(config, args.connection_string) {
        Ok(pair) => pair,
        Err(code) => return code,
    };
    let audience = match args.url {
        Some(url) if url.starts_with('/') => format!("{endpoint}{url}"),
        Some(url) => url,
        None if args.events => format!("{endpoint}{}", auth::EVENTS_AUDIENCE_PATH),
        None if args.admin => format!("{endpoint}{}", auth::ADMIN_AUDIENCE_PATH),
        None => format!("{endpoint}{}", auth::GRPC_AUDIENCE_PATH),
    };
    println!("{}", auth::mint_service_token(&key, &audience, args.ttl));
    ExitCode::SUCCESS
}

fn token(config: &Config, args: TokenArgs) -> ExitCode {
    let (endpoint, key) = match signing_key(config, args.connection_string) {
        Ok(pair) => pair,
        Err(code) => return code,
    };
    let request = TokenRequest {
        hub: args.hub,
        user_id: args.user,
        roles: args.roles,
        groups: args.groups,
        ttl: args.ttl,
    };
    let protocol = if args.mqtt {
        auth::ClientProtocol::Mqtt
    } else if args.socketio {
        auth::ClientProtocol::SocketIo
    } else {
        auth::ClientProtocol::Default
    };
    let token = auth::mint_client_token_for(&key, &endpoint, protocol, &request);
    println!(
        "{}",
        auth::client_url_for(&endpoint, protocol, &request.hub, &token)
    );
    ExitCode::SUCCESS
}

/// Runs an operator command against the server the configuration (or `--grpc-url` and
/// `--connection-string`) names.
fn admin(config: &Config, command: admin_commands::AdminCommand) -> ExitCode {
    let (grpc_url, connection_string) = command.target();
    let (endpoint, key) = match signing_key(config, connection_string.map(str::to_owned)) {
        Ok(pair) => pair,
        Err(code) => return code,
    };
    let grpc_url = grpc_url.map_or_else(
        || {
            let scheme = if config.tls.is_some() {
                "https"
            } else {
                "http"
            };
            format!("{scheme}://{}", loopback_if_unspecified(config.grpc_listen))
        },
        str::to_owned,
    );
    let runtime = match command_runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let server = admin_commands::Server {
        grpc_url,
        endpoint,
        key,
    };
    match runtime.block_on(command.run(server)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hubcast: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The single-threaded runtime of a command that calls a server (not of the server).
fn command_runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("hubcast: cannot start the runtime: {e}");
            ExitCode::FAILURE
        })
}

/// `addr`, with an unspecified IP (`0.0.0.0`, `::`) replaced by loopback: where a command on
/// the same machine reaches a listener bound to every interface.
fn loopback_if_unspecified(mut addr: std::net::SocketAddr) -> std::net::SocketAddr {
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    addr
}

fn health(config: &Config, args: HealthArgs) -> ExitCode {
    let url = args.url.unwrap_or_else(|| {
        let scheme = if config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!(
            "{scheme}://{}/api/health",
            loopback_if_unspecified(config.listen)
        )
    });
    let uri: http::Uri = match url.parse() {
        Ok(uri) => uri,
        Err(e) => {
            eprintln!("hubcast: invalid --url {url}: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let runtime = match command_runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let outcome = runtime.block_on(async {
        // The same client stack as webhooks (hyper-util over hyper-rustls, webpki roots).
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
            .map_err(|e| e.to_string())?
            .https_or_http()
            .enable_http1()
            .build();
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build::<_, http_body_util::Empty<bytes::Bytes>>(connector);
        match tokio::time::timeout(args.timeout, client.get(uri)).await {
            Err(_) => Err(format!("no answer within {:?}", args.timeout)),
            Ok(Err(e)) => Err(e.to_string()),
            Ok(Ok(response)) => Ok(response.status()),
        }
    });
    match outcome {
        Ok(status) if status.is_success() => {
            println!("{url}: {status}");
            ExitCode::SUCCESS
        }
        Ok(status) => {
            eprintln!("hubcast: {url}: {status}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("hubcast: {url}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(config: Config) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("hubcast: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        // The trace exporter's gRPC channel lives on this runtime.
        let traces = match config.otlp.as_ref().map(TraceExport::start).transpose() {
            Ok(traces) => traces.flatten(),
            Err(e) => {
                eprintln!("hubcast: {e}");
                return ExitCode::from(EXIT_CONFIG);
            }
        };
        init_logging(traces.as_ref());
        let code = run_server(config).await;
        if let Some(traces) = traces {
            traces.shutdown();
        }
        code
    })
}

async fn run_server(config: Config) -> ExitCode {
    {
        let dev_key = config.access_keys.is_empty();
        let server = match Server::bind(config).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("hubcast: {e}");
                return ExitCode::from(EXIT_CONFIG);
            }
        };
        println!("{}", banner(&server, dev_key));
        if dev_key {
            eprintln!(
                "hubcast: no access key configured; using a random development key (above). \
                 Mint a client URL with: hubcast token --connection-string '<the line above>' --hub <hub>"
            );
        } else {
            let fingerprints: Vec<String> = server.keys().keys().map(key_fingerprint).collect();
            eprintln!(
                "hubcast: signing with the configured access key {} (first 8 hex digits of its \
                 SHA-256; all accepted keys, primary first: {}). The key itself is not printed: \
                 the connection string is Endpoint={};AccessKey=<that key>;Version=1.0;",
                fingerprints[0],
                fingerprints.join(", "),
                server.endpoint(),
            );
        }
        match server.run(shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("hubcast: {e}");
                ExitCode::FAILURE
            }
        }
    }
}

/// The line printed on stdout at start. With a generated development key it is the
/// connection string (nobody else knows that key, and it dies with the process); with a
/// configured key it names the key by its fingerprint only, so that the secret the operator
/// supplied never lands in container or journald logs:
/// `Endpoint=<endpoint>;AccessKeyFingerprint=<8 hex digits>;`.
fn banner(server: &Server, dev_key: bool) -> String {
    if dev_key {
        server.connection_string()
    } else {
        format!(
            "Endpoint={};AccessKeyFingerprint={};",
            server.endpoint(),
            key_fingerprint(server.keys().primary())
        )
    }
}

/// The first 8 hex digits of the SHA-256 of `key` (its UTF-8 bytes): enough to tell which
/// key is in use (`printf %s "$KEY" | sha256sum | cut -c1-8`), far too little to guess it.
fn key_fingerprint(key: &str) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(key.as_bytes());
    digest[..4].iter().map(|b| format!("{b:02x}")).collect()
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler cannot fail on Unix");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604_800)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert!(parse_duration("1y").is_err());
        assert!(parse_duration("h").is_err());
    }

    #[test]
    fn service_token_needs_a_url_or_grpc() {
        assert!(Cli::try_parse_from(["hubcast", "service-token"]).is_err());
        assert!(Cli::try_parse_from(["hubcast", "service-token", "--grpc"]).is_ok());
        assert!(
            Cli::try_parse_from(["hubcast", "service-token", "--url", "/api/hubs/chat/:send"])
                .is_ok()
        );
        assert!(
            Cli::try_parse_from(["hubcast", "service-token", "--grpc", "--url", "/x"]).is_err()
        );
    }

    #[test]
    fn flags_override_the_file() {
        let cli = Cli::try_parse_from([
            "hubcast",
            "--listen",
            "127.0.0.1:9999",
            "--access-key",
            "k1,k2",
        ])
        .expect("valid flags");
        let config = cli.settings.into_config().expect("valid config");
        assert_eq!(config.listen.port(), 9999);
        assert_eq!(config.access_keys, ["k1", "k2"]);
    }

    #[test]
    fn booleans_take_the_usual_spellings_and_name_them_when_refused() {
        for yes in ["1", "true", "TRUE", "yes", "On"] {
            assert_eq!(parse_bool(yes), Some(true), "{yes}");
        }
        for no in ["0", "false", "No", "off", ""] {
            assert_eq!(parse_bool(no), Some(false), "{no}");
        }
        let err = boolean("HUBCAST_DEV")("maybe").expect_err("refused");
        assert!(
            err.contains("HUBCAST_DEV") && err.contains(BOOL_VALUES),
            "{err}"
        );
        let cli = Cli::try_parse_from(["hubcast", "--dev"]).expect("a flag without a value");
        assert!(cli.settings.dev);
    }

    #[test]
    fn the_fingerprint_is_the_start_of_the_keys_sha256() {
        // SHA-256("abc") = ba7816bf 8f01cfea ... (FIPS 180-2's example).
        assert_eq!(key_fingerprint("abc"), "ba7816bf");
    }

    #[test]
    fn redis_cluster_nodes_repeat_or_come_comma_separated() {
        let cli = Cli::try_parse_from([
            "hubcast",
            "--redis-cluster-node",
            "redis://a:7000",
            "--redis-cluster-node",
            "redis://b:7000,redis://c:7000",
        ])
        .expect("valid flags");
        let config = cli.settings.into_config().expect("valid config");
        assert_eq!(
            config.cluster.redis_cluster_nodes,
            ["redis://a:7000", "redis://b:7000", "redis://c:7000"]
        );
        assert_eq!(config.cluster.redis_url, None);
    }
}
