//! The offline commands, run as a user runs them: the real binary, real files, real exit codes.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn divert_webhook(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_divert-webhook"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("POD_NAMESPACE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

#[test]
fn mutate_prints_the_mutated_manifests_in_their_own_field_order() {
    let out = divert_webhook(&["mutate", "-f", "deploy/examples/namespaces.yaml"], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let docs: Vec<Value> = serde_saphyr::from_multiple(&stdout).unwrap();
    assert_eq!(docs.len(), 5, "{stdout}");
    let by_name = |n: &str| docs.iter().find(|d| d["metadata"]["name"] == n).unwrap().clone();
    assert_eq!(by_name("staging")["metadata"]["labels"]["istio-injection"], "enabled");
    assert_eq!(by_name("cindy")["metadata"]["labels"]["istio-injection"], "enabled");
    assert_eq!(by_name("cindy")["metadata"]["annotations"]["owner"], "cindy@example.com");
    assert_eq!(by_name("legacy-batch")["metadata"]["labels"]["istio-injection"], "disabled");
    assert!(by_name("istio-system")["metadata"]["labels"].get("istio-injection").is_none());
    assert!(by_name("unmanaged")["metadata"].get("labels").is_none());
    // the label value "true" stays a string, and keys keep the file's order
    assert!(stdout.contains("dev.okteto.com/okteto-managed: \"true\""), "{stdout}");
    let cindy = stdout.split("---").find(|d| d.contains("name: cindy")).unwrap();
    let order: Vec<usize> =
        ["apiVersion", "kind", "metadata", "name: cindy", "labels", "team: payments", "istio-injection", "annotations"]
            .iter()
            .map(|k| cindy.find(k).unwrap_or_else(|| panic!("{k} in {cindy}")))
            .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{cindy}");
    // the disabled namespace is reported
    assert!(text(&out.stderr).contains("warning: Namespace legacy-batch"), "{}", text(&out.stderr));
}

#[test]
fn mutate_output_is_a_fixed_point() {
    let first = divert_webhook(&["mutate", "-f", "deploy/examples/namespaces.yaml"], None);
    let second = divert_webhook(&["mutate", "-f", "-"], Some(&text(&first.stdout)));
    assert!(second.status.success());
    assert_eq!(text(&first.stdout), text(&second.stdout));
}

#[test]
fn driver_flag_and_environment_variable_choose_linkerd() {
    let out = divert_webhook(&["mutate", "-f", "deploy/examples/namespaces.yaml", "--driver", "nginx"], None);
    assert!(text(&out.stdout).contains("linkerd.io/inject: enabled"));
    let out = Command::new(env!("CARGO_BIN_EXE_divert-webhook"))
        .args(["mutate", "-f", "deploy/examples/namespaces.yaml"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("DIVERT_WEBHOOK_DRIVER", "nginx")
        .output()
        .unwrap();
    assert!(text(&out.stdout).contains("linkerd.io/inject: enabled"));
    assert!(!text(&out.stdout).contains("istio-injection: enabled"));
}

const CONFLICT: &str = "\
apiVersion: v1
kind: Namespace
metadata:
  name: fine
---
apiVersion: v1
kind: Namespace
metadata:
  name: two-meshes
  labels:
    istio-injection: enabled
  annotations:
    linkerd.io/inject: enabled
";

#[test]
fn check_names_the_conflicting_namespace_and_exits_non_zero() {
    let out = divert_webhook(&["check", "-f", "-"], Some(CONFLICT));
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("denied: Namespace two-meshes:"), "{stderr}");
    assert!(stderr.contains("istio-injection=enabled") && stderr.contains("linkerd.io/inject=enabled"), "{stderr}");
    let stdout = text(&out.stdout);
    assert!(stdout.contains("allowed: Namespace fine") && stdout.contains("denied: Namespace two-meshes"), "{stdout}");

    let ok = divert_webhook(&["check", "-f", "deploy/examples/namespaces.yaml"], None);
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok.stderr));
}

#[test]
fn mutate_reports_denials_of_the_mutated_objects_too() {
    let out = divert_webhook(&["mutate", "-f", "-"], Some(CONFLICT));
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("denied: Namespace two-meshes"));
}

#[test]
fn unreadable_input_is_a_clear_error() {
    // Exit 2 for input that cannot be read, 1 only for denials: a script can tell them apart.
    let out = divert_webhook(&["mutate", "-f", "-"], Some("a: [unclosed"));
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).starts_with("error: <stdin>: cannot read YAML"), "{}", text(&out.stderr));
    let out = divert_webhook(&["check", "-f", "/nonexistent/file.yaml"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("/nonexistent/file.yaml"));
    let out = divert_webhook(&["check", "-f", "-"], Some("- just\n- a list\n"));
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("not a Kubernetes object"));
}

