//! The accept loop: HTTP/1.1 connections served by hyper with a bound on reading request
//! headers (slowloris), whole requests bounded by a tower-http layer, and a graceful
//! shutdown that stops accepting, lets requests in flight finish within a bound, and then
//! closes whatever is left.
//!
//! axum's own `serve` gives hyper no timer, so hyper's header-read timeout never fires
//! there; that is why this loop exists.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::http::Request;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::ServiceExt;

/// Time limits of client connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// A client must send a request's complete headers within this time (also bounds how
    /// long an idle keep-alive connection is kept).
    pub header_read_timeout: Duration,
    /// A request, its body included, must be handled within this time (408 otherwise).
    /// A whole-request deadline rather than tower-http's body timeout, which restarts
    /// with every frame and so never fires on a body trickled one byte at a time.
    pub request_timeout: Duration,
    /// On shutdown, requests in flight get this long to finish before their connections
    /// are closed.
    pub shutdown_grace: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then shuts down gracefully.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    limits: ConnectionLimits,
) -> std::io::Result<()> {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let graceful = GracefulShutdown::new();
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        // Reap finished connection tasks so the set stays as large as the open connections.
        while connections.try_join_next().is_some() {}
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: the connections already open
                    // keep being served; try again shortly rather than spin or die.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = app.clone().map_request(move |mut req: Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
            req
        });
        let conn = http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
        let conn = graceful.watch(conn);
        connections.spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    // Stop accepting: from here on new connections are refused by the kernel.
    drop(listener);
    let open = connections.len();
    tracing::info!(
        open_connections = open,
        "stopped accepting; finishing requests in flight"
    );
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            grace = ?limits.shutdown_grace,
            still_open = connections.len(),
            "requests still in flight after the shutdown grace; closing their connections"
        );
    }
    connections.abort_all();
    while connections.join_next().await.is_some() {}
    Ok(())
}
