//! The HTTP listener: hyper-util's connection builder (HTTP/1.1, and
//! HTTP/2 when the client speaks it) serving the axum router, with the
//! bounds a listener open to a network needs:
//!
//! - at most `Limits::max_http_connections` connections at once; past it a
//!   new connection gets a short `503 Service Unavailable` with
//!   `Retry-After` and is closed (those answers are themselves bounded in
//!   number and time);
//! - a request head must arrive within `Limits::http_header_timeout` (a
//!   client sending its headers a byte at a time is disconnected); the same
//!   time-out closes an idle keep-alive connection, and a connection that
//!   sends nothing at all;
//! - a request body that stalls for `Limits::http_body_idle_timeout` fails
//!   the request; a client that stops reading its answer for
//!   `Limits::http_send_idle_timeout` loses the connection;
//! - a handler must produce its answer's head within
//!   `Limits::http_handler_timeout` of the request's start or of its last
//!   request body byte, or the request is answered 503 and the handler is
//!   cancelled; once the head is sent, a response body whose producer
//!   (storage, a conversion) gives nothing for the same time ends with an
//!   error, which closes the connection instead of leaving the client
//!   waiting forever (a client that stops reading is the send idle
//!   time-out's case, not this one);
//! - accept errors (out of file descriptors) back off and retry instead of
//!   ending the listener;
//! - graceful shutdown: once `shutdown` resolves no connection is accepted,
//!   in-flight requests finish, idle connections close.
//!
//! [`serve_connection`] is generic over the accepted stream. With a TLS
//! configuration (`http_tls`), each accepted `TcpStream` is wrapped with
//! tokio-rustls first; the handshake must finish within the header
//! time-out, and a failed one closes that connection only. Non-goals: routing, authentication and
//! logging of requests (layers of the router).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use pacs_core::Limits;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;
use tower::Service;
use tracing::{debug, info, warn};

/// Connections being refused (503 written, then closed) at once; past it
/// a connection over the cap is closed without an answer.
const REFUSALS_AT_ONCE: usize = 64;
/// How long a refusal may take, writing and then draining the request.
const REFUSAL_TIME: Duration = Duration::from_secs(2);
/// Longest pause between accept attempts after accept errors.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// What the listener needs from the limits.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub body_idle_timeout: Duration,
    pub max_http2_streams: u32,
    pub send_idle_timeout: Duration,
    pub handler_timeout: Duration,
}

impl From<&Limits> for HttpLimits {
    fn from(l: &Limits) -> Self {
        HttpLimits {
            max_connections: l.max_http_connections.max(1),
            header_timeout: l.http_header_timeout,
            body_idle_timeout: l.http_body_idle_timeout,
            max_http2_streams: l.max_http2_streams.max(1),
            send_idle_timeout: l.http_send_idle_timeout,
            handler_timeout: l.http_handler_timeout,
        }
    }
}

/// Accepts connections on `listener` and serves `app` on them until
/// `shutdown` resolves, then waits for in-flight requests to finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    tls: Option<Arc<ServerConfig>>,
    shutdown: impl Future<Output = ()>,
) {
    let tls = tls.map(TlsAcceptor::from);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let refusals = Arc::new(Semaphore::new(REFUSALS_AT_ONCE));
    let graceful = GracefulShutdown::new();
    let mut backoff = Duration::ZERO;
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(a) => {
                backoff = Duration::ZERO;
                a
            }
            Err(e) => {
                // EMFILE, ENFILE, ENOBUFS...: the listener itself is fine;
                // wait for resources to come back instead of spinning or
                // giving up.
                backoff = (backoff * 2).clamp(Duration::from_millis(10), MAX_ACCEPT_BACKOFF);
                warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "HTTP accept failed");
                tokio::select! {
                    _ = &mut shutdown => break,
                    _ = tokio::time::sleep(backoff) => continue,
                }
            }
        };
        let _ = stream.set_nodelay(true);
        match slots.clone().try_acquire_owned() {
            Ok(slot) => match &tls {
                None => {
                    let conn = serve_connection(stream, peer, app.clone(), &limits, &graceful);
                    tokio::spawn(async move {
                        conn.await;
                        drop(slot);
                    });
                }
                Some(acceptor) => {
                    let acceptor = acceptor.clone();
                    let (app, limits, watcher) = (app.clone(), limits.clone(), graceful.watcher());
                    tokio::spawn(async move {
                        let handshake = acceptor.accept(stream);
                        match tokio::time::timeout(limits.header_timeout, handshake).await {
                            Ok(Ok(tls)) => serve_watched(tls, peer, app, &limits, watcher).await,
                            Ok(Err(e)) => debug!(%peer, error = %e, "TLS handshake failed"),
                            Err(_) => debug!(%peer, "no TLS handshake within the header time-out"),
                        }
                        drop(slot);
                    });
                }
            },
            Err(_) => match refusals.clone().try_acquire_owned() {
                Ok(permit) => {
                    tokio::spawn(async move {
                        refuse(stream).await;
                        drop(permit);
                    });
                }
                Err(_) => {
                    debug!(%peer, "HTTP connection over the cap closed unanswered");
                    drop(stream);
                }
            },
        }
    }
    drop(listener);
    debug!(
        connections = graceful.count(),
        "HTTP listener closed; draining"
    );
    graceful.shutdown().await;
}

