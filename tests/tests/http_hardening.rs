//! Issue 11, items 6–9, over the real HTTP server loop: connection limits
//! seen from a raw TCP client.

use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use payhost::http_server::HttpOptions;
use payhost_tests::{ADMIN_TOKEN, TestApp};

/// A bound on every wait for a condition; generous, since a passing test
/// never waits for it in full.
const BOUND: Duration = Duration::from_secs(10);

async fn sqlite_app(http: HttpOptions) -> TestApp {
    let db = payhost::store::testing::TestDb::sqlite()
        .await
        .expect("sqlite test db");
    TestApp::spawn_with(db, http).await
}

fn addr(app: &TestApp) -> String {
    app.base.trim_start_matches("http://").to_string()
}

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(addr(app)).await.expect("connect")
}

/// Read until the server closes the connection (EOF or reset); the bytes
/// received. Panics when it is still open after `bound`.
async fn read_until_closed(stream: &mut TcpStream, bound: Duration) -> Vec<u8> {
    let mut received = Vec::new();
    let result = tokio::time::timeout(bound, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(result.is_ok(), "connection still open after {bound:?}");
    received
}

/// A parsed response: status, lower-cased headers, body.
struct Raw {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Raw {
    fn parse(bytes: &[u8]) -> Raw {
        let text = String::from_utf8_lossy(bytes);
        let (head, body) = text.split_once("\r\n\r\n").expect("a response head");
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .expect("status line");
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        Raw {
            status,
            headers,
            body: body.as_bytes().to_vec(),
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// Read one response with a `content-length` from a kept-alive connection.
async fn read_response(stream: &mut TcpStream) -> Raw {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(BOUND, async {
        loop {
            let n = stream.read(&mut buf).await.expect("read");
            assert!(n > 0, "closed before a full response");
            received.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&received).to_string();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                if body.len() >= length {
                    return;
                }
            }
        }
    })
    .await
    .expect("a response in time");
    Raw::parse(&received)
}

fn assert_json_error(raw: &Raw, status: u16, code: &str) {
    assert_eq!(raw.status, status, "{}", String::from_utf8_lossy(&raw.body));
    assert_eq!(raw.header("content-type"), Some("application/json"));
    assert_eq!(raw.json()["error"]["code"], code, "{}", raw.json());
}

fn short(header: u64, body: u64, idle: u64, max_connections: usize) -> HttpOptions {
    HttpOptions {
        header_read_timeout: Duration::from_secs(header),
        body_read_timeout: Duration::from_secs(body),
        idle_timeout: Duration::from_secs(idle),
        max_connections,
    }
}

// ----- 6. connection hardening ---------------------------------------------

#[tokio::test]
async fn a_slow_header_connection_is_closed_after_the_header_timeout() {
    // Idle timeout far away: only the header timeout may close these.
    let app = sqlite_app(short(1, 30, 60, 64)).await;

    let mut partial = connect(&app).await;
    let started = Instant::now();
    partial
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    let answered = read_until_closed(&mut partial, BOUND).await;
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert!(answered.is_empty() || answered.starts_with(b"HTTP/1.1 408"));

    // Trickling bytes does not extend the deadline.
    let mut trickle = connect(&app).await;
    let started = Instant::now();
    trickle
        .write_all(b"GET /health HTTP/1.1\r\n")
        .await
        .expect("write");
    let closed = tokio::time::timeout(BOUND, async {
        for i in 0.. {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if trickle
                .write_all(format!("X-{i}: y\r\n").as_bytes())
                .await
                .is_err()
            {
                return;
            }
            let mut buf = [0u8; 64];
            if let Ok(Ok(0)) =
                tokio::time::timeout(Duration::from_millis(1), trickle.read(&mut buf)).await
            {
                return;
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "a trickling head was never cut off");
    assert!(started.elapsed() < Duration::from_secs(5));
    app.finish().await;
}

#[tokio::test]
async fn a_partial_body_is_answered_408_and_closed() {
    let app = sqlite_app(short(10, 1, 60, 64)).await;
    let mut stream = connect(&app).await;
    let started = Instant::now();
    stream
        .write_all(
            format!(
                "POST /admin/tenants HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\
                 Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"name\":"
            )
            .as_bytes(),
        )
        .await
        .expect("write");
    let raw = Raw::parse(&read_until_closed(&mut stream, BOUND).await);
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert_json_error(&raw, 408, "body_timeout");
    app.finish().await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    // Header timeout far away: only the idle timeout may close it.
    let app = sqlite_app(short(60, 30, 1, 64)).await;
    let mut stream = connect(&app).await;
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let first = read_response(&mut stream).await;
    assert_eq!(first.status, 200);
    let started = Instant::now();
    let rest = read_until_closed(&mut stream, BOUND).await;
    assert!(rest.is_empty());
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "{waited:?}"
    );

    // A connection that never sends anything is idle too.
    let mut silent = connect(&app).await;
    assert!(read_until_closed(&mut silent, BOUND).await.is_empty());
    app.finish().await;
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_until_one_closes() {
    let app = sqlite_app(short(60, 30, 60, 2)).await;
    let request = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
    // Two kept-alive connections, each answered once, so both are being
    // served (they hold the two slots).
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = connect(&app).await;
        s.write_all(request).await.expect("write");
        assert_eq!(read_response(&mut s).await.status, 200);
        held.push(s);
    }
    // A third connects (the kernel's backlog takes it) but is not served.
    let mut third = connect(&app).await;
    third.write_all(request).await.expect("write");
    let mut buf = [0u8; 16];
    let early = tokio::time::timeout(Duration::from_millis(500), third.read(&mut buf)).await;
    assert!(early.is_err(), "served beyond the cap: {early:?}");
    // When one of the two closes, the third is served.
    drop(held.pop());
    assert_eq!(read_response(&mut third).await.status, 200);
    app.finish().await;
}
