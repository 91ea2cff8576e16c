#!/usr/bin/env python3
"""Writes the seed corpus of every fuzz target into fuzz/corpus/<target>/ (see docs/fuzzing.md).

Seeds come from the repo's test fixtures, the manifests in ../shared/corpus (YAML, read with
PyYAML) and the load kit's bodies in ../shared/perf/bodies. Each seed's layout is the one its
target reads: most start with one settings byte (bit 0 the nginx driver, bit 1 the legacy
header, bit 2 a selector matching everything, bits 3-4 the apiVersion for the rules targets).
"""

import hashlib
import json
import pathlib

import yaml

FUZZ = pathlib.Path(__file__).resolve().parent
REPO = FUZZ.parent
SHARED = REPO.parent / "shared"


def write(target, data):
    folder = FUZZ / "corpus" / target
    folder.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    (folder / hashlib.sha1(data).hexdigest()).write_bytes(data)


def corpus_objects():
    """Every YAML document of the shared corpus that is a mapping with a kind."""
    for path in sorted((SHARED / "corpus").rglob("*.y*ml")):
        try:
            docs = list(yaml.safe_load_all(path.read_text()))
        except yaml.YAMLError:
            continue
        for doc in docs:
            if isinstance(doc, dict) and isinstance(doc.get("kind"), str):
                yield doc


def review_of(obj):
    api_version = obj.get("apiVersion") or "v1"
    group, _, version = api_version.rpartition("/")
    kind = obj["kind"]
    resource = (kind.lower() + "s").replace("ingresss", "ingresses")
    gvk = {"group": group, "version": version, "kind": kind}
    gvr = {"group": group, "version": version, "resource": resource}
    metadata = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    request = {
        "uid": "3c8b0d5e-6d62-4f8a-9a4b-7d1b2c3e4f50",
        "kind": gvk, "resource": gvr, "requestKind": gvk, "requestResource": gvr,
        "name": metadata.get("name", ""), "operation": "CREATE",
        "userInfo": {"username": "cindy@example.com"}, "object": obj,
    }
    if kind != "Namespace":
        request["namespace"] = metadata.get("namespace") or "staging"
    return {"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1", "request": request}


def with_divert(obj, i):
    """`obj` with a divert annotation, so that the mutation paths are taken from the seeds on."""
    obj = json.loads(json.dumps(obj, default=str))
    metadata = obj.setdefault("metadata", {}) if isinstance(obj.get("metadata", {}), dict) else {}
    annotations = metadata.setdefault("annotations", {}) if isinstance(metadata.get("annotations", {}), dict) else {}
    if obj["kind"] == "Namespace":
        annotations["divert.okteto.com/namespace"] = "staging"
        metadata.setdefault("labels", {})["dev.okteto.com/okteto-managed"] = "true"
    else:
        annotations["divert.okteto.com/cindy-app"] = json.dumps({"namespace": "cindy"})
        annotations["divert.okteto.com/header"] = "cindy"
    return obj


def main():
    kinds = {"Namespace": "rules_namespace", "VirtualService": "rules_virtualservice", "Ingress": "rules_ingress"}
    by_kind = {}
    i = 0
    for obj in corpus_objects():
        obj = json.loads(json.dumps(obj, default=str))  # dates and the like as strings
        target = kinds.get(obj["kind"])
        if target is None:
            continue
        by_kind.setdefault(obj["kind"], []).append(obj)
        i += 1
        settings = i % 8
        write(target, bytes([settings]) + json.dumps(obj).encode())
        write(target, bytes([settings ^ 1]) + json.dumps(with_divert(obj, i)).encode())
        write("review", bytes([settings]) + json.dumps(review_of(obj)).encode())
        write("review", bytes([settings ^ 1]) + json.dumps(review_of(with_divert(obj, i))).encode())
        annotations = (obj.get("metadata") or {}).get("annotations") or {}
        for key in ("nginx.ingress.kubernetes.io/configuration-snippet", "nginx.ingress.kubernetes.io/server-snippet"):
            if isinstance(annotations.get(key), str):
                write("nginx_snippet", bytes([settings]) + annotations[key].encode())
        labels = (obj.get("metadata") or {}).get("labels") or {}
        if isinstance(labels, dict) and labels:
            write("selector", ",".join(f"{k}={v}" for k, v in list(labels.items())[:3]))

    # patch_diff: [old, new] pairs: an object and the next of its kind, and an object and itself
    # with its first route list reordered and cut.
    for kind, objects in by_kind.items():
        for old, new in zip(objects, objects[1:]):
            write("patch_diff", json.dumps([old, new]))
        for obj in objects:
            http = (obj.get("spec") or {}).get("http") if isinstance(obj.get("spec"), dict) else None
            if isinstance(http, list) and http:
                edited = json.loads(json.dumps(obj))
                edited["spec"]["http"] = list(reversed(http))[:-1] + [{"name": "okteto-divert-cindy-0"}]
                write("patch_diff", json.dumps([obj, edited]))

    fixtures = sorted((REPO / "tests" / "fixtures").glob("*.json"))
    bodies = sorted((SHARED / "perf" / "bodies").glob("*.json"))
    for n, path in enumerate(fixtures + bodies):
        for settings in (n % 8, (n % 8) ^ 3):
            write("review", bytes([settings]) + path.read_bytes())

    for text in ["", "dev.okteto.com/okteto-managed=true", "!env", "env in ()", "env in (,)", "env notin ()",
                 "env=dev", "env in (a", "a==b,c!=d", "x in (a, b), !y, z", "tier notin (web,db),env"]:
        write("selector", text)
    for text in ["", "# divert-webhook begin\n# divert-webhook end\n", "more_set_headers \"x: y\";\n",
                 "proxy_set_header baggage \"okteto-divert=zed\";\r\nif ($http_baggage) { return 400; }"]:
        for settings in (0, 2):
            write("nginx_snippet", bytes([settings]) + text.encode())

    for target in sorted(p.name for p in (FUZZ / "corpus").iterdir()):
        print(target, len(list((FUZZ / "corpus" / target).iterdir())))


if __name__ == "__main__":
    main()
