//! A TCP proxy for tests that break connections on purpose.
//!
//! [`Proxy`] listens on `127.0.0.1:0` and forwards every connection, byte for byte, to a
//! target address. On command it *cuts* every current connection abruptly: both TCP sockets
//! are dropped at once, with no WebSocket close frame, the way a network failure or a dead
//! NAT looks to both ends. It can also hold back what the target sends (so a reply is lost
//! in a later cut) and refuse new connections (so a client cannot come back for a while).
//!
//! ```no_run
//! # async fn example(server: &hubcast_integration_tests::TestServer) {
//! use hubcast_integration_tests::proxy::Proxy;
//!
//! let proxy = Proxy::start(server.addr()).await;
//! let url = proxy.rewrite(&server.url("chat", Some("u"), &[], &[]));
//! // ... connect a client to `url`, then:
//! assert_eq!(proxy.cut_all().await, 1);
//! # }
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::TIMEOUT;

/// A test TCP proxy in front of one target address. Dropping it stops it and drops every
/// connection.
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    target: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

#[derive(Debug)]
struct Shared {
    /// The forwarding task of each open connection.
    conns: Mutex<HashMap<u64, JoinHandle<()>>>,
    accepted: AtomicU64,
    cuts: AtomicU64,
    refuse: AtomicBool,
    /// While true, bytes from the target are read but not forwarded to the client.
    hold: watch::Sender<bool>,
}

impl Proxy {
    /// Starts a proxy to `target` on an ephemeral loopback port.
    ///
    /// # Panics
    /// The listener cannot be bound.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy listener");
        let addr = listener.local_addr().expect("proxy address");
        let shared = Arc::new(Shared {
            conns: Mutex::new(HashMap::new()),
            accepted: AtomicU64::new(0),
            cuts: AtomicU64::new(0),
            refuse: AtomicBool::new(false),
            hold: watch::Sender::new(false),
        });
        let accept = tokio::spawn(accept_loop(listener, target, shared.clone()));
        Self {
            addr,
            target,
            shared,
            accept,
        }
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `url` with the target's `host:port` replaced by the proxy's.
    ///
    /// # Panics
    /// `url` does not contain the target address.
    pub fn rewrite(&self, url: &str) -> String {
        let target = self.target.to_string();
        assert!(
            url.contains(&target),
            "{url} does not point at the proxy's target {target}"
        );
        url.replacen(&target, &self.addr.to_string(), 1)
    }

    /// Cuts every open connection: both sockets are dropped, nothing more is forwarded and no
    /// close frame is sent. Returns how many were cut once they are all closed.
    pub async fn cut_all(&self) -> usize {
        let tasks: Vec<JoinHandle<()>> = {
            let mut conns = self.shared.conns.lock().expect("proxy lock");
            conns.drain().map(|(_, task)| task).collect()
        };
        for task in &tasks {
            task.abort();
        }
        let cut = tasks.len();
        for task in tasks {
            // Aborted, the task drops its sockets; awaiting it means they are closed.
            let _ = task.await;
        }
        self.shared.cuts.fetch_add(cut as u64, Ordering::SeqCst);
        cut
    }

    /// How many connections [`Proxy::cut_all`] has cut so far.
    pub fn cuts(&self) -> u64 {
        self.shared.cuts.load(Ordering::SeqCst)
    }

    /// How many connections the proxy has accepted so far (refused ones included).
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// How many connections are open now.
    pub fn open_connections(&self) -> usize {
        self.shared.conns.lock().expect("proxy lock").len()
    }

    /// Waits until at least `n` connections are open.
    ///
    /// # Panics
    /// Not within [`TIMEOUT`].
    pub async fn wait_for_open(&self, n: usize) {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        while self.open_connections() < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "fewer than {n} proxied connections open after {TIMEOUT:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    /// Holds back (true) or forwards again (false) what the target sends to clients. Held
    /// bytes are forwarded when released, unless a cut drops them first.
    pub fn hold_downstream(&self, hold: bool) {
        self.shared.hold.send_replace(hold);
    }

    /// Refuses (true) or accepts again (false) new connections: a refused connection is
    /// accepted and dropped at once, without reaching the target.
    pub fn refuse_new(&self, refuse: bool) {
        self.shared.refuse.store(refuse, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        if let Ok(mut conns) = self.shared.conns.lock() {
            for (_, task) in conns.drain() {
                task.abort();
            }
        }
    }
}

async fn accept_loop(listener: TcpListener, target: SocketAddr, shared: Arc<Shared>) {
    let mut next_id = 0u64;
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        if shared.refuse.load(Ordering::SeqCst) {
            drop(client);
            continue;
        }
        let id = next_id;
        next_id += 1;
        let hold = shared.hold.subscribe();
        let task_shared = shared.clone();
        // Register before the task can finish, so it always finds its own entry to remove.
        let mut conns = shared.conns.lock().expect("proxy lock");
        let task = tokio::spawn(async move {
            forward(client, target, hold).await;
            task_shared.conns.lock().expect("proxy lock").remove(&id);
        });
        conns.insert(id, task);
    }
}

/// Pipes one client connection to the target until both directions end.
async fn forward(client: TcpStream, target: SocketAddr, hold: watch::Receiver<bool>) {
    let Ok(server) = TcpStream::connect(target).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::join!(
        pipe(client_read, server_write, None),
        pipe(server_read, client_write, Some(hold)),
    );
}

/// Copies one direction, passing on end-of-stream as a half close.
async fn pipe(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut hold: Option<watch::Receiver<bool>>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some(hold) = &mut hold
            && hold.wait_for(|held| !*held).await.is_err()
        {
            break;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}
