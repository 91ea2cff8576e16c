//! Prometheus metrics (prometheus-client text format), all named `divert_webhook_*`.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

use crate::cluster::caches::CacheMetrics;
use crate::review::{Endpoint, Outcome, Summary};
use crate::rules::Kind;

/// Review latency buckets, 50µs to 1s: the rules answer in well under a millisecond.
const LATENCY_BUCKETS: [f64; 14] =
    [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

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

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// Every metric the server exports, and the registry that renders them.
pub struct Metrics {
    registry: Registry,
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
        let mut registry = Registry::with_prefix("divert_webhook");
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
        let reconciler = crate::cluster::writer::ReconcilerMetrics::register(&mut registry);
        let caches = CacheMetrics::register(&mut registry);
        // Both results exist from the start, so a first failure reads as 0 -> 1.
        for result in ["success", "failure"] {
            let _ = certificate_reloads.get_or_create(&ResultLabels { result });
        }
        Metrics {
            registry,
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

    pub fn tls_handshake_failed(&self) {
        self.tls_handshake_failures.inc();
    }

    /// The text exposition (OpenMetrics text, which Prometheus scrapes natively).
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }
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
