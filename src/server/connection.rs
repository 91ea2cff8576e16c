//! Accepting and driving connections: each accepted socket gets its own task running hyper's
//! auto (HTTP/1.1 + h2) connection over the axum router, so timeouts and draining stay here.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

use super::metrics::{Listener, Metrics};

#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    /// From accept to the first request head (TLS handshake included).
    pub header_read_timeout: Duration,
    /// HTTP/1.1: idle time between requests, and time to send a later request head.
    pub idle_timeout: Duration,
    /// After draining began: how long in-flight work may take before connections are cut.
    pub drain_timeout: Duration,
}

/// Listen backlog of both ports: connections the kernel completes before they are accepted.
/// Linux's default for tokio (128) drops connects under a burst (the apiserver opens many at
/// once after a restart); they also wait here while --max-connections are open.
pub const LISTEN_BACKLOG: u32 = 1024;

/// Binds `address` with [`LISTEN_BACKLOG`] (and SO_REUSEADDR, as tokio's `bind` sets).
pub fn bind(address: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if address.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(LISTEN_BACKLOG)
}

/// One port's listener and what its connections get.
pub struct Port {
    pub listener: TcpListener,
    pub kind: Listener,
    pub tls: Option<TlsAcceptor>,
    pub router: Router,
    /// Connections served at once; further ones wait in the listen backlog (not accepted) until
    /// one closes.
    pub max_connections: usize,
}

/// Accepts until `draining` turns true, then closes the listener, lets every connection finish
/// its in-flight requests (idle ones close at once) and cuts what is left after the drain
/// timeout. At most `max_connections` are open at once: at the cap nothing is accepted, and new
/// connections wait in the kernel's backlog (a client sees a slow connect, not a reset).
pub async fn accept_loop(
    port: Port,
    metrics: Arc<Metrics>,
    limits: ConnectionLimits,
    mut draining: watch::Receiver<bool>,
) {
    let Port { listener, kind, tls, router, max_connections } = port;
    metrics.set_connection_limit(kind, max_connections);
    let open = metrics.connections(kind);
    let handshakes = Arc::new(HandshakeLog::new(HANDSHAKE_LOG_INTERVAL));
    let mut connections = JoinSet::new();
    let connections_draining = draining.clone();
    loop {
        tokio::select! {
            accepted = listener.accept(), if connections.len() < max_connections => match accepted {
                Ok((tcp, peer)) => {
                    let tls = tls.clone().map(|acceptor| (acceptor, metrics.clone(), handshakes.clone()));
                    connections.spawn(serve_connection(tcp, peer, tls, router.clone(), limits, connections_draining.clone()));
                    open.set(connections.len() as i64);
                }
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {
                open.set(connections.len() as i64);
            }
            _ = until_draining(&mut draining) => break,
        }
    }
    drop(listener);
    let left = connections.len();
    let drained = tokio::time::timeout(limits.drain_timeout, async {
        while connections.join_next().await.is_some() {
            open.set(connections.len() as i64);
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(open = left, cut = connections.len(), "drain timeout passed; closing the remaining connections");
        connections.shutdown().await;
    }
    open.set(0);
}

/// Each class of handshake failure is logged at most once per this, with the count of those
/// not logged since: a wrong caBundle fails every call of the apiserver, which must show in the
/// log without flooding it.
pub const HANDSHAKE_LOG_INTERVAL: Duration = Duration::from_secs(30);

/// Why a TLS handshake failed, as far as the server can tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// The client refused the serving certificate (a fatal alert about it): the commonest
    /// install mistake, a caBundle that is not the serving certificate's CA.
    ClientRejectedCertificate,
    /// The client's certificate was missing or not signed by --client-ca.
    ClientCertificate,
    /// Not a TLS client (plain HTTP to the HTTPS port).
    NotTls,
    /// No handshake within --header-read-timeout.
    Timeout,
    /// Connected and closed before finishing (TCP probes, port scans): logged at debug only.
    ClosedEarly,
    Other,
}

impl HandshakeFailure {
    const ALL: [HandshakeFailure; 6] = [
        HandshakeFailure::ClientRejectedCertificate,
        HandshakeFailure::ClientCertificate,
        HandshakeFailure::NotTls,
        HandshakeFailure::Timeout,
        HandshakeFailure::ClosedEarly,
        HandshakeFailure::Other,
    ];

    pub fn of(error: &std::io::Error) -> HandshakeFailure {
        use rustls::AlertDescription as Alert;
        if error.kind() == std::io::ErrorKind::UnexpectedEof {
            return HandshakeFailure::ClosedEarly;
        }
        match error.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
            Some(rustls::Error::AlertReceived(
                Alert::BadCertificate
                | Alert::UnknownCA
                | Alert::CertificateUnknown
                | Alert::CertificateExpired
                | Alert::UnsupportedCertificate
                | Alert::CertificateRevoked
                | Alert::AccessDenied
                | Alert::DecryptError,
            )) => HandshakeFailure::ClientRejectedCertificate,
            Some(rustls::Error::NoCertificatesPresented | rustls::Error::InvalidCertificate(_)) => {
                HandshakeFailure::ClientCertificate
            }
            Some(rustls::Error::InvalidMessage(_)) => HandshakeFailure::NotTls,
            _ => HandshakeFailure::Other,
        }
    }

    /// The `class` label of `divert_webhook_tls_handshake_failures_by_class_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            HandshakeFailure::ClientRejectedCertificate => "client-rejected-certificate",
            HandshakeFailure::ClientCertificate => "client-certificate",
            HandshakeFailure::NotTls => "not-tls",
            HandshakeFailure::Timeout => "timeout",
            HandshakeFailure::ClosedEarly => "closed-early",
            HandshakeFailure::Other => "other",
        }
    }

    /// What it means and what to do, for the log line.
    fn hint(self) -> &'static str {
        match self {
            HandshakeFailure::ClientRejectedCertificate => {
                "the client refused the serving certificate: check that the webhook configurations' caBundle is the CA that signed it (docs/operating.md, \"Troubleshooting\")"
            }
            HandshakeFailure::ClientCertificate => {
                "the client's certificate is missing or not signed by a CA of --client-ca"
            }
            HandshakeFailure::NotTls => "the client does not speak TLS (plain HTTP to the HTTPS port?)",
            HandshakeFailure::Timeout => "no TLS handshake within --header-read-timeout",
            HandshakeFailure::ClosedEarly => "the client closed the connection during the handshake",
            HandshakeFailure::Other => "TLS handshake failed",
        }
    }
}

