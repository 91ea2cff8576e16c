//! `divert-webhook serve`: the HTTPS admission server and the plain-HTTP metrics port
//! (SPEC §8, §9; operator docs: docs/operating.md).
//!
//! [`Server::bind`] binds both ports and loads the certificate; [`Server::run`] serves until the
//! given shutdown future completes, then drains. [`serve`] is bind + run with SIGTERM/SIGINT.
//! Tests run the same [`Server`] in-process on port 0.

mod connection;
mod duration;
mod http;
pub mod log_writer;
mod metrics;
mod process;
mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use duration::parse_duration;
pub use metrics::{Format, Listener, Metrics};

use crate::cluster::ClusterSnapshot;
use crate::cluster::access::{self, Access};
use crate::cluster::caches::{self, CacheOptions, CacheStatus, Caches};
use crate::cluster::reconciler::ReconcilerConfig;
use crate::settings::Settings;
use connection::ConnectionLimits;

pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// Connections the metrics port serves at once (scrapes and probes need a few); more wait in
/// its backlog. Bounded so that idle connections there cannot take the pod's memory either.
pub const METRICS_MAX_CONNECTIONS: usize = 64;

/// Largest AdmissionReview body accepted (SPEC §8); larger bodies get 413.
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Flags of `serve` only; the rule flags are shared with the offline commands (see `cli`).
#[derive(clap::Args, Clone, Debug)]
pub struct ServeArgs {
    /// Address of the HTTPS admission endpoints (/mutate, /validate).
    #[arg(long, env = "DIVERT_WEBHOOK_ADDR", default_value = "0.0.0.0:8443")]
    pub addr: SocketAddr,
    /// Address of the plain-HTTP port serving /metrics, /healthz and /readyz.
    #[arg(long, env = "DIVERT_WEBHOOK_METRICS_ADDR", default_value = "0.0.0.0:9090")]
    pub metrics_addr: SocketAddr,
    /// Serving certificate (PEM, leaf first); re-read when it changes on disk.
    #[arg(long, env = "DIVERT_WEBHOOK_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// Private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1); re-read with it.
    #[arg(long, env = "DIVERT_WEBHOOK_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Make a CA and a certificate for localhost and 127.0.0.1 at start instead of --tls-cert/--tls-key.
    #[arg(long, env = "DIVERT_WEBHOOK_SELF_SIGNED")]
    pub self_signed: bool,
    /// With --self-signed: write the CA certificate (PEM) a client needs to verify the server here.
    #[arg(long, env = "DIVERT_WEBHOOK_WRITE_CA")]
    pub write_ca: Option<PathBuf>,
    /// Require client certificates signed by a CA in this PEM file.
    #[arg(long, env = "DIVERT_WEBHOOK_CLIENT_CA")]
    pub client_ca: Option<PathBuf>,
    /// How long to keep serving after SIGTERM while /readyz fails (e.g. 5s, 500ms, 5).
    #[arg(long, env = "DIVERT_WEBHOOK_SHUTDOWN_DELAY", default_value = "5s", value_parser = parse_duration)]
    pub shutdown_delay: Duration,
    /// Upper bound for finishing in-flight requests once the listener closed; then connections are cut.
    #[arg(long, env = "DIVERT_WEBHOOK_DRAIN_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// A new connection must finish the TLS handshake and send its first request head within this.
    #[arg(long, env = "DIVERT_WEBHOOK_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub header_read_timeout: Duration,
    /// An HTTP/1.1 keep-alive connection idle this long (or this slow sending a request head) is closed.
    #[arg(long, env = "DIVERT_WEBHOOK_IDLE_TIMEOUT", default_value = "120s", value_parser = parse_duration)]
    pub idle_timeout: Duration,
    /// Deadline for a review when the request has no ?timeout=, and the cap on a larger one.
    #[arg(long, env = "DIVERT_WEBHOOK_REQUEST_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub request_timeout: Duration,
    /// How often --tls-cert and --tls-key are checked for changes.
    #[arg(long, env = "DIVERT_WEBHOOK_CERT_RELOAD_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub cert_reload_interval: Duration,
    /// Most connections the HTTPS port serves at once; further ones wait in the listen backlog
    /// (1024) until one closes. An idle connection holds about 13 KiB.
    #[arg(long, env = "DIVERT_WEBHOOK_MAX_CONNECTIONS", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// Log line format on stderr.
    #[arg(long, env = "DIVERT_WEBHOOK_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(flatten)]
    pub reconciler: crate::cluster::reconciler::ReconcilerArgs,
    /// Do not use the Kubernetes API (no watch caches): answer from the admitted object alone, as SPEC §1–§9.
    #[arg(long, env = "DIVERT_WEBHOOK_NO_CLUSTER")]
    pub no_cluster: bool,
}

