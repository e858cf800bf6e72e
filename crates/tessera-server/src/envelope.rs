//! The one middleware every request passes through: it names the request (id, client
//! address, what its log lines say about it), guards the client endpoints against
//! addresses with too many failures, counts the request in the metrics, and adds the
//! security headers.
//!
//! One layer rather than five: each axum `from_fn` layer boxes a future and clones the
//! inner service per request, which showed in profiles of the cheapest endpoints.

use std::net::SocketAddr;
use std::time::Instant;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;

use crate::audit::{Origin, RequestId};
use crate::limits::ClientIp;
use crate::request_log::{self, RequestLine};
use crate::AppState;

pub async fn envelope(State(state): State<AppState>, req: Request, next: Next) -> Response {
    wrap(&state, req, next, true).await
}

/// The envelope of the fixed documents (discovery, JWKS, static assets, liveness), whose
/// handlers never log: the same, but without naming the request for log lines.
pub async fn envelope_unnamed(State(state): State<AppState>, req: Request, next: Next) -> Response {
    wrap(&state, req, next, false).await
}

async fn wrap(state: &AppState, mut req: Request, next: Next, logged: bool) -> Response {
    let started = Instant::now();
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0)
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
    let ip = state.0.limits.client_ip(peer, req.headers());
    let request_id = RequestId::next();
    let request_id_text = request_id.to_string();
    let request_id_header = HeaderValue::from_str(&request_id_text).ok();
    // An `Arc<str>` clone: the route's name outlives the request without a copy.
    let route = req.extensions().get::<MatchedPath>().cloned();
    let method = req.method().clone();
    // Log lines name the path only (`RequestLine`): query strings can carry codes and state.
    let line = logged.then(|| RequestLine {
        id: request_id,
        method: method.clone(),
        uri: req.uri().clone(),
    });
    let extensions = req.extensions_mut();
    extensions.insert(ClientIp(ip));
    extensions.insert(Origin {
        ip: Some(ip),
        request_id: Some(request_id_text),
    });
    let guarded = route
        .as_ref()
        .is_some_and(|r| crate::routes::is_client_endpoint(r.as_str()));
    let finish = async move {
        let mut resp = if guarded {
            crate::limits::guard_client_endpoint(state, ip, req, next).await
        } else {
            next.run(req).await
        };
        let headers = resp.headers_mut();
        crate::security::apply_headers(headers, state.settings().secure_cookies());
        if let Some(h) = request_id_header {
            headers.insert("x-request-id", h);
        }
        let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
        let elapsed = started.elapsed();
        let status = resp.status().as_u16();
        crate::metrics::record_request(route, &method, status, elapsed);
        tracing::debug!(target: "tessera::http", status, latency = ?elapsed, "finished processing request");
        resp
    };
    match line {
        Some(line) => request_log::scope(line, finish).await,
        None => finish.await,
    }
}
