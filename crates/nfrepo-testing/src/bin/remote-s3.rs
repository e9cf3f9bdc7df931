//! `remote-s3`: a TCP proxy that makes a loopback S3 server behave like a
//! remote one, for whole-process benchmarks (`scripts/bench-peers.sh
//! --remote-s3`).
//!
//! ```text
//! remote-s3 LISTEN UPSTREAM DELAY_MS MBPS
//! ```
//!
//! Every byte is held for `DELAY_MS` in each direction (a request's first
//! byte of answer comes at least twice that after it was sent, as across a
//! region), and what each connection carries back to the client is capped
//! at `MBPS` megabytes a second (0: no cap), as S3 caps each connection
//! (on the order of 100 MB/s): a client that puts its reads on few
//! connections is slower than one that spreads them. The proxy reads
//! ahead of the client without bound (its own memory, not the client's).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Bytes read from one side at a time.
const PIECE: usize = 64 << 10;

/// Pacing slack: a piece is sent early by at most this much.
const SLACK: Duration = Duration::from_millis(2);

struct Conditions {
    delay: Duration,
    /// Bytes a second each connection carries back, 0 for no cap.
    rate: f64,
}

fn main() {
    if let Err(message) = run() {
        eprintln!("remote-s3: {message}");
        std::process::exit(2);
    }
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [listen, upstream, delay, mbps] = args.as_slice() else {
        return Err("usage: remote-s3 LISTEN UPSTREAM DELAY_MS MBPS".into());
    };
    let delay: f64 = delay
        .parse()
        .map_err(|_| format!("DELAY_MS {delay:?} is not a number"))?;
    let mbps: f64 = mbps.parse().map_err(|_| format!("MBPS {mbps:?} is not a number"))?;
    if !(delay.is_finite() && delay >= 0.0 && mbps.is_finite() && mbps >= 0.0) {
        return Err("DELAY_MS and MBPS must be zero or more".into());
    }
    let conditions = Conditions {
        delay: Duration::from_secs_f64(delay / 1000.0),
        rate: mbps * 1e6,
    };
    let runtime = tokio::runtime::Runtime::new().map_err(|e| format!("cannot start: {e}"))?;
    runtime.block_on(serve(listen, upstream.clone(), conditions))
}

async fn serve(listen: &str, upstream: String, conditions: Conditions) -> Result<(), String> {
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let conditions = std::sync::Arc::new(conditions);
    loop {
        let (client, _) = listener.accept().await.map_err(|e| format!("accept: {e}"))?;
        let (upstream, conditions) = (upstream.clone(), conditions.clone());
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(&upstream).await else {
                return;
            };
            // Pieces are paced here; Nagle would add its own delays.
            let _ = (client.set_nodelay(true), server.set_nodelay(true));
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            let requests = relay(client_read, server_write, conditions.delay, 0.0);
            let answers = relay(server_read, client_write, conditions.delay, conditions.rate);
            tokio::join!(requests, answers);
        });
    }
}

/// Copies `from` to `to`, each piece held for `delay` and paced to `rate`
/// bytes a second (0: unpaced).
async fn relay(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, delay: Duration, rate: f64) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let reader = async move {
        let mut buf = vec![0u8; PIECE];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.send((Instant::now() + delay, buf[..n].to_vec())).is_err() {
                        break;
                    }
                }
            }
        }
    };
    let writer = async move {
        let mut free_at = Instant::now();
        while let Some((due, piece)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if rate > 0.0 {
                let now = Instant::now();
                free_at = free_at.max(now) + Duration::from_secs_f64(piece.len() as f64 / rate);
                if free_at > now + SLACK {
                    tokio::time::sleep_until(free_at - SLACK).await;
                }
            }
            if to.write_all(&piece).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}