/// Serves one accepted connection (plain TCP, or a TLS stream wrapping
/// it) until the client closes it, a time-out ends it, or shutdown drains
/// it.
pub fn serve_connection<S>(
    io: S,
    peer: SocketAddr,
    app: Router,
    limits: &HttpLimits,
    graceful: &GracefulShutdown,
) -> impl Future<Output = ()> + Send + 'static
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    serve_watched(io, peer, app, limits, graceful.watcher())
}

/// [`serve_connection`] under a watcher taken earlier (a TLS connection
/// takes it before its handshake).
fn serve_watched<S>(
    io: S,
    peer: SocketAddr,
    app: Router,
    limits: &HttpLimits,
    watcher: Watcher,
) -> impl Future<Output = ()> + Send + 'static
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let body_idle = limits.body_idle_timeout;
    let header_timeout = limits.header_timeout;
    let heard = Arc::new(AtomicBool::new(false));
    let io = Guarded {
        inner: io,
        heard: heard.clone(),
        send_idle: limits.send_idle_timeout,
        stalled: None,
    };
    let handler_timeout = limits.handler_timeout;
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let mut app = app.clone();
        let clock = HandlerClock::new();
        let mut req = req.map(|body| {
            axum::body::Body::new(Activity {
                inner: Box::pin(tower_http::timeout::TimeoutBody::new(body_idle, body)),
                clock: clock.clone(),
            })
        });
        req.extensions_mut().insert(ConnectInfo(peer));
        let (method, path) = (req.method().clone(), req.uri().path().to_owned());
        async move {
            tokio::select! {
                answer = app.call(req) => answer.map(|res| {
                    res.map(|body| axum::body::Body::new(ProducerIdle::new(body, handler_timeout)))
                }),
                () = clock.expired(handler_timeout) => {
                    // The handler is dropped (cancelled); the connection
                    // and the server go on.
                    warn!(%peer, %method, path, timeout_secs = handler_timeout.as_secs(),
                        "HTTP handler exceeded http_handler_timeout_secs: answered 503");
                    Ok(handler_timed_out())
                }
            }
        }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(header_timeout)
        .keep_alive_timeout(header_timeout)
        .max_concurrent_streams(limits.max_http2_streams);
    async move {
        let conn = watcher.watch(builder.serve_connection(TokioIo::new(io), service));
        tokio::pin!(conn);
        // hyper times out a slow request head, but not a connection that
        // sends nothing before its protocol is known.
        let silent = async {
            tokio::time::sleep(header_timeout).await;
            if heard.load(Ordering::Relaxed) {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            result = &mut conn => {
                if let Err(e) = result {
                    debug!(%peer, error = %e, "HTTP connection ended with an error");
                }
            }
            _ = silent => debug!(%peer, "HTTP connection silent past the header time-out: closed"),
        }
    }
}

