//! The cluster as the rules see it (SPEC §10): the labels of every namespace and the names of
//! the Services in each. Read-only once built; the rules never ask the API anything.

use std::collections::{BTreeMap, BTreeSet};

use crate::selector::is_dns_label;
use crate::settings::Settings;

/// Label that makes a namespace a developer namespace of a shared one (SPEC §10.1).
pub const FROM_LABEL: &str = "divert.okteto.com/from";

/// What is known of one namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NamespaceView {
    pub labels: BTreeMap<String, String>,
    /// Names of its Services.
    pub services: BTreeSet<String>,
}

/// Namespaces (with their labels) and Services of a cluster, or nothing at all
/// ([`ClusterView::none`]): without a cluster the rules answer exactly as SPEC §1–§9 say. A view
/// that is known but lacks a namespace says that namespace does not exist (and runs nothing).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterView {
    known: bool,
    namespaces: BTreeMap<String, NamespaceView>,
}

/// The view of no cluster, for callers that have none.
static NO_CLUSTER: ClusterView = ClusterView { known: false, namespaces: BTreeMap::new() };

impl ClusterView {
    /// No cluster: every rule behaves as without cluster awareness.
    pub fn none() -> &'static ClusterView {
        &NO_CLUSTER
    }

    /// A known cluster with nothing in it yet; fill it with [`ClusterView::add_namespace`] and
    /// [`ClusterView::add_service`].
    pub fn empty_cluster() -> ClusterView {
        ClusterView { known: true, namespaces: BTreeMap::new() }
    }

    /// Is there a cluster behind this view? (False: answer as without one.)
    pub fn is_known(&self) -> bool {
        self.known
    }

    /// Records namespace `name` with its labels (replacing what was known of its labels).
    pub fn add_namespace(&mut self, name: &str, labels: BTreeMap<String, String>) {
        self.namespaces.entry(name.to_string()).or_default().labels = labels;
    }

    /// Records Service `name` of `namespace` (the namespace is known to exist from then on).
    pub fn add_service(&mut self, namespace: &str, name: &str) {
        self.namespaces.entry(namespace.to_string()).or_default().services.insert(name.to_string());
    }

    pub fn namespace(&self, name: &str) -> Option<&NamespaceView> {
        self.namespaces.get(name)
    }

    pub fn namespaces(&self) -> impl Iterator<Item = (&str, &NamespaceView)> {
        self.namespaces.iter().map(|(name, view)| (name.as_str(), view))
    }

    /// Does `namespace` have a Service named `service`? (Service names are lowercase DNS labels;
    /// `service` is compared as written.)
    pub fn runs(&self, namespace: &str, service: &str) -> bool {
        self.namespaces.get(namespace).is_some_and(|ns| ns.services.contains(service))
    }

    /// The shared namespace `namespace` is a developer namespace of (SPEC §10.1): its
    /// `divert.okteto.com/from` label, when that label is valid ([`check_from_label`]) and
    /// `namespace` itself is not protected.
    pub fn shared_namespace_of(&self, namespace: &str, settings: &Settings) -> Option<&str> {
        if settings.is_protected(namespace) {
            return None;
        }
        let from = self.namespaces.get(namespace)?.labels.get(FROM_LABEL)?;
        check_from_label(namespace, from, settings).is_ok().then_some(from.as_str())
    }
}

/// SPEC §10.1: the value of `divert.okteto.com/from` on namespace `namespace` must name another,
/// unprotected namespace. `Err` says what is wrong and the fix.
pub fn check_from_label(namespace: &str, from: &str, settings: &Settings) -> Result<(), String> {
    if !is_dns_label(from) {
        Err(format!(
            "{from:?} is not a namespace name (DNS-1123 label: at most 63 lowercase letters, digits and '-', \
             starting and ending alphanumeric); set it to the shared namespace this one diverts from"
        ))
    } else if from == namespace {
        Err(format!(
            "{from:?} is this namespace itself; set it to the shared namespace (e.g. staging) this one diverts from"
        ))
    } else if settings.is_protected(from) {
        Err(format!(
            "{from:?} is a protected namespace, which divert-webhook never changes; set it to the shared namespace \
             this one diverts from"
        ))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn no_cluster_knows_nothing() {
        let none = ClusterView::none();
        assert!(!none.is_known());
        assert!(!none.runs("cindy", "api"));
        assert_eq!(none.shared_namespace_of("cindy", &Settings::default()), None);
        assert!(ClusterView::empty_cluster().is_known());
    }

    #[test]
    fn developer_namespaces_need_a_valid_label() {
        let settings = Settings::default();
        let mut view = ClusterView::empty_cluster();
        view.add_namespace("cindy", labels(&[(FROM_LABEL, "staging")]));
        view.add_namespace("self", labels(&[(FROM_LABEL, "self")]));
        view.add_namespace("bad", labels(&[(FROM_LABEL, "Staging")]));
        view.add_namespace("sys", labels(&[(FROM_LABEL, "kube-system")]));
        view.add_namespace("kube-public", labels(&[(FROM_LABEL, "staging")]));
        view.add_namespace("plain", labels(&[]));
        view.add_service("cindy", "api");
        assert_eq!(view.shared_namespace_of("cindy", &settings), Some("staging"));
        for not_developer in ["self", "bad", "sys", "kube-public", "plain", "absent"] {
            assert_eq!(view.shared_namespace_of(not_developer, &settings), None, "{not_developer}");
        }
        assert!(view.runs("cindy", "api"));
        assert!(!view.runs("cindy", "web"));
        // A Service recorded first, the namespace's labels later: both kept.
        view.add_service("late", "x");
        view.add_namespace("late", labels(&[(FROM_LABEL, "staging")]));
        assert!(view.runs("late", "x"));
        assert_eq!(view.shared_namespace_of("late", &settings), Some("staging"));
    }
}
