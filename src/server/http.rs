//! The HTTP endpoints: POST /mutate and /validate on the TLS port; /metrics, /healthz and
//! /readyz on the plain-HTTP port.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::{BodyExt as _, LengthLimitError, Limited};

use super::metrics::Metrics;
use super::{MAX_BODY_BYTES, parse_duration};
use crate::review::{self, Endpoint, Summary};
use crate::settings::Settings;

struct Admission {
    settings: Arc<Settings>,
    metrics: Arc<Metrics>,
    /// Deadline when the request has no ?timeout=, and the cap on one that has.
    request_timeout: Duration,
}

pub fn admission_router(settings: Arc<Settings>, metrics: Arc<Metrics>, request_timeout: Duration) -> Router {
    let state = Arc::new(Admission { settings, metrics, request_timeout });
    Router::new()
        .route(
            "/mutate",
            post(|State(state): State<Arc<Admission>>, request: Request| answer(state, Endpoint::Mutate, request)),
        )
        .route(
            "/validate",
            post(|State(state): State<Arc<Admission>>, request: Request| answer(state, Endpoint::Validate, request)),
        )
        .fallback(|| async {
            text(StatusCode::NOT_FOUND, "not found: the webhook serves POST /mutate and POST /validate")
        })
        .with_state(state)
}

pub fn metrics_router(metrics: Arc<Metrics>, ready: Arc<AtomicBool>) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move || async move {
                (
                    [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
                    metrics.encode(),
                )
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || async move {
                if ready.load(Ordering::SeqCst) {
                    text(StatusCode::OK, "ready")
                } else {
                    text(StatusCode::SERVICE_UNAVAILABLE, "shutting down")
                }
            }),
        )
        .fallback(|| async {
            text(StatusCode::NOT_FOUND, "not found: this port serves /metrics, /healthz and /readyz")
        })
}

fn text(status: StatusCode, message: impl Into<String>) -> Response {
    let mut body = message.into();
    body.push('\n');
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

/// Reads the body, reviews it and answers, all within the request's deadline.
async fn answer(state: Arc<Admission>, endpoint: Endpoint, request: Request) -> Response {
    let started = Instant::now();
    let deadline = match deadline(request.uri().query(), state.request_timeout) {
        Ok(deadline) => deadline,
        Err(message) => return text(StatusCode::BAD_REQUEST, message),
    };
    match tokio::time::timeout(deadline, read_and_review(&state, endpoint, request, started)).await {
        Ok(response) => response,
        Err(_) => {
            state.metrics.review_timed_out(endpoint);
            tracing::warn!(endpoint = endpoint.as_str(), ?deadline, "review abandoned: the request's timeout passed");
            text(
                StatusCode::REQUEST_TIMEOUT,
                format!("review not finished within the request's timeout ({deadline:?}); abandoned"),
            )
        }
    }
}

/// The request's `?timeout=` (Go duration, appended by the apiserver), capped by
/// --request-timeout, which also applies when there is none.
fn deadline(query: Option<&str>, cap: Duration) -> Result<Duration, String> {
    let timeout = query.unwrap_or("").split('&').find_map(|pair| pair.strip_prefix("timeout="));
    match timeout {
        None => Ok(cap),
        Some(value) => parse_duration(value)
            .map(|requested| requested.min(cap))
            .map_err(|e| format!("query parameter timeout: {e}")),
    }
}

async fn read_and_review(state: &Admission, endpoint: Endpoint, request: Request, started: Instant) -> Response {
    let too_large = || {
        state.metrics.observe_review(endpoint, None, started.elapsed());
        let reason = format!("request body is larger than the limit of {MAX_BODY_BYTES} bytes");
        tracing::info!(endpoint = endpoint.as_str(), decision = "invalid", %reason, "review");
        text(StatusCode::PAYLOAD_TOO_LARGE, reason)
    };
    // A declared length over the limit is refused before a byte of the body is read.
    let declared = request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|length| length > MAX_BODY_BYTES as u64) {
        return too_large();
    }
    let body: Bytes = match Limited::new(request.into_body(), MAX_BODY_BYTES).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) if error.downcast_ref::<LengthLimitError>().is_some() => return too_large(),
        Err(error) => return text(StatusCode::BAD_REQUEST, format!("reading the request body failed: {error}")),
    };
    let settings = state.settings.clone();
    // Off the async workers, so a slow review cannot stall other connections, and the
    // deadline above can abandon it.
    let reviewed = tokio::task::spawn_blocking(move || review::review(endpoint, &body, &settings)).await;
    let elapsed = started.elapsed();
    match reviewed {
        Ok(Ok((answer, summary))) => {
            state.metrics.observe_review(endpoint, Some(&summary), elapsed);
            log_review(endpoint, &summary, elapsed);
            (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], Body::from(answer)).into_response()
        }
        Ok(Err(invalid)) => {
            state.metrics.observe_review(endpoint, None, elapsed);
            tracing::info!(endpoint = endpoint.as_str(), decision = "invalid", reason = %invalid, micros = elapsed.as_micros() as u64, "review");
            text(StatusCode::BAD_REQUEST, invalid.to_string())
        }
        Err(panicked) => {
            // A bug in a rule, not the client's fault: say so, keep serving.
            tracing::error!(endpoint = endpoint.as_str(), error = %panicked, "review failed internally");
            text(StatusCode::INTERNAL_SERVER_ERROR, "internal error while reviewing; see the webhook's log")
        }
    }
}

/// The one log line per answered review.
fn log_review(endpoint: Endpoint, summary: &Summary, elapsed: Duration) {
    tracing::info!(
        endpoint = endpoint.as_str(),
        uid = %summary.uid,
        kind = %summary.kind,
        namespace = %summary.namespace,
        name = %summary.name,
        operation = summary.operation,
        decision = summary.outcome.as_str(),
        patch_operations = summary.patch_operations,
        warnings = summary.warnings,
        micros = elapsed.as_micros() as u64,
        "review"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAP: Duration = Duration::from_secs(30);

    #[test]
    fn deadline_is_the_requested_timeout_capped() {
        assert_eq!(deadline(Some("timeout=10s"), CAP), Ok(Duration::from_secs(10)));
        assert_eq!(deadline(Some("a=b&timeout=1m"), CAP), Ok(CAP));
        assert_eq!(deadline(None, CAP), Ok(CAP));
        assert_eq!(deadline(Some("other=1"), CAP), Ok(CAP));
        let err = deadline(Some("timeout=soon"), CAP).unwrap_err();
        assert!(err.starts_with("query parameter timeout: \"soon\" is not a duration"), "{err}");
    }
}
