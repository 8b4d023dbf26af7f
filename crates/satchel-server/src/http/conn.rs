//! One connection: hyper's HTTP/1 driver over a guarded socket, our timers around it.
//!
//! hyper 1.x offers a header-read timeout, but its timer starts as soon as the previous
//! response is done, so it doubles as the keep-alive timeout and both cannot differ. We
//! keep our own: the connection is in one of three moments, and each has its deadline:
//!
//! - reading a head (from connecting, or from the first byte after an idle moment):
//!   `header_read_timeout` from that start;
//! - an exchange open (the router has the request, or its response is still streaming):
//!   no deadline here (bodies are the handlers' business);
//! - idle (no exchange open and no new byte since): `idle_timeout` from the end of the
//!   last exchange.
//!
//! The socket wrapper ([`GuardedIo`]) sees the bytes arrive and runs the [`HeadScanner`];
//! the service wrapper ([`ExchangeService`]) sees exchanges begin and end.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response};
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use satchel_wire::ids;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;

use super::head::{self, HeadScanner, Refusal};
use super::{LocalAddr, Timeouts};
use crate::api::ApiError;
use crate::api::context::envelope;

/// After refusing a head, how long (and how much) we go on reading and discarding what the
/// client still sends before closing: closing a socket with unread data makes the kernel
/// send a reset, which can destroy the answer before the client reads it.
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 1024 * 1024;

/// What a connection's moments share between the socket, the service and the driver.
pub(super) struct ConnState {
    timing: Mutex<Timing>,
    /// Woken when a deadline appears or moves earlier (the driver sleeps on the old one).
    changed: Notify,
    /// hyper may hold response bytes it has not flushed yet: then no answer of ours may be
    /// written, or the two would interleave.
    dirty: AtomicBool,
}

struct Timing {
    open_exchanges: u32,
    head_started: Option<Instant>,
    idle_since: Instant,
}

impl ConnState {
    fn new() -> Self {
        let now = Instant::now();
        Self {
            timing: Mutex::new(Timing {
                open_exchanges: 0,
                // A new connection must send its first head in time too.
                head_started: Some(now),
                idle_since: now,
            }),
            changed: Notify::new(),
            dirty: AtomicBool::new(false),
        }
    }

    fn timing(&self) -> MutexGuard<'_, Timing> {
        // The data stays consistent whatever panicked while holding the lock.
        self.timing.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// When the connection is closed if nothing changes, and whether it is reading a head.
    fn deadline(&self, timeouts: &Timeouts) -> Option<(Instant, bool)> {
        let timing = self.timing();
        if timing.open_exchanges > 0 {
            None
        } else if let Some(started) = timing.head_started {
            Some((started + timeouts.header_read, true))
        } else {
            Some((timing.idle_since + timeouts.idle, false))
        }
    }

    fn bytes_arrived(&self) {
        let mut timing = self.timing();
        if timing.open_exchanges == 0 && timing.head_started.is_none() {
            timing.head_started = Some(Instant::now());
            drop(timing);
            self.changed.notify_one();
        }
    }

    fn exchange_began(&self) {
        let mut timing = self.timing();
        timing.open_exchanges += 1;
        timing.head_started = None;
    }

    fn exchange_ended(&self) {
        self.dirty.store(true, Ordering::Release);
        let mut timing = self.timing();
        timing.open_exchanges = timing.open_exchanges.saturating_sub(1);
        if timing.open_exchanges == 0 {
            timing.idle_since = Instant::now();
            drop(timing);
            self.changed.notify_one();
        }
    }

    /// Whether we may write an answer of our own now: no exchange open, and hyper has
    /// flushed everything it wrote.
    fn can_answer(&self) -> bool {
        self.timing().open_exchanges == 0 && !self.dirty.load(Ordering::Acquire)
    }
}

/// Serves one accepted connection until it ends, times out, or is cut.
pub(super) async fn serve(
    stream: TcpStream,
    router: Router,
    timeouts: Timeouts,
    stop: CancellationToken,
    cut: CancellationToken,
) {
    let local = match stream.local_addr() {
        Ok(addr) => addr,
        Err(e) => {
            tracing::debug!(error = %e, "connection gone before serving");
            return;
        }
    };
    let state = Arc::new(ConnState::new());
    let io = TokioIo::new(GuardedIo::new(stream, state.clone()));
    let service = ExchangeService {
        router,
        state: state.clone(),
        local,
    };
    let mut builder = http1::Builder::new();
    // Our own timers apply (see the module doc); the same header count as the scanner.
    builder
        .header_read_timeout(None::<Duration>)
        .max_headers(head::MAX_HEADERS);
    let conn = builder.serve_connection(io, service);
    let mut conn = std::pin::pin!(conn);
    let mut draining = false;
    loop {
        let deadline = state.deadline(&timeouts);
        let sleep = async {
            match deadline {
                Some((at, _)) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            () = cut.cancelled() => return,
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            () = stop.cancelled(), if !draining => {
                // Idle connections close now; an exchange in progress finishes first.
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
            () = state.changed.notified() => {}
            () = sleep => {
                if let Some((at, reading_head)) = state.deadline(&timeouts)
                    && at <= Instant::now()
                {
                    if reading_head {
                        tracing::debug!("closing a connection: request headers not received in time");
                    } else {
                        tracing::debug!("closing an idle keep-alive connection");
                    }
                    return;
                }
            }
        }
    }
}

/// The socket, as hyper reads and writes it.
struct GuardedIo {
    stream: TcpStream,
    state: Arc<ConnState>,
    scanner: HeadScanner,
    refusing: Option<Refusing>,
}

/// Answering a refused head: write the answer, shut our side, linger, then fail hyper's read.
struct Refusing {
    answer: Vec<u8>,
    written: usize,
    shut: bool,
    discarded: usize,
    linger: Pin<Box<Sleep>>,
}

impl GuardedIo {
    fn new(stream: TcpStream, state: Arc<ConnState>) -> Self {
        Self {
            stream,
            state,
            scanner: HeadScanner::default(),
            refusing: None,
        }
    }

    fn poll_refuse(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Self {
            stream, refusing, ..
        } = self;
        let Some(r) = refusing else {
            return Poll::Ready(Ok(()));
        };
        while r.written < r.answer.len() {
            match ready!(Pin::new(&mut *stream).poll_write(cx, &r.answer[r.written..])) {
                Ok(0) | Err(_) => {
                    r.written = r.answer.len();
                    r.discarded = LINGER_BYTES;
                }
                Ok(n) => r.written += n,
            }
        }
        if !r.shut {
            // Failing to shut down only means the peer is already gone.
            let _ = ready!(Pin::new(&mut *stream).poll_shutdown(cx));
            r.shut = true;
        }
        let mut scratch = [0u8; 8192];
        while r.discarded < LINGER_BYTES {
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut *stream).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if !buf.filled().is_empty() => {
                    r.discarded += buf.filled().len();
                }
                Poll::Ready(_) => break,
                Poll::Pending => {
                    if r.linger.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    break;
                }
            }
        }
        r.discarded = LINGER_BYTES;
        // An I/O error (not a parse error) makes hyper close without writing its own answer.
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "request head refused",
        )))
    }
}

