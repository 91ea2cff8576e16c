//! The cluster's state as the reconciler reads it (SPEC §10): the [`ClusterView`] the rules
//! get, the namespaces being deleted, and the objects whose annotations the reconciler keeps
//! (VirtualServices, Ingresses), and the HTTPRoutes and ReferenceGrants of §11. Built from a
//! `kubectl get namespaces,services,virtualservices,httproutes,referencegrants -A -o yaml` dump by
//! [`from_dump`].

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::ClusterView;

/// Everything the reconciler decides from. Objects are kept as read (raw JSON), like admitted
/// objects.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClusterState {
    pub view: ClusterView,
    /// Namespaces with a `deletionTimestamp`: they still exist, but stop being developer
    /// namespaces at once.
    pub terminating: BTreeSet<String>,
    pub virtual_services: Vec<Value>,
    pub ingresses: Vec<Value>,
    /// Gateway API and Linkerd (`policy.linkerd.io`) HTTPRoutes (SPEC §11).
    pub http_routes: Vec<Value>,
    /// ReferenceGrants: the reconciler's own ones (SPEC §11.3) are among them.
    pub reference_grants: Vec<Value>,
    /// The ports of the Services whose `spec.ports` are known, by namespace and name: a route
    /// for a Service without one (SPEC §11.2) must name the port it sends to.
    pub service_ports: BTreeMap<String, BTreeMap<String, Vec<u64>>>,
    /// The apiVersions the reconciler makes its own objects at (SPEC §11: the version the
    /// cluster serves).
    pub served: ServedApis,
}

/// The apiVersion the reconciler writes each kind it makes at, or `None` where the cluster
/// serves no version of it. In the server, from the caches' discovery (the version each cache
/// watches); from a dump, the version its objects of the kind carry; otherwise (a dump without
/// any, the tests) the Gateway API's standard versions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServedApis {
    /// Routes for Services without one (SPEC §11.2). Developer routes of §11.1 take the shared
    /// route's apiVersion (it was read at the version the cluster serves).
    pub http_route: Option<String>,
    pub reference_grant: Option<String>,
}

/// The Gateway API's HTTPRoute at its standard version.
pub const GATEWAY_HTTP_ROUTE_API_VERSION: &str = "gateway.networking.k8s.io/v1";
/// ReferenceGrant is served as v1beta1 by every Gateway API release that has it (v1 only since
/// 1.5); the default where the served version is not known.
pub const GATEWAY_REFERENCE_GRANT_API_VERSION: &str = "gateway.networking.k8s.io/v1beta1";

impl Default for ServedApis {
    fn default() -> Self {
        ServedApis {
            http_route: Some(GATEWAY_HTTP_ROUTE_API_VERSION.to_string()),
            reference_grant: Some(GATEWAY_REFERENCE_GRANT_API_VERSION.to_string()),
        }
    }
}

impl ClusterState {
    /// A known cluster with nothing in it.
    pub fn empty() -> ClusterState {
        ClusterState { view: ClusterView::empty_cluster(), ..ClusterState::default() }
    }

    /// Is `namespace` a developer namespace now (valid label, not being deleted)? Its shared
    /// namespace.
    pub fn developer_of(&self, namespace: &str, settings: &crate::settings::Settings) -> Option<&str> {
        if self.terminating.contains(namespace) {
            return None;
        }
        self.view.shared_namespace_of(namespace, settings)
    }
}

/// What reading a dump found besides the state: kinds it does not use, counted (so that a
/// dump of the wrong thing is noticed, not silently taken as an empty cluster).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DumpNotes {
    pub ignored_kinds: BTreeMap<String, usize>,
}

