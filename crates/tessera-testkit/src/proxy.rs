//! A TCP proxy that a test can cut: Tessera talks to PostgreSQL through it, and `cut()`
//! plays a database outage (every open connection closed, new ones accepted but never
//! answered, as behind a dead network path) until `restore()`.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct TcpProxy {
    addr: SocketAddr,
    cut: watch::Sender<bool>,
    accept: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    /// Listens on 127.0.0.1:0 and forwards every connection to `upstream`.
    pub async fn start(upstream: SocketAddr) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let (cut, state) = watch::channel(false);
        let accept = tokio::spawn(accept_loop(listener, upstream, state));
        TcpProxy { addr, cut, accept }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `url` (a `postgres://` URL) pointed at this proxy instead of its own host and port.
    pub fn url(&self, url: &str) -> String {
        let mut parsed = url::Url::parse(url).expect("database URL");
        parsed
            .set_host(Some(&self.addr.ip().to_string()))
            .expect("host");
        parsed.set_port(Some(self.addr.port())).expect("port");
        parsed.to_string()
    }

    /// Closes every forwarded connection; new ones hang unanswered until `restore`.
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    /// Forwards new connections again (the cut ones stay closed).
    pub fn restore(&self) {
        self.cut.send_replace(false);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        // Ends the forwarding tasks too: their `watch` receivers see the sender gone.
        self.accept.abort();
    }
}

async fn accept_loop(listener: TcpListener, upstream: SocketAddr, state: watch::Receiver<bool>) {
    while let Ok((client, _)) = listener.accept().await {
        let rx = state.clone();
        if *rx.borrow() {
            tokio::spawn(blackhole(client, rx));
        } else {
            tokio::spawn(forward(client, upstream, rx));
        }
    }
}

/// Holds the connection open without a byte in either direction until the outage ends.
async fn blackhole(client: TcpStream, mut cut: watch::Receiver<bool>) {
    let _ = cut.wait_for(|cut| !*cut).await;
    drop(client);
}

async fn forward(mut client: TcpStream, upstream: SocketAddr, mut cut: watch::Receiver<bool>) {
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
        _ = cut.wait_for(|cut| *cut) => {}
    }
    // Both sockets close here; the client sees its connection end mid-conversation.
}
