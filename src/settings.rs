//! What the operator configured: the inputs every rule reads besides the object itself.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use crate::selector::{Selector, is_dns_label};

/// Which mesh routes divert traffic in this cluster (SPEC §2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Driver {
    /// Istio sidecars + VirtualServices.
    #[default]
    Istio,
    /// ingress-nginx injects the header, Linkerd routes service-to-service.
    Nginx,
}

impl fmt::Display for Driver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Driver::Istio => "istio",
            Driver::Nginx => "nginx",
        })
    }
}

impl FromStr for Driver {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "istio" => Ok(Driver::Istio),
            "nginx" => Ok(Driver::Nginx),
            other => Err(format!("unknown driver {other:?}: use istio or nginx")),
        }
    }
}

/// Namespaces that are never mutated, whatever their labels (SPEC §2).
pub const BUILTIN_PROTECTED_NAMESPACES: &[&str] = &[
    "kube-system",
    "kube-public",
    "kube-node-lease",
    "istio-system",
    "istio-ingress",
    "linkerd",
    "linkerd-viz",
    "cert-manager",
];

pub const DEFAULT_MANAGED_SELECTOR: &str = "dev.okteto.com/okteto-managed=true";
pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";
pub const DEFAULT_MAX_GENERATED_ROUTES: usize = 2000;

/// `--cluster-domain` as the rules write it into hosts: lowercase, without the trailing dot of
/// an absolute name (`Cluster.Local.` is `cluster.local`; DNS names are case-insensitive, and
/// Istio refuses hosts with capitals or a trailing dot). Anything that is not a DNS name
/// (empty labels, `_`, spaces, non-ASCII, a label over 63 or a name over 253 characters) is
/// refused with the reason, so the webhook does not start and write hosts Istio rejects.
pub fn parse_cluster_domain(value: &str) -> Result<String, String> {
    let name = value.strip_suffix('.').unwrap_or(value).to_ascii_lowercase();
    let problem = if name.is_empty() {
        Some("it is empty".to_string())
    } else if name.len() > 253 {
        Some(format!("it is {} characters long, a DNS name has at most 253", name.len()))
    } else {
        name.split('.').find(|label| !is_dns_label(label)).map(|label| {
            format!(
                "{label:?} is not a DNS label (1 to 63 letters, digits and '-', starting and ending with a letter or digit)"
            )
        })
    };
    match problem {
        None => Ok(name),
        Some(problem) => Err(format!("{problem}; give the cluster's DNS domain, as in {DEFAULT_CLUSTER_DOMAIN}")),
    }
}
/// The `re2.max_program_size.error_level` Istio's bootstrap gives Envoy (SPEC §7).
pub const DEFAULT_MAX_REGEX_PROGRAM_SIZE: usize = 32768;

/// Everything the rules need from the operator. Built once at start; read-only afterwards.
#[derive(Clone, Debug)]
pub struct Settings {
    pub driver: Driver,
    pub managed_selector: Selector,
    /// Built-in list + the webhook's own namespace + `--protected-namespaces`.
    pub protected_namespaces: BTreeSet<String>,
    /// The webhook's own namespace, when known (`--namespace`, `$POD_NAMESPACE`): where its Lease lives.
    pub own_namespace: Option<String>,
    /// Accept the deprecated `baggage.okteto-divert` header (SPEC §2).
    pub legacy_header: bool,
    pub cluster_domain: String,
    /// SPEC §7 size: a mutation that would generate more routes than this is not done, and
    /// the object is denied.
    pub max_generated_routes: usize,
    /// A regex whose RE2 program is larger is denied (SPEC §7): Envoy would reject it.
    pub max_regex_program_size: usize,
    /// `--gateway-api`: the reconciler keeps developer routes and ReferenceGrants for HTTPRoutes
    /// (SPEC §11.1-§11.3), and the caches watch HTTPRoutes, ReferenceGrants and the Services'
    /// ports for it. Off: it leaves every HTTPRoute and ReferenceGrant alone (its own included)
    /// and Services are watched metadata-only (§10.8). On by default with the nginx driver
    /// (Linkerd routes by HTTPRoutes), off with istio (VirtualServices route).
    pub gateway_api: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings::new(
            Driver::Istio,
            Selector::parse(DEFAULT_MANAGED_SELECTOR).expect("default selector parses"),
            None,
            &[],
        )
    }
}

impl Settings {
    /// `own_namespace` is the webhook's namespace (protected so it can never break itself);
    /// `extra_protected` extends the built-in list.
    pub fn new(
        driver: Driver,
        managed_selector: Selector,
        own_namespace: Option<&str>,
        extra_protected: &[String],
    ) -> Self {
        let mut protected: BTreeSet<String> = BUILTIN_PROTECTED_NAMESPACES.iter().map(|s| s.to_string()).collect();
        protected.extend(own_namespace.filter(|s| !s.is_empty()).map(str::to_string));
        protected.extend(extra_protected.iter().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()));
        Settings {
            driver,
            managed_selector,
            protected_namespaces: protected,
            own_namespace: own_namespace.filter(|s| !s.is_empty()).map(str::to_string),
            legacy_header: false,
            cluster_domain: DEFAULT_CLUSTER_DOMAIN.to_string(),
            max_generated_routes: DEFAULT_MAX_GENERATED_ROUTES,
            max_regex_program_size: DEFAULT_MAX_REGEX_PROGRAM_SIZE,
            gateway_api: driver == Driver::Nginx,
        }
    }

    pub fn is_protected(&self, namespace: &str) -> bool {
        self.protected_namespaces.contains(namespace)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_domains_are_lowercased_without_the_trailing_dot() {
        for (given, used) in [
            ("cluster.local", "cluster.local"),
            ("Cluster.Local.", "cluster.local"),
            ("CORP.internal", "corp.internal"),
            ("local", "local"),
            ("k8s-1.example.org.", "k8s-1.example.org"),
        ] {
            assert_eq!(parse_cluster_domain(given).as_deref(), Ok(used), "{given}");
        }
        for bad in [
            "",
            ".",
            "..",
            ".cluster.local",
            "cluster..local",
            "cluster.local..",
            "cluster_local",
            "a b",
            "-a.local",
            "é.local",
            &"a".repeat(64),
            &"a.".repeat(128),
        ] {
            let error = parse_cluster_domain(bad).expect_err(bad);
            assert!(error.ends_with("give the cluster's DNS domain, as in cluster.local"), "{bad}: {error}");
        }
        assert_eq!(
            parse_cluster_domain("cluster_local").unwrap_err(),
            "\"cluster_local\" is not a DNS label (1 to 63 letters, digits and '-', starting and ending with a letter or digit); \
             give the cluster's DNS domain, as in cluster.local"
        );
    }
}
