//! The connections components' HTTP requests travel on: a keep-alive pool,
//! shared by every call of the runtime, whose new connections dial only the
//! addresses the outbound policy approved.
//!
//! Without a pool every gateway call paid a TCP (and TLS) handshake. And
//! resolving the name for the private-address check, then letting a generic
//! client resolve it again to connect, left a window for DNS rebinding; here
//! the checked addresses are the ones dialled.
//!
//! A connection is reused only for the same origin under the same
//! private-network setting, and only once the previous response was read to
//! its end (a response dropped half-read closes its connection).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;
use tokio::net::TcpStream;
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::{Error as HttpError, WasiBody};

use super::policy::{Origin, is_public};

/// Idle connections kept per origin.
const MAX_IDLE_PER_ORIGIN: usize = 32;
/// An idle connection older than this is closed rather than reused (servers
/// commonly drop idle keep-alive connections after about a minute).
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Timeouts of one request (already clamped by the policy).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    pub(crate) connect: Duration,
    pub(crate) first_byte: Duration,
    pub(crate) between_bytes: Duration,
}

/// Why a request did not get a response.
#[derive(Debug)]
pub(crate) enum SendError {
    /// The name resolved to an address the policy forbids; nothing was dialled.
    Denied(String),
    /// Resolution, connection, TLS or HTTP failed.
    Http(HttpError),
}