/// The answer to a refused head: the API's envelope with a fresh request id, then close.
fn refusal_answer(refusal: &Refusal) -> Vec<u8> {
    let error = match refusal {
        Refusal::UriTooLong => ApiError::UriTooLong,
        Refusal::HeadersTooLarge => ApiError::HeadersTooLarge,
        Refusal::Malformed(why) => ApiError::MalformedRequest(why),
    };
    let wire = error.to_wire();
    let request_id = ids::new_request_id();
    let body = envelope(&wire, &request_id);
    tracing::info!(%request_id, status = wire.status.as_u16(), reason = %error, "request refused before routing");
    let mut answer = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nrequest-id: {request_id}\r\nconnection: close\r\n\r\n",
        wire.status.as_u16(),
        wire.status.canonical_reason().unwrap_or(""),
        body.len(),
    )
    .into_bytes();
    answer.extend_from_slice(&body);
    answer
}

impl AsyncRead for GuardedIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.refusing.is_some() {
            return this.poll_refuse(cx);
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.stream).poll_read(cx, buf))?;
        let fresh = &buf.filled()[before..];
        if fresh.is_empty() {
            return Poll::Ready(Ok(()));
        }
        this.state.bytes_arrived();
        if let Err(refusal) = this.scanner.feed(fresh) {
            // hyper never sees the refused bytes, so it never answers them itself.
            buf.set_filled(before);
            if !this.state.can_answer() {
                // A pipelined head behind a response still being written: an answer now
                // would land inside that response. Close instead.
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "request head refused",
                )));
            }
            this.refusing = Some(Refusing {
                answer: refusal_answer(&refusal),
                written: 0,
                shut: false,
                discarded: 0,
                linger: Box::pin(tokio::time::sleep(LINGER_TIME)),
            });
            return this.poll_refuse(cx);
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for GuardedIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.refusing.is_some() {
            return Poll::Ready(Ok(buf.len()));
        }
        this.state.dirty.store(true, Ordering::Release);
        Pin::new(&mut this.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.refusing.is_some() {
            return Poll::Ready(Ok(bufs.iter().map(|b| b.len()).sum()));
        }
        this.state.dirty.store(true, Ordering::Release);
        Pin::new(&mut this.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let result = ready!(Pin::new(&mut this.stream).poll_flush(cx));
        // hyper flushes the socket only once its own buffer is empty.
        if result.is_ok() {
            this.state.dirty.store(false, Ordering::Release);
        }
        Poll::Ready(result)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.refusing.is_some() {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.stream).poll_shutdown(cx)
    }
}

/// The router, as hyper calls it: marks each exchange's start and (through the response
/// body) its end, and tells handlers the address the client reached.
#[derive(Clone)]
struct ExchangeService {
    router: Router,
    state: Arc<ConnState>,
    local: SocketAddr,
}

impl hyper::service::Service<Request<Incoming>> for ExchangeService {
    type Response = Response<ExchangeBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, mut request: Request<Incoming>) -> Self::Future {
        let exchange = Exchange::begin(self.state.clone());
        request.extensions_mut().insert(LocalAddr(self.local));
        let mut router = self.router.clone();
        Box::pin(async move {
            // The router is always ready and never fails: errors are responses.
            let response = match tower_service::Service::call(&mut router, request).await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            Ok(response.map(|body| ExchangeBody {
                body,
                _exchange: exchange,
            }))
        })
    }
}

/// An open exchange; dropped (with the response body, once sent) when it ends.
struct Exchange(Arc<ConnState>);

impl Exchange {
    fn begin(state: Arc<ConnState>) -> Self {
        state.exchange_began();
        Self(state)
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        self.0.exchange_ended();
    }
}

/// A response body that ends its exchange when hyper is done with it.
struct ExchangeBody {
    body: Body,
    _exchange: Exchange,
}

impl http_body::Body for ExchangeBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
