//! The operator edge: the live trace over gRPC (`hubcast.v1.Admin/Trace`, served on the gRPC
//! listener by [`AdminService`]) and as Server-Sent Events (`GET /api/trace` on the HTTP
//! listener, [`sse_route`]), both behind a service token of the admin audience
//! ([`ADMIN_AUDIENCE_PATH`]).
//!
//! The records come from the node's [`LiveTrace`](crate::telemetry::live_trace::LiveTrace);
//! this edge only turns a request into a [`TraceFilter`] and the items into their wire form.

use std::convert::Infallible;
use std::pin::Pin;
use std::time::{Duration, UNIX_EPOCH};

use futures_util::{Stream, StreamExt as _};
use hubcast_auth::{self as auth, ADMIN_AUDIENCE_PATH};
use hubcast_proto::v1 as pb;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use warp::http::StatusCode;
use warp::{Filter, Rejection, Reply};

use crate::node::Node;
use crate::telemetry::live_trace::{
    Category, TraceFilter, TraceItem, TraceRecord, TraceStream, record_json,
};

/// How often an idle SSE stream sends a comment, so proxies keep it open.
const SSE_KEEP_ALIVE: Duration = Duration::from_secs(15);

/// `hubcast.v1.Admin`.
#[derive(Debug, Clone)]
pub(crate) struct AdminService {
    node: Node,
    /// Ends every trace stream when the server starts draining.
    draining: CancellationToken,
}

impl AdminService {
    pub(crate) fn new(node: Node, draining: CancellationToken) -> Self {
        Self { node, draining }
    }
}

type TraceEvents = Pin<Box<dyn Stream<Item = Result<pb::TraceEvent, Status>> + Send>>;

#[tonic::async_trait]
impl pb::admin_server::Admin for AdminService {
    type TraceStream = TraceEvents;

    async fn trace(
        &self,
        request: Request<pb::TraceRequest>,
    ) -> Result<Response<TraceEvents>, Status> {
        let request = request.into_inner();
        let mut categories = Vec::new();
        for value in &request.categories {
            match pb::TraceCategory::try_from(*value) {
                Ok(pb::TraceCategory::Unspecified) => {}
                Ok(pb::TraceCategory::Connectivity) => categories.push(Category::Connectivity),
                Ok(pb::TraceCategory::Messaging) => categories.push(Category::Messaging),
                Ok(pb::TraceCategory::HttpRequest) => categories.push(Category::HttpRequest),
                Err(_) => {
                    return Err(Status::invalid_argument(format!(
                        "unknown trace category {value}"
                    )));
                }
            }
        }
        let filter = TraceFilter {
            hub: Some(request.hub),
            user_id: Some(request.user_id),
            connection_id: Some(request.connection_id),
            categories,
            keyword: Some(request.keyword),
        };
        let stream = self
            .node
            .live_trace()
            .listen(filter)
            .map_err(|e| Status::resource_exhausted(e.to_string()))?;
        let events = futures_util::stream::unfold(stream, |mut stream| async move {
            let event = match stream.next().await? {
                TraceItem::Record(r) => Ok(pb::TraceEvent {
                    event: Some(pb::trace_event::Event::Record(to_proto(&r))),
                }),
                TraceItem::Dropped(n) => Ok(pb::TraceEvent {
                    event: Some(pb::trace_event::Event::Dropped(n)),
                }),
                TraceItem::Stalled => Err(Status::resource_exhausted(STALLED)),
            };
            Some((event, stream))
        })
        .take_until(self.draining.clone().cancelled_owned());
        Ok(Response::new(Box::pin(events)))
    }
}

/// What a listener ended for not reading is told.
const STALLED: &str = "this listener read nothing while its buffer was full for \
                       live_trace.stall: ended (records were dropped before)";