/// When a request's handler started and when its body last moved: the
/// handler time-out counts from the later of the two, so a long upload is
/// not cut while it still arrives.
#[derive(Clone)]
struct HandlerClock {
    start: tokio::time::Instant,
    /// Milliseconds after `start` of the last body frame.
    last_body_ms: Arc<AtomicU64>,
}

impl HandlerClock {
    fn new() -> Self {
        HandlerClock {
            start: tokio::time::Instant::now(),
            last_body_ms: Arc::new(AtomicU64::new(0)),
        }
    }

    fn body_moved(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_body_ms.store(ms, Ordering::Relaxed);
    }

    /// Resolves once `timeout` has passed since the start or the last body
    /// frame, whichever is later.
    async fn expired(&self, timeout: Duration) {
        loop {
            let last = Duration::from_millis(self.last_body_ms.load(Ordering::Relaxed));
            let until = self.start + last + timeout;
            if tokio::time::Instant::now() >= until {
                return;
            }
            tokio::time::sleep_until(until).await;
        }
    }
}

/// A request body that tells its [`HandlerClock`] when it moves.
struct Activity<B> {
    inner: Pin<Box<B>>,
    clock: HandlerClock,
}

impl<B: http_body::Body> http_body::Body for Activity<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = self.inner.as_mut().poll_frame(cx);
        if polled.is_ready() {
            self.clock.body_moved();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A response body whose producer must move within `idle`: the clock runs
/// only while the body is polled and its producer is pending, so a client
/// that stops reading (the body is then not polled) does not trip it.
struct ProducerIdle {
    inner: axum::body::Body,
    idle: Duration,
    waiting: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl ProducerIdle {
    fn new(inner: axum::body::Body, idle: Duration) -> Self {
        ProducerIdle {
            inner,
            idle,
            waiting: None,
        }
    }
}

impl http_body::Body for ProducerIdle {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.waiting = None;
                Poll::Ready(frame)
            }
            Poll::Pending => {
                let idle = this.idle;
                let timer = this
                    .waiting
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                if timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                warn!(
                    timeout_secs = idle.as_secs(),
                    "HTTP response body stalled past http_handler_timeout_secs: connection closed"
                );
                // Ending with an error makes hyper close the connection, so
                // the client sees a truncated answer, never a complete one.
                Poll::Ready(Some(Err(axum::Error::new(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the answer's data stopped coming from storage",
                )))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The answer of a handler past `http_handler_timeout_secs` (RFC 9110
/// 15.6.4: the server cannot handle the request now).
fn handler_timed_out() -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        [(axum::http::header::RETRY_AFTER, "30")],
        "the request took longer than the server's time-out (http_handler_timeout_secs)\n",
    )
        .into_response()
}

/// A connection over the cap: a short 503 (RFC 9110 15.6.4) with
/// `Retry-After`, then the request is read and dropped briefly so that
/// closing does not reset the connection before the client reads the
/// answer.
async fn refuse(mut stream: tokio::net::TcpStream) {
    const BODY: &str = "too many connections; retry shortly\n";
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Type: text/plain\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{BODY}",
        BODY.len()
    );
    let _ = tokio::time::timeout(REFUSAL_TIME, async {
        stream.write_all(answer.as_bytes()).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<(), std::io::Error>(())
    })
    .await;
}

/// The accepted stream, watched: whether any byte has been read from it,
/// and how long writing to it has been stalled (a client that stops
/// reading its answer gets an error after `send_idle`, which ends the
/// connection).
struct Guarded<S> {
    inner: S,
    heard: Arc<AtomicBool>,
    send_idle: Duration,
    /// Running while writes are blocked; cleared by any progress.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> Guarded<S> {
    fn watch_write<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        if polled.is_ready() {
            self.stalled = None;
            return polled;
        }
        let idle = self.send_idle;
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
        if stalled.as_mut().poll(cx).is_ready() {
            info!(
                idle_secs = idle.as_secs(),
                "HTTP client stopped reading its answer: connection closed"
            );
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client stopped reading",
            )));
        }
        Poll::Pending
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.heard.store(true, Ordering::Relaxed);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.watch_write(cx, polled)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_flush(cx);
        this.watch_write(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.watch_write(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