#[test]
fn check_names_every_object_as_the_messages_do() {
    // (A document without `kind` is an error: an_empty_file_or_a_document_without_kind_is_reported.)
    let input = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  generateName: gen-\n  namespace: staging\n  annotations:\n    divert.okteto.com/header: Cindy\nspec:\n  hosts: [h]\n---\napiVersion: networking.istio.io/v1beta2\nkind: VirtualService\nmetadata:\n  name: v\n  namespace: staging\n";
    let out = divert_webhook(&["check", "-f", "-"], Some(input));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout), "denied: VirtualService staging/gen-*\nallowed: VirtualService staging/v\n");
    assert!(
        text(&out.stderr).starts_with("denied: VirtualService staging/gen-*: metadata.annotations["),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn review_answers_an_admission_review_from_stdin() {
    let fixture =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/namespace-create.json")).unwrap();
    let out = divert_webhook(&["review"], Some(&fixture));
    assert!(out.status.success());
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["response"]["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
    assert_eq!(answer["response"]["patchType"], "JSONPatch");

    let out = divert_webhook(&["review", "--endpoint", "validate"], Some(&fixture));
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["response"]["allowed"], true);
    assert!(answer["response"].get("patch").is_none());

    let out = divert_webhook(&["review"], Some("{\"kind\": \"Pod\"}"));
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("expected apiVersion admission.k8s.io/v1"));
}

