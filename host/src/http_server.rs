//! The one HTTP/1.1 server loop, used by `payhost serve` and the test
//! harness alike, so what the tests exercise is what runs.
//!
//! It bounds what a client can hold on to:
//! - the request head must arrive within `header_read_timeout` once the
//!   server waits for it (hyper's timer; this also bounds how long a
//!   keep-alive connection waits for its next request);
//! - the request body must arrive within `body_read_timeout` of its head
//!   (a whole-body deadline, not per chunk, so dripping bytes does not
//!   extend it); a handler that reads past it gets [`BodyTimeout`];
//! - a connection with no request in progress that receives nothing for
//!   `idle_timeout` is closed;
//! - at most `max_connections` are served at once; beyond that, new
//!   connections wait in the listen backlog (unanswered, not refused) until
//!   one closes, which the timeouts above guarantee happens.
//!
//! Shutdown stops accepting, lets every connection finish its in-flight
//! request (idle ones close at once) and returns when all are gone.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;
use tower::ServiceExt;

/// Limits of the HTTP server loop. Every duration must be non-zero and
/// `max_connections` at least 1 (the config validates this).
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// Longest wait for a complete request head.
    pub header_read_timeout: Duration,
    /// Longest time from a request's head to the end of its body.
    pub body_read_timeout: Duration,
    /// Longest silence of a connection with no request in progress.
    pub idle_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(5),
            max_connections: 1024,
        }
    }
}

/// hyper's read buffer, which bounds a request head. The API's own limits on
/// the URI and the headers (see `api::edge`) sit well below it, so a client
/// over them gets a JSON 414/431 rather than hyper's empty 431.
pub const MAX_HEAD_BUFFER: usize = 64 * 1024;
/// Headers hyper parses per request; the API refuses more than
/// `api::edge::MAX_HEADERS` with a JSON 431, below this.
pub const MAX_PARSED_HEADERS: usize = 256;

