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
        /// The manifests to read (multi-document YAML); `-` for stdin.
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
        /// The manifests to read (multi-document YAML); `-` for stdin.
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
        /// The cluster's state: a `kubectl get namespaces,services,virtualservices,httproutes,referencegrants -A -o yaml` dump.
        #[arg(long = "cluster")]
        cluster: Option<PathBuf>,
        #[command(flatten)]
        rules: RuleArgs,
    },
    /// Make a CA and a serving certificate for <service>.<namespace>.svc (installs without
    /// cert-manager); write them as a Secret manifest or as files, and print the caBundle.
    Certs(CertsArgs),
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

#[derive(clap::Args, Debug)]
#[command(group = clap::ArgGroup::new("output").required(true).multiple(true))]
pub struct CertsArgs {
    /// The webhook's namespace (the overlay's `namespace:`).
    #[arg(long, default_value = "divert-system")]
    pub namespace: String,
    /// The webhook's Service name.
    #[arg(long, default_value = "divert-webhook")]
    pub service: String,
    /// Cluster DNS domain: the certificate is also valid for <service>.<namespace>.svc.<domain>.
    #[arg(long, default_value = DEFAULT_CLUSTER_DOMAIN, value_parser = parse_cluster_domain)]
    pub cluster_domain: String,
    /// Write a kubernetes.io/tls Secret manifest (tls.crt, tls.key, ca.crt) to this file.
    #[arg(long, group = "output")]
    pub secret: Option<PathBuf>,
    /// Name of the Secret (the Deployment mounts divert-webhook-tls).
    #[arg(long, default_value = "divert-webhook-tls")]
    pub secret_name: String,
    /// Write ca.crt, tls.crt and tls.key (PEM) into this directory.
    #[arg(long, group = "output")]
    pub out_dir: Option<PathBuf>,
    /// Validity of the serving certificate, in days.
    #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub days: u32,
    /// Validity of the CA, in days (caBundle changes only when the CA does).
    #[arg(long, default_value_t = 3650, value_parser = clap::value_parser!(u32).range(1..=36500))]
    pub ca_days: u32,
    /// Replace files that exist (by default they are kept and nothing is written).
    #[arg(long)]
    pub force: bool,
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
    /// Divert through Gateway API HTTPRoutes too: developer routes and ReferenceGrants (SPEC §11.1-§11.3). Default: on with the nginx driver, off with istio.
    #[arg(long, env = "DIVERT_WEBHOOK_GATEWAY_API", value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true")]
    pub gateway_api: Option<bool>,
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
        settings.gateway_api = self.gateway_api.unwrap_or(self.driver == Driver::Nginx);
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

/// Parses the command line. A bad value that came from an environment variable (a boolean
/// `DIVERT_WEBHOOK_LEGACY_HEADER=yes`, say) is reported naming the variable, which clap does
/// not do: it names the flag, which the user never typed.
pub fn parse() -> Cli {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(error) => {
            if let Some(message) = environment_error(&error, &args, |name| std::env::var_os(name)) {
                eprintln!("error: {message}");
                std::process::exit(2);
            }
            error.exit()
        }
    }
}