/// Reads a `kubectl get … -o yaml` dump: one or more YAML documents, each a `kind: List` (or a
/// single object). Namespaces, Services, VirtualServices, Ingresses, HTTPRoutes (both API groups)
/// and ReferenceGrants are used;
/// a kind the dump lacks counts as empty. `Err` names the item that cannot be read.
pub fn from_dump(text: &str) -> Result<(ClusterState, DumpNotes), String> {
    let items = crate::manifests::documents(text)?;
    let mut state = ClusterState::empty();
    let mut notes = DumpNotes::default();
    // The versions the dump's objects carry: a Gateway API HTTPRoute's first, else Linkerd's.
    let (mut gateway_route, mut linkerd_route, mut grant) = (None, None, None);
    for (index, item) in items.into_iter().enumerate() {
        let api_version = item.get("apiVersion").and_then(Value::as_str).unwrap_or_default();
        let kind = item.get("kind").and_then(Value::as_str).unwrap_or_default().to_string();
        let group = api_version.rsplit_once('/').map_or("", |(group, _)| group);
        let metadata = |field: &str| item.pointer(&format!("/metadata/{field}")).and_then(Value::as_str);
        let Some(name) = metadata("name").filter(|n| !n.is_empty()) else {
            return Err(format!("item {index} ({kind}) of the cluster dump has no metadata.name"));
        };
        let namespace = metadata("namespace").unwrap_or_default();
        let needs_namespace = |what: &str| -> Result<(), String> {
            if namespace.is_empty() {
                Err(format!("{what} {name} (item {index}) of the cluster dump has no metadata.namespace"))
            } else {
                Ok(())
            }
        };
        match (group, kind.as_str()) {
            ("", "Namespace") => {
                let labels: BTreeMap<String, String> = item
                    .pointer("/metadata/labels")
                    .and_then(Value::as_object)
                    .into_iter()
                    .flatten()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect();
                state.view.add_namespace(name, labels);
                if item.pointer("/metadata/deletionTimestamp").is_some_and(|t| !t.is_null()) {
                    state.terminating.insert(name.to_string());
                }
            }
            ("", "Service") => {
                needs_namespace("Service")?;
                state.view.add_service(namespace, name);
                let ports: Vec<u64> = item
                    .pointer("/spec/ports")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|p| p.get("port").and_then(Value::as_u64))
                    .collect();
                if !ports.is_empty() {
                    state.service_ports.entry(namespace.to_string()).or_default().insert(name.to_string(), ports);
                }
            }
            ("networking.istio.io", "VirtualService") => {
                needs_namespace("VirtualService")?;
                state.virtual_services.push(item);
            }
            ("networking.k8s.io", "Ingress") => {
                needs_namespace("Ingress")?;
                state.ingresses.push(item);
            }
            ("gateway.networking.k8s.io" | "policy.linkerd.io", "HTTPRoute") => {
                needs_namespace("HTTPRoute")?;
                let seen = if group == "policy.linkerd.io" { &mut linkerd_route } else { &mut gateway_route };
                seen.get_or_insert_with(|| api_version.to_string());
                state.http_routes.push(item);
            }
            ("gateway.networking.k8s.io", "ReferenceGrant") => {
                needs_namespace("ReferenceGrant")?;
                grant.get_or_insert_with(|| api_version.to_string());
                state.reference_grants.push(item);
            }
            _ => *notes.ignored_kinds.entry(if kind.is_empty() { "(no kind)".into() } else { kind }).or_default() += 1,
        }
    }
    if let Some(route) = gateway_route.or(linkerd_route) {
        state.served.http_route = Some(route);
    }
    if let Some(grant) = grant {
        state.served.reference_grant = Some(grant);
    }
    Ok((state, notes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Settings;

    #[test]
    fn a_dump_is_read_kind_by_kind() {
        let dump = r#"
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Namespace
  metadata: {name: staging}
- apiVersion: v1
  kind: Namespace
  metadata:
    name: cindy
    labels: {divert.okteto.com/from: staging}
- apiVersion: v1
  kind: Namespace
  metadata:
    name: gone
    labels: {divert.okteto.com/from: staging}
    deletionTimestamp: "2026-01-01T00:00:00Z"
- apiVersion: v1
  kind: Service
  metadata: {name: api, namespace: cindy}
- apiVersion: networking.istio.io/v1
  kind: VirtualService
  metadata: {name: shop, namespace: staging}
- apiVersion: v1
  kind: ConfigMap
  metadata: {name: x, namespace: staging}
"#;
        let (state, notes) = from_dump(dump).unwrap();
        let settings = Settings::default();
        assert!(state.view.is_known());
        assert!(state.view.runs("cindy", "api"));
        assert_eq!(state.developer_of("cindy", &settings), Some("staging"));
        assert_eq!(state.developer_of("gone", &settings), None, "being deleted");
        assert_eq!(state.view.shared_namespace_of("gone", &settings), Some("staging"));
        assert_eq!(state.virtual_services.len(), 1);
        assert_eq!(notes.ignored_kinds, BTreeMap::from([("ConfigMap".to_string(), 1)]));
        // Kinds it lacks are empty; an empty dump is a known, empty cluster.
        let (state, _) = from_dump("apiVersion: v1\nkind: List\nitems: []\n").unwrap();
        assert!(state.view.is_known() && state.virtual_services.is_empty());
        let error =
            from_dump("kind: List\nitems:\n- {apiVersion: v1, kind: Service, metadata: {name: a}}\n").unwrap_err();
        assert_eq!(error, "Service a (item 0) of the cluster dump has no metadata.namespace");
    }
}