/// Serve `router` on `listener` until `shutdown` resolves, then drain.
pub async fn serve_http(
    listener: TcpListener,
    router: Router,
    options: HttpOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let max = options.max_connections.max(1);
    let slots = Arc::new(Semaphore::new(max));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut warned_full = false;
    loop {
        // Take a slot before accepting: beyond the cap, connections stay in
        // the kernel's backlog instead of costing a task and a buffer.
        if slots.available_permits() == 0 && !warned_full {
            tracing::warn!(
                max_connections = max,
                "connection cap reached; new connections wait"
            );
            warned_full = true;
        }
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, _peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    // Out of file descriptors and the like: back off
                    // briefly instead of spinning on the error.
                    tracing::warn!("accept failed: {e}");
                    drop(permit);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        if slots.available_permits() > 0 {
            warned_full = false;
        }
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let options = options.clone();
        let stop = stop_rx.clone();
        tokio::spawn(async move {
            serve_connection(stream, router, options, stop).await;
            drop(permit);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // Every connection holds a slot until it is done.
    let _ = slots.acquire_many(max as u32).await;
    Ok(())
}

/// What the idle watchdog of one connection needs to know.
struct Activity {
    origin: Instant,
    /// Milliseconds since `origin` of the last byte read or response finished.
    last_ms: AtomicU64,
    /// Requests whose response has not been fully sent.
    in_flight: AtomicUsize,
}

impl Activity {
    fn touch(&self) {
        let ms = self.origin.elapsed().as_millis() as u64;
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.origin + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    router: Router,
    options: HttpOptions,
    mut stop: watch::Receiver<bool>,
) {
    let activity = Arc::new(Activity {
        origin: Instant::now(),
        last_ms: AtomicU64::new(0),
        in_flight: AtomicUsize::new(0),
    });
    let io = TokioIo::new(ActivityIo {
        inner: stream,
        activity: activity.clone(),
    });
    let service = {
        let activity = activity.clone();
        let body_timeout = options.body_read_timeout;
        hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let router = router.clone();
            let guard = InFlight::enter(activity.clone());
            async move {
                let request = request.map(|body| Body::new(DeadlineBody::new(body, body_timeout)));
                let response = match router.oneshot(request).await {
                    Ok(r) => r,
                    Err(never) => match never {},
                };
                // The guard lives until the response body is sent (or
                // dropped), so the watchdog never closes mid-response.
                Ok::<_, Infallible>(response.map(|body| Body::new(Guarded { body, guard })))
            }
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout)
        .max_buf_size(MAX_HEAD_BUFFER)
        .max_headers(MAX_PARSED_HEADERS);
    let conn = builder.serve_connection(io, service);
    let mut conn = std::pin::pin!(conn);
    let mut stopping = *stop.borrow();
    if stopping {
        conn.as_mut().graceful_shutdown();
    }
    loop {
        // While a request is in flight the connection is not idle: look
        // again one idle period later (its end restarts the idle clock), so
        // a long request never makes this loop spin on a past deadline.
        let deadline = if activity.in_flight.load(Ordering::SeqCst) > 0 {
            Instant::now() + options.idle_timeout
        } else {
            activity.last() + options.idle_timeout
        };
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!("connection ended: {e}");
                }
                return;
            }
            () = tokio::time::sleep_until(deadline) => {
                let idle = activity.in_flight.load(Ordering::SeqCst) == 0
                    && activity.last() + options.idle_timeout <= Instant::now();
                if idle {
                    // Nothing in progress: dropping the connection loses
                    // no response.
                    tracing::debug!("closing idle connection");
                    return;
                }
            }
            changed = stop.changed(), if !stopping => {
                stopping = true;
                if changed.is_ok() {
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// Counts a request as in flight until dropped (with its response body).
struct InFlight(Arc<Activity>);

impl InFlight {
    fn enter(activity: Arc<Activity>) -> InFlight {
        activity.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A response body that keeps its request counted as in flight.
struct Guarded {
    body: Body,
    #[allow(dead_code)] // held for its Drop
    guard: InFlight,
}

impl HttpBody for Guarded {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The request body did not arrive within the server's body-read timeout.
/// The API answers it 408 `body_timeout`.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0:?}")]
pub struct BodyTimeout(pub Duration);

/// A request body with a deadline for the whole of it.
struct DeadlineBody {
    inner: Incoming,
    limit: Duration,
    /// `None` for a body that is already complete (no timer to keep).
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl DeadlineBody {
    fn new(inner: Incoming, limit: Duration) -> DeadlineBody {
        let sleep = (!inner.is_end_stream()).then(|| Box::pin(tokio::time::sleep(limit)));
        DeadlineBody {
            inner,
            limit,
            sleep,
        }
    }
}

impl HttpBody for DeadlineBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(frame.map(|f| f.map_err(Into::into))),
            Poll::Pending => match this.sleep.as_mut().map(|s| s.as_mut().poll(cx)) {
                Some(Poll::Ready(())) => Poll::Ready(Some(Err(Box::new(BodyTimeout(this.limit))))),
                _ => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A socket that records when it last received bytes.
struct ActivityIo {
    inner: tokio::net::TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for ActivityIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        result
    }
}

impl AsyncWrite for ActivityIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Whether `error` (or one of its sources) is a [`BodyTimeout`].
pub fn is_body_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if e.is::<BodyTimeout>() {
            return true;
        }
        current = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::{Notify, oneshot};

    use super::*;

    const BOUND: Duration = Duration::from_secs(10);

    async fn eof(stream: &mut tokio::net::TcpStream) -> Vec<u8> {
        let mut received = Vec::new();
        let mut buf = [0u8; 1024];
        let closed = tokio::time::timeout(BOUND, async {
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => received.extend_from_slice(&buf[..n]),
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "still open");
        received
    }

    /// A request in flight longer than the idle timeout is not cut off:
    /// the connection is idle only once its response is sent.
    #[tokio::test]
    async fn a_long_request_outlives_the_idle_timeout() {
        let release = Arc::new(Notify::new());
        let router = {
            let release = release.clone();
            Router::new().route(
                "/slow",
                get(move || async move {
                    release.notified().await;
                    "done"
                }),
            )
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let options = HttpOptions {
            idle_timeout: Duration::from_secs(1),
            ..HttpOptions::default()
        };
        let server = tokio::spawn(serve_http(
            listener,
            router,
            options,
            std::future::pending(),
        ));
        let mut busy = tokio::net::TcpStream::connect(addr).await.expect("connect");
        busy.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        // Two idle periods pass with the request in flight: the connection
        // must stay open (a read that ends would mean it was closed).
        let mut buf = [0u8; 64];
        let early = tokio::time::timeout(Duration::from_millis(2500), busy.read(&mut buf)).await;
        assert!(early.is_err(), "closed or answered early: {early:?}");
        release.notify_one();
        let answer = String::from_utf8(eof(&mut busy).await).expect("utf-8");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("done"), "{answer}");
        server.abort();
    }

    /// Shutdown closes an idle connection at once, lets an in-flight
    /// request finish with its response, then returns.
    #[tokio::test]
    async fn shutdown_drains_in_flight_requests_and_closes_idle_ones() {
        let release = Arc::new(Notify::new());
        let entered = Arc::new(Notify::new());
        let router = {
            let (release, entered) = (release.clone(), entered.clone());
            Router::new().route(
                "/slow",
                get(move || async move {
                    entered.notify_one();
                    release.notified().await;
                    "done"
                }),
            )
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let options = HttpOptions {
            idle_timeout: Duration::from_secs(60),
            header_read_timeout: Duration::from_secs(60),
            ..HttpOptions::default()
        };
        let server = tokio::spawn(serve_http(listener, router, options, async move {
            let _ = stopped.await;
        }));

        let mut idle = tokio::net::TcpStream::connect(addr).await.expect("idle");
        let mut busy = tokio::net::TcpStream::connect(addr).await.expect("busy");
        busy.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        entered.notified().await;
        let _ = stop.send(());

        assert!(eof(&mut idle).await.is_empty());
        assert!(!server.is_finished(), "returned with a request in flight");
        release.notify_one();
        let answer = String::from_utf8(eof(&mut busy).await).expect("utf-8");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("done"), "{answer}");
        tokio::time::timeout(BOUND, server)
            .await
            .expect("serve_http returns after the drain")
            .expect("task")
            .expect("serve_http");
    }
}
