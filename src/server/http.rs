//! The HTTP endpoints: POST /mutate and /validate on the TLS port; /metrics, /healthz and
//! /readyz on the plain-HTTP port.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, Version, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::BytesMut;
use http_body_util::BodyExt as _;
use tokio::sync::Semaphore;

use super::metrics::{Format, Listener, Metrics};
use super::{MAX_BODY_BYTES, Readiness, parse_duration};
use crate::cluster::{ClusterSnapshot, ClusterView};
use crate::deadline::Deadline;
use crate::review::{self, Endpoint, Summary, Unanswered};
use crate::settings::Settings;

struct Admission {
    settings: Arc<Settings>,
    /// The watch caches' last snapshot (SPEC §10); None without a cluster or before they listed.
    cluster: Arc<ArcSwapOption<ClusterSnapshot>>,
    metrics: Arc<Metrics>,
    /// Deadline when the request has no ?timeout=, and the cap on one that has.
    request_timeout: Duration,
    /// Memory for reviews in progress, in KiB: the bodies being read and reviewed, and the trees
    /// the rules build from them. A review holds its body's share from before the body is read
    /// until it is answered, and its tree's share while it is reviewed, so that many large
    /// reviews at once wait for each other instead of outgrowing the pod's memory limit (SPEC
    /// §8). Taken in that order only (a tree's holder waits for nothing), so they cannot
    /// deadlock.
    bodies: Arc<Semaphore>,
    trees: Arc<Semaphore>,
}

/// Bodies being read or reviewed, together: room for ten of the largest (3 MiB).
pub const BODY_MEMORY_BUDGET: usize = 32 * 1024 * 1024;
/// Trees of objects being reviewed, together: the largest object read (1.5 MiB) takes about
/// 26 MiB; one mutated (up to 1 MiB) about 34 with the rules' copy. With the bodies' budget and
/// the rest of the process this stays under the deployment's limit (128 MiB).
pub const TREE_MEMORY_BUDGET: usize = 48 * 1024 * 1024;

/// What a body of `bytes` holds of the bodies' budget. Bodies of unknown length count as the
/// largest.
fn body_memory(bytes: Option<u64>) -> usize {
    bytes.map_or(MAX_BODY_BYTES, |b| (b as usize).min(MAX_BODY_BYTES)).max(1024)
}

/// Bodies up to this size are reviewed on the connection's own task: the work is bounded
/// (SPEC §7, §8) and short, and a hand-off to another thread would cost more than it. Larger
/// ones, and validations that compile regexes ([`may_compile_regexes`]), go to tokio's blocking
/// pool, so that they cannot hold up other connections.
const INLINE_REVIEW_BYTES: usize = 256 * 1024;

pub fn admission_router(
    settings: Arc<Settings>,
    metrics: Arc<Metrics>,
    cluster: Arc<ArcSwapOption<ClusterSnapshot>>,
    request_timeout: Duration,
) -> Router {
    let bodies = Arc::new(Semaphore::new(BODY_MEMORY_BUDGET / 1024));
    let trees = Arc::new(Semaphore::new(TREE_MEMORY_BUDGET / 1024));
    let not_found =
        unrouted(metrics.clone(), Listener::Admission, "the webhook serves POST /mutate and POST /validate");
    let state = Arc::new(Admission { settings, cluster, metrics, request_timeout, bodies, trees });
    Router::new()
        .route(
            "/mutate",
            post(|State(state): State<Arc<Admission>>, request: Request| answer(state, Endpoint::Mutate, request)),
        )
        .route(
            "/validate",
            post(|State(state): State<Arc<Admission>>, request: Request| answer(state, Endpoint::Validate, request)),
        )
        .fallback(not_found.0)
        .method_not_allowed_fallback(not_found.1)
        .with_state(state)
}

/// The 404 and 405 handlers of `listener`: counted, and answered with what the port serves.
#[allow(clippy::type_complexity)]
fn unrouted(
    metrics: Arc<Metrics>,
    listener: Listener,
    serves: &'static str,
) -> (
    impl Fn() -> std::future::Ready<Response> + Clone + Send + Sync + 'static,
    impl Fn() -> std::future::Ready<Response> + Clone + Send + Sync + 'static,
) {
    let other = metrics.clone();
    (
        move || {
            metrics.unrouted(listener, "404");
            std::future::ready(text(StatusCode::NOT_FOUND, format!("not found: {serves}")))
        },
        move || {
            other.unrouted(listener, "405");
            std::future::ready(text(StatusCode::METHOD_NOT_ALLOWED, format!("method not allowed: {serves}")))
        },
    )
}

