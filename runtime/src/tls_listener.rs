//! The TLS handshake on the node's listener (plain builds; madsim has its own network).
//!
//! [`ServerIncoming`] takes the connections of `connections.rs` (bounded, each holding a permit)
//! and, when the node serves TLS, runs each one's handshake in a task of its own, with
//! [`crate::tls::HANDSHAKE_TIMEOUT`], handing tonic only the connections whose handshake
//! succeeded. Without TLS it passes connections through. A connection keeps its permit through
//! its handshake, so handshakes in progress count against `connections_max` too. Each handshake
//! uses the certificates in use when its connection was accepted (`tls_reload.rs`).
//!
//! Each connection tells tonic its [`PeerInfo`] (request extensions): the TCP addresses, and
//! the common name of the client certificate a TLS client showed, which the node verified
//! against its trusted authorities (only asked for with `client_cert_auth`). etcd's
//! authentication logs that name in as a user (`etcd/cert_identity.rs`).
//!
//! Keel does its own handshake instead of tonic's because tonic's offers only HTTP/2 (ALPN
//! `h2`): a client that offers only HTTP/1.1 (`curl --http1.1`, Python's urllib3, and so
//! Patroni and etcd3gw on etcd's JSON gateway) would be refused. Here the handshake offers
//! `h2` and `http/1.1`, and the server speaks whichever the bytes that follow are.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::task::JoinSet;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::connections::{CountedStream, LimitedIncoming};
use crate::tls_reload::ReloadingTls;

/// An accepted connection: plain, or after a successful TLS handshake.
pub enum ServerStream {
    /// A plain-text connection.
    Plain(CountedStream),
    /// A TLS connection.
    Tls(Box<TlsStream<CountedStream>>),
}

/// The connections tonic serves: those of `connections.rs`, through a TLS handshake when the
/// node has a TLS configuration.
pub struct ServerIncoming {
    inner: LimitedIncoming,
    tls: Option<Arc<ReloadingTls>>,
    handshakes: JoinSet<io::Result<TlsStream<CountedStream>>>,
    inner_ended: bool,
    /// Failed handshakes, for the log.
    failed: u64,
}

impl ServerIncoming {
    /// Serves the connections of `inner`, over TLS with `tls` when given (the certificates in
    /// use when each connection is accepted).
    pub fn new(inner: LimitedIncoming, tls: Option<Arc<ReloadingTls>>) -> Self {
        Self { inner, tls, handshakes: JoinSet::new(), inner_ended: false, failed: 0 }
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.inner.local_addr()
    }

    fn handshake_failed(&mut self, error: &io::Error) {
        self.failed += 1;
        // Scanners and clients with a wrong certificate are common: a line per power of two.
        if self.failed.is_power_of_two() {
            tracing::info!(failed = self.failed, "a TLS handshake failed: {error}");
        }
    }
}

impl Stream for ServerIncoming {
    type Item = io::Result<ServerStream>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if !this.inner_ended {
                match Pin::new(&mut this.inner).poll_next(cx) {
                    Poll::Ready(Some(Ok(stream))) => match &this.tls {
                        None => return Poll::Ready(Some(Ok(ServerStream::Plain(stream)))),
                        Some(tls) => {
                            let accepting = TlsAcceptor::from(tls.server_config()).accept(stream);
                            this.handshakes.spawn(async move {
                                match tokio::time::timeout(crate::tls::HANDSHAKE_TIMEOUT, accepting).await {
                                    Ok(result) => result,
                                    Err(_) => {
                                        Err(io::Error::new(io::ErrorKind::TimedOut, "the handshake took too long"))
                                    }
                                }
                            });
                            continue;
                        }
                    },
                    // One connection's failure: tonic goes on with the next.
                    Poll::Ready(Some(Err(error))) => return Poll::Ready(Some(Err(error))),
                    Poll::Ready(None) => this.inner_ended = true,
                    Poll::Pending => {}
                }
            }
            match this.handshakes.poll_join_next(cx) {
                Poll::Ready(Some(Ok(Ok(stream)))) => return Poll::Ready(Some(Ok(ServerStream::Tls(Box::new(stream))))),
                Poll::Ready(Some(Ok(Err(error)))) => this.handshake_failed(&error),
                Poll::Ready(Some(Err(_))) => {} // a handshake task panicked or was aborted
                Poll::Ready(None) if this.inner_ended => return Poll::Ready(None),
                Poll::Ready(None) | Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// What tonic records of an accepted connection, in each request's extensions.
#[derive(Clone, Debug)]
pub struct PeerInfo {
    /// The TCP addresses.
    pub tcp: TcpConnectInfo,
    /// The subject common name of the client certificate, if the client showed one (TLS with
    /// `client_cert_auth`; verified against the trusted authorities during the handshake).
    pub common_name: Option<Arc<str>>,
}

impl Connected for ServerStream {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        match self {
            Self::Plain(stream) => PeerInfo { tcp: stream.connect_info(), common_name: None },
            Self::Tls(stream) => {
                let (tcp, session) = stream.get_ref();
                let leaf = session.peer_certificates().and_then(|chain| chain.first());
                PeerInfo { tcp: tcp.connect_info(), common_name: leaf.and_then(|der| common_name(der)) }
            }
        }
    }
}

/// The first subject common name of a DER certificate, if it has one that is valid UTF-8.
fn common_name(der: &[u8]) -> Option<Arc<str>> {
    let (_, certificate) = x509_parser::parse_x509_certificate(der).ok()?;
    let name = certificate.subject().iter_common_name().next()?.as_str().ok()?;
    Some(Arc::from(name))
}

impl AsyncRead for ServerStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ServerStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buffers: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_write_vectored(cx, buffers),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_write_vectored(cx, buffers),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(stream) => stream.is_write_vectored(),
            Self::Tls(stream) => stream.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_flush(cx),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }
}
