//! The HTTP client of the lean GETs on a plain `http://` endpoint: hyper's HTTP/1.1 client
//! and connection pool over TCP streams that ask the kernel, before every read, to send at
//! once the ACK it is holding back (`TCP_QUICKACK`).
//!
//! # Why
//! A server that writes its response in small pieces without `TCP_NODELAY` (s3s-fs writes
//! a file 4 KiB at a time) holds each piece back while an earlier small one is unacknowledged
//! (Nagle). Linux, on a kept-alive connection where the client answers every response with
//! its next request, puts the client's socket in "pingpong" mode and delays its ACKs up to
//! 40 ms. Together: a response stalls for ~40 ms, often several times. Measured on this
//! machine with tcpdump against s3s-fs: 192 stalls of ~42 ms in a bulk recall of 1,900 small
//! objects, and the time to the first byte of a stub either ~8 ms or ~50 ms, by whether the
//! first 256 KiB of the object met one (docs/benchmarks.md). `TCP_QUICKACK` takes the socket
//! out of pingpong mode and sends a delayed ACK now: set before each read, the data that
//! woke the reader is acknowledged at once and the server's next piece follows.
//!
//! The rest is what the SDK's own client does for these requests: a connect timeout, a
//! timeout to the response's headers, `TCP_NODELAY` on our side. Used only for `http://`
//! endpoints without a proxy in the environment (TLS and proxies stay with the SDK's
//! client); a failure of any kind makes the lean GET ask the SDK, which retries and reports
//! (src/store/s3_lean.rs).

use std::future::Future;
use std::io;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use aws_smithy_runtime_api::client::http::{HttpConnector, HttpConnectorFuture};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_types::body::SdkBody;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};

/// Idle pooled connections are closed after this (the SDK's client: 90 s).
const POOL_IDLE: Duration = Duration::from_secs(90);

/// hyper's client with quick-ACK TCP streams, as a smithy HTTP connector.
#[derive(Clone, Debug)]
pub(crate) struct QuickAckHttp {
    client: Client<Connect, SdkBody>,
    /// How long to wait for a response's headers.
    first_byte: Duration,
    quickacks: Arc<AtomicU64>,
}

impl QuickAckHttp {
    pub(crate) fn new(connect_timeout: Duration, first_byte: Duration) -> QuickAckHttp {
        let quickacks = Arc::<AtomicU64>::default();
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE)
            .build(Connect {
                timeout: connect_timeout,
                quickacks: quickacks.clone(),
            });
        QuickAckHttp {
            client,
            first_byte,
            quickacks,
        }
    }

    /// Quick ACKs asked for so far, over all its connections.
    pub(crate) fn quickacks(&self) -> u64 {
        self.quickacks.load(Ordering::Relaxed)
    }

    /// Whether no proxy is set in the environment (the SDK's client honours those; this
    /// one would not).
    pub(crate) fn no_proxy_in_env() -> bool {
        ["http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"]
            .iter()
            .all(|v| std::env::var_os(v).is_none_or(|s| s.is_empty()))
    }
}

impl HttpConnector for QuickAckHttp {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let request = match request.try_into_http1x() {
            Ok(r) => r,
            Err(e) => return HttpConnectorFuture::ready(Err(ConnectorError::user(e.into()))),
        };
        let response = self.client.request(request);
        let limit = self.first_byte;
        HttpConnectorFuture::new(async move {
            let response = match tokio::time::timeout(limit, response).await {
                Err(_) => {
                    let why = format!("no response headers within {limit:?}");
                    return Err(ConnectorError::timeout(why.into()));
                }
                Ok(Err(e)) => return Err(ConnectorError::io(e.into())),
                Ok(Ok(r)) => r,
            };
            HttpResponse::try_from(response.map(SdkBody::from_body_1_x))
                .map_err(|e| ConnectorError::other(e.into(), None))
        })
    }
}

/// Opens the TCP connections of [`QuickAckHttp`]'s pool.
#[derive(Clone, Debug)]
struct Connect {
    timeout: Duration,
    /// Quick ACKs asked for, over all connections (tests).
    quickacks: Arc<AtomicU64>,
}

impl tower_service::Service<http::Uri> for Connect {
    type Response = QuickAckIo;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<QuickAckIo>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let timeout = self.timeout;
        let quickacks = self.quickacks.clone();
        Box::pin(async move {
            if uri.scheme_str() != Some("http") {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{uri}: only http:// here"),
                ));
            }
            let host = uri
                .host()
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no host"))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let port = uri.port_u16().unwrap_or(80);
            let stream = tokio::time::timeout(
                timeout,
                tokio::net::TcpStream::connect((host.as_str(), port)),
            )
            .await
            .map_err(|_| {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("connecting to {host}:{port}: no answer within {timeout:?}"),
                )
            })??;
            stream.set_nodelay(true)?;
            Ok(QuickAckIo {
                io: TokioIo::new(stream),
                quickacks,
            })
        })
    }
}

/// A TCP stream that asks for an immediate ACK before every read.
struct QuickAckIo {
    io: TokioIo<tokio::net::TcpStream>,
    quickacks: Arc<AtomicU64>,
}

impl QuickAckIo {
    fn quickack(&self) {
        let one: libc::c_int = 1;
        // SAFETY: a valid socket fd; the option value is a c_int of the size given. A
        // failure only costs the optimisation.
        unsafe {
            libc::setsockopt(
                self.io.inner().as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_QUICKACK,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        self.quickacks.fetch_add(1, Ordering::Relaxed);
    }
}

impl Connection for QuickAckIo {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl hyper::rt::Read for QuickAckIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        me.quickack();
        Pin::new(&mut me.io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for QuickAckIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }
}