pub fn metrics_router(metrics: Arc<Metrics>, readiness: Readiness) -> Router {
    let not_found = unrouted(metrics.clone(), Listener::Metrics, "this port serves GET /metrics, /healthz and /readyz");
    Router::new()
        .route(
            "/metrics",
            get(move |request: Request| async move {
                let accept = request.headers().get(header::ACCEPT).and_then(|v| v.to_str().ok());
                let format = Format::negotiate(accept);
                ([(header::CONTENT_TYPE, format.content_type())], metrics.encode(format))
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || async move {
                match readiness.not_ready() {
                    None => text(StatusCode::OK, "ready"),
                    Some(why) => text(StatusCode::SERVICE_UNAVAILABLE, why),
                }
            }),
        )
        .fallback(not_found.0)
        .method_not_allowed_fallback(not_found.1)
}

fn text(status: StatusCode, message: impl Into<String>) -> Response {
    let mut body = message.into();
    body.push('\n');
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

/// How much of a too-large HTTP/1.1 body is read (the part past the limit thrown away) before
/// the 413, so that the answer is not lost: closing a socket with unread data makes the kernel
/// reset the connection, and a client that is still sending then sees the reset instead of the
/// answer. The limit and 16 MiB more.
const MAX_READ_BYTES: u64 = MAX_BODY_BYTES as u64 + 16 * 1024 * 1024;

/// How far [`read_and_review`] got.
enum Reviewed {
    Answered(Response),
    /// The body is over [`MAX_BODY_BYTES`]; `rest` is what is left of it, `read` how much was read.
    TooLarge {
        rest: Body,
        read: u64,
    },
    /// The deadline passed during the review, which stopped.
    Expired,
}

/// Reads the body, reviews it and answers, all within the request's deadline.
async fn answer(state: Arc<Admission>, endpoint: Endpoint, request: Request) -> Response {
    let started = Instant::now();
    let _in_flight = state.metrics.review_in_flight();
    let deadline = deadline(endpoint, request.uri().query(), state.request_timeout);
    let until = tokio::time::Instant::now() + deadline;
    let http1 = request.version() < Version::HTTP_2;
    let declared = request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let expects_continue =
        request.headers().get(header::EXPECT).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let reviewed = tokio::time::timeout_at(until, async {
        let kib = body_memory(declared).div_ceil(1024) as u32;
        let _body = state.bodies.acquire_many(kib).await.expect("the semaphore is never closed");
        read_and_review(&state, endpoint, request, declared, started, Deadline::at(until.into_std())).await
    })
    .await;
    match reviewed {
        Ok(Reviewed::Answered(response)) => response,
        Ok(Reviewed::TooLarge { rest, read }) => {
            // HTTP/1.1 only: h2 ends the stream with RST_STREAM(NO_ERROR) after the answer, and
            // the connection lives on. A client waiting for `100 Continue` has sent no body (the
            // continue is only sent when the body is read), so there is nothing to read.
            // A body declared larger than what would be read gains nothing from reading part of it.
            if http1 && !expects_continue && declared.is_none_or(|length| length <= MAX_READ_BYTES) {
                discard(rest, MAX_READ_BYTES.saturating_sub(read), until).await;
            }
            let reason = format!("request body is larger than the limit of {MAX_BODY_BYTES} bytes");
            let elapsed = started.elapsed();
            state.metrics.observe_review(endpoint, None, elapsed);
            tracing::info!(
                endpoint = endpoint.as_str(),
                decision = "invalid",
                reason = %LogValue(&reason),
                micros = elapsed.as_micros() as u64,
                "review"
            );
            let mut response = text(StatusCode::PAYLOAD_TOO_LARGE, reason);
            if http1 {
                response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            response
        }
        Ok(Reviewed::Expired) | Err(_) => {
            let elapsed = started.elapsed();
            state.metrics.review_timed_out(endpoint, elapsed);
            tracing::warn!(
                endpoint = endpoint.as_str(),
                ?deadline,
                micros = elapsed.as_micros() as u64,
                "review abandoned: the request's timeout passed"
            );
            text(
                StatusCode::REQUEST_TIMEOUT,
                format!("review not finished within the request's timeout ({deadline:?}); abandoned"),
            )
        }
    }
}

/// The request's `?timeout=` (Go duration, appended by the apiserver), capped by
/// --request-timeout, which also applies when there is none. A timeout that is not a positive
/// duration is ignored (with a warning): the review is still answered, under --request-timeout.
fn deadline(endpoint: Endpoint, query: Option<&str>, cap: Duration) -> Duration {
    let Some(value) = query.unwrap_or("").split('&').find_map(|pair| pair.strip_prefix("timeout=")) else {
        return cap;
    };
    match parse_duration(value) {
        Ok(requested) if !requested.is_zero() => requested.min(cap),
        _ => {
            tracing::warn!(
                endpoint = endpoint.as_str(),
                timeout = %LogValue(value),
                request_timeout = ?cap,
                "ignoring the request's ?timeout=, not a positive duration; using --request-timeout"
            );
            cap
        }
    }
}

async fn read_and_review(
    state: &Admission,
    endpoint: Endpoint,
    request: Request,
    declared: Option<u64>,
    started: Instant,
    deadline: Deadline,
) -> Reviewed {
    let mut body = request.into_body();
    // A declared length over the limit is refused before a byte of the body is read.
    if declared.is_some_and(|length| length > MAX_BODY_BYTES as u64) {
        return Reviewed::TooLarge { rest: body, read: 0 };
    }
    let mut buffer = BytesMut::with_capacity(declared.unwrap_or(0) as usize);
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                let Ok(data) = frame.into_data() else { continue };
                if buffer.len() + data.len() > MAX_BODY_BYTES {
                    let read = (buffer.len() + data.len()) as u64;
                    return Reviewed::TooLarge { rest: body, read };
                }
                buffer.extend_from_slice(&data);
            }
            Err(error) => {
                let message = format!("reading the request body failed: {error}");
                return Reviewed::Answered(text(StatusCode::BAD_REQUEST, message));
            }
        }
    }
    let body: Bytes = buffer.freeze();
    // The tree's share, now that the body is here: a small body's at most (no decoding for
    // it), a large body's from its envelope (the object's size, or nothing if it is not read).
    // The wait counts against the deadline like everything else.
    let tree = if body.len() <= INLINE_REVIEW_BYTES {
        body.len() * 34
    } else {
        review::tree_bytes(endpoint, &body, &state.settings)
    };
    let kib = (tree.min(TREE_MEMORY_BUDGET).div_ceil(1024) as u32).max(1);
    let _tree = state.trees.acquire_many(kib).await.expect("the semaphore is never closed");
    // One snapshot for the whole review, taken without a lock.
    let cluster = state.cluster.load_full();
    let reviewed = if body.len() <= INLINE_REVIEW_BYTES && !may_compile_regexes(endpoint, &body) {
        // A panic (a bug in a rule) is caught here as the blocking pool would catch it.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            review::review_in(endpoint, &body, &state.settings, view_of(cluster.as_deref()), deadline)
        }))
        .map_err(|panic| panic_message(panic.as_ref()))
    } else {
        // It stops at the deadline by itself (cooperative checks), so nothing runs on after
        // the answer.
        let settings = state.settings.clone();
        tokio::task::spawn_blocking(move || {
            review::review_in(endpoint, &body, &settings, view_of(cluster.as_deref()), deadline)
        })
        .await
        .map_err(|error| error.to_string())
    };
    let elapsed = started.elapsed();
    Reviewed::Answered(match reviewed {
        Ok(Err(Unanswered::Expired)) => return Reviewed::Expired,
        Ok(Ok((answer, summary))) => {
            state.metrics.observe_review(endpoint, Some(&summary), elapsed);
            log_review(endpoint, &summary, elapsed);
            (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], Body::from(answer)).into_response()
        }
        Ok(Err(Unanswered::Invalid(invalid))) => {
            state.metrics.observe_review(endpoint, None, elapsed);
            tracing::info!(
                endpoint = endpoint.as_str(),
                decision = "invalid",
                reason = %LogValue(&invalid.0),
                micros = elapsed.as_micros() as u64,
                "review"
            );
            text(StatusCode::BAD_REQUEST, invalid.to_string())
        }
        Err(panicked) => {
            // A bug in a rule, not the client's fault: say so, keep serving.
            tracing::error!(endpoint = endpoint.as_str(), error = %panicked, "review failed internally");
            text(StatusCode::INTERNAL_SERVER_ERROR, "internal error while reviewing; see the webhook's log")
        }
    })
}

