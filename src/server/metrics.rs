//! Prometheus metrics: the webhook's own, named `divert_webhook_*`, and the standard
//! `process_*` ones (read from /proc at scrape time, [`process`]). Rendered as OpenMetrics text,
//! or as the Prometheus text format 0.0.4 for a client that asks for that only ([`Format`]).

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

use super::process::ProcessCollector;
use crate::cluster::caches::CacheMetrics;

use crate::review::{Endpoint, Outcome, Summary};
use crate::rules::Kind;

/// Review latency buckets, 50µs to 30s: the rules answer in well under a millisecond, but a
/// review may wait (memory budget, regex compilation) up to its deadline, at most 30 s
/// (--request-timeout; the apiserver's timeoutSeconds is at most 30).
const LATENCY_BUCKETS: [f64; 18] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    30.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReviewLabels {
    endpoint: &'static str,
    kind: &'static str,
    operation: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UnroutedLabels {
    listener: &'static str,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabels {
    listener: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabels {
    class: &'static str,
}

/// The two ports, as metric labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listener {
    Admission,
    Metrics,
}

impl Listener {
    pub fn as_str(self) -> &'static str {
        match self {
            Listener::Admission => "admission",
            Listener::Metrics => "metrics",
        }
    }
}

/// How /metrics is rendered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    OpenMetrics,
    /// The Prometheus text format 0.0.4.
    Text004,
}