/// Rate limit of the handshake failure log: per class, the time of the last line and the
/// failures not logged since. Taken on failures only, never on a served connection.
pub struct HandshakeLog {
    interval: Duration,
    classes: Mutex<[(Option<Instant>, u64); HandshakeFailure::ALL.len()]>,
}

impl HandshakeLog {
    pub fn new(interval: Duration) -> HandshakeLog {
        HandshakeLog { interval, classes: Mutex::new([(None, 0); HandshakeFailure::ALL.len()]) }
    }

    /// Whether a failure of `class` at `now` is logged, and then how many were not logged
    /// since the previous line.
    pub fn admit(&self, class: HandshakeFailure, now: Instant) -> Option<u64> {
        let index = HandshakeFailure::ALL.iter().position(|c| *c == class).expect("every class is listed");
        let mut classes = self.classes.lock().unwrap_or_else(PoisonError::into_inner);
        let (last, suppressed) = &mut classes[index];
        if last.is_some_and(|last| now.duration_since(last) < self.interval) {
            *suppressed += 1;
            return None;
        }
        *last = Some(now);
        Some(std::mem::take(suppressed))
    }

    fn failed(&self, metrics: &Metrics, class: HandshakeFailure, peer: SocketAddr, error: Option<&std::io::Error>) {
        metrics.tls_handshake_failed(class.as_str());
        let error = error.map_or_else(String::new, ToString::to_string);
        if class == HandshakeFailure::ClosedEarly {
            tracing::debug!(%peer, %error, class = class.as_str(), "{}", class.hint());
            return;
        }
        if let Some(suppressed) = self.admit(class, Instant::now()) {
            tracing::warn!(
                %peer,
                %error,
                class = class.as_str(),
                suppressed,
                "TLS handshake failed: {}; at most one line per {:?} for this class, suppressed counts those since the last",
                class.hint(),
                self.interval
            );
        }
    }
}

