//! Loading a MySQL/MariaDB dump over several connections.
//!
//! One `mysql` client loads a dump at the speed of one server thread: the
//! 963 MB sysbench dump took 91 s into a drill server on this 2-core
//! machine, 60 s over two connections. [`load`] runs `jobs` clients on
//! the same staging database and hands them the dump as [`pieces`] cuts it:
//!
//! 1. the prologue (session settings) goes to every client first;
//! 2. a batch of `INSERT` statements goes to the client with the fewest
//!    batches outstanding (at most [`WINDOW`] each, so memory stays at a
//!    few MiB per client), followed by a marker `SELECT 'nfrepo-sync-N';`
//!    whose echo on the client's standard output (`--unbuffered`) says the
//!    batch has run;
//! 3. a serial piece waits until every client has echoed every marker (no
//!    earlier batch still running), then goes to the first client, and the
//!    next batch waits for that client's marker after it.
//!
//! So the server sees every statement of the dump, each serial statement
//! after everything before it and before everything after it, and only the
//! rows of one table's data in any order among themselves. Failure works as
//! in the single-client load (`load.rs`): a client that stops at an error
//! or a stream that fails verification kills every client; the staging
//! database is then dropped by the caller. Only a verified whole stream and
//! every client's exit status 0 count as loaded, and the row counts are
//! then checked as for any restore.

mod pieces;

use std::process::Stdio;

use bytes::Bytes;
use futures::StreamExt;
use nfrepo_engine::Reader;
use nfrepo_format::{Node, NodeKind};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::Child;
use tokio::sync::mpsc;

use super::{LoadCommand, RestoreStage, client_error};
use crate::Error;
use pieces::{Piece, Pieces};

/// Batches a client may have outstanding before it gets another.
const WINDOW: usize = 2;

/// Messages queued per client before the dispatcher waits.
const QUEUE: usize = 4;

/// What a client's helper tasks report.
enum Event {
    /// Client `n` echoed a marker.
    Synced(usize),
    /// Client `n`'s output or input closed: it exited or failed.
    Closed(usize),
}

struct Client {
    child: Child,
    input: Option<mpsc::Sender<Bytes>>,
    stderr: tokio::task::JoinHandle<Vec<u8>>,
    /// Markers sent and not yet echoed.
    outstanding: usize,
}

/// The clients of one load, and what the dispatcher knows of them.
struct Clients {
    clients: Vec<Client>,
    events: mpsc::UnboundedReceiver<Event>,
    marker: u64,
    program: String,
    staging: String,
    bytes: u64,
}

/// Streams `node` into `jobs` clients started from `command` (a client
/// that echoes query results unbuffered); returns the dump bytes read.
pub(super) async fn load(
    reader: &Reader,
    node: &Node,
    command: &LoadCommand,
    staging: &str,
    jobs: usize,
    work: Option<&nfrepo_engine::Work>,
) -> Result<u64, (RestoreStage, Error)> {
    let load_failed = |e: Error| (RestoreStage::Load, e);
    if !matches!(node.kind, NodeKind::File { .. }) {
        return Err(load_failed(Error::NotAFile(node.name_lossy().into_owned())));
    }
    let mut clients = Clients::start(command, staging, jobs.max(1)).map_err(load_failed)?;
    let result = clients.run(reader, node, work).await;
    match result {
        Ok(()) => clients.finish().await.map_err(load_failed),
        Err(e) => {
            clients.kill().await;
            Err(load_failed(e))
        }
    }
}

