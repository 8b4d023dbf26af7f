//! Accepting and serving HTTP connections, with limits: a header-read timeout, an idle
//! keep-alive timeout, a cap on open connections, envelope answers for heads hyper would
//! refuse with an empty body, and a graceful stop.
//!
//! - [`HttpServer`]: the accept loop over a bound listener and the connections it spawned.
//! - `conn`: one connection (hyper's HTTP/1 driver, our timers, the guarded socket).
//! - `head`: the request-head checks run before hyper sees the bytes.

mod conn;
mod head;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::HttpConfig;
pub use head::{MAX_HEAD_BYTES, MAX_HEADERS, MAX_REQUEST_LINE_BYTES};

/// How long the accept loop pauses after an accept error that is not about one connection
/// (out of file descriptors, out of memory): retrying at once would spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Warnings about the connection cap or accept errors repeat at most this often.
const WARNING_INTERVAL: Duration = Duration::from_secs(5);

/// The listen backlog: connections the kernel completes and queues while we are at the
/// connection cap (or between accepts). The standard library's (and tokio's) 128 made
/// clients beyond it wait for SYN retransmissions (1 s, 3 s, 7 s…) to get in line.
const LISTEN_BACKLOG: u32 = 1024;

/// Binds the listening socket, with [`LISTEN_BACKLOG`].
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // As tokio's own `bind`: a restarted server can bind again at once.
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// The local address of the connection a request came on (the address the client
/// dialled), in the request's extensions.
#[derive(Debug, Clone, Copy)]
pub struct LocalAddr(pub SocketAddr);

#[derive(Debug, Clone, Copy)]
struct Timeouts {
    header_read: Duration,
    idle: Duration,
}

/// What a graceful stop achieved: connections that finished (or closed) before the
/// deadline, and those cut at it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpShutdown {
    pub finished: usize,
    pub cut: usize,
}

/// The serving side: its accept loop and connections.
pub struct HttpServer {
    addr: SocketAddr,
    handle: HttpHandle,
    task: JoinHandle<()>,
}

/// Controls a running [`HttpServer`] from elsewhere (a signal handler). Cheap to clone.
#[derive(Clone)]
pub struct HttpHandle {
    /// Stop accepting; let connections finish what they are doing.
    stop: CancellationToken,
    /// Drop every connection now.
    cut: CancellationToken,
    /// Set once the accept loop has ended (and closed the tracker).
    accept_done: CancellationToken,
    connections: TaskTracker,
}

impl HttpServer {
    /// Serves `router` on `listener` until stopped.
    pub fn start(listener: TcpListener, router: Router, config: &HttpConfig) -> io::Result<Self> {
        let addr = listener.local_addr()?;
        let handle = HttpHandle {
            stop: CancellationToken::new(),
            cut: CancellationToken::new(),
            accept_done: CancellationToken::new(),
            connections: TaskTracker::new(),
        };
        let timeouts = Timeouts {
            header_read: config.header_read_timeout,
            idle: config.idle_timeout,
        };
        let max_connections = config.max_connections.max(1);
        tracing::info!(
            max_connections,
            header_read_timeout = ?timeouts.header_read,
            idle_timeout = ?timeouts.idle,
            "HTTP limits"
        );
        let task = tokio::spawn({
            let handle = handle.clone();
            async move {
                accept_loop(listener, router, timeouts, max_connections, &handle).await;
                handle.connections.wait().await;
            }
        });
        Ok(Self { addr, handle, task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn handle(&self) -> HttpHandle {
        self.handle.clone()
    }

    /// Waits until the serving side has stopped: after [`HttpHandle::shutdown`], once the
    /// last connection is done.
    pub async fn wait(self) -> io::Result<()> {
        self.task.await.map_err(io::Error::other)
    }

    /// Stops at once: no more accepts, every connection dropped.
    pub fn abort(self) {
        self.handle.cut.cancel();
        self.handle.stop.cancel();
        self.task.abort();
    }
}

impl HttpHandle {
    /// Stops accepting, lets open connections finish their exchange (idle ones close at
    /// once), and cuts whatever is still open after `deadline`.
    pub async fn shutdown(&self, deadline: Duration) -> HttpShutdown {
        self.stop.cancel();
        self.accept_done.cancelled().await;
        let open = self.connections.len();
        if tokio::time::timeout(deadline, self.connections.wait())
            .await
            .is_ok()
        {
            return HttpShutdown {
                finished: open,
                cut: 0,
            };
        }
        let cut = self.connections.len();
        self.cut.cancel();
        self.connections.wait().await;
        tracing::warn!(cut, "cut connections still open at the shutdown deadline");
        HttpShutdown {
            finished: open.saturating_sub(cut),
            cut,
        }
    }

    /// Open connections now.
    pub fn open_connections(&self) -> usize {
        self.connections.len()
    }
}

/// Marks the accept loop's end however it ends (returning, or its task aborted).
struct AcceptDone<'a>(&'a HttpHandle);

impl Drop for AcceptDone<'_> {
    fn drop(&mut self) {
        self.0.connections.close();
        self.0.accept_done.cancel();
    }
}

async fn accept_loop(
    listener: TcpListener,
    router: Router,
    timeouts: Timeouts,
    max_connections: usize,
    handle: &HttpHandle,
) {
    let _done = AcceptDone(handle);
    // One permit per open connection: at the cap we stop accepting (clients wait in the
    // listen backlog) rather than fail with out-of-descriptors errors mid-request.
    let slots = Arc::new(Semaphore::new(max_connections));
    let mut cap_warned: Option<Instant> = None;
    let mut error_warned: Option<Instant> = None;
    loop {
        let permit = match slots.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                if due(&mut cap_warned) {
                    tracing::warn!(
                        max_connections,
                        "connection limit reached: new connections wait until one closes"
                    );
                }
                tokio::select! {
                    permit = slots.clone().acquire_owned() => match permit {
                        Ok(permit) => permit,
                        Err(_) => return,
                    },
                    () = handle.stop.cancelled() => return,
                }
            }
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(e) if is_about_one_connection(&e) => {
                    tracing::debug!(error = %e, "a connection failed while being accepted");
                    continue;
                }
                Err(e) => {
                    // Typically EMFILE: descriptors free up as connections close.
                    if due(&mut error_warned) {
                        tracing::warn!(error = %e, "accepting connections failed; retrying");
                    }
                    tokio::select! {
                        () = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                        () = handle.stop.cancelled() => return,
                    }
                }
            },
            () = handle.stop.cancelled() => return,
        };
        // Small responses (a batch, a short results file) must not wait for a delayed ACK.
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let stop = handle.stop.clone();
        let cut = handle.cut.clone();
        handle.connections.spawn(async move {
            conn::serve(stream, router, timeouts, stop, cut).await;
            drop(permit);
        });
    }
}

/// Errors that concern only the connection being accepted; the next accept is unaffected.
fn is_about_one_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
    )
}

/// Whether a rate-limited warning is due now (and if so, records it).
fn due(last: &mut Option<Instant>) -> bool {
    let now = Instant::now();
    if last.is_some_and(|at| now.duration_since(at) < WARNING_INTERVAL) {
        return false;
    }
    *last = Some(now);
    true
}
