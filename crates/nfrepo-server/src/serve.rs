//! Binding and running the server.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;
use nfrepo_store::Store;
use tokio::net::TcpListener;

use crate::auth::Auth;
use crate::error::{Error, Result};
use crate::policy::Mode;
use crate::routes::{AppState, Peer, router};
use crate::tls::TlsListener;

/// Where and how to serve.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ServerOptions {
    /// The address to listen on; port 0 picks a free port ([`Server::local_addr`]).
    pub listen: SocketAddr,
    /// What clients may do.
    pub mode: Mode,
    /// Who may connect.
    pub auth: Auth,
    /// The PEM certificate chain and private key; `None` serves plain http.
    pub tls: Option<TlsFiles>,
    /// Serve plain http on an address that is not loopback.
    pub allow_insecure_http: bool,
}

/// A certificate chain and its private key, PEM files.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

impl ServerOptions {
    /// Append-only, plain http, on `listen`, for `auth`.
    pub fn new(listen: SocketAddr, auth: Auth) -> Self {
        Self {
            listen,
            mode: Mode::AppendOnly,
            auth,
            tls: None,
            allow_insecure_http: false,
        }
    }

    /// Sets [`ServerOptions::tls`].
    #[must_use]
    pub fn tls(mut self, tls: Option<TlsFiles>) -> Self {
        self.tls = tls;
        self
    }

    /// Sets [`ServerOptions::allow_insecure_http`].
    #[must_use]
    pub fn allow_insecure_http(mut self, allow: bool) -> Self {
        self.allow_insecure_http = allow;
        self
    }

    /// Refuses anonymous access and plain http off loopback.
    fn check(&self) -> Result<()> {
        let loopback = match self.listen.ip() {
            std::net::IpAddr::V4(ip) => ip.is_loopback(),
            std::net::IpAddr::V6(ip) => ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
        };
        if matches!(self.auth, Auth::None) && !loopback {
            return Err(Error::NoAuthOffLoopback(self.listen));
        }
        if self.tls.is_none() && !loopback && !self.allow_insecure_http {
            return Err(Error::InsecureHttp(self.listen));
        }
        Ok(())
    }
}

enum Bound {
    Plain(TcpListener),
    Tls(TlsListener),
}

/// A bound server: [`Server::bind`], then [`Server::run`].
pub struct Server {
    bound: Bound,
    local: SocketAddr,
    state: Arc<AppState>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("url", &self.url())
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Checks `options`, loads the certificate, and binds the address.
    /// Nothing is served until [`Server::run`].
    ///
    /// # Errors
    /// [`Error::NoAuthOffLoopback`], [`Error::InsecureHttp`] for the
    /// refused combinations; [`Error::Tls`] for unusable certificate files;
    /// [`Error::ObjectLock`] for a store with S3 Object Lock;
    /// [`Error::Listen`] if the address cannot be bound.
    pub async fn bind(store: Arc<dyn Store>, options: ServerOptions) -> Result<Self> {
        options.check()?;
        if store.object_lock_enabled().await.map_err(Error::Store)? {
            return Err(Error::ObjectLock(store.location().to_owned()));
        }
        let acceptor = match &options.tls {
            Some(files) => Some(crate::tls::acceptor(&files.cert, &files.key)?),
            None => None,
        };
        let listen_error = |source| Error::Listen {
            addr: options.listen,
            source,
        };
        let tcp = TcpListener::bind(options.listen).await.map_err(listen_error)?;
        let local = tcp.local_addr().map_err(listen_error)?;
        let bound = match acceptor {
            Some(acceptor) => Bound::Tls(TlsListener::new(tcp, acceptor).map_err(listen_error)?),
            None => Bound::Plain(tcp),
        };
        Ok(Self {
            bound,
            local,
            state: Arc::new(AppState {
                store,
                auth: options.auth,
                mode: options.mode,
            }),
        })
    }

    /// The address bound (with the port picked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The repository URL clients use: `rest+https://ADDR/` or `rest+http://ADDR/`.
    pub fn url(&self) -> String {
        let scheme = match self.bound {
            Bound::Plain(_) => "http",
            Bound::Tls(_) => "https",
        };
        format!("rest+{scheme}://{}/", self.local)
    }

    /// Serves until `shutdown` completes, then stops accepting and lets the
    /// requests in progress finish.
    ///
    /// # Errors
    /// [`Error::Serve`] if serving fails.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
        tracing::info!(
            target: crate::routes::ACCESS_LOG,
            url = %self.url(),
            store = %self.state.store.location(),
            "serving append-only"
        );
        let app = router(self.state);
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
