//! A bound address, plain TCP or TLS, and serving an axum router on it:
//! shared by the append-only [`Server`](crate::Server) and the admin panel
//! (`nfrepo-panel`), so both get the same handshake limits and policy.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};

use axum::Router;
use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;
use tokio::net::TcpListener;

use crate::error::{Error, Result};
use crate::serve::TlsFiles;
use crate::tls::TlsListener;

/// The address of the client of a connection, as handlers see it through
/// `axum::extract::ConnectInfo<Peer>`.
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub SocketAddr);

enum Bound {
    Plain(TcpListener),
    Tls(TlsListener),
}

/// A bound listener: [`Listening::bind`], then [`Listening::serve`].
pub struct Listening {
    bound: Bound,
    local: SocketAddr,
}

impl std::fmt::Debug for Listening {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listening")
            .field("local", &self.local)
            .field("tls", &self.is_tls())
            .finish()
    }
}

/// Whether `addr` is a loopback address (IPv4, IPv6 or IPv4-mapped IPv6).
pub fn is_loopback(addr: SocketAddr) -> bool {
    match addr.ip() {
        IpAddr::V4(ip) => ip.is_loopback(),
        IpAddr::V6(ip) => ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
    }
}

impl Listening {
    /// Loads the certificate (with `tls`) and binds `listen`. Handshakes
    /// run off the accept loop, bounded in number and time.
    ///
    /// # Errors
    /// [`Error::Tls`] for unusable certificate files; [`Error::Listen`] if
    /// the address cannot be bound.
    pub async fn bind(listen: SocketAddr, tls: Option<&TlsFiles>) -> Result<Self> {
        let acceptor = match tls {
            Some(files) => Some(crate::tls::acceptor(&files.cert, &files.key)?),
            None => None,
        };
        let listen_error = |source| Error::Listen { addr: listen, source };
        let tcp = TcpListener::bind(listen).await.map_err(listen_error)?;
        let local = tcp.local_addr().map_err(listen_error)?;
        let bound = match acceptor {
            Some(acceptor) => Bound::Tls(TlsListener::new(tcp, acceptor).map_err(listen_error)?),
            None => Bound::Plain(tcp),
        };
        Ok(Self { bound, local })
    }

    /// The address bound (with the port picked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Whether connections are TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self.bound, Bound::Tls(_))
    }

    /// Serves `app` (HTTP/1.1, with [`Peer`] as connect info) until
    /// `shutdown` completes, then stops accepting and lets the requests in
    /// progress finish.
    ///
    /// # Errors
    /// [`Error::Serve`] if serving fails.
    pub async fn serve(self, app: Router, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
        match self.bound {
            Bound::Plain(tcp) => {
                axum::serve(tcp, app.into_make_service_with_connect_info::<Peer>())
                    .with_graceful_shutdown(shutdown)
                    .await
            }
            Bound::Tls(tls) => {
                axum::serve(tls, app.into_make_service_with_connect_info::<Peer>())
                    .with_graceful_shutdown(shutdown)
                    .await
            }
        }
        .map_err(Error::Serve)
    }
}

impl Connected<IncomingStream<'_, TcpListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TcpListener>) -> Self {
        Peer(*stream.remote_addr())
    }
}

impl Connected<IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        Peer(*stream.remote_addr())
    }
}
