//! An in-process server on 127.0.0.1:0 and a client for it.

use std::sync::Arc;

use nfrepo_server::{Auth, Server, ServerOptions, TlsFiles, Token};
use nfrepo_store::{RestStore, Store};
use zeroize::Zeroizing;

pub const TOKEN: &str = "test-token-0123456789abcdef";

/// A server running on a loopback port until dropped.
pub struct Running {
    pub endpoint: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<nfrepo_server::Result<()>>>,
}

impl Running {
    /// Serves `store` with the test token, plain http.
    pub async fn start(store: Arc<dyn Store>) -> Self {
        Self::with(store, Auth::Token(Token::from_secret(TOKEN.as_bytes())), None).await
    }

    pub async fn with(store: Arc<dyn Store>, auth: Auth, tls: Option<TlsFiles>) -> Self {
        let https = tls.is_some();
        let options = ServerOptions::new("127.0.0.1:0".parse().unwrap(), auth).tls(tls);
        let server = Server::bind(store, options).await.unwrap();
        let scheme = if https { "https" } else { "http" };
        let endpoint = format!("{scheme}://{}", server.local_addr());
        assert_eq!(server.url(), format!("rest+{endpoint}/"));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        Self {
            endpoint,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// A client with the right token.
    pub fn client(&self) -> RestStore {
        self.client_with(Some(TOKEN))
    }

    pub fn client_with(&self, token: Option<&str>) -> RestStore {
        RestStore::new(&self.endpoint, token.map(|t| Zeroizing::new(t.to_owned())), None).unwrap()
    }

    /// Stops the server and waits for it to end cleanly.
    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap().unwrap();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}
