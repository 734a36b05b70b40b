//! The node's listener with a bound on open connections (plain builds; madsim has its own
//! network).
//!
//! Clients and peers share one listener. Every accepted connection holds one of
//! `connections_max` permits until it closes. A connection that arrives while none is free is
//! closed at once (the client sees the connection end and may retry elsewhere or later), so
//! that a flood of connections cannot exhaust the process's file descriptors, which would
//! stop the node from opening its own files and its peer connections. Should accepting fail for
//! the process or the system (descriptors or memory running out, `EMFILE`, `ENFILE`, `ENOBUFS`,
//! ...), it pauses for [`ACCEPT_PAUSE_MS`] instead of retrying in a busy loop, as tonic's own
//! listener would; a failure of one connection (reset or aborted before it was accepted) is
//! passed on, and tonic goes on with the next. Refusals and pauses are logged, at most once per
//! power of two of occurrences.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::transport::server::{Connected, TcpConnectInfo};

/// How long accepting pauses after it failed for want of a resource.
pub const ACCEPT_PAUSE_MS: u64 = 100;
/// `EMFILE` and `ENFILE` (the same numbers on Linux and macOS): no file descriptor left for the
/// process or the system.
const OUT_OF_DESCRIPTORS: [i32; 2] = [24, 23];

/// Whether an accept error concerns one incoming connection only (tonic skips such errors and
/// accepts the next at once) rather than the listener, the process or the system.
fn one_connection_failed(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
            | io::ErrorKind::TimedOut
    )
}

/// The accepted connections of a listener, at most `connections_max` open at once.
pub struct LimitedIncoming {
    listener: TcpListener,
    permits: Arc<Semaphore>,
    connections_max: usize,
    /// Connections closed on arrival for want of a permit, for the log.
    refused: u64,
    /// Times accepting failed for the listener, the process or the system, for the log.
    failed: u64,
    pause: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl LimitedIncoming {
    /// Accepts on `listener`, at most `connections_max` (at least 1) connections open at once.
    pub fn new(listener: TcpListener, connections_max: usize) -> Self {
        let connections_max = connections_max.max(1);
        let permits = Arc::new(Semaphore::new(connections_max));
        Self { listener, permits, connections_max, refused: 0, failed: 0, pause: None }
    }

    /// Binds `address` and accepts on it as [`LimitedIncoming::new`]. Must be called inside a
    /// tokio runtime.
    pub fn bind(address: SocketAddr, connections_max: usize) -> io::Result<Self> {
        let listener = std::net::TcpListener::bind(address)?;
        listener.set_nonblocking(true)?;
        Ok(Self::new(TcpListener::from_std(listener)?, connections_max))
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.connections_max - self.permits.available_permits()
    }

    fn refuse(&mut self, peer: SocketAddr) {
        self.refused += 1;
        if self.refused.is_power_of_two() {
            tracing::warn!(
                refused = self.refused,
                peer = %peer,
                "{} connections are open, the most allowed (connections_max): closing new ones until some end",
                self.connections_max
            );
        }
    }

    fn pause_after(&mut self, error: &io::Error) {
        self.failed += 1;
        if self.failed.is_power_of_two() {
            let hint = if error.raw_os_error().is_some_and(|code| OUT_OF_DESCRIPTORS.contains(&code)) {
                "raise the open-file limit (ulimit -n) or lower connections_max"
            } else {
                "retrying"
            };
            tracing::error!(
                times = self.failed,
                open = self.open(),
                "cannot accept connections: {error}; pausing {ACCEPT_PAUSE_MS} ms; {hint}"
            );
        }
        self.pause = Some(Box::pin(tokio::time::sleep(Duration::from_millis(ACCEPT_PAUSE_MS))));
    }
}

impl futures_util::Stream for LimitedIncoming {
    type Item = io::Result<CountedStream>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if let Some(pause) = self.pause.as_mut() {
                std::task::ready!(pause.as_mut().poll(cx));
                self.pause = None;
            }
            match std::task::ready!(self.listener.poll_accept(cx)) {
                Ok((stream, peer)) => match Arc::clone(&self.permits).try_acquire_owned() {
                    Ok(permit) => {
                        // Small messages must not wait for Nagle's algorithm; failing to set it
                        // only costs latency.
                        let _ = stream.set_nodelay(true);
                        return Poll::Ready(Some(Ok(CountedStream { stream, _permit: permit })));
                    }
                    Err(_) => self.refuse(peer),
                },
                Err(error) if one_connection_failed(&error) => return Poll::Ready(Some(Err(error))),
                Err(error) => self.pause_after(&error),
            }
        }
    }
}

/// An accepted connection, holding its permit until it is dropped.
pub struct CountedStream {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
}

impl Connected for CountedStream {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for CountedStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for CountedStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use tokio::io::AsyncReadExt;

    /// Whether the server side closed `client` (a read ends) within a second.
    async fn closed(client: &mut TcpStream) -> bool {
        let mut byte = [0u8; 1];
        matches!(tokio::time::timeout(Duration::from_secs(1), client.read(&mut byte)).await, Ok(Ok(0) | Err(_)))
    }

    #[test]
    fn only_errors_of_one_connection_are_passed_on() {
        assert!(one_connection_failed(&io::Error::from(io::ErrorKind::ConnectionAborted)));
        assert!(!one_connection_failed(&io::Error::from_raw_os_error(24)), "EMFILE pauses");
        assert!(!one_connection_failed(&io::Error::from_raw_os_error(105)), "ENOBUFS pauses");
    }

    #[tokio::test]
    async fn connections_past_the_limit_are_closed_until_one_ends() {
        let mut incoming = LimitedIncoming::bind("127.0.0.1:0".parse().unwrap(), 2).unwrap();
        let address = incoming.local_addr().unwrap();
        let (accepted_tx, mut accepted) = tokio::sync::mpsc::unbounded_channel();
        let open = Arc::clone(&incoming.permits);
        tokio::spawn(async move {
            while let Some(connection) = incoming.next().await {
                accepted_tx.send(connection.expect("accepted")).unwrap();
            }
        });
        let mut first = TcpStream::connect(address).await.unwrap();
        let _second = TcpStream::connect(address).await.unwrap();
        let held_first = accepted.recv().await.unwrap();
        let _held_second = accepted.recv().await.unwrap();
        assert_eq!(open.available_permits(), 0);
        let mut third = TcpStream::connect(address).await.unwrap();
        assert!(closed(&mut third).await, "a third connection is closed at once");
        assert!(!closed(&mut first).await, "the first stays open");
        drop(held_first);
        assert_eq!(open.available_permits(), 1, "a connection that ends gives its permit back");
        let _fourth = TcpStream::connect(address).await.unwrap();
        let _held_fourth = accepted.recv().await.unwrap();
        assert_eq!(open.available_permits(), 0);
    }
}