impl Format {
    /// OpenMetrics unless the client accepts `text/plain` and not OpenMetrics (a media range
    /// with `q=0` is refused).
    pub fn negotiate(accept: Option<&str>) -> Format {
        let mut text = false;
        for range in accept.unwrap_or("").split(',') {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or("").to_ascii_lowercase();
            let refused =
                parts.any(|p| p.strip_prefix("q=").is_some_and(|q| q.trim().parse::<f32>().is_ok_and(|q| q <= 0.0)));
            if refused {
                continue;
            }
            match media.as_str() {
                "application/openmetrics-text" => return Format::OpenMetrics,
                "text/plain" => text = true,
                _ => {}
            }
        }
        if text { Format::Text004 } else { Format::OpenMetrics }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Text004 => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// Every metric the server exports, and the registry that renders them.
pub struct Metrics {
    registry: Registry,
    reviews_in_flight: Gauge,
    unrouted: Family<UnroutedLabels, Counter>,
    connections: Family<ListenerLabels, Gauge>,
    connection_limit: Family<ListenerLabels, Gauge>,
    tls_handshake_failure_classes: Family<ClassLabels, Counter>,
    reviews: Family<ReviewLabels, Counter>,
    review_seconds: Family<EndpointLabels, Histogram, fn() -> Histogram>,
    denials: Family<ReasonLabels, Counter>,
    review_timeouts: Family<EndpointLabels, Counter>,
    certificate_reloads: Family<ResultLabels, Counter>,
    certificate_expiry: Gauge,
    tls_handshake_failures: Counter,
    /// The reconciler's and the Lease's metrics (src/cluster/writer.rs): serve hands them to it.
    pub reconciler: crate::cluster::writer::ReconcilerMetrics,
    /// The watch caches' metrics, registered here so that they share the registry (no samples
    /// without a cluster).
    caches: Arc<CacheMetrics>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut root = Registry::default();
        root.register_collector(Box::new(ProcessCollector));
        let registry = root.sub_registry_with_prefix("divert_webhook");
        let reviews_in_flight = Gauge::default();
        let unrouted = Family::<UnroutedLabels, Counter>::default();
        let connections = Family::<ListenerLabels, Gauge>::default();
        let connection_limit = Family::<ListenerLabels, Gauge>::default();
        let tls_handshake_failure_classes = Family::<ClassLabels, Counter>::default();
        registry.register(
            "reviews_in_flight",
            "AdmissionReviews being read, reviewed or answered right now",
            reviews_in_flight.clone(),
        );
        registry.register(
            "unrouted_requests",
            "Requests answered 404 (no such path) or 405 (wrong method), by listener and status",
            unrouted.clone(),
        );
        registry.register("connections", "Open connections, by listener", connections.clone());
        registry.register(
            "connections_limit",
            "Most connections served at once, by listener (--max-connections); more wait in the listen backlog",
            connection_limit.clone(),
        );
        registry.register(
            "tls_handshake_failures_by_class",
            "Failed TLS handshakes by class: client-rejected-certificate (wrong caBundle?), not-tls, timeout, other",
            tls_handshake_failure_classes.clone(),
        );
        let reviews = Family::<ReviewLabels, Counter>::default();
        let review_seconds = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        let denials = Family::<ReasonLabels, Counter>::default();
        let review_timeouts = Family::<EndpointLabels, Counter>::default();
        let certificate_reloads = Family::<ResultLabels, Counter>::default();
        let certificate_expiry = Gauge::default();
        let tls_handshake_failures = Counter::default();
        registry.register(
            "reviews",
            "AdmissionReviews answered, by endpoint, object kind (other: kinds without rules), operation and outcome",
            reviews.clone(),
        );
        registry.register_with_unit(
            "review_duration",
            "Time from reading the request to the answer, per endpoint",
            Unit::Seconds,
            review_seconds.clone(),
        );
        registry.register("denials", "Denied reviews by reason (one count per reason in a denial)", denials.clone());
        registry.register(
            "review_timeouts",
            "Reviews abandoned because the request's ?timeout= (or --request-timeout) passed",
            review_timeouts.clone(),
        );
        registry.register("certificate_reloads", "Serving certificate reloads by result", certificate_reloads.clone());
        registry.register(
            "certificate_expiry_timestamp_seconds",
            "Expiry (notAfter) of the serving certificate, unix seconds",
            certificate_expiry.clone(),
        );
        registry.register(
            "tls_handshake_failures",
            "TLS handshakes that failed or timed out (bad or missing client certificate, plain HTTP, ...)",
            tls_handshake_failures.clone(),
        );
        registry.register(
            "build",
            "Build information",
            Info::new(vec![("version".to_string(), env!("CARGO_PKG_VERSION").to_string())]),
        );
        let reconciler = crate::cluster::writer::ReconcilerMetrics::register(registry);
        let caches = CacheMetrics::register(registry);
        // Both results exist from the start, so a first failure reads as 0 -> 1.
        for result in ["success", "failure"] {
            let _ = certificate_reloads.get_or_create(&ResultLabels { result });
        }
        for listener in [Listener::Admission, Listener::Metrics] {
            for status in ["404", "405"] {
                let _ = unrouted.get_or_create(&UnroutedLabels { listener: listener.as_str(), status });
            }
            let _ = connections.get_or_create(&ListenerLabels { listener: listener.as_str() });
        }
        Metrics {
            registry: root,
            reviews_in_flight,
            unrouted,
            connections,
            connection_limit,
            tls_handshake_failure_classes,
            reviews,
            review_seconds,
            denials,
            review_timeouts,
            certificate_reloads,
            certificate_expiry,
            tls_handshake_failures,
            reconciler,
            caches,
        }
    }

    pub fn caches(&self) -> Arc<CacheMetrics> {
        self.caches.clone()
    }

    /// One answered review (including invalid ones: `summary` is None then).
    pub fn observe_review(&self, endpoint: Endpoint, summary: Option<&Summary>, elapsed: Duration) {
        let labels = match summary {
            Some(summary) => ReviewLabels {
                endpoint: endpoint.as_str(),
                kind: kind_label(&summary.kind),
                operation: summary.operation,
                outcome: summary.outcome.as_str(),
            },
            None => ReviewLabels {
                endpoint: endpoint.as_str(),
                kind: "unknown",
                operation: "unknown",
                outcome: Outcome::Invalid.as_str(),
            },
        };
        self.reviews.get_or_create(&labels).inc();
        self.review_seconds
            .get_or_create(&EndpointLabels { endpoint: endpoint.as_str() })
            .observe(elapsed.as_secs_f64());
        for reason in summary.map(|s| s.denial_reasons.as_slice()).unwrap_or_default() {
            self.denials.get_or_create(&ReasonLabels { reason }).inc();
        }
    }

    /// A review abandoned at its deadline (answered 408): counted, and its latency observed.
    pub fn review_timed_out(&self, endpoint: Endpoint, elapsed: Duration) {
        let labels = EndpointLabels { endpoint: endpoint.as_str() };
        self.review_timeouts.get_or_create(&labels).inc();
        self.review_seconds.get_or_create(&labels).observe(elapsed.as_secs_f64());
    }

    pub fn certificate_reloaded(&self, success: bool) {
        let result = if success { "success" } else { "failure" };
        self.certificate_reloads.get_or_create(&ResultLabels { result }).inc();
    }

    pub fn set_certificate_expiry(&self, unix_seconds: i64) {
        self.certificate_expiry.set(unix_seconds);
    }

    pub fn tls_handshake_failed(&self, class: &'static str) {
        self.tls_handshake_failures.inc();
        self.tls_handshake_failure_classes.get_or_create(&ClassLabels { class }).inc();
    }

    /// Counts a review from its start until the returned guard is dropped (an atomic each way).
    pub fn review_in_flight(&self) -> InFlight<'_> {
        self.reviews_in_flight.inc();
        InFlight(&self.reviews_in_flight)
    }