/// Completes once draining began (or the server is gone).
async fn until_draining(draining: &mut watch::Receiver<bool>) {
    let _ = draining.wait_for(|draining| *draining).await;
}

async fn serve_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    tls: Option<(TlsAcceptor, Arc<Metrics>, Arc<HandshakeLog>)>,
    router: Router,
    limits: ConnectionLimits,
    draining: watch::Receiver<bool>,
) {
    let first_request_by = Instant::now() + limits.header_read_timeout;
    let _ = tcp.set_nodelay(true);
    let Some((acceptor, metrics, handshakes)) = tls else {
        return drive(TokioIo::new(tcp), None, router, limits, first_request_by, draining).await;
    };
    let stream = match tokio::time::timeout_at(first_request_by, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => {
            handshakes.failed(&metrics, HandshakeFailure::of(&error), peer, Some(&error));
            return;
        }
        Err(_) => {
            handshakes.failed(&metrics, HandshakeFailure::Timeout, peer, None);
            return;
        }
    };
    let alpn = stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    drive(TokioIo::new(stream), alpn.as_deref(), router, limits, first_request_by, draining).await
}

/// Serves HTTP on one connection until the client closes it, it times out, or draining ends it.
async fn drive<I>(
    io: TokioIo<I>,
    alpn: Option<&[u8]>,
    router: Router,
    limits: ConnectionLimits,
    first_request_by: Instant,
    mut draining: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let requested = Arc::new(AtomicBool::new(false));
    let service = {
        let requested = requested.clone();
        hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            requested.store(true, Ordering::Relaxed);
            router.clone().oneshot(request)
        })
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // hyper's header read timeout also runs while an HTTP/1.1 connection waits for its next
    // request, so it is the idle timeout; the first request has the shorter deadline below.
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.idle_timeout).keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20));
    // ALPN already chose the protocol: skip hyper's sniffing of the first bytes.
    let builder = match alpn {
        Some(b"h2") => builder.http2_only(),
        Some(b"http/1.1") => builder.http1_only(),
        _ => builder,
    };
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);
    let first_request_deadline = tokio::time::sleep_until(first_request_by);
    tokio::pin!(first_request_deadline);
    let mut waiting_for_first_request = true;
    let mut shutting_down = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%error, "connection ended with an error");
                }
                return;
            }
            _ = &mut first_request_deadline, if waiting_for_first_request => {
                waiting_for_first_request = false;
                if !requested.load(Ordering::Relaxed) {
                    tracing::debug!("no request head within the header read timeout; closing");
                    return;
                }
            }
            _ = until_draining(&mut draining), if !shutting_down => {
                // In-flight requests finish; an idle HTTP/1.1 connection closes now, h2 gets GOAWAY.
                shutting_down = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_class_is_logged_once_per_interval_with_the_suppressed_count() {
        let log = HandshakeLog::new(Duration::from_secs(30));
        let start = Instant::now();
        let rejected = HandshakeFailure::ClientRejectedCertificate;
        assert_eq!(log.admit(rejected, start), Some(0));
        assert_eq!(log.admit(rejected, start + Duration::from_secs(1)), None);
        assert_eq!(log.admit(rejected, start + Duration::from_secs(29)), None);
        // Another class has its own budget.
        assert_eq!(log.admit(HandshakeFailure::NotTls, start + Duration::from_secs(2)), Some(0));
        assert_eq!(log.admit(rejected, start + Duration::from_secs(30)), Some(2));
        assert_eq!(log.admit(rejected, start + Duration::from_secs(61)), Some(0));
    }
}
