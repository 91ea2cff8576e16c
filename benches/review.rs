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

/// The load kit's request bodies (`../shared/perf/bodies`), when the folder is beside the repo.
fn kit_bodies() -> Vec<(String, Vec<u8>)> {
    let folder = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/perf/bodies");
    ["namespace", "ingress", "vs-10", "vs-100", "vs-20x20", "vs-100x100"]
        .iter()
        .filter_map(|name| Some((name.to_string(), std::fs::read(folder.join(format!("{name}.json"))).ok()?)))
        .collect()
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

    // The load kit's bodies, each next to what the kit's floor does with it (parse into a tree).
    let mut kit = c.benchmark_group("kit");
    for (name, body) in kit_bodies() {
        kit.bench_function(format!("{name}/floor_parse"), |b| {
            b.iter(|| serde_json::from_slice::<Value>(black_box(&body)).unwrap())
        });
        kit.bench_function(format!("{name}/mutate"), |b| {
            b.iter(|| review(Endpoint::Mutate, black_box(&body), &settings).unwrap())
        });
        kit.bench_function(format!("{name}/validate"), |b| {
            b.iter(|| review(Endpoint::Validate, black_box(&body), &settings).unwrap())
        });
    }
    kit.finish();

    let mut group = c.benchmark_group("review");
    group.bench_function("pod_unhandled", |b| b.iter(|| review(Endpoint::Mutate, black_box(&pod), &settings).unwrap()));
    group.bench_function("namespace_mutate", |b| {
        b.iter(|| review(Endpoint::Mutate, black_box(&namespace), &settings).unwrap())
    });
    group.bench_function("namespace_validate", |b| {
        b.iter(|| review(Endpoint::Validate, black_box(&namespace), &settings).unwrap())
    });
    group.finish();

    // Time per generated route must not grow with the size of the job (no super-linear term):
    // routes x developers clones, the limit raised so that every case is generated.
    let unbounded = Settings { max_generated_routes: usize::MAX, ..Settings::default() };
    let mut scaling = c.benchmark_group("divert_scaling");
    for routes in [10, 100, 1000] {
        for developers in [1, 10] {
            let body = review_of(
                shared_virtual_service(routes, developers),
                "networking.istio.io",
                "v1",
                "VirtualService",
                "virtualservices",
            );
            let clones = routes * developers;
            scaling.throughput(criterion::Throughput::Elements(clones as u64));
            scaling.bench_function(format!("{routes}_routes_x_{developers}_devs"), |b| {
                b.iter(|| review(Endpoint::Mutate, black_box(&body), &unbounded).unwrap())
            });
        }
    }
    scaling.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
