//! The REST edge: Azure Web PubSub's data-plane API under `/api/hubs/{hub}/...` (spec §5),
//! so the official server SDKs work against Hubcast unchanged.
//!
//! Each request is taken apart here (route, `api-version`, bearer token, query parameters,
//! body and content type) into the same `hubcast.v1` request message the gRPC edge receives,
//! and handed to [`Node`]. The outcome becomes Azure's status codes: sends 202, closes,
//! removes and revokes 204, adds, grants and listings 200, existence checks 200/404 with an
//! empty body. Failures carry Azure's error body `{"code","message","target"}` and the
//! `x-ms-error-code` header; [`http_status`] is the one place an [`ErrorCode`] becomes an HTTP
//! status.

mod route;

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt as _};
use hubcast_proto::v1 as pb;
use percent_encoding::{NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use serde::{Deserialize, Serialize};
use warp::http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header};
use warp::path::FullPath;
use warp::{Filter, Rejection};

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Classify, ErrorCode};
use crate::limits::{LimitCounters, LimitKind};
use crate::node::{Node, NodeError};
use crate::router::Permission;
use crate::telemetry::live_trace::{Category, Level, TraceRecord};
use crate::telemetry::{ControlCall, trace};
use hubcast_auth as auth;
use route::{NoRoute, Route};
use tracing::Instrument as _;

/// Largest request body (Azure: 1 MB).
pub(crate) const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The API versions accepted in `api-version`; a request without one gets the latest.
pub(crate) const API_VERSIONS: &[&str] = &[
    "2021-10-01",
    "2022-11-01",
    "2023-07-01",
    "2024-01-01",
    "2024-12-01",
    "2020-10-01",
    "2021-01-01",
    "2021-05-01-preview",
    "2021-08-01-preview",
    "2022-10-01-preview",
];

/// The stable versions, as advertised in `api-supported-versions`.
const SUPPORTED_VERSIONS_HEADER: &str =
    "2021-10-01, 2022-11-01, 2023-07-01, 2024-01-01, 2024-12-01";

/// The version `nextLink`s carry when the request named none.
const LATEST_VERSION: &str = "2024-12-01";

/// Largest page of `GET .../groups/{group}/connections` (Azure: 200).
const MAX_REST_PAGE_SIZE: u32 = 200;

type Reply = Response<Bytes>;

/// The warp filter for `/api/hubs/...`. Once the prefix matches it never rejects: every
/// outcome, errors included, is an Azure-shaped response.
pub(crate) fn routes(
    node: Node,
    body_timeout: Duration,
    limits: Arc<LimitCounters>,
) -> impl Filter<Extract = (Reply,), Error = Rejection> + Clone {
    let raw_query = warp::query::raw().or(warp::any().map(String::new)).unify();
    warp::path("api")
        .and(warp::path("hubs"))
        .and(warp::path::full())
        .and(warp::method())
        .and(raw_query)
        .and(warp::header::headers_cloned())
        .and(warp::body::stream())
        .then(
            move |path: FullPath, method: Method, query: String, headers: HeaderMap, body| {
                let node = node.clone();
                let limits = limits.clone();
                async move {
                    let head = method == Method::HEAD;
                    let call = ControlCall::start("rest", trace::extract_http(&headers));
                    let request = RestRequest {
                        path: path.as_str().to_owned(),
                        method,
                        query,
                        headers,
                        body_timeout,
                        limits,
                        trusted: false,
                    };
                    let mut operation = "unknown";
                    let handled = handle(&node, &request, body, &mut operation)
                        .instrument(call.span.clone())
                        .await;
                    let mut reply = match handled {
                        Ok(reply) => reply,
                        Err(error) => error.into_response(head),
                    };
                    let trace_id = call.trace_id();
                    let elapsed = call.finish(node.metrics(), operation, reply.status().as_str());
                    trace_request(
                        &node,
                        &request,
                        operation,
                        reply.status(),
                        elapsed,
                        trace_id,
                    );
                    reply.headers_mut().insert(
                        "api-supported-versions",
                        HeaderValue::from_static(SUPPORTED_VERSIONS_HEADER),
                    );
                    reply
                }
            },
        )
}