/// The view the rules read: the snapshot's, or none (no cluster, or the caches have not listed).
fn view_of(snapshot: Option<&ClusterSnapshot>) -> &ClusterView {
    snapshot.map_or(ClusterView::none(), |snapshot| &snapshot.state.view)
}

/// Could this review compile regexes? Validating a VirtualService compiles each of its regexes
/// with RE2, which for the largest patterns takes hundreds of milliseconds however short the
/// body: such reviews go to the blocking pool, never onto the workers that serve every
/// connection (and /healthz). Seen from the bytes, before anything is decoded.
fn may_compile_regexes(endpoint: Endpoint, body: &[u8]) -> bool {
    endpoint == Endpoint::Validate && memchr::memmem::find(body, b"VirtualService").is_some()
}

/// What a panic said, for the log.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".to_string())
}

/// Reads and throws away what is left of a too-large body: at most `budget` bytes, and not past
/// `until`. Returns whether the body was read to its end.
async fn discard(mut rest: Body, budget: u64, until: tokio::time::Instant) -> bool {
    let drained = tokio::time::timeout_at(until, async {
        let mut left = budget;
        while let Some(frame) = rest.frame().await {
            let Ok(frame) = frame else { return false };
            let length = frame.data_ref().map_or(0, |data| data.len() as u64);
            let Some(remaining) = left.checked_sub(length) else { return false };
            left = remaining;
        }
        true
    })
    .await;
    matches!(drained, Ok(true))
}

