//! Binding and running the server.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use nfrepo_store::Store;

use crate::auth::Auth;
use crate::error::{Error, Result};
use crate::listen::Listening;
use crate::policy::Mode;
use crate::routes::{AppState, router};

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
        let loopback = crate::listen::is_loopback(self.listen);
        if matches!(self.auth, Auth::None) && !loopback {
            return Err(Error::NoAuthOffLoopback(self.listen));
        }
        if self.tls.is_none() && !loopback && !self.allow_insecure_http {
            return Err(Error::InsecureHttp(self.listen));
        }
        Ok(())
    }
}

/// A bound server: [`Server::bind`], then [`Server::run`].
pub struct Server {
    listening: Listening,
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
        let listening = Listening::bind(options.listen, options.tls.as_ref()).await?;
        Ok(Self {
            listening,
            state: Arc::new(AppState {
                store,
                auth: options.auth,
                mode: options.mode,
            }),
        })
    }

    /// The address bound (with the port picked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listening.local_addr()
    }

    /// The repository URL clients use: `rest+https://ADDR/` or `rest+http://ADDR/`.
    pub fn url(&self) -> String {
        let scheme = if self.listening.is_tls() { "https" } else { "http" };
        format!("rest+{scheme}://{}/", self.listening.local_addr())
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
        self.listening.serve(router(self.state), shutdown).await
    }
}