impl From<HttpError> for SendError {
    fn from(e: HttpError) -> Self {
        SendError::Http(e)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PoolKey {
    origin: Origin,
    allow_private: bool,
    /// A connection's driver task runs on the runtime that opened it and
    /// dies with it, so connections are reused only on that runtime.
    runtime: tokio::runtime::Id,
}

struct Idle {
    sender: SendRequest<WasiBody>,
    since: Instant,
}

/// Keep-alive connections by origin. Cheap to share (`Arc`).
#[derive(Default)]
pub(crate) struct ConnectionPool {
    idle: Mutex<HashMap<PoolKey, Vec<Idle>>>,
    tls: OnceLock<tokio_rustls::TlsConnector>,
}

impl ConnectionPool {
    /// Sends `request` to `origin` on an idle connection when there is one,
    /// else on a new one. `allow_private` is the provider's policy: without
    /// it a name must resolve to public addresses only.
    pub(crate) async fn send(
        self: &Arc<Self>,
        origin: &Origin,
        allow_private: bool,
        mut request: http::Request<WasiBody>,
        timeouts: Timeouts,
    ) -> Result<http::Response<PooledBody>, SendError> {
        let key = PoolKey {
            origin: origin.clone(),
            allow_private,
            runtime: tokio::runtime::Handle::current().id(),
        };
        // Only the path goes on the wire (the Host header is already set).
        let path = request
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        *request.uri_mut() = http::Uri::builder()
            .path_and_query(path)
            .build()
            .map_err(|_| HttpError::HttpRequestUriInvalid)?;
        loop {
            let (mut sender, reused) = match self.take_idle(&key) {
                Some(sender) => (sender, true),
                None => (self.connect(&key, timeouts.connect).await?, false),
            };
            if reused
                && !matches!(
                    tokio::time::timeout(timeouts.connect, sender.ready()).await,
                    Ok(Ok(()))
                )
            {
                continue;
            }
            let sent =
                tokio::time::timeout(timeouts.first_byte, sender.try_send_request(request)).await;
            match sent {
                Err(_) => return Err(HttpError::ConnectionReadTimeout.into()),
                Ok(Ok(response)) => {
                    let give_back = GiveBack {
                        pool: Arc::downgrade(self),
                        key,
                        sender,
                    };
                    return Ok(response.map(|incoming| PooledBody {
                        incoming,
                        between_bytes: timeouts.between_bytes,
                        deadline: Box::pin(tokio::time::sleep(timeouts.between_bytes)),
                        give_back: Some(give_back),
                    }));
                }
                Ok(Err(mut e)) => match e.take_message() {
                    // A reused connection the server had already closed:
                    // the request never left, so it can go on another.
                    Some(unsent) if reused => request = unsent,
                    _ => return Err(HttpError::Hyper(e.into_error()).into()),
                },
            }
        }
    }

    fn take_idle(&self, key: &PoolKey) -> Option<SendRequest<WasiBody>> {
        let mut idle = self.idle.lock().ok()?;
        let list = idle.get_mut(key)?;
        while let Some(entry) = list.pop() {
            if entry.since.elapsed() < IDLE_TIMEOUT && !entry.sender.is_closed() {
                return Some(entry.sender);
            }
        }
        None
    }

    fn put_idle(&self, key: PoolKey, sender: SendRequest<WasiBody>) {
        if sender.is_closed() {
            return;
        }
        if let Ok(mut idle) = self.idle.lock() {
            // Forget stale and closed connections of every origin (and of
            // runtimes that have ended).
            idle.retain(|_, list| {
                list.retain(|e| e.since.elapsed() < IDLE_TIMEOUT && !e.sender.is_closed());
                !list.is_empty()
            });
            let list = idle.entry(key).or_default();
            if list.len() < MAX_IDLE_PER_ORIGIN {
                list.push(Idle {
                    sender,
                    since: Instant::now(),
                });
            }
        }
    }

    /// Resolves, checks and dials; then TLS for https and the HTTP/1.1
    /// handshake. The connection's driver runs as its own task.
    async fn connect(
        &self,
        key: &PoolKey,
        timeout: Duration,
    ) -> Result<SendRequest<WasiBody>, SendError> {
        let origin = &key.origin;
        let addrs = resolve(origin, key.allow_private, timeout).await?;
        let tcp = tokio::time::timeout(timeout, dial(&addrs))
            .await
            .map_err(|_| HttpError::ConnectionTimeout)?
            .map_err(HttpError::Connect)?;
        let _ = tcp.set_nodelay(true);
        let (sender, connection) = if origin.is_https() {
            let name = server_name(origin.host())?;
            let tls = tokio::time::timeout(timeout, self.tls().connect(name, tcp))
                .await
                .map_err(|_| HttpError::ConnectionTimeout)?
                .map_err(HttpError::Tls)?;
            handshake(TokioIo::new(tls), timeout).await?
        } else {
            handshake(TokioIo::new(tcp), timeout).await?
        };
        tokio::spawn(connection);
        Ok(sender)
    }

    /// The TLS client: Mozilla's roots (webpki-roots), never the system
    /// store, so what a component may trust does not depend on the machine.
    fn tls(&self) -> &tokio_rustls::TlsConnector {
        self.tls.get_or_init(|| {
            tls_connector(rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.into(),
            })
        })
    }

    /// A pool that trusts only `roots` (tests with their own CA).
    #[cfg(test)]
    fn trusting(roots: rustls::RootCertStore) -> ConnectionPool {
        let pool = ConnectionPool::default();
        let _ = pool.tls.set(tls_connector(roots));
        pool
    }
}

fn tls_connector(roots: rustls::RootCertStore) -> tokio_rustls::TlsConnector {
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("ring supports the default TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

type Driver = Pin<Box<dyn Future<Output = ()> + Send>>;

async fn handshake<T>(
    io: TokioIo<T>,
    timeout: Duration,
) -> Result<(SendRequest<WasiBody>, Driver), SendError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (sender, connection) = tokio::time::timeout(
        timeout,
        hyper::client::conn::http1::Builder::new().handshake(io),
    )
    .await
    .map_err(|_| HttpError::ConnectionTimeout)?
    .map_err(HttpError::Hyper)?;
    let driver: Driver = Box::pin(async move {
        if let Err(e) = connection.await {
            tracing::debug!("outbound connection ended: {e}");
        }
    });
    Ok((sender, driver))
}

/// The addresses to dial for `origin`. An IP literal or `localhost` on the
/// allow-list is dialled as named (the policy already decided on it); a
/// name must resolve to public addresses only, unless private networks are
/// allowed. These exact addresses are then dialled: no second lookup.
async fn resolve(
    origin: &Origin,
    allow_private: bool,
    timeout: Duration,
) -> Result<Vec<SocketAddr>, SendError> {
    let port = origin.port();
    if let Ok(ip) = origin.host().parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let addrs: Vec<SocketAddr> =
        tokio::time::timeout(timeout, tokio::net::lookup_host((origin.host(), port)))
            .await
            .map_err(|_| HttpError::DnsTimeout)?
            .map_err(|e| HttpError::DnsError {
                rcode: Some(e.to_string()),
                info_code: None,
            })?
            .collect();
    if addrs.is_empty() {
        return Err(HttpError::DestinationNotFound.into());
    }
    if !allow_private
        && !origin.is_literal_address()
        && let Some(private) = addrs.iter().find(|a| !is_public(a.ip()))
    {
        return Err(SendError::Denied(format!(
            "resolves to private address {}",
            private.ip()
        )));
    }
    Ok(addrs)
}

/// Connects to the first address that answers.
async fn dial(addrs: &[SocketAddr]) -> std::io::Result<TcpStream> {
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(stream) => return Ok(stream),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no address to connect to")))
}

fn server_name(host: &str) -> Result<rustls::pki_types::ServerName<'static>, HttpError> {
    use rustls::pki_types::ServerName;
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(ServerName::from(ip));
    }
    Ok(ServerName::try_from(host.to_string())?)
}