/// A bound, ready-to-run server. Nothing is served until [`Server::run`].
pub struct Server {
    args: ServeArgs,
    https: TcpListener,
    metrics_listener: TcpListener,
    https_addr: SocketAddr,
    metrics_addr: SocketAddr,
    tls: tls::Tls,
    settings: Arc<Settings>,
    metrics: Arc<Metrics>,
    /// Cluster mode: the client the watch caches use. None: no cluster, every answer as SPEC §1–§9.
    cluster: Option<kube::Client>,
    cache_options: CacheOptions,
    /// Cluster mode: how the reconciler runs; None with `--no-reconcile` (or no cluster).
    reconciler: Option<ReconcilerConfig>,
}

impl Server {
    /// Loads (or makes) the certificate, then binds the HTTPS and metrics ports.
    pub async fn bind(args: ServeArgs, settings: Settings) -> Result<Server, Error> {
        let metrics = Arc::new(Metrics::new());
        let tls = tls::Tls::from_args(&args, &metrics)?;
        let https = connection::bind(args.addr).map_err(|e| format!("binding --addr {}: {e}", args.addr))?;
        let metrics_listener = connection::bind(args.metrics_addr)
            .map_err(|e| format!("binding --metrics-addr {}: {e}", args.metrics_addr))?;
        Ok(Server {
            https_addr: https.local_addr()?,
            metrics_addr: metrics_listener.local_addr()?,
            https,
            metrics_listener,
            tls,
            settings: Arc::new(settings),
            metrics,
            args,
            cluster: None,
            cache_options: CacheOptions::default(),
            reconciler: None,
        })
    }

    /// Runs in cluster mode with `client`: the watch caches start with [`Server::run`], `/readyz`
    /// waits for them, and the reviews read the cluster view they publish (SPEC §10).
    pub fn with_cluster(mut self, client: kube::Client, cache_options: CacheOptions) -> Server {
        self.cluster = Some(client);
        self.cache_options = cache_options;
        self
    }

    /// With a cluster: also reconcile (SPEC §10.2-§10.7) as `config` says, from the caches'
    /// snapshots, while this replica holds the Lease (or always, without leader election).
    pub fn with_reconciler(mut self, config: ReconcilerConfig) -> Server {
        self.reconciler = Some(config);
        self
    }

