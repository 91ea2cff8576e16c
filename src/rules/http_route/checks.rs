//! SPEC §11.5 (§7 for HTTPRoutes): validation.
//!
//! Denied, each with a message naming the object, the field and the fix:
//! - divert annotations that cannot be used (as on VirtualServices, [`check_annotations`]);
//! - the wrong header forms of SPEC §2 in a header match (`matches[].headers[]`: the name, and a
//!   `baggage` value, `Exact` or `RegularExpression`) and in the header filters
//!   (`RequestHeaderModifier`, `ResponseHeaderModifier`: `set`, `add`, `remove`) of a rule or
//!   of one of its backendRefs;
//! - regexes the data plane would refuse (decided by RE2, [`regex_check::problem`]) in every
//!   `RegularExpression` match: path, headers, query parameters.
//!
//! Warned: the user's uses of the legacy header `baggage.okteto-divert`.
//!
//! The reconciler's own routes (SPEC §11.3) are not checked: no admission rule touches them.

use serde_json::Value;

use super::is_reconciler_owned;
use crate::rules::divert::{BAGGAGE_HEADER, object_ref, wrong_baggage_pattern, wrong_baggage_value};
use crate::rules::virtual_service::checks::{FormCheck, WRONG_HEADER_FORM, check_annotations};
use crate::rules::{Findings, Subject};
use crate::settings::Settings;

pub fn validate(subject: &Subject<'_>, settings: &Settings, findings: &mut Findings) {
    if is_reconciler_owned(subject.object) {
        return;
    }
    let generated_name =
        subject.object.pointer("/metadata/generateName").and_then(Value::as_str).map(|g| format!("{g}*"));
    let name = match (subject.name, &generated_name) {
        ("", Some(generated)) => generated.as_str(),
        (name, _) => name,
    };
    let object = object_ref(subject.kind.as_str(), subject.namespace, name);
    check_annotations(subject, &object, findings);
    let mut check = Check { form: FormCheck::new(object, findings, settings) };
    for (i, rule) in super::rules(subject.object).iter().enumerate() {
        if check.form.findings.out_of_time() {
            return;
        }
        check.rule(rule, &format!("spec.rules[{i}]"));
    }
    check.form.warn_legacy_uses(settings.legacy_header);
}

/// One HTTPRoute's validation.
struct Check<'a> {
    form: FormCheck<'a>,
}

impl Check<'_> {
    fn deny(&mut self, reason: &'static str, field: &str, message: impl AsRef<str>) {
        self.form.deny(reason, field, message);
    }

    fn rule(&mut self, rule: &Value, path: &str) {
        for (j, entry) in array(rule, "matches").iter().enumerate() {
            let path = format!("{path}.matches[{j}]");
            if let Some(path_match) = entry.get("path") {
                self.string_match(path_match, &format!("{path}.path"));
            }
            for (k, header) in array(entry, "headers").iter().enumerate() {
                let field = format!("{path}.headers[{k}]");
                let Some(name) = header.get("name").and_then(Value::as_str) else { continue };
                self.header_name(name, &format!("{field}.name"));
                if name.eq_ignore_ascii_case(BAGGAGE_HEADER)
                    && let Some(value) = header.get("value").and_then(Value::as_str)
                {
                    let problem =
                        if is_regex(header) { wrong_baggage_pattern(value) } else { wrong_baggage_value(value) };
                    if let Some(problem) = problem {
                        self.deny(WRONG_HEADER_FORM, &format!("{field}.value"), problem);
                    }
                }
                self.string_match(header, &field);
            }
            for (k, query) in array(entry, "queryParams").iter().enumerate() {
                self.string_match(query, &format!("{path}.queryParams[{k}]"));
            }
        }
        self.filters(rule, path);
        for (k, backend) in array(rule, "backendRefs").iter().enumerate() {
            self.filters(backend, &format!("{path}.backendRefs[{k}]"));
        }
    }

    /// The header filters of a rule or a backendRef.
    fn filters(&mut self, owner: &Value, path: &str) {
        for (k, filter) in array(owner, "filters").iter().enumerate() {
            for field in ["requestHeaderModifier", "responseHeaderModifier"] {
                let Some(modifier) = filter.get(field) else { continue };
                let path = format!("{path}.filters[{k}].{field}");
                for operation in ["set", "add"] {
                    for (n, header) in array(modifier, operation).iter().enumerate() {
                        let Some(name) = header.get("name").and_then(Value::as_str) else { continue };
                        let field = format!("{path}.{operation}[{n}]");
                        self.header_name(name, &format!("{field}.name"));
                        if name.eq_ignore_ascii_case(BAGGAGE_HEADER)
                            && let Some(value) = header.get("value").and_then(Value::as_str)
                            && let Some(problem) = wrong_baggage_value(value)
                        {
                            self.deny(WRONG_HEADER_FORM, &format!("{field}.value"), problem);
                        }
                    }
                }
                for (n, name) in array(modifier, "remove").iter().enumerate() {
                    if let Some(name) = name.as_str() {
                        self.header_name(name, &format!("{path}.remove[{n}]"));
                    }
                }
            }
        }
    }

    fn header_name(&mut self, name: &str, field: &str) {
        self.form.header_name(name, field, true);
    }

    /// A path, header or query match: its `value` is an RE2 pattern when its type is
    /// `RegularExpression`.
    fn string_match(&mut self, string_match: &Value, path: &str) {
        if !is_regex(string_match) {
            return;
        }
        if let Some(pattern) = string_match.get("value").and_then(Value::as_str) {
            self.form.pattern(pattern, &format!("{path}.value"));
        }
    }
}