impl Clients {
    fn start(command: &LoadCommand, staging: &str, jobs: usize) -> Result<Self, Error> {
        let (program, args) = command
            .argv
            .split_first()
            .ok_or_else(|| Error::Invalid("no client command".into()))?;
        let (report, events) = mpsc::unbounded_channel();
        let mut clients = Vec::with_capacity(jobs);
        for n in 0..jobs {
            let mut child = crate::child::async_command(program, &command.auth)
                .args(args)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| Error::RestoreCommandFailed(format!("cannot start {program:?}: {e}")))?;
            let (Some(mut stdin), Some(stdout), Some(mut stderr)) =
                (child.stdin.take(), child.stdout.take(), child.stderr.take())
            else {
                return Err(Error::RestoreCommandFailed("no pipes to the client".into()));
            };
            let (input, mut queued) = mpsc::channel::<Bytes>(QUEUE);
            let closed = report.clone();
            tokio::spawn(async move {
                while let Some(bytes) = queued.recv().await {
                    if stdin.write_all(&bytes).await.is_err() {
                        let _ = closed.send(Event::Closed(n));
                        return;
                    }
                }
            });
            let synced = report.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stdout).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if line.starts_with("nfrepo-sync-") {
                        let _ = synced.send(Event::Synced(n));
                    }
                }
                let _ = synced.send(Event::Closed(n));
            });
            let stderr = tokio::spawn(async move {
                let mut buf = Vec::new();
                let _ = stderr.read_to_end(&mut buf).await;
                buf
            });
            clients.push(Client {
                child,
                input: Some(input),
                stderr,
                outstanding: 0,
            });
        }
        Ok(Self {
            clients,
            events,
            marker: 0,
            program: program.clone(),
            staging: staging.to_owned(),
            bytes: 0,
        })
    }

    async fn run(&mut self, reader: &Reader, node: &Node, work: Option<&nfrepo_engine::Work>) -> Result<(), Error> {
        let mut pieces = Pieces::default();
        let mut serial = false;
        let mut chunks = std::pin::pin!(reader.file_content(node, node.name_lossy().into_owned()));
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk?;
            self.bytes += chunk.len() as u64;
            if let Some(work) = work {
                work.advance(0, chunk.len() as u64);
            }
            pieces.feed(&chunk);
            while let Some(piece) = pieces.next() {
                self.dispatch(piece, &mut serial).await?;
            }
        }
        // The whole dump matched its recorded size and hashes.
        for piece in pieces.finish() {
            self.dispatch(piece, &mut serial).await?;
        }
        Ok(())
    }

    async fn dispatch(&mut self, piece: Piece, serial: &mut bool) -> Result<(), Error> {
        match piece {
            Piece::Prologue(bytes) => {
                let bytes = Bytes::from(bytes);
                for n in 0..self.clients.len() {
                    self.send(n, bytes.clone()).await?;
                }
            }
            Piece::Serial(bytes) => {
                if !*serial {
                    self.wait_until(|clients| clients.iter().all(|c| c.outstanding == 0))
                        .await?;
                    *serial = true;
                }
                self.send(0, Bytes::from(bytes)).await?;
            }
            Piece::Rows(bytes) => {
                if *serial {
                    self.mark(0).await?;
                    self.wait_until(|clients| clients[0].outstanding == 0).await?;
                    *serial = false;
                }
                self.wait_until(|clients| clients.iter().any(|c| c.outstanding < WINDOW))
                    .await?;
                let n = (0..self.clients.len())
                    .min_by_key(|&n| self.clients[n].outstanding)
                    .unwrap_or(0);
                self.send(n, Bytes::from(bytes)).await?;
                self.mark(n).await?;
            }
        }
        Ok(())
    }

    async fn send(&mut self, n: usize, bytes: Bytes) -> Result<(), Error> {
        let sent = match &self.clients[n].input {
            Some(input) => input.send(bytes).await.is_ok(),
            None => false,
        };
        if sent { Ok(()) } else { Err(self.failure(n).await) }
    }

    /// Queues a marker after what client `n` has been sent.
    async fn mark(&mut self, n: usize) -> Result<(), Error> {
        self.marker += 1;
        let marker = format!("SELECT 'nfrepo-sync-{}';\n", self.marker);
        self.send(n, Bytes::from(marker)).await?;
        self.clients[n].outstanding += 1;
        Ok(())
    }

    /// Takes the clients' reports until `done` holds.
    async fn wait_until(&mut self, done: impl Fn(&[Client]) -> bool) -> Result<(), Error> {
        while !done(&self.clients) {
            match self.events.recv().await {
                Some(Event::Synced(n)) => {
                    let client = &mut self.clients[n];
                    client.outstanding = client.outstanding.saturating_sub(1);
                }
                Some(Event::Closed(n)) => return Err(self.failure(n).await),
                None => return Err(Error::RestoreCommandFailed("the clients' reports ended".into())),
            }
        }
        Ok(())
    }

    /// Client `n` stopped before the end: its error, after stopping it.
    async fn failure(&mut self, n: usize) -> Error {
        let client = &mut self.clients[n];
        client.input = None;
        let status = client.child.wait().await;
        let stderr = (&mut client.stderr).await.unwrap_or_default();
        let why = match status.map(|s| s.code()) {
            Ok(Some(code)) => format!("exited with status {code}"),
            Ok(None) => "was killed".to_owned(),
            Err(e) => format!("could not be waited for: {e}"),
        };
        Error::RestoreCommandFailed(format!(
            "{:?} (connection {} of {}) {why} after {} dump bytes into {}: {}",
            self.program,
            n + 1,
            self.clients.len(),
            self.bytes,
            self.staging,
            client_error(&stderr)
        ))
    }

    /// Ends every client's input and waits for all of them to exit 0.
    async fn finish(mut self) -> Result<u64, Error> {
        for client in &mut self.clients {
            client.input = None;
        }
        for n in 0..self.clients.len() {
            let status = self.clients[n]
                .child
                .wait()
                .await
                .map_err(|e| Error::RestoreCommandFailed(format!("waiting for {:?}: {e}", self.program)))?;
            if !status.success() {
                let error = self.failure(n).await;
                self.kill().await;
                return Err(error);
            }
        }
        Ok(self.bytes)
    }

    /// Stops every client while its input is still open, so none reads an
    /// end of input and runs a statement the stream cut short.
    async fn kill(&mut self) {
        for client in &mut self.clients {
            let _ = client.child.start_kill();
        }
        for client in &mut self.clients {
            let _ = client.child.wait().await;
        }
    }
}