fn to_proto(r: &TraceRecord) -> pb::TraceRecord {
    let since = r.time.duration_since(UNIX_EPOCH).unwrap_or_default();
    pb::TraceRecord {
        time: Some(prost_types::Timestamp {
            seconds: i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
            nanos: i32::try_from(since.subsec_nanos()).unwrap_or(0),
        }),
        level: r.level.as_str().to_owned(),
        category: match r.category {
            Category::Connectivity => pb::TraceCategory::Connectivity,
            Category::Messaging => pb::TraceCategory::Messaging,
            Category::HttpRequest => pb::TraceCategory::HttpRequest,
        } as i32,
        event_name: r.event_name.to_owned(),
        message: r.message.clone(),
        hub: r.hub.clone(),
        connection_id: r.connection_id.clone(),
        user_id: r.user_id.clone(),
        ip: r.ip.clone(),
        route_template: r.route_template.clone(),
        http_method: r.http_method.clone(),
        url: r.url.clone(),
        status_code: u32::from(r.status_code),
        duration_ms: u64::try_from(r.duration.as_millis()).unwrap_or(u64::MAX),
        trace_id: r.trace_id.clone(),
        group: r.group.clone(),
        payload: r.payload.clone(),
        node: r.node.clone(),
    }
}

/// The query of `GET /api/trace`.
#[derive(Debug, Default, serde::Deserialize)]
struct TraceQuery {
    hub: Option<String>,
    user: Option<String>,
    connection: Option<String>,
    /// Comma-separated category names (`connectivity`, `messaging`, `http`).
    category: Option<String>,
    keyword: Option<String>,
    /// The token, for `EventSource`, which cannot set headers.
    access_token: Option<String>,
}

/// `GET /api/trace`: the live trace as Server-Sent Events (`event: record` with a JSON
/// record, `event: dropped` with `{"dropped": n}`, `event: stalled` before the end), behind
/// `Authorization: Bearer <admin token>` or `?access_token=`. Ends when the server drains.
pub(crate) fn sse_route(
    node: Node,
    draining: CancellationToken,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    warp::path!("api" / "trace")
        .and(warp::get())
        .and(
            warp::query::<TraceQuery>()
                .or(warp::any().map(TraceQuery::default))
                .unify(),
        )
        .and(warp::header::optional::<String>("authorization"))
        .map(move |query: TraceQuery, authorization: Option<String>| {
            match open(&node, query, authorization) {
                Ok(stream) => sse(stream, draining.clone()),
                Err((status, message)) => warp::reply::with_status(
                    warp::reply::json(&json!({ "code": status.as_u16(), "message": message })),
                    status,
                )
                .into_response(),
            }
        })
}

fn open(
    node: &Node,
    query: TraceQuery,
    authorization: Option<String>,
) -> Result<TraceStream, (StatusCode, String)> {
    let token = authorization
        .as_deref()
        .and_then(super::bearer_token)
        .or(query.access_token.as_deref())
        .ok_or((
            StatusCode::UNAUTHORIZED,
            "missing `Authorization: Bearer <token>` (or `access_token`): a service token of \
             audience `<endpoint>/hubcast.v1.Admin` (`hubcast service-token --admin`)"
                .to_owned(),
        ))?;
    auth::verify_service_token(token, node.keys(), node.endpoint(), ADMIN_AUDIENCE_PATH)
        .map_err(|e| (StatusCode::UNAUTHORIZED, e.to_string()))?;
    let mut categories = Vec::new();
    for name in query.category.iter().flat_map(|c| c.split(',')) {
        let name = name.trim();
        if name.is_empty() {
            continue;
        }
        categories.push(Category::parse(name).ok_or_else(|| {
            (
                StatusCode::BAD_REQUEST,
                format!("unknown category '{name}': use connectivity, messaging or http"),
            )
        })?);
    }
    node.live_trace()
        .listen(TraceFilter {
            hub: query.hub,
            user_id: query.user,
            connection_id: query.connection,
            categories,
            keyword: query.keyword,
        })
        .map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, e.to_string()))
}

fn sse(stream: TraceStream, draining: CancellationToken) -> warp::reply::Response {
    let events = futures_util::stream::unfold(stream, |mut stream| async move {
        let event = match stream.next().await? {
            TraceItem::Record(r) => warp::sse::Event::default()
                .event("record")
                .data(record_json(&to_proto(&r)).to_string()),
            TraceItem::Dropped(n) => warp::sse::Event::default()
                .event("dropped")
                .data(json!({ "dropped": n }).to_string()),
            TraceItem::Stalled => warp::sse::Event::default().event("stalled").data(STALLED),
        };
        Some((Ok::<_, Infallible>(event), stream))
    })
    .take_until(draining.cancelled_owned());
    warp::sse::reply(
        warp::sse::keep_alive()
            .interval(SSE_KEEP_ALIVE)
            .stream(events),
    )
    .into_response()
}