/// The parts of a request the handler looks at, besides the body.
struct RestRequest {
    /// The raw (percent-encoded) path.
    path: String,
    method: Method,
    /// The raw query string, without `?`.
    query: String,
    headers: HeaderMap,
    /// `limits.request_body_timeout`.
    body_timeout: Duration,
    /// Where a body that timed out is counted.
    limits: Arc<LimitCounters>,
    /// Already authenticated (a request over a tunnel): no `Authorization` is looked for.
    trusted: bool,
}

/// A REST call that arrived over an authenticated tunnel (spec part 2 §2.4): the same data
/// plane as `/api/hubs/...`, answered the same way, without a bearer token. `path` is the
/// raw path, `query` the raw query without `?`.
pub(crate) async fn execute_trusted(
    node: &Node,
    limits: Arc<LimitCounters>,
    method: Method,
    path: String,
    query: String,
    headers: HeaderMap,
    body: Bytes,
) -> Reply {
    let head = method == Method::HEAD;
    let call = ControlCall::start("rest", trace::extract_http(&headers));
    let request = RestRequest {
        path,
        method,
        query,
        headers,
        body_timeout: Duration::from_secs(1),
        limits,
        trusted: true,
    };
    let body = futures_util::stream::once(async move { Ok::<_, warp::Error>(body) });
    let mut operation = "unknown";
    let handled = handle(node, &request, Box::pin(body), &mut operation)
        .instrument(call.span.clone())
        .await;
    let reply = match handled {
        Ok(reply) => reply,
        Err(error) => error.into_response(head),
    };
    let trace_id = call.trace_id();
    let elapsed = call.finish(node.metrics(), operation, reply.status().as_str());
    trace_request(node, &request, operation, reply.status(), elapsed, trace_id);
    reply
}

/// An `HttpRequest` record of the live trace for a REST call (its URL with credentials
/// redacted; headers and bodies are never recorded).
fn trace_request(
    node: &Node,
    request: &RestRequest,
    operation: &str,
    status: http::StatusCode,
    elapsed: Duration,
    trace_id: String,
) {
    node.live_trace().emit(|| {
        let url = if request.query.is_empty() {
            request.path.clone()
        } else {
            crate::redact::Url(&format!("{}?{}", request.path, request.query)).to_string()
        };
        let mut r = TraceRecord::new(
            Category::HttpRequest,
            "HttpRequest",
            format!(
                "{} {url} ({operation}{}) answered {} in {} ms.",
                request.method,
                if request.trusted {
                    ", over a tunnel"
                } else {
                    ""
                },
                status.as_u16(),
                elapsed.as_millis()
            ),
        );
        r.level = if status.is_server_error() {
            Level::Error
        } else if status.is_client_error() {
            Level::Warning
        } else {
            Level::Informational
        };
        r.hub = hub_of(&request.path);
        r.route_template = operation.to_owned();
        r.http_method = request.method.to_string();
        r.url = url;
        r.status_code = status.as_u16();
        r.duration = elapsed;
        r.trace_id = trace_id;
        r
    });
}

/// The hub a REST path names (`/api/hubs/{hub}/...`), lower-cased; empty if none.
fn hub_of(path: &str) -> String {
    path.strip_prefix("/api/hubs/")
        .and_then(|rest| rest.split('/').next())
        .map(|hub| hub.to_ascii_lowercase())
        .unwrap_or_default()
}

// === errors ===

/// A failed REST call: a classification, a message and the parameter it is about.
#[derive(Debug)]
struct RestError {
    code: ErrorCode,
    message: String,
    target: Option<&'static str>,
}

impl RestError {
    fn new(code: ErrorCode, message: impl Into<String>, target: Option<&'static str>) -> Self {
        Self {
            code,
            message: message.into(),
            target,
        }
    }

    fn bad_request(message: impl Into<String>, target: &'static str) -> Self {
        Self::new(ErrorCode::BadRequest, message, Some(target))
    }

