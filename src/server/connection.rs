//! Accepting and driving connections: each accepted socket gets its own task running hyper's
//! auto (HTTP/1.1 + h2) connection over the axum router, so timeouts and draining stay here.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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

use super::metrics::Metrics;

#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    /// From accept to the first request head (TLS handshake included).
    pub header_read_timeout: Duration,
    /// HTTP/1.1: idle time between requests, and time to send a later request head.
    pub idle_timeout: Duration,
    /// After draining began: how long in-flight work may take before connections are cut.
    pub drain_timeout: Duration,
}

/// Accepts until `draining` turns true, then closes the listener, lets every connection finish
/// its in-flight requests (idle ones close at once) and cuts what is left after the drain
/// timeout.
pub async fn accept_loop(
    listener: TcpListener,
    tls: Option<(TlsAcceptor, Arc<Metrics>)>,
    router: Router,
    limits: ConnectionLimits,
    mut draining: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    let connections_draining = draining.clone();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    connections.spawn(serve_connection(tcp, peer, tls.clone(), router.clone(), limits, connections_draining.clone()));
                }
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = until_draining(&mut draining) => break,
        }
    }
    drop(listener);
    let open = connections.len();
    let drained =
        tokio::time::timeout(limits.drain_timeout, async { while connections.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(open, cut = connections.len(), "drain timeout passed; closing the remaining connections");
        connections.shutdown().await;
    }
}

/// Completes once draining began (or the server is gone).
async fn until_draining(draining: &mut watch::Receiver<bool>) {
    let _ = draining.wait_for(|draining| *draining).await;
}

async fn serve_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    tls: Option<(TlsAcceptor, Arc<Metrics>)>,
    router: Router,
    limits: ConnectionLimits,
    draining: watch::Receiver<bool>,
) {
    let first_request_by = Instant::now() + limits.header_read_timeout;
    let _ = tcp.set_nodelay(true);
    let Some((acceptor, metrics)) = tls else {
        return drive(TokioIo::new(tcp), None, router, limits, first_request_by, draining).await;
    };
    let stream = match tokio::time::timeout_at(first_request_by, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => {
            metrics.tls_handshake_failed();
            tracing::debug!(%peer, %error, "TLS handshake failed");
            return;
        }
        Err(_) => {
            metrics.tls_handshake_failed();
            tracing::debug!(%peer, "TLS handshake not finished within the header read timeout; closing");
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
