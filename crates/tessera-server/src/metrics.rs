//! Prometheus metrics: request counts and latencies per route, protocol events.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use axum::http::{header, HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use metrics::{Counter, Histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// How often histogram samples are folded into their summaries.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(1);

/// The process-wide recorder, installed on first use (several servers in one test
/// process share it).
///
/// The exporter queues every histogram sample until upkeep or a scrape folds it in; with
/// no upkeep and nobody scraping, the queue grew by every request's latency for good (8
/// MiB in a minute of 80k req/s, the slow RSS creep the soak had seen). A thread runs the
/// upkeep every second.
fn handle() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            let upkeep = handle.clone();
            let started = std::thread::Builder::new()
                .name("tessera-metrics".into())
                .spawn(move || loop {
                    std::thread::sleep(UPKEEP_INTERVAL);
                    upkeep.run_upkeep();
                });
            if let Err(e) = started {
                tracing::warn!(error = %e, "cannot start the metrics upkeep thread");
            }
            Some(handle)
        })
        .as_ref()
}

pub async fn render() -> Response {
    let body = handle().map(|h| h.render()).unwrap_or_default();
    let mut resp = body.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    resp
}

type HandleKey = (usize, Method, u16);
/// The route's name (to check the key's address against) and its handles.
type Handles = (Box<str>, Counter, Histogram);

thread_local! {
    /// Registered metric handles per (route, method, status), so that a request costs a
    /// map lookup instead of building and hashing label sets (which showed in profiles).
    /// Keyed by the address of the route's name, which the router keeps for its lifetime;
    /// the stored name guards against an address reused by another router.
    static HANDLES: RefCell<HashMap<HandleKey, Handles>> =
        RefCell::new(HashMap::new());
}

const MAX_CACHED_HANDLES: usize = 4096;

/// Counts a request by matched route (bounded cardinality) and status.
pub fn record_request(route: &str, method: &Method, status: u16, elapsed: Duration) {
    let key = (route.as_ptr() as usize, method.clone(), status);
    HANDLES.with(|handles| {
        let mut handles = handles.borrow_mut();
        if let Some((name, counter, histogram)) = handles.get(&key) {
            if **name == *route {
                counter.increment(1);
                histogram.record(elapsed.as_secs_f64());
                return;
            }
        }
        // Handles registered before the recorder exists would count nowhere, for good.
        let _ = handle();
        let counter = metrics::counter!("tessera_http_requests_total",
            "method" => method.as_str().to_owned(),
            "route" => route.to_owned(),
            "status" => status.to_string());
        let histogram =
            metrics::histogram!("tessera_http_request_duration_seconds", "route" => route.to_owned());
        counter.increment(1);
        histogram.record(elapsed.as_secs_f64());
        if handles.len() < MAX_CACHED_HANDLES {
            handles.insert(key, (route.into(), counter, histogram));
        }
    });
}

/// A protocol event worth watching (token issued, refresh reuse, code replay).
pub fn event(name: &'static str, kind: &'static str) {
    metrics::counter!("tessera_events_total", "event" => name, "kind" => kind).increment(1);
}