/// For a clap error about a value the flag took from its environment variable (the flag is not
/// on the command line, the variable holds the value): the message naming the variable.
pub fn environment_error(
    error: &clap::Error,
    args: &[std::ffi::OsString],
    env: impl Fn(&str) -> Option<std::ffi::OsString>,
) -> Option<String> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if !matches!(error.kind(), ErrorKind::InvalidValue | ErrorKind::ValueValidation) {
        return None;
    }
    let ContextValue::String(flag) = error.get(ContextKind::InvalidArg)? else { return None };
    let ContextValue::String(value) = error.get(ContextKind::InvalidValue)? else { return None };
    let long = flag.split_whitespace().next()?.strip_prefix("--")?;
    let on_command_line = args
        .iter()
        .any(|a| a.to_str().is_some_and(|a| a == format!("--{long}") || a.starts_with(&format!("--{long}="))));
    if on_command_line {
        return None;
    }
    let mut command = <Cli as clap::CommandFactory>::command();
    command.build();
    let arg = command.get_subcommands().flat_map(|c| c.get_arguments()).find(|a| a.get_long() == Some(long))?;
    let variable = arg.get_env()?.to_str()?;
    if env(variable)?.to_str()? != value {
        return None;
    }
    let mut expected: Vec<String> = arg.get_possible_values().iter().map(|v| v.get_name().to_string()).collect();
    if expected.is_empty() && matches!(arg.get_action(), clap::ArgAction::SetTrue) {
        expected = vec!["true".to_string(), "false".to_string()];
    }
    let expected = if expected.is_empty() { String::new() } else { format!("; use one of: {}", expected.join(", ")) };
    // A value parser's own reason (e.g. "invalid digit found in string") is the error's source.
    let reason = std::error::Error::source(error).map(|c| format!(": {c}")).unwrap_or_default();
    Some(format!(
        "invalid value {value:?} in the environment variable {variable} (of {flag}){reason}{expected}; set it right or unset it"
    ))
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
        Command::Mutate { file, cluster, rules } => offline(&file, cluster.as_ref(), &rules, manifests::mutate_file),
        Command::Check { file, cluster, rules } => offline(&file, cluster.as_ref(), &rules, manifests::check_file),
        Command::Reconcile { cluster, output, rules } => reconcile(&cluster, output, &rules),
        Command::Certs(args) => match certs(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("divert-webhook certs: {e}");
                ExitCode::from(2)
            }
        },
    }
}

/// A DNS-1123 label, as Service and namespace names are.
fn check_label(flag: &str, value: &str) -> Result<(), String> {
    let ok = !value.is_empty()
        && value.len() <= 63
        && value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!("{flag} {value:?} is not a DNS-1123 label (lowercase letters, digits and '-', at most 63)"))
    }
}

fn certs(args: &CertsArgs) -> Result<(), String> {
    check_label("--namespace", &args.namespace)?;
    check_label("--service", &args.service)?;
    let mut files: Vec<(PathBuf, String, bool)> = Vec::new();
    let issued = crate::certs::issue(
        crate::certs::dns_names(&args.service, &args.namespace, &args.cluster_domain),
        args.days,
        args.ca_days,
    )?;
    if let Some(path) = &args.secret {
        check_label("--secret-name", &args.secret_name)?;
        files.push((path.clone(), crate::certs::secret_manifest(&issued, &args.secret_name, &args.namespace), true));
    }
    if let Some(dir) = &args.out_dir {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating --out-dir {}: {e}", dir.display()))?;
        files.push((dir.join("ca.crt"), issued.ca_pem.clone(), false));
        files.push((dir.join("tls.crt"), issued.cert_pem.clone(), false));
        files.push((dir.join("tls.key"), issued.key_pem.clone(), true));
    }
    // All or nothing: a CA from one run and a certificate from another would not verify.
    if !args.force
        && let Some((path, _, _)) = files.iter().find(|(path, _, _)| path.exists())
    {
        return Err(format!("{} exists; nothing written (--force replaces it)", path.display()));
    }
    for (path, contents, secret) in &files {
        write_file(path, contents, *secret).map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    eprintln!("certificate for {} written; caBundle on stdout", issued.dns_names.join(", "));
    println!("{}", crate::certs::ca_bundle(&issued));
    Ok(())
}

/// Writes `contents`; a file holding a private key is readable by its owner only.
fn write_file(path: &std::path::Path, contents: &str, secret: bool) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = secret;
    options.open(path)?.write_all(contents.as_bytes())
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

type OfflineRun = fn(&str, &str, &Settings, &ClusterView) -> manifests::Report;

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
    let name = if file.as_os_str() == "-" { "<stdin>".to_string() } else { file.display().to_string() };
    let report = run(&name, &input, &rules.settings(), view);
    let _ = std::io::stdout().lock().write_all(report.stdout.as_bytes());
    let mut err = std::io::stderr().lock();
    for line in &report.stderr {
        let _ = writeln!(err, "{line}");
    }
    ExitCode::from(report.verdict.exit_code())
}
