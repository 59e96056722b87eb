//! The HTTPS listener (`http_tls = true`): accepts TCP connections on
//! `http_listen`, runs the TLS handshake (rustls, TLS 1.2 and 1.3, see
//! [`crate::tls`]) and serves the same router as plain HTTP over the
//! TLS stream with hyper-util (HTTP/1.1, or HTTP/2 by ALPN).
//!
//! Bounds: the handshake must finish within [`HANDSHAKE_TIMEOUT`], a
//! request head within [`HEADER_TIMEOUT`]; at most [`MAX_CONNECTIONS`]
//! connections at once (past it, new ones are closed). On shutdown no new
//! connection is accepted and in-flight requests finish.
//!
//! Non-goals: routing, authentication, logging (layers of the router).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use dimse_scp::rustls::ServerConfig;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tower::Service;
use tracing::{debug, warn};

/// Time for a client to complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time for a request head to arrive (also closes idle keep-alives).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 1024;
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// Serves `app` over TLS on `listener` until `shutdown` resolves, then
/// waits for in-flight requests.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Arc<ServerConfig>,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = TlsAcceptor::from(tls);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let graceful = GracefulShutdown::new();
    let mut backoff = Duration::ZERO;
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => {
                backoff = Duration::ZERO;
                a
            }
            Err(e) => {
                backoff = (backoff * 2).clamp(Duration::from_millis(10), MAX_ACCEPT_BACKOFF);
                warn!(error = %e, "HTTPS accept failed; backing off {backoff:?}");
                tokio::select! {
                    _ = &mut shutdown => break,
                    _ = tokio::time::sleep(backoff) => continue,
                }
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            debug!(%peer, "HTTPS connection over the cap closed");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    debug!(%peer, "no TLS handshake within the time-out; closed");
                    return;
                }
            };
            let service = service(app, peer);
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT);
            builder
                .http2()
                .timer(TokioTimer::new())
                .keep_alive_interval(HEADER_TIMEOUT)
                .keep_alive_timeout(HEADER_TIMEOUT);
            let conn = watcher.watch(builder.serve_connection(TokioIo::new(tls), service));
            if let Err(e) = conn.await {
                debug!(%peer, error = %e, "HTTPS connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// The router as a hyper service, with the peer address where axum's
/// `ConnectInfo` extractor finds it.
fn service(
    app: Router,
    peer: SocketAddr,
) -> impl hyper::service::Service<
    hyper::Request<Incoming>,
    Response = axum::response::Response,
    Error = std::convert::Infallible,
    Future = impl Future<Output = Result<axum::response::Response, std::convert::Infallible>> + Send,
> + Clone {
    hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let mut app = app.clone();
        let mut req = req.map(axum::body::Body::new);
        req.extensions_mut().insert(ConnectInfo(peer));
        async move { app.call(req).await }
    })
}