    fn into_response(self, head: bool) -> Reply {
        let status = http_status(self.code);
        if self.code == ErrorCode::Internal {
            tracing::error!(error = %self.message, "REST call failed");
        }
        let message = if self.code == ErrorCode::Internal {
            "internal error".to_owned()
        } else {
            self.message
        };
        let code = format!("Error.{}", self.code.name());
        let mut reply = if head {
            empty(status)
        } else {
            #[derive(Serialize)]
            struct Body<'a> {
                code: &'a str,
                message: &'a str,
                #[serde(skip_serializing_if = "Option::is_none")]
                target: Option<&'a str>,
            }
            json(
                status,
                &Body {
                    code: &code,
                    message: &message,
                    target: self.target,
                },
            )
        };
        if let Ok(value) = HeaderValue::from_str(&code) {
            reply.headers_mut().insert("x-ms-error-code", value);
        }
        if status == StatusCode::UNAUTHORIZED {
            reply
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        reply
    }
}

impl From<NodeError> for RestError {
    fn from(error: NodeError) -> Self {
        Self::new(
            error.code(),
            error.to_string(),
            error.field().map(|f| f.rest_name()),
        )
    }
}

/// Maps an error classification to its HTTP status: the one place this happens.
fn http_status(code: ErrorCode) -> StatusCode {
    match code {
        // Azure answers 400 to an oversized body as well.
        ErrorCode::BadRequest | ErrorCode::PayloadTooLarge => StatusCode::BAD_REQUEST,
        ErrorCode::Unauthenticated => StatusCode::UNAUTHORIZED,
        ErrorCode::PermissionDenied => StatusCode::FORBIDDEN,
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Timeout => StatusCode::REQUEST_TIMEOUT,
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn empty(status: StatusCode) -> Reply {
    let mut reply = Response::new(Bytes::new());
    *reply.status_mut() = status;
    reply
}

fn json(status: StatusCode, value: &impl Serialize) -> Reply {
    let body = serde_json::to_vec(value).expect("REST replies serialize");
    let mut reply = Response::new(Bytes::from(body));
    *reply.status_mut() = status;
    reply.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    reply
}

// === the handler ===

async fn handle<S, B>(
    node: &Node,
    req: &RestRequest,
    body: S,
    operation: &mut &'static str,
) -> Result<Reply, RestError>
where
    S: Stream<Item = Result<B, warp::Error>> + Unpin,
    B: bytes::Buf,
{
    let query = Query::parse(&req.query)?;
    let api_version = api_version(&query)?;
    if !req.trusted {
        authenticate(node, req)?;
    }
    let rest = req
        .path
        .strip_prefix("/api/hubs/")
        .ok_or_else(|| not_found(&req.path))?;
    let (hub, route) = route::route(&req.method, rest).map_err(|e| match e {
        NoRoute::BadEncoding => RestError::bad_request(
            "the path has a segment that is not valid percent-encoded UTF-8",
            "Request",
        ),
        NoRoute::NotFound => not_found(&req.path),
        NoRoute::Method(allowed) => RestError::new(
            ErrorCode::NotFound,
            format!(
                "{} is not allowed on {}; use {}",
                req.method,
                req.path,
                allowed.join(", ")
            ),
            Some("Request"),
        ),
    })?;
    *operation = route.name();
    let accepted = || empty(StatusCode::ACCEPTED);
    let no_content = || empty(StatusCode::NO_CONTENT);
    let ok = || empty(StatusCode::OK);
    let exists = |yes: bool| {
        empty(if yes {
            StatusCode::OK
        } else {
            StatusCode::NOT_FOUND
        })
    };
    Ok(match route {
        Route::SendToAll => {
            let payload = read_payload(req, body).await?;
            node.send_to_all(pb::SendToAllRequest {
                hub,
                payload: Some(payload),
                excluded: query.all("excluded"),
                filter: query.get("filter").unwrap_or_default().to_owned(),
                ttl_seconds: ttl(&query)?,
            })
            .await?;
            accepted()
        }
        Route::SendToGroup(group) => {
            let payload = read_payload(req, body).await?;
            node.send_to_group(pb::SendToGroupRequest {
                hub,
                group,
                payload: Some(payload),
                excluded: query.all("excluded"),
                filter: query.get("filter").unwrap_or_default().to_owned(),
                ttl_seconds: ttl(&query)?,
            })
            .await?;
            accepted()
        }
        Route::SendToUser(user_id) => {
            let payload = read_payload(req, body).await?;
            node.send_to_user(pb::SendToUserRequest {
                hub,
                user_id,
                payload: Some(payload),
                filter: query.get("filter").unwrap_or_default().to_owned(),
                ttl_seconds: ttl(&query)?,
                excluded: Vec::new(),
            })
            .await?;
            accepted()
        }
        Route::SendToConnection(connection_id) => {
            let payload = read_payload(req, body).await?;
            node.send_to_connection(pb::SendToConnectionRequest {
                hub,
                connection_id,
                payload: Some(payload),
                ttl_seconds: ttl(&query)?,
            })
            .await?;
            accepted()
        }
        Route::ConnectionExists(connection_id) => exists(
            node.connection_exists(pb::ConnectionExistsRequest { hub, connection_id })
                .await?
                .exists,
        ),
        Route::GroupExists(group) => exists(
            node.group_exists(pb::GroupExistsRequest { hub, group })
                .await?
                .exists,
        ),
        Route::UserExists(user_id) => exists(
            node.user_exists(pb::UserExistsRequest { hub, user_id })
                .await?
                .exists,
        ),
        Route::CloseConnection(connection_id) => {
            node.close_connection(pb::CloseConnectionRequest {
                hub,
                connection_id,
                reason: query.get("reason").unwrap_or_default().to_owned(),
            })
            .await?;
            no_content()
        }
        Route::CloseAll => {
            node.close_all_connections(pb::CloseAllConnectionsRequest {
                hub,
                excluded: query.all("excluded"),
                reason: query.get("reason").unwrap_or_default().to_owned(),
            })
            .await?;
            no_content()
        }
        Route::CloseGroup(group) => {
            node.close_group_connections(pb::CloseGroupConnectionsRequest {
                hub,
                group,
                excluded: query.all("excluded"),
                reason: query.get("reason").unwrap_or_default().to_owned(),
            })
            .await?;
            no_content()
        }
        Route::CloseUser(user_id) => {
            node.close_user_connections(pb::CloseUserConnectionsRequest {
                hub,
                user_id,
                excluded: query.all("excluded"),
                reason: query.get("reason").unwrap_or_default().to_owned(),
            })
            .await?;
            no_content()
        }
        Route::AddConnectionToGroup { group, connection } => {
            node.add_connection_to_group(pb::AddConnectionToGroupRequest {
                hub,
                group,
                connection_id: connection,
            })
            .await?;
            ok()
        }
        Route::RemoveConnectionFromGroup { group, connection } => {
            node.remove_connection_from_group(pb::RemoveConnectionFromGroupRequest {
                hub,
                group,
                connection_id: connection,
            })
            .await?;
            no_content()
        }
        Route::RemoveConnectionFromAllGroups(connection_id) => {
            node.remove_connection_from_all_groups(pb::RemoveConnectionFromAllGroupsRequest {
                hub,
                connection_id,
            })
            .await?;
            no_content()
        }
        Route::AddUserToGroup { user, group } => {
            node.add_user_to_group(pb::AddUserToGroupRequest {
                hub,
                group,
                user_id: user,
            })
            .await?;
            ok()
        }
        Route::RemoveUserFromGroup { user, group } => {
            node.remove_user_from_group(pb::RemoveUserFromGroupRequest {
                hub,
                group,
                user_id: user,
            })
            .await?;
            no_content()
        }
        Route::RemoveUserFromAllGroups(user_id) => {
            node.remove_user_from_all_groups(pb::RemoveUserFromAllGroupsRequest { hub, user_id })
                .await?;
            no_content()
        }
        Route::AddToGroups => {
            let GroupsBody { groups, filter } = read_groups_body(req, body).await?;
            node.add_connections_to_groups(pb::AddConnectionsToGroupsRequest {
                hub,
                groups,
                filter: filter.unwrap_or_default(),
            })
            .await?;
            ok()
        }
        Route::RemoveFromGroups => {
            let GroupsBody { groups, filter } = read_groups_body(req, body).await?;
            node.remove_connections_from_groups(pb::RemoveConnectionsFromGroupsRequest {
                hub,
                groups,
                filter: filter.unwrap_or_default(),
            })
            .await?;
            ok()
        }
        Route::GrantPermission {
            permission,
            connection,
        } => {
            node.grant_permission(pb::GrantPermissionRequest {
                hub,
                connection_id: connection,
                permission: permission_value(&permission)?,
                target_group: query.get("targetName").unwrap_or_default().to_owned(),
            })
            .await?;
            ok()
        }
        Route::RevokePermission {
            permission,
            connection,
        } => {
            node.revoke_permission(pb::RevokePermissionRequest {
                hub,
                connection_id: connection,
                permission: permission_value(&permission)?,
                target_group: query.get("targetName").unwrap_or_default().to_owned(),
            })
            .await?;
            no_content()
        }
        Route::CheckPermission {
            permission,
            connection,
        } => exists(
            node.check_permission(pb::CheckPermissionRequest {
                hub,
                connection_id: connection,
                permission: permission_value(&permission)?,
                target_group: query.get("targetName").unwrap_or_default().to_owned(),
            })
            .await?
            .granted,
        ),
        Route::GenerateToken => generate_token(node, hub, &query)?,
        Route::ListGroupConnections(group) => {
            list_group_connections(node, req, hub, group, &query, api_version).await?
        }
    })
}

fn not_found(path: &str) -> RestError {
    RestError::new(
        ErrorCode::NotFound,
        format!("no data-plane operation has the path {path}"),
        Some("Request"),
    )
}

/// The `api-version` to echo in `nextLink`s; refuses unknown versions.
fn api_version(query: &Query) -> Result<&str, RestError> {
    match query.get("api-version") {
        None => Ok(LATEST_VERSION),
        Some(v) if API_VERSIONS.contains(&v) => Ok(v),
        Some(v) => Err(RestError::bad_request(
            format!("api-version '{v}' is not supported; supported: {SUPPORTED_VERSIONS_HEADER}"),
            "api-version",
        )),
    }
}

/// Checks `Authorization: Bearer <token>` against the request path (spec §4.6).
fn authenticate(node: &Node, req: &RestRequest) -> Result<(), RestError> {
    let unauthorized = |message: String| RestError::new(ErrorCode::Unauthenticated, message, None);
    let header = req
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            unauthorized(
                "missing Authorization header: sign a bearer token with an access key whose \
                 audience is the request URL"
                    .into(),
            )
        })?;
    let token = super::bearer_token(header)
        .ok_or_else(|| unauthorized("the Authorization header must be `Bearer <token>`".into()))?;
    auth::verify_service_token(token, node.keys(), node.endpoint(), &req.path)
        .map_err(|e| unauthorized(e.to_string()))
}