/// The one log line per answered review. The values a client chooses (uid, kind, namespace,
/// name) go through [`LogValue`], so they cannot forge a line or a field. A denial's line also
/// names its reasons (the slugs of `divert_webhook_denials_total`).
fn log_review(endpoint: Endpoint, summary: &Summary, elapsed: Duration) {
    // An absent (None) field is left out of the line: only denials carry `reasons`.
    let reasons =
        (!summary.denial_reasons.is_empty()).then(|| tracing::field::display(Reasons(&summary.denial_reasons)));
    tracing::info!(
        endpoint = endpoint.as_str(),
        uid = %LogValue(&summary.uid),
        kind = %LogValue(&summary.kind),
        namespace = %LogValue(&summary.namespace),
        name = %LogValue(&summary.name),
        operation = summary.operation,
        decision = summary.outcome.as_str(),
        reasons,
        patch_operations = summary.patch_operations,
        warnings = summary.warnings,
        micros = elapsed.as_micros() as u64,
        "review"
    );
}

/// Denial reasons for a log field: `a,b` (slugs are plain, so no quoting is needed).
struct Reasons<'a>(&'a [&'static str]);

impl std::fmt::Display for Reasons<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, reason) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(reason)?;
        }
        Ok(())
    }
}

/// A value from the request, for a log field: written as is when it is plain (letters, digits
/// and `-._:/@+`, as names and uids are), otherwise quoted and escaped like a Rust string
/// (`"a b\n"`). In the text format a space, `=`, a quote or a line break in a client's value
/// can then neither end the field nor start a new field or line; in JSON it is a string either way.
pub struct LogValue<'a>(pub &'a str);

impl LogValue<'_> {
    fn is_plain(&self) -> bool {
        self.0.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b':' | b'/' | b'@' | b'+'))
    }
}

impl std::fmt::Display for LogValue<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_plain() { f.write_str(self.0) } else { write!(f, "{:?}", self.0) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAP: Duration = Duration::from_secs(30);

    #[test]
    fn deadline_is_the_requested_timeout_capped() {
        let deadline = |query| deadline(Endpoint::Mutate, query, CAP);
        assert_eq!(deadline(Some("timeout=10s")), Duration::from_secs(10));
        assert_eq!(deadline(Some("a=b&timeout=1m")), CAP);
        assert_eq!(deadline(None), CAP);
        assert_eq!(deadline(Some("other=1")), CAP);
    }

    #[test]
    fn an_unreadable_timeout_is_ignored() {
        for query in ["timeout=soon", "timeout=-5s", "timeout=", "timeout=0s", "timeout=10s%0A"] {
            assert_eq!(deadline(Endpoint::Validate, Some(query), CAP), CAP, "{query}");
        }
    }

    #[test]
    fn log_values_are_plain_or_quoted() {
        let shown = |value: &str| LogValue(value).to_string();
        assert_eq!(shown("705ab4f5-6393-11e8-b7cc-42010a800002"), "705ab4f5-6393-11e8-b7cc-42010a800002");
        assert_eq!(shown("cindy"), "cindy");
        assert_eq!(shown("networking.istio.io/v1"), "networking.istio.io/v1");
        assert_eq!(shown(""), "");
        assert_eq!(shown("a b decision=denied"), r#""a b decision=denied""#);
        assert_eq!(shown("x\nFORGED line"), r#""x\nFORGED line""#);
        assert_eq!(shown("say \"hi\""), r#""say \"hi\"""#);
        assert_eq!(shown("a=b"), r#""a=b""#);
        assert_eq!(shown("\u{1b}[31mred"), r#""\u{1b}[31mred""#);
        assert_eq!(shown("caf\u{e9}"), r#""café""#);
    }
}
