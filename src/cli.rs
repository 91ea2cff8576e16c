//! The command line: `serve`, `review`, `mutate`, `check`, `reconcile`. Thin: every command ends in
//! [`crate::review`], the same code path as the server.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::cluster::ClusterView;
use crate::cluster::http_routes;
use crate::cluster::reconcile::{self, Absence};
use crate::cluster::state::{self, ClusterState};
use crate::manifests;
use crate::review::{self, Endpoint};
use crate::selector::Selector;
use crate::server::{self, ServeArgs};
use crate::settings::{
    DEFAULT_CLUSTER_DOMAIN, DEFAULT_MANAGED_SELECTOR, DEFAULT_MAX_GENERATED_ROUTES, DEFAULT_MAX_REGEX_PROGRAM_SIZE,
    Driver, Settings, parse_cluster_domain,
};

#[derive(Parser, Debug)]
#[command(
    name = "divert-webhook",
    version,
    about = "Kubernetes admission webhook for mesh injection and divert routing"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve /mutate and /validate over HTTPS, /metrics /healthz /readyz over HTTP.
    Serve {
        #[command(flatten)]
        serve: Box<ServeArgs>,
        #[command(flatten)]
        rules: RuleArgs,
    },
    /// Answer one AdmissionReview read from stdin (JSON), as the server would.
    Review {
        /// Which webhook answers.
        #[arg(long, value_enum, default_value_t = EndpointArg::Mutate)]
        endpoint: EndpointArg,
        #[command(flatten)]
        rules: RuleArgs,
    },
    /// Print the manifests of FILE (multi-document YAML, `-` for stdin) as the mutating webhook
    /// would store them.
    Mutate {
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
        /// The cluster's state: a `kubectl get namespaces,services,virtualservices,httproutes,referencegrants -A -o yaml` dump.
        #[arg(long = "cluster")]
        cluster: Option<PathBuf>,
        #[command(flatten)]
        rules: RuleArgs,
    },
    /// List what the validating webhook would deny in FILE; exits 1 if anything is denied.
    Check {
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
        /// The cluster's state: a `kubectl get namespaces,services,virtualservices,httproutes,referencegrants -A -o yaml` dump.
        #[arg(long = "cluster")]
        cluster: Option<PathBuf>,
        #[command(flatten)]
        rules: RuleArgs,
    },
    /// Print, as a diff, what the reconciler would write in the cluster of a dump: annotations, and
    /// the HTTPRoutes and ReferenceGrants it owns.
    Reconcile {
        /// The cluster's state: a `kubectl get namespaces,services,virtualservices,httproutes,referencegrants -A -o yaml` dump.
        #[arg(long = "cluster")]
        cluster: PathBuf,
        /// What to print: the annotation changes as a diff, or the writes themselves as YAML.
        #[arg(short = 'o', long = "output", value_enum, default_value_t = ReconcileOutput::Diff)]
        output: ReconcileOutput,
        #[command(flatten)]
        rules: RuleArgs,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ReconcileOutput {
    /// The annotation changes, object by object.
    Diff,
    /// The server-side apply configurations and JSON patches the reconciler would send.
    Yaml,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum EndpointArg {
    Mutate,
    Validate,
}

impl From<EndpointArg> for Endpoint {
    fn from(e: EndpointArg) -> Self {
        match e {
            EndpointArg::Mutate => Endpoint::Mutate,
            EndpointArg::Validate => Endpoint::Validate,
        }
    }
}

/// The operator's rule settings, shared by every command.
#[derive(clap::Args, Clone, Debug)]
pub struct RuleArgs {
    /// Mesh that routes divert traffic: istio (sidecars + VirtualServices) or nginx (ingress-nginx + Linkerd).
    #[arg(long, env = "DIVERT_WEBHOOK_DRIVER", value_enum, default_value_t = Driver::Istio)]
    pub driver: Driver,
    /// Label selector of managed namespaces (kubectl -l syntax); "" selects every namespace.
    #[arg(long, env = "DIVERT_WEBHOOK_MANAGED_SELECTOR", default_value = DEFAULT_MANAGED_SELECTOR)]
    pub managed_selector: Selector,
    /// Namespaces never mutated, added to the built-in list (comma-separated).
    #[arg(long, env = "DIVERT_WEBHOOK_PROTECTED_NAMESPACES", value_delimiter = ',')]
    pub protected_namespaces: Vec<String>,
    /// The webhook's own namespace (protected); defaults to $POD_NAMESPACE (an empty value counts as unset).
    #[arg(long, env = "DIVERT_WEBHOOK_NAMESPACE")]
    pub namespace: Option<String>,
    /// Also accept and generate the deprecated `baggage.okteto-divert` header.
    #[arg(long, env = "DIVERT_WEBHOOK_LEGACY_HEADER")]
    pub legacy_header: bool,
    /// Cluster DNS domain used in rewritten destination hosts (written lowercase, without a trailing dot).
    #[arg(long, env = "DIVERT_WEBHOOK_CLUSTER_DOMAIN", default_value = DEFAULT_CLUSTER_DOMAIN, value_parser = parse_cluster_domain)]
    pub cluster_domain: String,
    /// Most routes divert may generate on one VirtualService; above it the object is left unchanged and denied.
    #[arg(long, env = "DIVERT_WEBHOOK_MAX_GENERATED_ROUTES", default_value_t = DEFAULT_MAX_GENERATED_ROUTES)]
    pub max_generated_routes: usize,
    /// Largest RE2 program size a regex may compile to (Envoy's re2.max_program_size.error_level, as Istio sets it).
    #[arg(long, env = "DIVERT_WEBHOOK_MAX_REGEX_PROGRAM_SIZE", default_value_t = DEFAULT_MAX_REGEX_PROGRAM_SIZE as u32,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_regex_program_size: u32,
}

impl RuleArgs {
    pub fn settings(&self) -> Settings {
        // Set but empty (`DIVERT_WEBHOOK_NAMESPACE=` in a manifest, `--namespace ""`) is unset:
        // $POD_NAMESPACE still applies.
        let given = |name: Option<String>| name.map(|n| n.trim().to_string()).filter(|n| !n.is_empty());
        let own = given(self.namespace.clone()).or_else(|| given(std::env::var("POD_NAMESPACE").ok()));
        let mut settings =
            Settings::new(self.driver, self.managed_selector.clone(), own.as_deref(), &self.protected_namespaces);
        settings.legacy_header = self.legacy_header;
        settings.cluster_domain = self.cluster_domain.clone();
        settings.max_generated_routes = self.max_generated_routes;
        settings.max_regex_program_size = self.max_regex_program_size as usize;
        settings
    }
}

fn read_input(file: &PathBuf) -> Result<String, String> {
    if file.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).map_err(|e| format!("reading stdin: {e}"))?;
        Ok(s)
    } else {
        std::fs::read_to_string(file).map_err(|e| format!("reading {}: {e}", file.display()))
    }
}

pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Serve { serve, rules } => {
            let settings = rules.settings();
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
            match runtime.block_on(server::serve(*serve, settings)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("divert-webhook: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Review { endpoint, rules } => {
            let mut body = Vec::new();
            if let Err(e) = std::io::stdin().read_to_end(&mut body) {
                eprintln!("divert-webhook: reading stdin: {e}");
                return ExitCode::FAILURE;
            }
            match review::review(endpoint.into(), &body, &rules.settings()) {
                Ok((answer, _)) => {
                    let mut out = std::io::stdout().lock();
                    let _ = out.write_all(&answer).and_then(|_| out.write_all(b"\n"));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("divert-webhook: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Mutate { file, cluster, rules } => {
            offline(&file, cluster.as_ref(), &rules, manifests::mutate_documents_in)
        }
        Command::Check { file, cluster, rules } => {
            offline(&file, cluster.as_ref(), &rules, manifests::check_documents_in)
        }
        Command::Reconcile { cluster, output, rules } => reconcile(&cluster, output, &rules),
    }
}

/// The cluster's state from the dump at `file`; unused kinds are named on stderr. `Err` is the
/// message for stderr.
fn read_cluster(file: &PathBuf) -> Result<ClusterState, String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("reading {}: {e}", file.display()))?;
    let (state, notes) = state::from_dump(&text).map_err(|e| format!("{}: {e}", file.display()))?;
    for (kind, count) in &notes.ignored_kinds {
        eprintln!(
            "note: {}: {count} {kind} object(s) ignored (the cluster view reads Namespaces, Services, VirtualServices, Ingresses, HTTPRoutes, ReferenceGrants)",
            file.display()
        );
    }
    Ok(state)
}

fn reconcile(file: &PathBuf, output: ReconcileOutput, rules: &RuleArgs) -> ExitCode {
    let state = match read_cluster(file) {
        Ok(state) => state,
        Err(e) => {
            eprintln!("divert-webhook: {e}");
            return ExitCode::from(2);
        }
    };
    let settings = rules.settings();
    let plan = reconcile::plan(&state, &settings, &Absence::offline(reconcile::DEFAULT_STALE_GRACE));
    let routes = http_routes::plan(&state, &settings);
    let printed = match output {
        ReconcileOutput::Diff => reconcile::diff(&plan) + &http_routes::diff(&routes),
        ReconcileOutput::Yaml => reconcile::writes_yaml(&plan) + &http_routes::writes_yaml(&routes),
    };
    let _ = std::io::stdout().lock().write_all(printed.as_bytes());
    for problem in &routes.problems {
        eprintln!("warning: {problem}");
    }
    let changes: usize = plan.iter().map(|o| o.changes.len()).sum();
    if plan.is_empty() && routes.changes.is_empty() {
        eprintln!("nothing to change");
    } else {
        if !plan.is_empty() {
            eprintln!("{changes} change(s) on {} object(s)", plan.len());
        }
        if !routes.changes.is_empty() {
            eprintln!("{} write(s) of objects divert-webhook owns (HTTPRoutes, ReferenceGrants)", routes.changes.len());
        }
    }
    ExitCode::SUCCESS
}

type OfflineRun = fn(&str, &Settings, &ClusterView) -> manifests::Report;

fn offline(file: &PathBuf, cluster: Option<&PathBuf>, rules: &RuleArgs, run: OfflineRun) -> ExitCode {
    let input = match read_input(file) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("divert-webhook: {e}");
            return ExitCode::from(2);
        }
    };
    let state = match cluster.map(read_cluster).transpose() {
        Ok(state) => state,
        Err(e) => {
            eprintln!("divert-webhook: {e}");
            return ExitCode::from(2);
        }
    };
    let view = state.as_ref().map_or(ClusterView::none(), |state| &state.view);
    let report = run(&input, &rules.settings(), view);
    let _ = std::io::stdout().lock().write_all(report.stdout.as_bytes());
    let mut err = std::io::stderr().lock();
    for line in &report.stderr {
        let _ = writeln!(err, "{line}");
    }
    ExitCode::from(report.verdict.exit_code())
}