fn ttl(query: &Query) -> Result<u32, RestError> {
    match query.get("messageTtlSeconds") {
        None => Ok(0),
        Some(v) => v.parse().map_err(|_| {
            RestError::bad_request(
                format!("messageTtlSeconds must be an integer from 0 to 300, not '{v}'"),
                "messageTtlSeconds",
            )
        }),
    }
}

fn permission_value(name: &str) -> Result<i32, RestError> {
    let permission = Permission::parse(name).ok_or_else(|| {
        RestError::bad_request(
            format!("permission must be sendToGroup or joinLeaveGroup, not '{name}'"),
            "permission",
        )
    })?;
    Ok(match permission {
        Permission::SendToGroup => pb::Permission::SendToGroup,
        Permission::JoinLeaveGroup => pb::Permission::JoinLeaveGroup,
    } as i32)
}

/// `POST /api/hubs/{hub}/:generateToken` (spec §4.5).
fn generate_token(node: &Node, hub: String, query: &Query) -> Result<Reply, RestError> {
    let minutes = match query.get("minutesToExpire") {
        None => 60,
        Some(v) => match v.parse::<u32>() {
            Ok(n) if n >= 1 => n,
            _ => {
                return Err(RestError::bad_request(
                    format!("minutesToExpire must be a positive integer, not '{v}'"),
                    "minutesToExpire",
                ));
            }
        },
    };
    let client_type = match query.get("clientType") {
        None => pb::ClientType::Default,
        Some(t) if t.eq_ignore_ascii_case("default") => pb::ClientType::Default,
        Some(t) if t.eq_ignore_ascii_case("mqtt") => pb::ClientType::Mqtt,
        // `@azure/web-pubsub` sends its `clientProtocol` as is: `socketio`.
        Some(t) if t.eq_ignore_ascii_case("socketio") => pb::ClientType::SocketIo,
        Some(t) => {
            return Err(RestError::bad_request(
                format!("clientType '{t}' is not supported; use Default, MQTT or SocketIO"),
                "clientType",
            ));
        }
    };
    let response = node.generate_client_token(pb::GenerateClientTokenRequest {
        hub,
        user_id: query.get("userId").unwrap_or_default().to_owned(),
        roles: query.all("role"),
        groups: query.all("group"),
        expires_in_minutes: minutes,
        client_type: client_type.into(),
    })?;
    #[derive(Serialize)]
    struct Token {
        token: String,
    }
    Ok(json(
        StatusCode::OK,
        &Token {
            token: response.token,
        },
    ))
}

