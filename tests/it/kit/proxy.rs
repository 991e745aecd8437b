//! A TCP fault proxy: one listener on a loopback port 0 in front of one upstream address, whose
//! [`Fault`] the test switches at run time. A switch reaches every open connection at once, not
//! only the next one, so a test can partition a bridge from NATS or SCWM mid-run and heal it.
//!
//! It owns nothing but the bytes in flight between its two sockets. It must not inspect,
//! reorder, duplicate or drop them: every fault it injects is one TCP itself can produce
//! (a stalled path, a slow path, a reset), so what a peer sees is what a real network does to it.
//! A stalled direction is not read at all, so its bytes wait in the kernel's buffers and the
//! sender meets TCP back-pressure, as it would with packets lost and retransmitted; when healed,
//! the stream carries on intact unless a peer gave up meanwhile.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream, tcp::ReadHalf, tcp::WriteHalf},
    sync::watch,
    task::JoinHandle,
};
use tokio_util::sync::CancellationToken;

/// One direction of a proxied connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the client that connected to the proxy to the upstream server.
    ToUpstream,
    /// From the upstream server back to the client.
    ToClient,
}

/// What the proxy does to the traffic, from the moment it is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Bytes flow both ways as they come.
    Pass,
    /// Each chunk read is held this long before it is forwarded.
    Delay(Duration),
    /// Nothing is read or forwarded either way; new connections are accepted but not connected
    /// upstream until the fault changes.
    Blackhole,
    /// This direction is stalled as in [`Fault::Blackhole`]; the other flows.
    CutOneWay(Direction),
    /// Every open connection is aborted with RST (both sides), and new ones as they come.
    Reset,
}

impl Fault {
    /// How long a chunk going `dir` is held, or `None` while that direction is stalled (or
    /// reset, which the connection handles as a whole).
    fn hold(self, dir: Direction) -> Option<Duration> {
        match self {
            Fault::Pass => Some(Duration::ZERO),
            Fault::Delay(d) => Some(d),
            Fault::CutOneWay(cut) if cut == dir => None,
            Fault::CutOneWay(_) => Some(Duration::ZERO),
            Fault::Blackhole | Fault::Reset => None,
        }
    }
}

/// A running proxy. Dropping it stops accepting and closes every connection it carries.
pub struct Proxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    fault: watch::Sender<Fault>,
    accepted: Arc<AtomicUsize>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Proxy {
    /// A proxy in front of `upstream`, passing everything until told otherwise.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("the proxy binds a loopback port");
        let addr = listener.local_addr().unwrap();
        let (fault, watched) = watch::channel(Fault::Pass);
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = CancellationToken::new();
        let task =
            tokio::spawn(accept_loop(listener, upstream, watched, Arc::clone(&accepted), stop.clone()));
        Self { addr, upstream, fault, accepted, stop, task }
    }

    /// Where clients connect instead of the upstream.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// Switches the fault; open connections follow at once.
    pub fn set(&self, fault: Fault) {
        self.fault.send_replace(fault);
    }

    pub fn fault(&self) -> Fault {
        *self.fault.borrow()
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.cancel();
        self.task.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    fault: watch::Receiver<Fault>,
    accepted: Arc<AtomicUsize>,
    stop: CancellationToken,
) {
    loop {
        let Ok((client, _)) = listener.accept().await else { continue };
        accepted.fetch_add(1, Ordering::Relaxed);
        let (fault, stop) = (fault.clone(), stop.clone());
        tokio::spawn(async move {
            tokio::select! {
                () = carry(client, upstream, fault) => {}
                () = stop.cancelled() => {}
            }
        });
    }
}

/// Aborts `s` with RST rather than the FIN of an orderly close.
fn reset(s: TcpStream) {
    let _ = s.set_zero_linger();
    drop(s);
}