#[test]
fn bad_selector_flag_is_refused_at_start() {
    let out =
        divert_webhook(&["check", "-f", "deploy/examples/namespaces.yaml", "--managed-selector", "env in (a"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("invalid label selector"), "{}", text(&out.stderr));
}

#[test]
fn an_empty_set_in_the_selector_is_refused_at_start() {
    for selector in ["env in ()", "env notin ( )"] {
        let out =
            divert_webhook(&["mutate", "-f", "deploy/examples/namespaces.yaml", "--managed-selector", selector], None);
        assert_eq!(out.status.code(), Some(2), "{selector}");
        let stderr = text(&out.stderr);
        assert!(stderr.contains("invalid label selector") && stderr.contains("empty set of values"), "{stderr}");
    }
    // Through the environment too.
    let out = Command::new(env!("CARGO_BIN_EXE_divert-webhook"))
        .args(["mutate", "-f", "deploy/examples/namespaces.yaml"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("DIVERT_WEBHOOK_MANAGED_SELECTOR", "env in ()")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("empty set of values"), "{}", text(&out.stderr));
}

/// Four managed namespaces; which of them `mutate` leaves alone (protected) under `args` and `env`.
fn protected_among_managed(args: &[&str], env: &[(&str, &str)]) -> Vec<String> {
    let names = ["home", "a", "b", "other"];
    let input: String = names
        .iter()
        .map(|n| {
            format!(
                "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: {n}\n  labels:\n    dev.okteto.com/okteto-managed: \"true\"\n"
            )
        })
        .collect();
    let mut command = Command::new(env!("CARGO_BIN_EXE_divert-webhook"));
    command.args(["mutate", "-f", "-"]).args(args).current_dir(env!("CARGO_MANIFEST_DIR"));
    for variable in ["POD_NAMESPACE", "DIVERT_WEBHOOK_NAMESPACE", "DIVERT_WEBHOOK_PROTECTED_NAMESPACES"] {
        command.env_remove(variable);
    }
    command.envs(env.iter().copied());
    let mut child = command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{args:?} {env:?}: {}", text(&out.stderr));
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text(&out.stdout)).unwrap();
    assert_eq!(docs.len(), names.len());
    docs.iter()
        .filter(|d| d["metadata"]["labels"].get("istio-injection").is_none())
        .map(|d| d["metadata"]["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn the_webhooks_own_namespace_and_the_listed_ones_are_protected() {
    // (flags, environment, the managed namespaces left unmutated)
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a [&'a str]);
    let cases: &[Case] = &[
        (&[], &[], &[]),
        (&["--namespace", "home"], &[], &["home"]),
        (&[], &[("DIVERT_WEBHOOK_NAMESPACE", "home")], &["home"]),
        (&[], &[("POD_NAMESPACE", "home")], &["home"]),
        // Set but empty is unset: $POD_NAMESPACE still applies.
        (&[], &[("POD_NAMESPACE", "home"), ("DIVERT_WEBHOOK_NAMESPACE", "")], &["home"]),
        (&["--namespace", ""], &[("POD_NAMESPACE", "home")], &["home"]),
        // The flag and DIVERT_WEBHOOK_NAMESPACE win over $POD_NAMESPACE.
        (&["--namespace", "home"], &[("POD_NAMESPACE", "other")], &["home"]),
        (&[], &[("DIVERT_WEBHOOK_NAMESPACE", "other"), ("POD_NAMESPACE", "home")], &["other"]),
        (&["--protected-namespaces", "a,b"], &[], &["a", "b"]),
        (&[], &[("DIVERT_WEBHOOK_PROTECTED_NAMESPACES", "a,b")], &["a", "b"]),
        (&["--protected-namespaces", "a", "--namespace", "home"], &[], &["home", "a"]),
    ];
    for (args, env, protected) in cases {
        assert_eq!(protected_among_managed(args, env), *protected, "{args:?} {env:?}");
    }
}

#[test]
fn check_of_a_file_names_the_conflicting_namespace_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("namespaces.yaml");
    std::fs::write(&path, CONFLICT).unwrap();
    for flag in ["-f", "--filename"] {
        let out = divert_webhook(&["check", flag, path.to_str().unwrap()], None);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
        let stderr = text(&out.stderr);
        assert!(stderr.contains("denied: Namespace two-meshes:"), "{stderr}");
        assert!(!stderr.contains("Namespace fine"), "{stderr}");
        let stdout = text(&out.stdout);
        assert!(
            stdout.contains("allowed: Namespace fine") && stdout.contains("denied: Namespace two-meshes"),
            "{stdout}"
        );
    }
}

/// README: the boolean flags' variables take `true` or `false` and nothing else.
#[test]
fn boolean_variables_take_only_true_or_false() {
    let check = |value: &str| {
        Command::new(env!("CARGO_BIN_EXE_divert-webhook"))
            .args(["check", "-f", "deploy/examples/namespaces.yaml"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("DIVERT_WEBHOOK_LEGACY_HEADER", value)
            .output()
            .unwrap()
    };
    for value in ["true", "false"] {
        assert_eq!(check(value).status.code(), Some(0), "{value}");
    }
    for value in ["1", "yes", "TRUE", ""] {
        let out = check(value);
        assert_eq!(out.status.code(), Some(2), "{value:?}");
        let stderr = text(&out.stderr);
        assert!(stderr.contains("--legacy-header"), "{stderr}");
        // The user set the variable, not the flag: the message names the variable and the values.
        assert!(stderr.contains("DIVERT_WEBHOOK_LEGACY_HEADER") && stderr.contains("true, false"), "{stderr}");
        assert_eq!(stderr.matches("error:").count(), 1, "{stderr}");
    }
    // Other settings name their variable too; a bad value on the command line is clap's own error.
    let out = Command::new(env!("CARGO_BIN_EXE_divert-webhook"))
        .args(["check", "-f", "deploy/examples/namespaces.yaml"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("DIVERT_WEBHOOK_DRIVER", "envoy")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("DIVERT_WEBHOOK_DRIVER") && text(&out.stderr).contains("istio, nginx"));
    let out = divert_webhook(&["check", "-f", "deploy/examples/namespaces.yaml", "--driver", "envoy"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(!text(&out.stderr).contains("DIVERT_WEBHOOK_DRIVER"), "{}", text(&out.stderr));
}

#[test]
fn the_filename_flag_says_what_it_reads() {
    for command in ["mutate", "check"] {
        let out = divert_webhook(&[command, "--help"], None);
        let help = text(&out.stdout);
        let line = help.lines().skip_while(|l| !l.contains("-f, --filename")).nth(1).unwrap_or_default();
        assert!(line.contains("multi-document YAML") && line.contains("`-` for stdin"), "{command}: {help}");
    }
}

/// A YAML error names the file (with line and column, and the snippet's origin) and says
/// "error:" once.
#[test]
fn yaml_errors_name_the_file_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.yaml");
    std::fs::write(&path, "apiVersion: v1\nkind: Namespace\nmetadata: {name: [x\n").unwrap();
    let shown = path.display().to_string();
    for command in ["mutate", "check"] {
        let out = divert_webhook(&[command, "-f", &shown], None);
        assert_eq!(out.status.code(), Some(2));
        let stderr = text(&out.stderr);
        assert!(stderr.starts_with(&format!("error: {shown}: cannot read YAML: line ")), "{stderr}");
        assert!(stderr.contains(&format!("--> {shown}:")), "{stderr}");
        assert!(!stderr.contains("<input>"), "{stderr}");
        assert_eq!(stderr.matches("error:").count(), 1, "{stderr}");
        assert!(out.stdout.is_empty());
    }
}

/// Nothing to check is not a pass: an empty file, one of comments and `---` only, a document
/// without `kind`.
#[test]
fn an_empty_file_or_a_document_without_kind_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("empty.yaml", "", "no Kubernetes objects"),
        ("comments.yaml", "# nothing yet\n---\n---\n", "no Kubernetes objects"),
        (
            "kindless.yaml",
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\napiVersion: v1\nmetadata: {name: b}\n",
            "document 2 has no `kind`",
        ),
    ];
    for (name, content, expected) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        for command in ["mutate", "check"] {
            let out = divert_webhook(&[command, "-f", path.to_str().unwrap()], None);
            assert_eq!(out.status.code(), Some(2), "{command} {name}");
            let stderr = text(&out.stderr);
            assert!(stderr.contains(&format!("{}: {expected}", path.display())), "{command} {name}: {stderr}");
            assert!(out.stdout.is_empty(), "{command} {name}");
        }
    }
    let out = divert_webhook(&["check", "-f", "-"], Some(""));
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("<stdin>: no Kubernetes objects"));
}

/// `mutate -f FILE | kubectl apply -f -` without pipefail must apply nothing denied: when any
/// object is denied, mutate prints nothing at all and exits 1.
#[test]
fn mutate_prints_nothing_when_an_object_is_denied() {
    let out = divert_webhook(&["mutate", "-f", "-"], Some(CONFLICT));
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "printed: {}", text(&out.stdout));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("denied: Namespace two-meshes"), "{stderr}");
    assert!(stderr.contains("1 object(s) denied: nothing printed"), "{stderr}");
    // The same objects without the denied one are printed.
    let allowed: String = CONFLICT.split("---").filter(|d| !d.contains("two-meshes")).collect::<Vec<_>>().join("---");
    let out = divert_webhook(&["mutate", "-f", "-"], Some(&allowed));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("name: fine"));
}

