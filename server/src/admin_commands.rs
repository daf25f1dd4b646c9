//! The operator commands of the `hubcast` binary: look at and act on a running Hubcast from a
//! terminal or a script, over its gRPC listener (`hubcast.v1.Control`, and
//! `hubcast.v1.Admin` for the live trace), with tokens minted from the access key.
//!
//! Human-readable output by default; `--json` prints one JSON object per line (a record of
//! the trace, a connection, a group) or one object for a single answer, for scripts.

use std::time::Duration;

use clap::{Args, Subcommand};
use hubcast_auth as auth;
use hubcast_proto::v1 as pb;
use hubcast_server::telemetry::live_trace::record_json;
use serde_json::json;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// How long the minted tokens live (a trace may be followed for long; the channel's token
/// is minted once).
const TOKEN_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// The operator commands.
#[derive(Debug, Subcommand)]
pub(crate) enum AdminCommand {
    /// Follow the live trace (connections, messages, REST requests) until interrupted.
    Trace(TraceArgs),
    /// A hub's connections, users and groups, counted (`GetHubStats`).
    Stats(HubArgs),
    /// List a hub's connections (all, a user's, or a group's members).
    Connections(ConnectionsArgs),
    /// List a hub's groups with their member counts.
    Groups(HubArgs),
    /// Send a text message to a hub, a group, a user or a connection.
    Send(SendArgs),
    /// Close a connection, a user's connections, or a group's members' connections.
    Close(CloseArgs),
}