/// One connection, from accept to close.
async fn carry(mut client: TcpStream, upstream: SocketAddr, mut fault: watch::Receiver<Fault>) {
    // A new connection waits out a blackhole before it reaches upstream (as a SYN would be
    // retransmitted), and is reset under Reset.
    let ready = fault.wait_for(|f| !matches!(f, Fault::Blackhole)).await.map(|f| *f);
    match ready {
        Ok(Fault::Reset) | Err(_) => return reset(client),
        Ok(_) => {}
    }
    let Ok(mut server) = TcpStream::connect(upstream).await else { return reset(client) };
    let _ = (client.set_nodelay(true), server.set_nodelay(true));
    let aborted = {
        let (cr, cw) = client.split();
        let (sr, sw) = server.split();
        let mut resets = fault.clone();
        tokio::select! {
            done = async {
                tokio::try_join!(
                    pump(cr, sw, Direction::ToUpstream, fault.clone()),
                    pump(sr, cw, Direction::ToClient, fault.clone()),
                )
            } => done.is_err(),
            _ = resets.wait_for(|f| matches!(f, Fault::Reset)) => true,
        }
    };
    // A peer that reset its side, or a Reset fault, ends both sides with RST, so neither peer
    // mistakes the end for an orderly close.
    if aborted {
        reset(client);
        reset(server);
    }
}

/// Waits until `dir` may flow; returns how long to hold a chunk then.
async fn flowing(fault: &mut watch::Receiver<Fault>, dir: Direction) -> Duration {
    loop {
        if let Some(hold) = fault.borrow_and_update().hold(dir) {
            return hold;
        }
        if fault.changed().await.is_err() {
            // The proxy is gone; its stop token ends this connection.
            std::future::pending::<()>().await;
        }
    }
}

