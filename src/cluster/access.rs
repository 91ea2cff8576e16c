//! Cluster access (SPEC §10): whether `serve` talks to a cluster, and the kube client it uses.
//! An edge: it reads the environment and kubeconfig files, nothing else here does.
//!
//! In-cluster configuration (the pod's service account) first, else `KUBECONFIG` or
//! `~/.kube/config`; with `--no-cluster`, or when neither is there, no cluster at all and every
//! answer is the one of SPEC §1–§9.

use std::path::PathBuf;

/// What `serve` runs with.
pub enum Access {
    /// A client for the cluster, and where its configuration came from (for the start-up log).
    Cluster { client: kube::Client, source: String, api: String },
    /// No cluster: every answer as without cluster awareness. Why, for the start-up log.
    NoCluster { reason: String },
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Access::Cluster { source, api, .. } => write!(f, "Cluster {{ source: {source:?}, api: {api:?} }}"),
            Access::NoCluster { reason } => write!(f, "NoCluster {{ reason: {reason:?} }}"),
        }
    }
}

/// Decides the mode. `Err` (a configuration that exists but cannot be used) names the file or
/// setting and the fix; `serve` stops with it rather than run silently without the cluster.
pub async fn connect(no_cluster: bool) -> Result<Access, String> {
    if no_cluster {
        return Ok(Access::NoCluster { reason: "--no-cluster was given".into() });
    }
    // kube's rustls client takes the process's default provider: make it ring, the only one
    // linked (a second one would make rustls refuse to choose).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut not_in_cluster = "not in a pod (KUBERNETES_SERVICE_HOST is not set)".to_string();
    if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
        match kube::Config::incluster() {
            Ok(config) => return client(config, "in-cluster service account".into()),
            Err(error) => {
                not_in_cluster = format!(
                    "KUBERNETES_SERVICE_HOST is set but the in-cluster configuration cannot be read ({error}); \
                     mount the service account token (automountServiceAccountToken: true)"
                )
            }
        }
    }
    let candidates = kubeconfig_paths();
    let shown = candidates.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(":");
    if !candidates.iter().any(|path| path.exists()) {
        let reason = format!("{not_in_cluster}, and no kubeconfig at {shown}");
        return Ok(Access::NoCluster { reason });
    }
    let config = kube::Config::from_kubeconfig(&kube::config::KubeConfigOptions::default()).await.map_err(|error| {
        format!(
            "kubeconfig {shown}: {error}; fix it (or set KUBECONFIG), or pass --no-cluster to run without the cluster"
        )
    })?;
    client(config, format!("kubeconfig {shown}"))
}

fn client(config: kube::Config, source: String) -> Result<Access, String> {
    let api = config.cluster_url.to_string();
    let client = kube::Client::try_from(config)
        .map_err(|error| format!("cluster client for {api} from the {source}: {error}; or pass --no-cluster"))?;
    Ok(Access::Cluster { client, source, api })
}

/// Where kube looks for a kubeconfig: every path of `KUBECONFIG` when it is set and not empty,
/// else `~/.kube/config`.
fn kubeconfig_paths() -> Vec<PathBuf> {
    match std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty()) {
        Some(list) => std::env::split_paths(&list).filter(|p| !p.as_os_str().is_empty()).collect(),
        None => {
            std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".kube").join("config")).into_iter().collect()
        }
    }
}