/// What every operator command needs to reach the server.
#[derive(Debug, Args)]
pub(crate) struct Target {
    /// The gRPC address of the server [default: http://<--grpc-listen>, loopback for an
    /// unspecified address; https with TLS configured].
    #[arg(long)]
    grpc_url: Option<String>,
    /// Connection string (its endpoint names the token audiences; its key signs them).
    #[arg(long, env = "HUBCAST_CONNECTION_STRING", hide_env_values = true)]
    connection_string: Option<String>,
    /// Print JSON (one object per line) instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct TraceArgs {
    #[command(flatten)]
    target: Target,
    /// Only records of this hub.
    #[arg(long)]
    hub: Option<String>,
    /// Only records of this user.
    #[arg(long)]
    user: Option<String>,
    /// Only records of this connection.
    #[arg(long)]
    connection: Option<String>,
    /// Only these categories: connectivity, messaging, http (repeatable).
    #[arg(long = "category")]
    categories: Vec<String>,
    /// Only records whose event, message, group or URL contains this.
    #[arg(long)]
    keyword: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct HubArgs {
    #[command(flatten)]
    target: Target,
    /// The hub.
    #[arg(long)]
    hub: String,
}

#[derive(Debug, Args)]
pub(crate) struct ConnectionsArgs {
    #[command(flatten)]
    target: Target,
    /// The hub.
    #[arg(long)]
    hub: String,
    /// Only this user's connections.
    #[arg(long, conflicts_with = "group")]
    user: Option<String>,
    /// Only this group's members.
    #[arg(long)]
    group: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct SendArgs {
    #[command(flatten)]
    target: Target,
    /// The hub.
    #[arg(long)]
    hub: String,
    /// To this group's members.
    #[arg(long, conflicts_with_all = ["user", "connection"])]
    group: Option<String>,
    /// To this user's connections.
    #[arg(long, conflicts_with = "connection")]
    user: Option<String>,
    /// To this connection.
    #[arg(long)]
    connection: Option<String>,
    /// The message (text).
    message: String,
}

#[derive(Debug, Args)]
pub(crate) struct CloseArgs {
    #[command(flatten)]
    target: Target,
    /// The hub.
    #[arg(long)]
    hub: String,
    /// This connection.
    #[arg(long, conflicts_with_all = ["user", "group"], required_unless_present_any = ["user", "group"])]
    connection: Option<String>,
    /// This user's connections.
    #[arg(long, conflicts_with = "group")]
    user: Option<String>,
    /// This group's members' connections.
    #[arg(long)]
    group: Option<String>,
    /// The reason the clients are told.
    #[arg(long, default_value = "")]
    reason: String,
}

/// Why a command failed: what to print.
pub(crate) type Failure = String;

type Authorized = InterceptedService<Channel, Bearer>;

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
pub(crate) struct Bearer(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

/// Where and as whom to call: the gRPC URL, and the endpoint and key tokens are minted with.
pub(crate) struct Server {
    pub(crate) grpc_url: String,
    pub(crate) endpoint: String,
    pub(crate) key: String,
}

impl Target {
    /// Whether output is JSON.
    fn json(&self) -> bool {
        self.json
    }
}

impl AdminCommand {
    /// The command's target options (`--grpc-url`, `--connection-string`).
    pub(crate) fn target(&self) -> (Option<&str>, Option<&str>) {
        let t = match self {
            AdminCommand::Trace(a) => &a.target,
            AdminCommand::Stats(a) | AdminCommand::Groups(a) => &a.target,
            AdminCommand::Connections(a) => &a.target,
            AdminCommand::Send(a) => &a.target,
            AdminCommand::Close(a) => &a.target,
        };
        (t.grpc_url.as_deref(), t.connection_string.as_deref())
    }

    /// Runs the command against `server`.
    ///
    /// # Errors
    /// What to print when the server cannot be reached or refuses.
    pub(crate) async fn run(self, server: Server) -> Result<(), Failure> {
        match self {
            AdminCommand::Trace(args) => trace(&server, args).await,
            AdminCommand::Stats(args) => {
                let mut control = control(&server).await?;
                let stats = control
                    .get_hub_stats(pb::GetHubStatsRequest { hub: args.hub })
                    .await
                    .map_err(status)?
                    .into_inner();
                if args.target.json() {
                    println!(
                        "{}",
                        json!({"hub": stats.hub, "connections": stats.connections, "users": stats.users, "groups": stats.groups})
                    );
                } else {
                    println!(
                        "hub {}: {} connections, {} users, {} groups",
                        stats.hub, stats.connections, stats.users, stats.groups
                    );
                }
                Ok(())
            }
            AdminCommand::Connections(args) => connections(&server, args).await,
            AdminCommand::Groups(args) => groups(&server, args).await,
            AdminCommand::Send(args) => send(&server, args).await,
            AdminCommand::Close(args) => close(&server, args).await,
        }
    }
}

async fn channel(server: &Server) -> Result<Channel, Failure> {
    tonic::transport::Endpoint::from_shared(server.grpc_url.clone())
        .map_err(|e| format!("invalid --grpc-url {}: {e}", server.grpc_url))?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| format!("cannot reach {}: {e}", server.grpc_url))
}

fn bearer(server: &Server, path: &str) -> Result<Bearer, Failure> {
    let token = auth::mint_service_token(
        &server.key,
        &format!("{}{path}", server.endpoint),
        TOKEN_TTL,
    );
    format!("Bearer {token}")
        .parse()
        .map(Bearer)
        .map_err(|e| format!("token: {e}"))
}

async fn control(
    server: &Server,
) -> Result<pb::control_client::ControlClient<Authorized>, Failure> {
    Ok(pb::control_client::ControlClient::with_interceptor(
        channel(server).await?,
        bearer(server, auth::GRPC_AUDIENCE_PATH)?,
    ))
}

fn status(s: tonic::Status) -> Failure {
    format!("{:?}: {}", s.code(), s.message())
}

async fn trace(server: &Server, args: TraceArgs) -> Result<(), Failure> {
    let mut categories = Vec::new();
    for name in &args.categories {
        categories.push(match name.to_ascii_lowercase().as_str() {
            "connectivity" => pb::TraceCategory::Connectivity,
            "messaging" => pb::TraceCategory::Messaging,
            "http" => pb::TraceCategory::HttpRequest,
            other => {
                return Err(format!(
                    "unknown category '{other}': use connectivity, messaging or http"
                ));
            }
        } as i32);
    }
    let mut admin = pb::admin_client::AdminClient::with_interceptor(
        channel(server).await?,
        bearer(server, auth::ADMIN_AUDIENCE_PATH)?,
    );
    let mut stream = admin
        .trace(pb::TraceRequest {
            hub: args.hub.unwrap_or_default(),
            user_id: args.user.unwrap_or_default(),
            connection_id: args.connection.unwrap_or_default(),
            categories,
            keyword: args.keyword.unwrap_or_default(),
        })
        .await
        .map_err(status)?
        .into_inner();
    let json = args.target.json();
    // On stderr, with `--json` too: stdout stays one record per line, and a script can wait
    // for this line to know the trace is being followed.
    eprintln!(
        "following the live trace of {} (Ctrl-C to stop)",
        server.grpc_url
    );
    while let Some(event) = stream.message().await.map_err(status)? {
        match event.event {
            Some(pb::trace_event::Event::Record(r)) if json => println!("{}", record_json(&r)),
            Some(pb::trace_event::Event::Record(r)) => println!("{}", record_line(&r)),
            Some(pb::trace_event::Event::Dropped(n)) if json => {
                println!("{}", json!({ "dropped": n }))
            }
            Some(pb::trace_event::Event::Dropped(n)) => {
                println!("... {n} records dropped (this terminal read too slowly)");
            }
            None => {}
        }
    }
    Ok(())
}

fn record_line(r: &pb::TraceRecord) -> String {
    let mut line = format!(
        "{} {:<13} {:<17} {}",
        record_json(r)["time"].as_str().unwrap_or_default(),
        r.level,
        r.event_name,
        r.message
    );
    for (name, value) in [("hub", &r.hub), ("user", &r.user_id), ("node", &r.node)] {
        if !value.is_empty() {
            line.push_str(&format!(" {name}={value}"));
        }
    }
    line
}

async fn connections(server: &Server, args: ConnectionsArgs) -> Result<(), Failure> {
    let mut control = control(server).await?;
    let json = args.target.json();
    let mut page_token = String::new();
    loop {
        let (ids_and_info, next): (Vec<(String, Option<pb::ConnectionInfo>)>, String) =
            if let Some(group) = &args.group {
                let page = control
                    .list_group_connections(pb::ListGroupConnectionsRequest {
                        hub: args.hub.clone(),
                        group: group.clone(),
                        page_size: 200,
                        page_token: page_token.clone(),
                    })
                    .await
                    .map_err(status)?
                    .into_inner();
                (
                    page.connections
                        .into_iter()
                        .map(|m| (m.connection_id, None))
                        .collect(),
                    page.next_page_token,
                )
            } else {
                let page = control
                    .list_connections(pb::ListConnectionsRequest {
                        hub: args.hub.clone(),
                        user_id: args.user.clone().unwrap_or_default(),
                        filter: String::new(),
                        page_size: 200,
                        page_token: page_token.clone(),
                    })
                    .await
                    .map_err(status)?
                    .into_inner();
                (
                    page.connections
                        .into_iter()
                        .map(|c| (c.connection_id.clone(), Some(c)))
                        .collect(),
                    page.next_page_token,
                )
            };
        for (id, info) in ids_and_info {
            match (json, info) {
                (true, Some(c)) => println!(
                    "{}",
                    json!({
                        "connectionId": c.connection_id,
                        "userId": c.user_id,
                        "groups": c.groups,
                        "subprotocol": c.subprotocol,
                        "connectedAt": c.connected_at.map(|t| t.seconds),
                    })
                ),
                (true, None) => println!("{}", json!({ "connectionId": id })),
                (false, Some(c)) => println!(
                    "{}  user={}  {}  groups={}",
                    c.connection_id,
                    c.user_id.as_deref().unwrap_or("-"),
                    if c.subprotocol.is_empty() {
                        "-"
                    } else {
                        &c.subprotocol
                    },
                    c.groups.join(",")
                ),
                (false, None) => println!("{id}"),
            }
        }
        if next.is_empty() {
            return Ok(());
        }
        page_token = next;
    }
}

async fn groups(server: &Server, args: HubArgs) -> Result<(), Failure> {
    let mut control = control(server).await?;
    let mut page_token = String::new();
    loop {
        let page = control
            .list_groups(pb::ListGroupsRequest {
                hub: args.hub.clone(),
                page_size: 200,
                page_token,
            })
            .await
            .map_err(status)?
            .into_inner();
        for g in page.groups {
            if args.target.json() {
                println!(
                    "{}",
                    json!({ "group": g.name, "connections": g.connection_count })
                );
            } else {
                println!("{}  {} connections", g.name, g.connection_count);
            }
        }
        if page.next_page_token.is_empty() {
            return Ok(());
        }
        page_token = page.next_page_token;
    }
}

async fn send(server: &Server, args: SendArgs) -> Result<(), Failure> {
    let mut control = control(server).await?;
    let payload = Some(pb::Payload {
        data: Some(pb::payload::Data::Text(args.message)),
        ..Default::default()
    });
    let hub = args.hub;
    let to = if let Some(group) = args.group {
        control
            .send_to_group(pb::SendToGroupRequest {
                hub: hub.clone(),
                group: group.clone(),
                payload,
                ..Default::default()
            })
            .await
            .map_err(status)?;
        format!("group '{group}'")
    } else if let Some(user) = args.user {
        control
            .send_to_user(pb::SendToUserRequest {
                hub: hub.clone(),
                user_id: user.clone(),
                payload,
                ..Default::default()
            })
            .await
            .map_err(status)?;
        format!("user '{user}'")
    } else if let Some(connection) = args.connection {
        control
            .send_to_connection(pb::SendToConnectionRequest {
                hub: hub.clone(),
                connection_id: connection.clone(),
                payload,
                ..Default::default()
            })
            .await
            .map_err(status)?;
        format!("connection {connection}")
    } else {
        control
            .send_to_all(pb::SendToAllRequest {
                hub: hub.clone(),
                payload,
                ..Default::default()
            })
            .await
            .map_err(status)?;
        "every connection".to_owned()
    };
    if args.target.json() {
        println!("{}", json!({ "sent": true, "hub": hub, "to": to }));
    } else {
        println!("sent to {to} of hub {hub}");
    }
    Ok(())
}

async fn close(server: &Server, args: CloseArgs) -> Result<(), Failure> {
    let mut control = control(server).await?;
    let hub = args.hub;
    let what = if let Some(connection) = args.connection {
        control
            .close_connection(pb::CloseConnectionRequest {
                hub: hub.clone(),
                connection_id: connection.clone(),
                reason: args.reason,
            })
            .await
            .map_err(status)?;
        format!("connection {connection}")
    } else if let Some(user) = args.user {
        control
            .close_user_connections(pb::CloseUserConnectionsRequest {
                hub: hub.clone(),
                user_id: user.clone(),
                excluded: Vec::new(),
                reason: args.reason,
            })
            .await
            .map_err(status)?;
        format!("the connections of user '{user}'")
    } else {
        let group = args.group.unwrap_or_default();
        control
            .close_group_connections(pb::CloseGroupConnectionsRequest {
                hub: hub.clone(),
                group: group.clone(),
                excluded: Vec::new(),
                reason: args.reason,
            })
            .await
            .map_err(status)?;
        format!("the connections of group '{group}'")
    };
    if args.target.json() {
        println!("{}", json!({ "closed": true, "hub": hub, "what": what }));
    } else {
        println!("closed {what} of hub {hub}");
    }
    Ok(())
}