fn is_regex(string_match: &Value) -> bool {
    string_match.get("type").and_then(Value::as_str) == Some("RegularExpression")
}

fn array<'v>(owner: &'v Value, key: &str) -> &'v [Value] {
    owner.get(key).and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::ClusterView;
    use crate::rules::Kind;
    use serde_json::json;

    fn denials(object: &Value) -> Vec<String> {
        let subject =
            Subject { kind: Kind::HttpRoute, namespace: "staging", name: "api", object, cluster: ClusterView::none() };
        let mut findings = Findings::default();
        validate(&subject, &Settings::default(), &mut findings);
        findings.denials.into_iter().map(|d| d.message).collect()
    }

    #[test]
    fn wrong_forms_and_refused_regexes_are_denied_with_their_field() {
        let object = json!({"metadata": {"name": "api", "annotations": {
                "divert.okteto.com/cindy-app": "{not json", "divert.okteto.com/header": "Cindy"}},
            "spec": {"rules": [{
                "matches": [{"path": {"type": "RegularExpression", "value": "/a(?=b)"},
                             "headers": [{"name": "x-okteto-divert", "value": "cindy"},
                                         {"name": "baggage", "type": "RegularExpression", "value": ".*okteto-divert:cindy.*"},
                                         {"name": "baggage", "value": "baggage.okteto-divert=cindy"}],
                             "queryParams": [{"name": "q", "type": "RegularExpression", "value": "(a)\\1"}]}],
                "filters": [{"type": "RequestHeaderModifier", "requestHeaderModifier": {"remove": ["okteto-divert"]}}],
                "backendRefs": [{"name": "api", "port": 80, "filters": [{"type": "RequestHeaderModifier",
                    "requestHeaderModifier": {"add": [{"name": "baggage", "value": "okteto-divert:cindy"}]}}]}]}]}});
        let got = denials(&object);
        let fields: Vec<&str> = got.iter().map(|m| m.split(": ").nth(1).unwrap()).collect();
        assert_eq!(
            fields,
            [
                "metadata.annotations[\"divert.okteto.com/cindy-app\"]",
                "metadata.annotations[\"divert.okteto.com/header\"]",
                "spec.rules[0].matches[0].path.value",
                "spec.rules[0].matches[0].headers[0].name",
                "spec.rules[0].matches[0].headers[1].value",
                "spec.rules[0].matches[0].headers[2].value",
                "spec.rules[0].matches[0].queryParams[0].value",
                "spec.rules[0].filters[0].requestHeaderModifier.remove[0]",
                "spec.rules[0].backendRefs[0].filters[0].requestHeaderModifier.add[0].value",
            ],
            "{got:#?}"
        );
        assert!(got.iter().all(|m| m.starts_with("HTTPRoute staging/api: ")));
        assert!(got[2].contains("not valid RE2"), "{}", got[2]);
    }

    #[test]
    fn the_reconcilers_routes_and_right_forms_pass() {
        let pattern = format!("^(?:{})$", crate::rules::baggage::divert_pattern("cindy"));
        let object = json!({"metadata": {"name": "api"}, "spec": {"rules": [{"matches": [{
            "headers": [{"name": "baggage", "type": "RegularExpression", "value": pattern}]}]}]}});
        assert_eq!(denials(&object), Vec::<String>::new());
        let owned = json!({"metadata": {"name": "api", "labels": {"app.kubernetes.io/managed-by": "divert-webhook"}},
            "spec": {"rules": [{"matches": [{"headers": [{"name": "okteto-divert", "value": "x"}]}]}]}});
        assert_eq!(denials(&owned), Vec::<String>::new());
    }
}
