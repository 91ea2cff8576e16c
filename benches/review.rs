//! Cost of one admission review on the request path: decode, rules, diff, encode.
//! Run: cargo bench --bench review
//! Compare figures only within one run (shared, noisy machines): the ratios between the cases are
//! what BENCHMARKS.md reports.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use divert_webhook::review::{Endpoint, review};
use divert_webhook::settings::Settings;
use serde_json::{Value, json};

fn review_of(object: Value, group: &str, version: &str, kind: &str, resource: &str) -> Vec<u8> {
    let gvk = json!({"group": group, "version": version, "kind": kind});
    let gvr = json!({"group": group, "version": version, "resource": resource});
    serde_json::to_vec(&json!({
        "kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1",
        "request": {
            "uid": "3c8b0d5e-6d62-4f8a-9a4b-7d1b2c3e4f50", "kind": gvk, "resource": gvr,
            "requestKind": gvk, "requestResource": gvr, "name": object["metadata"]["name"],
            "namespace": object["metadata"]["namespace"], "operation": "CREATE",
            "userInfo": {"username": "cindy@example.com"}, "object": object, "oldObject": null, "dryRun": false
        }
    }))
    .unwrap()
}

/// A shared VirtualService with `routes` http routes, diverted by `developers` developers.
fn shared_virtual_service(routes: usize, developers: usize) -> Value {
    let http: Vec<Value> = (0..routes)
        .map(|i| {
            json!({
                "name": format!("route-{i}"),
                "match": [{"uri": {"prefix": format!("/api/v{i}")}}],
                "route": [
                    {"destination": {"host": format!("svc-{i}"), "subset": "v1"}, "weight": 90},
                    {"destination": {"host": format!("svc-{i}"), "subset": "v2"}, "weight": 10}
                ],
                "timeout": "5s",
                "retries": {"attempts": 3, "perTryTimeout": "2s"}
            })
        })
        .collect();
    let annotations: serde_json::Map<String, Value> = (0..developers)
        .map(|d| (format!("divert.okteto.com/dev{d}-app"), json!(format!("{{\"namespace\":\"dev{d}\"}}"))))
        .collect();
    json!({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "frontend", "namespace": "staging", "annotations": annotations},
        "spec": {"hosts": ["frontend"], "http": http}
    })
}

fn bench(c: &mut Criterion) {
    let settings = Settings::default();
    let namespace = review_of(
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "cindy", "labels": {"dev.okteto.com/okteto-managed": "true"}}}),
        "",
        "v1",
        "Namespace",
        "namespaces",
    );
    let pod = review_of(
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default"}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}),
        "",
        "v1",
        "Pod",
        "pods",
    );
    let vs_small =
        review_of(shared_virtual_service(3, 1), "networking.istio.io", "v1", "VirtualService", "virtualservices");
    let vs_large =
        review_of(shared_virtual_service(50, 10), "networking.istio.io", "v1", "VirtualService", "virtualservices");

    let mut group = c.benchmark_group("review");
    group.bench_function("pod_unhandled", |b| b.iter(|| review(Endpoint::Mutate, black_box(&pod), &settings).unwrap()));
    group.bench_function("namespace_mutate", |b| {
        b.iter(|| review(Endpoint::Mutate, black_box(&namespace), &settings).unwrap())
    });
    group.bench_function("namespace_validate", |b| {
        b.iter(|| review(Endpoint::Validate, black_box(&namespace), &settings).unwrap())
    });
    group.bench_function("virtualservice_3_routes_1_dev_mutate", |b| {
        b.iter(|| review(Endpoint::Mutate, black_box(&vs_small), &settings).unwrap())
    });
    group.bench_function("virtualservice_50_routes_10_devs_mutate", |b| {
        b.iter(|| review(Endpoint::Mutate, black_box(&vs_large), &settings).unwrap())
    });
    group.bench_function("virtualservice_50_routes_10_devs_validate", |b| {
        b.iter(|| review(Endpoint::Validate, black_box(&vs_large), &settings).unwrap())
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