/// The connection a response came on, handed back to the pool once the
/// response has been read to its end.
struct GiveBack {
    pool: Weak<ConnectionPool>,
    key: PoolKey,
    sender: SendRequest<WasiBody>,
}

/// A response body with the between-bytes timeout applied; returns its
/// connection to the pool when it ends.
pub(crate) struct PooledBody {
    incoming: Incoming,
    between_bytes: Duration,
    deadline: Pin<Box<tokio::time::Sleep>>,
    give_back: Option<GiveBack>,
}

impl PooledBody {
    fn finished(&mut self) {
        if let Some(GiveBack { pool, key, sender }) = self.give_back.take()
            && let Some(pool) = pool.upgrade()
        {
            pool.put_idle(key, sender);
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.incoming).poll_frame(cx) {
            Poll::Ready(None) => {
                this.finished();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Ok(frame))) => {
                let next = tokio::time::Instant::now() + this.between_bytes;
                this.deadline.as_mut().reset(next);
                // A reader may stop at the last frame without polling for
                // the end: give the connection back now.
                if this.incoming.is_end_stream() {
                    this.finished();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.give_back = None;
                Poll::Ready(Some(Err(if e.is_timeout() {
                    HttpError::HttpResponseTimeout
                } else {
                    HttpError::Hyper(e)
                })))
            }
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    this.give_back = None;
                    Poll::Ready(Some(Err(HttpError::ConnectionReadTimeout)))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.incoming.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::{BodyExt, Empty};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    const TIMEOUTS: Timeouts = Timeouts {
        connect: Duration::from_secs(5),
        first_byte: Duration::from_secs(5),
        between_bytes: Duration::from_secs(5),
    };

    /// A loopback listener and a counter of the connections it accepts.
    async fn listen() -> (tokio::net::TcpListener, u16, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        (listener, port, Arc::new(AtomicUsize::new(0)))
    }

    /// Reads up to the end of one request head; `false` if the peer left.
    async fn read_head<S: tokio::io::AsyncRead + Unpin>(stream: &mut S, buf: &mut Vec<u8>) -> bool {
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            let mut chunk = [0u8; 1024];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        true
    }

    /// A loopback HTTP/1.1 server answering `body` to every request; counts
    /// accepted connections. `requests_per_connection` bounds how many it
    /// serves on one connection before closing it.
    async fn server(
        body: &'static str,
        requests_per_connection: usize,
    ) -> (Origin, Arc<AtomicUsize>) {
        let (listener, port, accepted) = listen().await;
        let counter = accepted.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    for served in 1..=requests_per_connection {
                        // These requests have no body.
                        if !read_head(&mut stream, &mut buf).await {
                            return;
                        }
                        buf.clear();
                        // The last response says so, as a server closing
                        // an idle keep-alive connection would.
                        let close = if served == requests_per_connection {
                            "Connection: close\r\n"
                        } else {
                            ""
                        };
                        let response = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n{close}\r\n{body}",
                            body.len()
                        );
                        if stream.write_all(response.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        let origin = Origin::parse(&format!("http://127.0.0.1:{port}")).expect("origin");
        (origin, accepted)
    }

    /// A loopback HTTPS server for `localhost` whose certificate is issued
    /// by the test CA in `testdata/` (not a public root). Answers `body` to
    /// one request per connection; counts TCP connections accepted.
    async fn tls_server(body: &'static str) -> (Origin, Arc<AtomicUsize>) {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};

        let cert = CertificateDer::from_pem_slice(include_bytes!("testdata/localhost.crt"))
            .expect("test certificate");
        let key = PrivateKeyDer::from_pem_slice(include_bytes!("testdata/localhost.key"))
            .expect("test key");
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let (listener, port, accepted) = listen().await;
        let counter = accepted.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    if !read_head(&mut tls, &mut Vec::new()).await {
                        return;
                    }
                    let response = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = tls.write_all(response.as_bytes()).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        let origin = Origin::parse(&format!("https://localhost:{port}")).expect("origin");
        (origin, accepted)
    }

    fn test_ca() -> rustls::RootCertStore {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(
                CertificateDer::from_pem_slice(include_bytes!("testdata/test-ca.crt"))
                    .expect("test CA"),
            )
            .expect("add test CA");
        roots
    }

    #[tokio::test]
    async fn https_verifies_the_certificate_against_the_roots() {
        let (origin, accepted) = tls_server("tls ok").await;

        // Trusting the CA that issued the server's certificate: the request
        // goes through TLS, with `localhost` as the verified name.
        let trusting = Arc::new(ConnectionPool::trusting(test_ca()));
        let response = trusting
            .send(&origin, false, get(&origin), TIMEOUTS)
            .await
            .expect("a certificate from a trusted CA is accepted");
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        assert_eq!(&body[..], b"tls ok");

        // The real pool trusts Mozilla's roots only: the same server is refused
        // during the handshake, before any request is written.
        let public_roots = Arc::new(ConnectionPool::default());
        let before = accepted.load(Ordering::SeqCst);
        let refused = public_roots
            .send(&origin, false, get(&origin), TIMEOUTS)
            .await
            .err()
            .expect("a certificate from an unknown CA is refused");
        assert!(
            matches!(refused, SendError::Http(HttpError::Tls(_))),
            "{refused:?}"
        );
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            before + 1,
            "it connected, so the refusal came from TLS, not from the policy"
        );
    }

    fn get(origin: &Origin) -> http::Request<WasiBody> {
        http::Request::get(format!("{origin}/v1/balance"))
            .header(
                http::header::HOST,
                format!("{}:{}", origin.host(), origin.port()),
            )
            .body(Empty::new().map_err(|never| match never {}).boxed_unsync())
            .expect("request")
    }

    async fn read_all(pool: &Arc<ConnectionPool>, origin: &Origin) -> String {
        let response = pool
            .send(origin, false, get(origin), TIMEOUTS)
            .await
            .expect("response");
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        String::from_utf8(bytes.to_vec()).expect("utf8")
    }

    #[tokio::test]
    async fn a_connection_is_reused_once_its_response_was_read() {
        let (origin, accepted) = server("ok", usize::MAX).await;
        let pool = Arc::new(ConnectionPool::default());
        for _ in 0..3 {
            assert_eq!(read_all(&pool, &origin).await, "ok");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_half_read_response_closes_its_connection() {
        let (origin, accepted) = server("ok", usize::MAX).await;
        let pool = Arc::new(ConnectionPool::default());
        let unread = pool
            .send(&origin, false, get(&origin), TIMEOUTS)
            .await
            .expect("response");
        drop(unread);
        assert_eq!(read_all(&pool, &origin).await, "ok");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_connection_the_server_closed_is_replaced() {
        let (origin, accepted) = server("ok", 1).await;
        let pool = Arc::new(ConnectionPool::default());
        for _ in 0..3 {
            assert_eq!(read_all(&pool, &origin).await, "ok");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn origins_do_not_share_connections() {
        let (a, accepted_a) = server("a", usize::MAX).await;
        let (b, accepted_b) = server("b", usize::MAX).await;
        let pool = Arc::new(ConnectionPool::default());
        for _ in 0..2 {
            assert_eq!(read_all(&pool, &a).await, "a");
            assert_eq!(read_all(&pool, &b).await, "b");
        }
        assert_eq!(accepted_a.load(Ordering::SeqCst), 1);
        assert_eq!(accepted_b.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_connection_is_not_reused_after_its_runtime_ended() {
        let (origin, accepted) = server("ok", usize::MAX).await;
        let pool = Arc::new(ConnectionPool::default());
        let (other_pool, other_origin) = (pool.clone(), origin.clone());
        // On a blocking thread, so this runtime keeps serving meanwhile.
        tokio::task::spawn_blocking(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let body = rt.block_on(read_all(&other_pool, &other_origin));
            assert_eq!(body, "ok");
            // Dropping `rt` kills the connection's driver task.
        })
        .await
        .expect("other runtime");
        assert_eq!(read_all(&pool, &origin).await, "ok");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }
}