/// `GET /api/hubs/{hub}/groups/{group}/connections` with Azure's paging: `maxpagesize`,
/// `top` (a total across pages) and `continuationToken`, answered with `value` and an
/// absolute `nextLink`.
async fn list_group_connections(
    node: &Node,
    req: &RestRequest,
    hub: String,
    group: String,
    query: &Query,
    api_version: &str,
) -> Result<Reply, RestError> {
    let positive = |name: &'static str, max: u32| -> Result<Option<u32>, RestError> {
        query
            .get(name)
            .map(|v| match v.parse::<u32>() {
                Ok(n) if (1..=max).contains(&n) => Ok(n),
                _ => Err(RestError::bad_request(
                    format!("{name} must be an integer from 1 to {max}, not '{v}'"),
                    name,
                )),
            })
            .transpose()
    };
    let max_page = positive("maxpagesize", MAX_REST_PAGE_SIZE)?.unwrap_or(MAX_REST_PAGE_SIZE);
    let top = positive("top", i32::MAX as u32)?;
    let page_size = top.map_or(max_page, |t| t.min(max_page));
    let page = node
        .list_group_connections(pb::ListGroupConnectionsRequest {
            hub,
            group,
            page_size,
            page_token: query
                .get("continuationToken")
                .unwrap_or_default()
                .to_owned(),
        })
        .await?;
    let returned = u32::try_from(page.connections.len()).unwrap_or(u32::MAX);
    let remaining = top.map(|t| t.saturating_sub(returned));
    let next_link = (!page.next_page_token.is_empty() && remaining != Some(0)).then(|| {
        let mut link = format!(
            "{}{}?api-version={}&maxpagesize={max_page}&continuationToken={}",
            node.endpoint(),
            req.path,
            encode(api_version),
            encode(&page.next_page_token)
        );
        if let Some(remaining) = remaining {
            link.push_str(&format!("&top={remaining}"));
        }
        link
    });
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Member {
        connection_id: String,
        user_id: Option<String>,
    }
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct PageBody {
        value: Vec<Member>,
        #[serde(skip_serializing_if = "Option::is_none")]
        next_link: Option<String>,
    }
    Ok(json(
        StatusCode::OK,
        &PageBody {
            value: page
                .connections
                .into_iter()
                .map(|m| Member {
                    connection_id: m.connection_id,
                    user_id: m.user_id,
                })
                .collect(),
            next_link,
        },
    ))
}

