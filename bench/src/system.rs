//! The systems under test: started here as child processes on free loopback ports (or given
//! as URLs of running servers), and stopped at the end of their run.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::limits::free_port;
use crate::scenario::{Plan, Scenario};
use crate::webhook::EchoReceiver;

/// The hub every Hubcast scenario uses.
pub(crate) const HUB: &str = "bench";

/// How long a started server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The kinds of system a run can measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Kind {
    /// Hubcast (`json.webpubsub.azure.v1` clients, REST and gRPC control plane).
    Hubcast,
    /// The raw tokio-tungstenite broadcaster of this crate: no routing, no auth.
    Floor,
    /// NATS (`nats-server`) over its WebSocket listener.
    Nats,
    /// Socket.IO (Node, `bench/peers/socketio`).
    #[value(name = "socketio")]
    SocketIo,
    /// Hubcast's MQTT edge (MQTT 3.1.1 over WebSocket, `/clients/mqtt/hubs/{hub}`).
    HubcastMqtt,
    /// Debian's `mosquitto` with a WebSocket listener.
    Mosquitto,
    /// Hubcast's Socket.IO edge (Engine.IO v4 over WebSocket, serverless mode).
    #[value(name = "hubcast-socketio")]
    HubcastSocketIo,
    /// Every system, one after the other (each runs the scenarios it has an equivalent of).
    All,
}

impl Kind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Hubcast => "hubcast",
            Kind::Floor => "floor",
            Kind::Nats => "nats",
            Kind::SocketIo => "socketio",
            Kind::HubcastMqtt => "hubcast-mqtt",
            Kind::Mosquitto => "mosquitto",
            Kind::HubcastSocketIo => "hubcast-socketio",
            Kind::All => "all",
        }
    }

    /// Every system `all` stands for.
    pub(crate) const EVERY: [Kind; 7] = [
        Kind::Hubcast,
        Kind::Floor,
        Kind::Nats,
        Kind::SocketIo,
        Kind::HubcastMqtt,
        Kind::Mosquitto,
        Kind::HubcastSocketIo,
    ];

    /// Clients speak MQTT.
    pub(crate) fn is_mqtt(self) -> bool {
        matches!(self, Kind::HubcastMqtt | Kind::Mosquitto)
    }

    /// Clients speak Engine.IO v4 / Socket.IO v5.
    pub(crate) fn is_socketio(self) -> bool {
        matches!(self, Kind::SocketIo | Kind::HubcastSocketIo)
    }
}

/// How to find or reach the systems.
#[derive(Debug)]
pub(crate) struct StartOptions {
    pub(crate) hubcast_bin: Option<PathBuf>,
    pub(crate) nats_bin: PathBuf,
    pub(crate) mosquitto_bin: PathBuf,
    pub(crate) urls: Vec<String>,
    pub(crate) access_key: Option<String>,
    pub(crate) grpc: Option<String>,
    pub(crate) pids: Vec<u32>,
}

/// A running system under test.
pub(crate) struct System {
    pub(crate) kind: Kind,
    /// WebSocket base URLs (`ws://host:port`), clients spread over them.
    pub(crate) urls: Vec<String>,
    /// Server processes whose CPU and memory are reported.
    pub(crate) pids: Vec<u32>,
    /// Hubcast: the access key, the endpoint tokens name, and the gRPC address.
    pub(crate) access_key: String,
    pub(crate) grpc: Option<String>,
    _children: Vec<Running>,
    _echo: Option<EchoReceiver>,
    _dir: Option<TempDir>,
}