    /// The bound HTTPS address (the real port when --addr asked for port 0).
    pub fn https_addr(&self) -> SocketAddr {
        self.https_addr
    }

    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_addr
    }

    /// Serves until `shutdown` completes, then: /readyz fails, serving goes on for the shutdown
    /// delay, the listener closes, in-flight requests finish and idle connections close (bounded
    /// by the drain timeout). Returns once everything is closed.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        self.run_until(shutdown, std::future::pending()).await
    }

    /// [`Server::run`], where `hurry` completing during the shutdown delay ends the delay at
    /// once (a second Ctrl-C or SIGTERM); in-flight requests still finish.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()>,
        hurry: impl Future<Output = ()>,
    ) -> Result<(), Error> {
        let Server {
            args,
            https,
            metrics_listener,
            https_addr,
            metrics_addr,
            tls,
            settings,
            metrics,
            cluster,
            cache_options,
            reconciler,
        } = self;
        let ready = Arc::new(AtomicBool::new(true));
        // What the reviews read of the cluster: swapped whole when the caches publish, read
        // once per review without a lock. Empty (no cluster view) until then.
        let view = Arc::new(ArcSwapOption::<ClusterSnapshot>::empty());
        let cluster_client = cluster.clone();
        let caches = cluster.map(|client| caches::start(client, metrics.caches(), cache_options, settings.gateway_api));
        // The reconciler gets each snapshot only once the reviews read it: its writes come back
        // through admission, which must not answer them from an older view than the one they were
        // planned from (a header annotation released with the label would leave the header in
        // place, read from a view where the label is still there).
        let (reviewed_sender, reviewed_snapshots) = watch::channel(None);
        let view_feed = caches.as_ref().map(|caches| {
            let mut snapshots = caches.snapshots();
            let view = view.clone();
            tokio::spawn(async move {
                while snapshots.changed().await.is_ok() {
                    let snapshot = snapshots.borrow_and_update().clone();
                    view.store(snapshot.clone());
                    reviewed_sender.send_replace(snapshot);
                }
            })
        });
        // The reconciler: plans from the same snapshots, writes while holding the Lease, and
        // stops writing (and frees the Lease) as soon as shutdown begins.
        let (reconciler_stop, reconciler_stopped) = tokio::sync::oneshot::channel::<()>();
        let reconciler_task = match (&caches, &cluster_client, reconciler) {
            (Some(_), Some(client), Some(config)) => Some(tokio::spawn(crate::cluster::reconciler::run(
                client.clone(),
                reviewed_snapshots,
                settings.clone(),
                config,
                metrics.reconciler.clone(),
                async move {
                    let _ = reconciler_stopped.await;
                },
            ))),
            _ => None,
        };
        let readiness = Readiness { serving: ready.clone(), caches: caches.as_ref().map(Caches::status) };
        let limits = ConnectionLimits {
            header_read_timeout: args.header_read_timeout,
            idle_timeout: args.idle_timeout,
            drain_timeout: args.drain_timeout,
        };

        let reloader = tls.watch_files(args.cert_reload_interval, metrics.clone());
        let admission = http::admission_router(settings, metrics.clone(), view, args.request_timeout);
        let (https_drain, https_draining) = watch::channel(false);
        let https_port = connection::Port {
            listener: https,
            kind: metrics::Listener::Admission,
            tls: Some(tls.acceptor()),
            router: admission,
            max_connections: args.max_connections as usize,
        };
        let https_task = tokio::spawn(connection::accept_loop(https_port, metrics.clone(), limits, https_draining));
        let (metrics_drain, metrics_draining) = watch::channel(false);
        let metrics_port = connection::Port {
            listener: metrics_listener,
            kind: metrics::Listener::Metrics,
            tls: None,
            router: http::metrics_router(metrics.clone(), readiness),
            max_connections: METRICS_MAX_CONNECTIONS,
        };
        let metrics_task =
            tokio::spawn(connection::accept_loop(metrics_port, metrics.clone(), limits, metrics_draining));
        tracing::info!(%https_addr, %metrics_addr, "serving");

        shutdown.await;
        ready.store(false, Ordering::SeqCst);
        let _ = reconciler_stop.send(());
        if let Some(task) = reconciler_task {
            // Bounded: it frees the Lease with one request, which the client times out.
            if tokio::time::timeout(Duration::from_secs(5), task).await.is_err() {
                tracing::warn!("the reconciler did not stop within 5s; going on with the shutdown");
            }
        }
        tracing::info!(
            delay = ?args.shutdown_delay,
            "shutdown began: /readyz fails, still serving for the shutdown delay (a second signal ends it)"
        );
        tokio::select! {
            _ = tokio::time::sleep(args.shutdown_delay) => {}
            _ = hurry => tracing::info!("second signal: shutdown delay cut short"),
        }
        tracing::info!(drain_timeout = ?args.drain_timeout, "closing the listener, finishing in-flight requests");
        let _ = https_drain.send(true);
        let https_result = https_task.await;
        let _ = metrics_drain.send(true);
        let metrics_result = metrics_task.await;
        if let Some(reloader) = reloader {
            reloader.abort();
        }
        if let Some(view_feed) = view_feed {
            view_feed.abort();
        }
        drop(caches);
        https_result?;
        metrics_result?;
        tracing::info!("shutdown complete");
        Ok(())
    }
}