/// Percent-encodes a query value, keeping RFC 3986 unreserved characters.
fn encode(value: &str) -> String {
    const UNRESERVED: &percent_encoding::AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    utf8_percent_encode(value, UNRESERVED).to_string()
}

// === bodies ===

/// Reads the body, refusing more than [`MAX_BODY_BYTES`] (400, as Azure) and a body that
/// is not all in within `limits.request_body_timeout` (408: a caller trickling its body
/// would otherwise hold a connection and a task for as long as it likes).
async fn read_body<S, B>(req: &RestRequest, body: S) -> Result<Bytes, RestError>
where
    S: Stream<Item = Result<B, warp::Error>> + Unpin,
    B: bytes::Buf,
{
    match tokio::time::timeout(req.body_timeout, read_body_untimed(req, body)).await {
        Ok(read) => read,
        Err(_) => {
            req.limits.hit(LimitKind::RequestBodyTimeout);
            Err(RestError::new(
                ErrorCode::Timeout,
                format!(
                    "the request body did not arrive within limits.request_body_timeout ({} s)",
                    req.body_timeout.as_secs_f64()
                ),
                Some("Request"),
            ))
        }
    }
}

/// [`read_body`] without its deadline.
async fn read_body_untimed<S, B>(req: &RestRequest, mut body: S) -> Result<Bytes, RestError>
where
    S: Stream<Item = Result<B, warp::Error>> + Unpin,
    B: bytes::Buf,
{
    let too_large = || {
        RestError::new(
            ErrorCode::PayloadTooLarge,
            format!("the request body exceeds the limit of {MAX_BODY_BYTES} bytes"),
            Some("Request"),
        )
    };
    if let Some(length) = req.headers.get(header::CONTENT_LENGTH) {
        let length = length
            .to_str()
            .ok()
            .and_then(|l| l.parse::<usize>().ok())
            .ok_or_else(|| RestError::bad_request("Invalid Content-Length header.", "Request"))?;
        if length > MAX_BODY_BYTES {
            return Err(too_large());
        }
    }
    let mut out = BytesMut::new();
    while let Some(chunk) = body.next().await {
        let mut chunk = chunk.map_err(|e| {
            RestError::bad_request(format!("cannot read the request body: {e}"), "Request")
        })?;
        if out.len() + chunk.remaining() > MAX_BODY_BYTES {
            return Err(too_large());
        }
        while chunk.has_remaining() {
            let piece = chunk.chunk();
            let n = piece.len();
            out.extend_from_slice(piece);
            chunk.advance(n);
        }
    }
    Ok(out.freeze())
}