impl System {
    /// Starts `kind` for `plan` (or attaches to `options.urls`).
    pub(crate) async fn start(
        kind: Kind,
        plan: &Plan,
        options: &StartOptions,
    ) -> Result<Self, String> {
        let access_key = options
            .access_key
            .clone()
            .unwrap_or_else(|| "hubcast-bench-access-key-0123456789abcdef".to_owned());
        if !options.urls.is_empty() {
            return Ok(Self {
                kind,
                urls: options.urls.clone(),
                pids: options.pids.clone(),
                access_key,
                grpc: options.grpc.clone(),
                _children: Vec::new(),
                _echo: None,
                _dir: None,
            });
        }
        let dir = TempDir::new(kind.name())?;
        let mut echo = None;
        let port = free_port()?;
        let mut grpc = None;
        // A child that logs to a file rather than to this process's stderr.
        let mut child_log = None;
        let mut child = Running(match kind {
            Kind::Hubcast | Kind::HubcastMqtt | Kind::HubcastSocketIo => {
                let bin = match &options.hubcast_bin {
                    Some(bin) => bin.clone(),
                    None => sibling("hubcast")?,
                };
                let grpc_port = free_port()?;
                grpc = Some(format!("127.0.0.1:{grpc_port}"));
                // The per-socket rate limits guard against abuse; a load generator on an idle
                // machine publishes faster than their defaults (1,000 messages, 16 MiB per
                // second), and a rate-limited publisher would be measured as lost messages.
                let mut config = String::from(
                    "[limits]\nmessages_per_second = 1000000\nbytes_per_second = 1073741824\n",
                );
                if plan.scenario == Scenario::Echo {
                    let receiver = EchoReceiver::start().await?;
                    config += &format!(
                        "[hubs.\"*\"]\n[[hubs.\"*\".event_handlers]]\n\
                         url_template = \"http://{}/{{hub}}/{{event}}\"\n\
                         user_event_pattern = \"*\"\n",
                        receiver.addr()
                    );
                    echo = Some(receiver);
                }
                let config_path = dir.path().join("hubcast.toml");
                write(&config_path, &config)?;
                let mut command = Command::new(&bin);
                command
                    .arg("--listen")
                    .arg(format!("127.0.0.1:{port}"))
                    .arg("--grpc-listen")
                    .arg(format!("127.0.0.1:{grpc_port}"))
                    .arg("--access-key")
                    .arg(&access_key)
                    .arg("--config")
                    .arg(&config_path)
                    .env("RUST_LOG", "warn")
                    .env_remove("HUBCAST_REDIS_URL");
                spawn(command, &bin, None)?
            }
            Kind::Floor => {
                let bin = std::env::current_exe().map_err(|e| e.to_string())?;
                let mut command = Command::new(&bin);
                command
                    .arg("floor")
                    .arg("--listen")
                    .arg(format!("127.0.0.1:{port}"));
                spawn(command, &bin, None)?
            }
            Kind::Nats => {
                let client_port = free_port()?;
                let config_path = dir.path().join("nats.conf");
                write(
                    &config_path,
                    &format!(
                        "listen: \"127.0.0.1:{client_port}\"\n\
                         max_payload: 1048576\n\
                         log_file: \"{}\"\n\
                         websocket {{\n  listen: \"127.0.0.1:{port}\"\n  no_tls: true\n  \
                         compression: false\n}}\n",
                        dir.path().join("nats.log").display()
                    ),
                )?;
                let mut command = Command::new(&options.nats_bin);
                command.arg("-c").arg(&config_path);
                spawn(command, &options.nats_bin, None)?
            }
            Kind::Mosquitto => {
                // mosquitto 2.0 refuses to start with a WebSocket listener alone ("Unable
                // to start any listening sockets"), so a plain MQTT listener on loopback
                // comes first. Its WebSocket listener binds to an interface name: `lo`.
                // The in-flight window is Hubcast's (`mqtt.inflight_window`, 100); the
                // queue behind it (1,000) is never reached by the closed loop's 32
                // messages per subscriber, so nothing is dropped for being queued.
                let mqtt_port = free_port()?;
                let config_path = dir.path().join("mosquitto.conf");
                write(
                    &config_path,
                    &format!(
                        "per_listener_settings false\n\
                         allow_anonymous true\n\
                         persistence false\n\
                         log_dest stderr\n\
                         log_type error\n\
                         log_type warning\n\
                         connection_messages false\n\
                         set_tcp_nodelay true\n\
                         max_inflight_messages 100\n\
                         max_queued_messages 1000\n\
                         listener {mqtt_port} 127.0.0.1\n\
                         listener {port} lo\n\
                         protocol websockets\n"
                    ),
                )?;
                let bin = find_binary(&options.mosquitto_bin);
                let mut command = Command::new(&bin);
                command.arg("-c").arg(&config_path);
                spawn(command, &bin, None)?
            }
            Kind::SocketIo => {
                let peer = Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/socketio");
                if !peer.join("node_modules/socket.io").is_dir() {
                    return Err(format!(
                        "the Socket.IO peer is not installed: run `npm ci` in {}",
                        peer.display()
                    ));
                }
                let mut command = Command::new("node");
                command
                    .arg(peer.join("server.js"))
                    .env("PORT", port.to_string())
                    .current_dir(&peer);
                // Node makes the stdio it inherits non-blocking; were it this process's
                // stderr, a pipe shared with stdout (`2>&1 | ...`) would make this process's
                // own writes fail with EAGAIN. The peer logs to a file of the run instead.
                let log_path = dir.path().join("socketio-peer.log");
                let log = std::fs::File::create(&log_path)
                    .map_err(|e| format!("cannot create {}: {e}", log_path.display()))?;
                child_log = Some(log_path);
                spawn(command, Path::new("node"), Some(log))?
            }
            Kind::All => unreachable!("expanded by the caller"),
        });
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let started = async {
            wait_for_port(addr, &mut child.0).await?;
            if let Some(grpc) = &grpc {
                let grpc_addr: SocketAddr = grpc.parse().map_err(|e| format!("{e}"))?;
                wait_for_port(grpc_addr, &mut child.0).await?;
            }
            Ok::<_, String>(())
        };
        if let Err(e) = started.await {
            let log = child_log
                .and_then(|path| std::fs::read_to_string(path).ok())
                .unwrap_or_default();
            return Err(format!("{} did not start: {e}\n{log}", kind.name()));
        }
        let pid = child.0.id();
        Ok(Self {
            kind,
            urls: vec![format!("ws://127.0.0.1:{port}")],
            pids: vec![pid],
            access_key,
            grpc,
            _children: vec![child],
            _echo: echo,
            _dir: Some(dir),
        })
    }