/// Logs to stderr in the chosen format; `RUST_LOG` refines the level (default `info`).
/// Keeps an already installed subscriber (tests install none or their own).
///
/// Lines are written to stderr in batches by a thread of their own ([`log_writer`]), so a review
/// pays for formatting its line, not for a write system call or a wake-up. Nothing is dropped.
/// The returned guard writes out what is waiting when it is dropped (at exit).
pub fn init_logging(format: LogFormat) -> Result<log_writer::FlushGuard, Error> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let (writer, guard) = log_writer::batched(std::io::stderr())
        .map_err(|error| format!("starting the log's writer thread failed: {error}"))?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer).with_ansi(ansi);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
    Ok(guard)
}

/// `divert-webhook serve`: decide the mode (cluster or not, logged with why), bind, then run
/// until SIGTERM or SIGINT; a second one cuts the shutdown delay short.
pub async fn serve(args: ServeArgs, settings: Settings) -> Result<(), Error> {
    let _log_writer = init_logging(args.log_format)?;
    let access = access::connect(args.no_cluster).await?;
    let reconciler = args.reconciler.clone();
    let settings_namespace = settings.own_namespace.clone();
    let gateway_api = settings.gateway_api;
    let server = Server::bind(args, settings).await?;
    let server = match access {
        Access::Cluster { client, source, api } => {
            tracing::info!(
                mode = "cluster",
                %source,
                %api,
                gateway_api,
                "cluster mode: watching the cluster (SPEC §10{})",
                if gateway_api { ", and HTTPRoutes: §11" } else { "" }
            );
            match reconciler.config(settings_namespace.as_deref())? {
                Some(config) => server.with_cluster(client, CacheOptions::default()).with_reconciler(config),
                None => {
                    tracing::info!("--no-reconcile: admission reads the cluster, nothing is written to it");
                    server.with_cluster(client, CacheOptions::default())
                }
            }
        }
        Access::NoCluster { reason } => {
            tracing::info!(mode = "no-cluster", %reason, "no-cluster mode: answers from the admitted object alone");
            server
        }
    };
    let (signals, mut received) = watch::channel(0u32);
    let listener = tokio::spawn(count_signals(signals));
    let mut second = received.clone();
    let result = server
        .run_until(
            async move {
                let _ = received.wait_for(|n| *n >= 1).await;
            },
            async move {
                let _ = second.wait_for(|n| *n >= 2).await;
            },
        )
        .await;
    listener.abort();
    result
}

/// What `/readyz` answers from: not while shutting down, and in cluster mode not before every
/// watch cache has listed once.
#[derive(Clone)]
pub(crate) struct Readiness {
    serving: Arc<AtomicBool>,
    caches: Option<CacheStatus>,
}

impl Readiness {
    /// None when ready; else why not.
    pub(crate) fn not_ready(&self) -> Option<String> {
        if !self.serving.load(Ordering::SeqCst) {
            return Some("shutting down".into());
        }
        let waiting = self.caches.as_ref()?.waiting_for()?;
        Some(format!("waiting for the cluster caches to list: {waiting}"))
    }
}

/// Counts SIGTERM (the kubelet stopping the pod) and SIGINT (Ctrl-C) into `count`.
async fn count_signals(count: watch::Sender<u32>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
            (Ok(mut term), Ok(mut int)) => loop {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM received"),
                    _ = int.recv() => tracing::info!("SIGINT received"),
                }
                count.send_modify(|n| *n += 1);
            },
            _ => tracing::error!("cannot install signal handlers; only Ctrl-C will stop the server"),
        }
    }
    loop {
        let _ = tokio::signal::ctrl_c().await;
        count.send_modify(|n| *n += 1);
    }
}