/// A media type and its `charset`, lower-cased; `None` without a `Content-Type`.
fn content_type(req: &RestRequest) -> Result<Option<(String, Option<String>)>, RestError> {
    let Some(value) = req.headers.get(header::CONTENT_TYPE) else {
        return Ok(None);
    };
    let value = value.to_str().map_err(|_| {
        RestError::new(
            ErrorCode::UnsupportedMediaType,
            "the Content-Type header is not valid ASCII",
            Some("Content-Type"),
        )
    })?;
    let mut parts = value.split(';');
    let media = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
    let charset = parts.find_map(|p| {
        let (name, value) = p.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("charset")
            .then(|| value.trim().trim_matches('"').to_ascii_lowercase())
    });
    Ok(Some((media, charset)))
}

fn unsupported(message: String) -> RestError {
    RestError::new(
        ErrorCode::UnsupportedMediaType,
        message,
        Some("Content-Type"),
    )
}

/// Text bodies must be UTF-8 (or ASCII, a subset).
fn utf8_body(body: Bytes, charset: Option<&str>, media: &str) -> Result<String, RestError> {
    if let Some(charset) = charset
        && !matches!(charset, "utf-8" | "utf8" | "us-ascii")
    {
        return Err(unsupported(format!(
            "charset '{charset}' is not supported for {media}; send UTF-8"
        )));
    }
    String::from_utf8(body.to_vec()).map_err(|_| {
        RestError::bad_request(format!("the {media} body is not valid UTF-8"), "message")
    })
}