/// SPEC §10.9: `mutate --cluster` and `check --cluster` answer as the server would in the
/// cluster of a `kubectl get … -o yaml` dump.
#[test]
fn mutate_and_check_with_a_cluster_dump_give_the_cluster_aware_answers() {
    let dump = "tests/fixtures/cluster-dump.yaml";
    let shop = "tests/fixtures/cluster-shop.yaml";
    let out = divert_webhook(&["mutate", "-f", shop, "--cluster", dump], None);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "the Namespace dave is denied: {stderr}");
    assert!(out.stdout.is_empty(), "mutate prints nothing when something is denied");
    assert!(
        stderr.contains("denied: Namespace dave: label divert.okteto.com/from: \"dave\" is this namespace itself"),
        "{stderr}"
    );
    // The same file without the denied Namespace.
    let text_of_shop = std::fs::read_to_string(format!("{}/{shop}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let allowed: Vec<&str> = text_of_shop.split("\n---\n").filter(|d| !d.contains("name: dave")).collect();
    assert_eq!(allowed.len(), 2);
    let out = divert_webhook(&["mutate", "-f", "-", "--cluster", dump], Some(&allowed.join("\n---\n")));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text(&out.stdout)).unwrap();
    let names = |doc: &Value| -> Vec<String> {
        doc["spec"]["http"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap_or("-").to_string()).collect()
    };
    // cindy's entry has no services: only api, the one Service cindy runs, is diverted (§10.4).
    assert_eq!(names(&docs[0]), ["okteto-divert-cindy-api", "api", "web", "db"]);
    assert_eq!(docs[0]["spec"]["http"][0]["route"][0]["destination"]["host"], "api.cindy.svc.cluster.local");
    assert!(stderr.contains("warning: VirtualService staging/shop: divert of cindy: route web sends to no Service that cindy runs: not diverted"), "{stderr}");
    // cindy is a developer namespace: its VirtualService gets the header without an annotation (§10.3).
    assert_eq!(docs[1]["spec"]["http"][0]["headers"]["request"]["add"]["baggage"], "okteto-divert=cindy");

    // Without the dump: every route to staging is diverted, and cindy's VirtualService is left alone.
    let out = divert_webhook(&["mutate", "-f", "-"], Some(&allowed.join("\n---\n")));
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text(&out.stdout)).unwrap();
    assert_eq!(
        names(&docs[0]),
        ["okteto-divert-cindy-api", "api", "okteto-divert-cindy-web", "web", "okteto-divert-cindy-db", "db"]
    );
    assert!(docs[1]["spec"]["http"][0].get("headers").is_none());

    let out = divert_webhook(&["check", "-f", shop, "--cluster", dump], None);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stdout),
        "allowed: VirtualService staging/shop\nallowed: VirtualService cindy/api\ndenied: Namespace dave\n"
    );

    // A dump that cannot be read stops the command (exit 2), naming the file and the item.
    let bad = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(bad.path(), "kind: List\nitems:\n- {apiVersion: v1, kind: Service, metadata: {name: a}}\n").unwrap();
    let out = divert_webhook(&["check", "-f", shop, "--cluster", bad.path().to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("Service a (item 0) of the cluster dump has no metadata.namespace"),
        "{}",
        text(&out.stderr)
    );
}