    pub fn unrouted(&self, listener: Listener, status: &'static str) {
        self.unrouted.get_or_create(&UnroutedLabels { listener: listener.as_str(), status }).inc();
    }

    /// The gauge of open connections of `listener` (taken once, then an atomic per connection).
    pub fn connections(&self, listener: Listener) -> Gauge {
        self.connections.get_or_create(&ListenerLabels { listener: listener.as_str() }).clone()
    }

    pub fn set_connection_limit(&self, listener: Listener, limit: usize) {
        self.connection_limit.get_or_create(&ListenerLabels { listener: listener.as_str() }).set(limit as i64);
    }

    /// The exposition in `format`.
    pub fn encode(&self, format: Format) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        match format {
            Format::OpenMetrics => text,
            Format::Text004 => text_004(&text),
        }
    }
}

/// Decrements the in-flight gauge when the review is over, however it ended.
pub struct InFlight<'a>(&'a Gauge);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The Prometheus text format 0.0.4 of an OpenMetrics exposition as prometheus-client writes it:
/// a counter's family is named with its `_total` suffix, an info metric is a gauge named
/// `_info`, `unknown` is `untyped`; no `# UNIT` lines, no `# EOF`; HELP escapes no quotes.
fn text_004(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut help: Option<(&str, String)> = None;
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, text) = rest.split_once(' ').unwrap_or((rest, ""));
            help = Some((name, text.replace("\\\"", "\"")));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let (suffix, kind) = match kind {
                "counter" => ("_total", "counter"),
                "info" => ("_info", "gauge"),
                "unknown" => ("", "untyped"),
                other => ("", other),
            };
            if let Some((help_name, text)) = help.take()
                && help_name == name
            {
                out.push_str(&format!("# HELP {name}{suffix} {text}\n"));
            }
            out.push_str(&format!("# TYPE {name}{suffix} {kind}\n"));
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Kinds with rules keep their name; any other kind is `other`, so a client cannot grow the
/// label set without bound.
fn kind_label(kind: &str) -> &'static str {
    [Kind::Namespace, Kind::VirtualService, Kind::Ingress, Kind::HttpRoute]
        .into_iter()
        .map(Kind::as_str)
        .find(|known| *known == kind)
        .unwrap_or("other")
}