/// Copies one direction, chunk by chunk, reading only while it may flow.
async fn pump(
    mut from: ReadHalf<'_>,
    mut to: WriteHalf<'_>,
    dir: Direction,
    mut fault: watch::Receiver<Fault>,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let hold = flowing(&mut fault, dir).await;
        // A switch while waiting for bytes is looked at before anything is read.
        let n = tokio::select! {
            n = from.read(&mut buf) => n?,
            _ = fault.changed() => continue,
        };
        if n == 0 {
            // Half-close passes on as such: the other direction may still be carrying bytes.
            return to.shutdown().await;
        }
        if !hold.is_zero() {
            tokio::time::sleep(hold).await;
        }
        // The chunk is held, not dropped, while the direction is stalled; a partial write
        // carries on where it stopped.
        let mut sent = 0;
        while sent < n {
            flowing(&mut fault, dir).await;
            tokio::select! {
                w = to.write(&buf[sent..n]) => sent += w?,
                _ = fault.changed() => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How long "nothing arrives" is watched for.
    const QUIET: Duration = Duration::from_millis(300);

    /// An echo server on a loopback port: every connection gets back what it sends.
    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    async fn read_exactly(s: &mut TcpStream, n: usize) -> Vec<u8> {
        let mut buf = vec![0; n];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf))
            .await
            .expect("the bytes arrive within 5 s")
            .expect("the connection stays open");
        buf
    }

    /// Fails if anything at all arrives on `s` within [`QUIET`].
    async fn assert_quiet(s: &mut TcpStream) {
        let mut byte = [0u8; 1];
        if let Ok(got) = tokio::time::timeout(QUIET, s.read(&mut byte)).await {
            panic!("expected nothing within {QUIET:?}, got {got:?}");
        }
    }

    #[tokio::test]
    async fn bytes_pass_both_ways_and_a_delay_holds_them() {
        let proxy = Proxy::start(echo_server().await).await;
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        s.write_all(b"hello").await.unwrap();
        assert_eq!(read_exactly(&mut s, 5).await, b"hello");
        // A large stream arrives intact, in order.
        let big: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        let (mut r, mut w) = s.into_split();
        let sent = big.clone();
        let writer = tokio::spawn(async move { w.write_all(&sent).await.map(|()| w) });
        let mut back = vec![0; big.len()];
        tokio::time::timeout(Duration::from_secs(10), r.read_exact(&mut back)).await.unwrap().unwrap();
        assert!(back == big, "a megabyte comes back as it was sent");
        let mut s = r.reunite(writer.await.unwrap().unwrap()).unwrap();

        proxy.set(Fault::Delay(Duration::from_millis(200)));
        let sent = std::time::Instant::now();
        s.write_all(b"slow").await.unwrap();
        assert_eq!(read_exactly(&mut s, 4).await, b"slow");
        // Held once on the way up and once on the way back.
        assert!(sent.elapsed() >= Duration::from_millis(400), "delayed: {:?}", sent.elapsed());
    }

    #[tokio::test]
    async fn a_blackhole_stalls_open_and_new_connections_and_heals_them_intact() {
        let proxy = Proxy::start(echo_server().await).await;
        let mut open = TcpStream::connect(proxy.addr()).await.unwrap();
        open.write_all(b"before").await.unwrap();
        assert_eq!(read_exactly(&mut open, 6).await, b"before");

        proxy.set(Fault::Blackhole);
        open.write_all(b"during").await.unwrap();
        // Accepted (the kernel completes the handshake) but not carried upstream.
        let mut new = TcpStream::connect(proxy.addr()).await.unwrap();
        new.write_all(b"fresh").await.unwrap();
        assert_quiet(&mut open).await;
        assert_quiet(&mut new).await;

        proxy.set(Fault::Pass);
        assert_eq!(read_exactly(&mut open, 6).await, b"during");
        assert_eq!(read_exactly(&mut new, 5).await, b"fresh");
        open.write_all(b"after").await.unwrap();
        assert_eq!(read_exactly(&mut open, 5).await, b"after");
    }

    #[tokio::test]
    async fn a_blackhole_builds_back_pressure_instead_of_buffering_without_bound() {
        // Upstream reads everything and counts it, so only the proxy can hold the writer back.
        let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = Proxy::start(upstream.local_addr().unwrap()).await;
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        let (mut server, _) = upstream.accept().await.unwrap();
        let (count, counted) = watch::channel(0usize);
        tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok(n @ 1..) = server.read(&mut buf).await {
                count.send_modify(|c| *c += n);
            }
        });
        proxy.set(Fault::Blackhole);
        // Nothing is read, so the kernel's buffers fill and a large write cannot finish.
        let big = vec![7u8; 64 * 1024 * 1024];
        let write = tokio::time::timeout(QUIET, s.write_all(&big)).await;
        assert!(write.is_err(), "a 64 MiB write into a blackhole does not complete");
        assert_eq!(*counted.borrow(), 0, "nothing reached upstream");
        proxy.set(Fault::Pass);
        // Healed: the part the kernel took is delivered.
        let mut counted = counted;
        tokio::time::timeout(Duration::from_secs(5), counted.wait_for(|c| *c > 0)).await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_one_way_cut_stalls_one_direction_while_the_other_flows() {
        let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = Proxy::start(upstream.local_addr().unwrap()).await;
        let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
        let (mut server, _) = upstream.accept().await.unwrap();

        proxy.set(Fault::CutOneWay(Direction::ToUpstream));
        client.write_all(b"up").await.unwrap();
        server.write_all(b"down").await.unwrap();
        assert_eq!(read_exactly(&mut client, 4).await, b"down");
        assert_quiet(&mut server).await;

        proxy.set(Fault::CutOneWay(Direction::ToClient));
        assert_eq!(read_exactly(&mut server, 2).await, b"up", "the held bytes go once that way flows");
        server.write_all(b"back").await.unwrap();
        client.write_all(b"on").await.unwrap();
        assert_eq!(read_exactly(&mut server, 2).await, b"on");
        assert_quiet(&mut client).await;

        proxy.set(Fault::Pass);
        assert_eq!(read_exactly(&mut client, 4).await, b"back");
    }

    #[tokio::test]
    async fn reset_aborts_open_connections_and_new_ones_until_lifted() {
        let proxy = Proxy::start(echo_server().await).await;
        let mut open = TcpStream::connect(proxy.addr()).await.unwrap();
        open.write_all(b"ping").await.unwrap();
        assert_eq!(read_exactly(&mut open, 4).await, b"ping");

        proxy.set(Fault::Reset);
        let mut buf = [0u8; 8];
        let got = tokio::time::timeout(Duration::from_secs(5), open.read(&mut buf)).await.unwrap();
        let err = got.expect_err("an RST, not an orderly end of stream");
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");

        let mut new = TcpStream::connect(proxy.addr()).await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), new.read(&mut buf)).await.unwrap();
        assert_eq!(got.expect_err("reset as it comes").kind(), std::io::ErrorKind::ConnectionReset);

        proxy.set(Fault::Pass);
        let mut again = TcpStream::connect(proxy.addr()).await.unwrap();
        again.write_all(b"back").await.unwrap();
        assert_eq!(read_exactly(&mut again, 4).await, b"back");
    }

    #[tokio::test]
    async fn a_half_close_passes_on_as_one() {
        let proxy = Proxy::start(echo_server().await).await;
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        s.write_all(b"last words").await.unwrap();
        s.shutdown().await.unwrap();
        let mut back = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut back)).await.unwrap().unwrap();
        assert_eq!(back, b"last words", "the echo answered after our FIN, then closed");
    }
}