/// The message of a send: its bytes and `Content-Type` (spec §5.1).
async fn read_payload<S, B>(req: &RestRequest, body: S) -> Result<pb::Payload, RestError>
where
    S: Stream<Item = Result<B, warp::Error>> + Unpin,
    B: bytes::Buf,
{
    use pb::payload::Data;
    let content_type = content_type(req)?;
    let body = read_body(req, body).await?;
    let data = match &content_type {
        None => Data::Binary(body),
        Some((media, charset)) => match media.as_str() {
            "text/plain" => Data::Text(utf8_body(body, charset.as_deref(), media)?),
            "application/json" => Data::Json(utf8_body(body, charset.as_deref(), media)?),
            "application/octet-stream" => Data::Binary(body),
            other => {
                return Err(unsupported(format!(
                    "Content-Type '{other}' is not supported; use application/json, text/plain \
                     or application/octet-stream"
                )));
            }
        },
    };
    Ok(pb::Payload {
        data: Some(data),
        content_type: String::new(),
        metadata: metadata_headers(&req.headers)?,
    })
}

/// Prefix of the request headers that carry message metadata (Azure's emulator).
const METADATA_HEADER: &str = "x-webpubsub-metadata-";

/// The `X-WebPubSub-Metadata-<key>` headers of a send, by lower-cased key: for a repeated
/// header the last value, and of a comma-separated value its last item, wins (as in Azure's
/// emulator). The service layer checks the keys and bounds.
fn metadata_headers(headers: &HeaderMap) -> Result<HashMap<String, String>, RestError> {
    let mut metadata = HashMap::new();
    for (name, value) in headers {
        let Some(key) = name.as_str().strip_prefix(METADATA_HEADER) else {
            continue;
        };
        let value = value.to_str().map_err(|_| {
            RestError::bad_request(
                format!("the header {name} is not visible ASCII text"),
                "message",
            )
        })?;
        let last = value.rsplit(',').next().unwrap_or(value).trim();
        metadata.insert(key.to_owned(), last.to_owned());
    }
    Ok(metadata)
}

/// The body of `:addToGroups` / `:removeFromGroups`.
#[derive(Deserialize)]
struct GroupsBody {
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    filter: Option<String>,
}

async fn read_groups_body<S, B>(req: &RestRequest, body: S) -> Result<GroupsBody, RestError>
where
    S: Stream<Item = Result<B, warp::Error>> + Unpin,
    B: bytes::Buf,
{
    match content_type(req)? {
        Some((media, _)) if media == "application/json" || media == "text/json" => {}
        Some((media, _)) => {
            return Err(unsupported(format!(
                "Content-Type '{media}' is not supported; send application/json"
            )));
        }
        None => {}
    }
    let body = read_body(req, body).await?;
    serde_json::from_slice(&body).map_err(|e| {
        RestError::bad_request(
            format!(
                "the body must be JSON like {{\"groups\":[\"g1\"],\"filter\":\"userId eq 'u'\"}}: {e}"
            ),
            "groupsToAdd",
        )
    })
}

/// Entry points for the parser fuzz targets and property tests (`crate::fuzzing`).
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) mod fuzz {
    use warp::http::Method;

    /// Routes `path` (after `/api/hubs/`) with every method and parses `query`.
    pub(crate) fn request(path: &str, query: &str) {
        for method in [
            Method::GET,
            Method::HEAD,
            Method::POST,
            Method::PUT,
            Method::DELETE,
        ] {
            let _ = super::route::route(&method, path);
        }
        if let Ok(q) = super::Query::parse(query) {
            let _ = super::api_version(&q);
            let _ = super::ttl(&q);
        }
    }

    /// Parses a `:addToGroups` / `:removeFromGroups` body.
    pub(crate) fn groups_body(body: &[u8]) {
        let _ = serde_json::from_slice::<super::GroupsBody>(body);
    }
}

// === query strings ===

/// A decoded query string; names match ASCII case-insensitively, repeated names are kept
/// (`excluded=a&excluded=b`).
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(raw: &str) -> Result<Self, RestError> {
        let decode = |s: &str| {
            let s = s.replace('+', " ");
            percent_decode_str(&s)
                .decode_utf8()
                .map(|c| c.into_owned())
                .map_err(|_| {
                    RestError::bad_request(
                        "the query string is not valid percent-encoded UTF-8",
                        "Request",
                    )
                })
        };
        raw.split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                Ok((decode(name)?, decode(value)?))
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .collect()
    }
}
