//! The metrics endpoint: a tiny HTTP/1.1 server on a loopback address (`[metrics] listen`,
//! off by default) that answers `GET /metrics` with every layer's metrics in the text
//! exposition format 0.0.4. One daemon serves one mount, so the process-wide statics of
//! each layer are per mount.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::base::metrics::header;
use crate::catalog::Catalog;

static CATALOG: OnceLock<Arc<Catalog>> = OnceLock::new();

/// The catalog whose file counts per state the scrape reports (set once by the daemon).
pub fn set_catalog(c: Arc<Catalog>) {
    let _ = CATALOG.set(c);
}

/// Every metric in the text exposition format 0.0.4.
pub fn render() -> String {
    let mut out = String::with_capacity(8192);
    header(
        &mut out,
        "coldtier_build_info",
        "gauge",
        "Always 1; the version label is the coldtier version.",
    );
    let _ = writeln!(
        out,
        "coldtier_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    crate::tier::metrics::render(&mut out);
    crate::fs::metrics::render(&mut out);
    crate::store::counting::render(&mut out);
    crate::catalog::metrics::render(&mut out, CATALOG.get().map(|c| &**c));
    out
}

/// Listens on `addr` and serves `GET /metrics` from a thread; returns the bound address.
pub fn serve(addr: SocketAddr) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let local = listener.local_addr()?;
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for conn in listener.incoming() {
                match conn {
                    Ok(s) => {
                        if let Err(e) = answer(s) {
                            tracing::debug!("metrics: {e}");
                        }
                    }
                    Err(e) => {
                        tracing::warn!("metrics: accept: {e}");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        })?;
    Ok(local)
}

/// Answers one request (connections are served one at a time: scrapes are rare and the
/// answer is quick; the timeouts keep a stuck client from holding the thread).
fn answer(mut s: TcpStream) -> std::io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        if buf.len() > 16 * 1024 {
            return respond(&mut s, "431 Request Header Fields Too Large", "", false);
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf);
    let mut parts = head.lines().next().unwrap_or("").split_whitespace();
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return respond(&mut s, "400 Bad Request", "bad request line\n", false);
    };
    if !version.starts_with("HTTP/1.") {
        return respond(&mut s, "400 Bad Request", "HTTP/1.x only\n", false);
    }
    let path = target.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET" | "HEAD", "/metrics") => {
            let body = render();
            respond_with(
                &mut s,
                "200 OK",
                "text/plain; version=0.0.4; charset=utf-8",
                &body,
                method == "HEAD",
            )
        }
        ("GET" | "HEAD", _) => respond(
            &mut s,
            "404 Not Found",
            "not found: metrics are at /metrics\n",
            method == "HEAD",
        ),
        _ => respond(
            &mut s,
            "405 Method Not Allowed",
            "only GET /metrics\n",
            false,
        ),
    }
}

fn respond(s: &mut TcpStream, status: &str, body: &str, head_only: bool) -> std::io::Result<()> {
    respond_with(s, status, "text/plain; charset=utf-8", body, head_only)
}

fn respond_with(
    s: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &str,
    head_only: bool,
) -> std::io::Result<()> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n{}\r\n",
        body.len(),
        if status.starts_with("405") {
            "Allow: GET, HEAD\r\n"
        } else {
            ""
        }
    );
    if !head_only {
        out.push_str(body);
    }
    s.write_all(out.as_bytes())?;
    s.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::counting::{store_error, StoreOp};
    use crate::store::StoreErrorKind;

    fn get(addr: SocketAddr, req: &str) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(req.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn http_server_serves_metrics_and_404() {
        let addr = serve("127.0.0.1:0".parse().unwrap()).unwrap();
        store_error(StoreOp::Get, StoreErrorKind::Throttled);
        let r = get(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(r.contains("Content-Type: text/plain; version=0.0.4"), "{r}");
        assert!(r.contains("# TYPE coldtier_recalls_total counter\n"), "{r}");
        assert!(r.contains("coldtier_recalls_total{result=\"ok\"} "), "{r}");
        assert!(r.contains("coldtier_build_info{version="), "{r}");
        assert!(
            r.contains("coldtier_fuse_requests_total{op=\"lookup\"} "),
            "{r}"
        );
        assert!(
            r.contains("# TYPE coldtier_catalog_write_duration_seconds histogram\n"),
            "{r}"
        );
        let line = r
            .lines()
            .find(|l| l.starts_with("coldtier_store_errors_total{op=\"get\",kind=\"throttled\"}"))
            .unwrap();
        assert!(!line.ends_with(" 0"), "{line}");
        let (head, body) = r.split_once("\r\n\r\n").unwrap();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(len, body.len());
        let r = get(addr, "GET /other HTTP/1.1\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 404 "), "{r}");
        let r = get(addr, "POST /metrics HTTP/1.1\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 405 "), "{r}");
        let r = get(addr, "garbage\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 400 "), "{r}");
        let r = get(addr, "HEAD /metrics HTTP/1.0\r\n\r\n");
        assert!(
            r.starts_with("HTTP/1.1 200 OK\r\n") && r.ends_with("\r\n\r\n"),
            "{r}"
        );
    }

    #[test]
    fn every_line_is_valid_exposition_format() {
        crate::base::metrics::assert_valid_exposition(&render());
    }
}