    /// The HTTP base URL of node `i` (for REST calls).
    pub(crate) fn http_url(&self, i: usize) -> String {
        self.urls[i % self.urls.len()].replacen("ws", "http", 1)
    }

    /// Stops the processes this run started.
    pub(crate) fn stop(self) {
        drop(self);
    }
}

/// A started server, killed when dropped (also when a run fails halfway).
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `name` as given when it is a path or found on `PATH`, else in `/usr/sbin` (where Debian
/// puts `mosquitto`, outside an unprivileged user's `PATH`).
fn find_binary(name: &Path) -> PathBuf {
    if name.components().count() > 1 {
        return name.to_owned();
    }
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(name).is_file()))
        .unwrap_or(false);
    let sbin = Path::new("/usr/sbin").join(name);
    if !on_path && sbin.is_file() {
        sbin
    } else {
        name.to_owned()
    }
}

/// A binary next to this one (`target/<profile>/hubcast` next to `hubcast-bench`).
fn sibling(name: &str) -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let path = exe.with_file_name(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "{} not found: build it (`cargo build [--release] -p hubcast-server`) or pass \
             --hubcast-bin",
            path.display()
        ))
    }
}

/// Starts `command`, its stderr to `log` when given (else this process's).
fn spawn(mut command: Command, bin: &Path, log: Option<std::fs::File>) -> Result<Child, String> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log.map_or_else(Stdio::inherit, Stdio::from));
    command
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Waits until `addr` accepts TCP connections, failing early if the process exits.
async fn wait_for_port(addr: SocketAddr, child: &mut Child) -> Result<(), String> {
    let started = Instant::now();
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("it exited with {status}"));
        }
        if started.elapsed() > START_TIMEOUT {
            return Err(format!("{addr} refused connections for {START_TIMEOUT:?}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A directory for config files, removed when the run ends.
struct TempDir(PathBuf);

impl TempDir {
    fn new(label: &str) -> Result<Self, String> {
        let path = std::env::temp_dir().join(format!(
            "hubcast-bench-{}-{label}-{}",
            std::process::id(),
            crate::metrics::now_nanos()
        ));
        std::fs::create_dir_all(&path)
            .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        Ok(Self(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
