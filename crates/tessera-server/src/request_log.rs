//! The request a log line was written for, and the log format that names it.
//!
//! A `tracing` span per request formatted its fields into a new string at every request
//! (the fmt layer does that when the span is created, whether or not anything is logged
//! inside it): 7 % of an introspection's instructions. Lines written inside a request are
//! rare (failures, warnings), so the request is kept in a task-local instead, which costs
//! a swap per poll, and the format looks it up only when a line is written.

use std::fmt;
use std::future::Future;

use axum::http::{Method, Uri};
use tracing::{Event, Level, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

use crate::audit::RequestId;

tokio::task_local! {
    static CURRENT: RequestLine;
}

/// What a log line written while serving a request says about that request.
pub(crate) struct RequestLine {
    pub id: RequestId,
    pub method: Method,
    /// Only its path is ever written: a query string can carry codes and state.
    pub uri: Uri,
}

/// Runs `serve` with `line` as the request every log line written inside it names.
pub(crate) async fn scope<F: Future>(line: RequestLine, serve: F) -> F::Output {
    CURRENT.scope(line, serve).await
}

/// tracing-subscriber's full format (time, level, spans, target, fields), with
/// `request{id=… method=… path=…}:` where a span's name would be for every line written
/// while serving a request. The id is the response's `X-Request-Id`.
#[derive(Debug, Default, Clone, Copy)]
pub struct LogFormat;

const DIM: &str = "\x1b[2m";
const BOLD: &str = "\x1b[1m";
const RESET: &str = "\x1b[0m";

/// Writes `text` in `style` when the writer takes ANSI escapes.
fn styled(w: &mut Writer<'_>, style: &str, text: impl fmt::Display) -> fmt::Result {
    if w.has_ansi_escapes() {
        write!(w, "{style}{text}{RESET}")
    } else {
        write!(w, "{text}")
    }
}

fn level_color(level: Level) -> &'static str {
    match level {
        Level::ERROR => "\x1b[31m",
        Level::WARN => "\x1b[33m",
        Level::INFO => "\x1b[32m",
        Level::DEBUG => "\x1b[34m",
        Level::TRACE => "\x1b[35m",
    }
}

impl<S, N> FormatEvent<S, N> for LogFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        // Lines from the `log` crate (dependencies) under their own target, as the full
        // format writes them.
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        if w.has_ansi_escapes() {
            w.write_str(DIM)?;
            SystemTime.format_time(&mut w)?;
            w.write_str(RESET)?;
        } else {
            SystemTime.format_time(&mut w)?;
        }
        let level = *meta.level();
        w.write_char(' ')?;
        styled(&mut w, level_color(level), format_args!("{level:>5}"))?;
        w.write_char(' ')?;
        // Outside a request (start-up, background work) there is none to name.
        CURRENT
            .try_with(|r| -> fmt::Result {
                styled(&mut w, BOLD, "request{")?;
                write!(w, "id={} method={} path={}", r.id, r.method, r.uri.path())?;
                styled(&mut w, BOLD, "}")?;
                styled(&mut w, DIM, ":")?;
                w.write_char(' ')
            })
            .unwrap_or(Ok(()))?;
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                styled(&mut w, BOLD, span.metadata().name())?;
                if let Some(fields) = span.extensions().get::<FormattedFields<N>>() {
                    if !fields.is_empty() {
                        styled(&mut w, BOLD, "{")?;
                        write!(w, "{fields}")?;
                        styled(&mut w, BOLD, "}")?;
                    }
                }
                styled(&mut w, DIM, ":")?;
                w.write_char(' ')?;
            }
        }
        styled(&mut w, DIM, format_args!("{}:", meta.target()))?;
        w.write_char(' ')?;
        ctx.format_fields(w.by_ref(), event)?;
        writeln!(w)
    }
}
