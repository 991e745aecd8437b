//! What one HTTP connection may cost the bridge when the peer says little or nothing: how long a
//! new connection may stay silent, how long a kept-alive one may sit idle between requests, how
//! long a request's headers may take once they have begun, and how many connections are open at
//! once.
//!
//! hyper bounds none of the first two the way a service behind load balancers and connection
//! pools needs: its protocol detection waits for a first byte forever, and its header timer also
//! runs while a kept-alive connection is idle, so an idle timeout shorter than the clients' pool
//! (Go's 90 s, which Alertmanager uses) resets connections they are about to reuse. So the
//! connection's IO is wrapped ([`Guarded`]): it knows whether a request is being handled (the
//! service tells it through [`Activity`]) and fails a read that waits too long for the phase it
//! is in. It owns these timers and the count of open connections; it must not look at what the
//! bytes say.

use std::{
    io,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    time::{Instant, Sleep},
};

/// The limits of one connection.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A new connection must send its first byte within this.
    pub first_byte: Duration,
    /// A kept-alive connection may sit this long between requests.
    pub idle: Duration,
    /// Once a request's first byte has arrived, its headers must be complete within this.
    pub headers: Duration,
}

/// Requests on one connection, as the service reports them: how many are being handled, and
/// how many were begun in all (a request read and answered between two reads of the IO leaves
/// no other trace).
#[derive(Debug, Clone, Default)]
pub struct Activity {
    active: Arc<AtomicUsize>,
    begun: Arc<AtomicUsize>,
}

impl Activity {
    /// Marks a request as being handled until the guard is dropped (its response is made).
    pub fn begin(&self) -> ActiveRequest {
        self.begun.fetch_add(1, Ordering::AcqRel);
        self.active.fetch_add(1, Ordering::AcqRel);
        ActiveRequest(Arc::clone(&self.active))
    }

    fn busy(&self) -> bool {
        self.active.load(Ordering::Acquire) > 0
    }

    fn begun(&self) -> usize {
        self.begun.load(Ordering::Acquire)
    }
}

/// One request being handled; dropping it ends it.
#[derive(Debug)]
pub struct ActiveRequest(Arc<AtomicUsize>);

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Where the connection is, for the read timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Nothing received yet.
    New,
    /// Between requests.
    Idle,
    /// Bytes of a request have arrived; the service has not been handed it yet.
    Headers,
    /// A request is being handled: its body and the next request's bytes are bounded elsewhere
    /// (the body by its own read timeout), so no timer runs.
    Busy,
}

/// The connection's IO with the timers of [`Limits`].
pub struct Guarded<IO> {
    io: IO,
    limits: Limits,
    activity: Activity,
    phase: Phase,
    timer: Pin<Box<Sleep>>,
    /// Whether the timer is set for the current phase.
    armed: bool,
    /// Requests begun when the phase was last looked at.
    begun: usize,
    /// The connection's place in the open-connection count, released on drop.
    _slot: Option<Slot>,
}

impl<IO> Guarded<IO> {
    pub fn new(io: IO, limits: Limits, activity: Activity, slot: Option<Slot>) -> Self {
        Self {
            io,
            limits,
            activity,
            phase: Phase::New,
            timer: Box::pin(tokio::time::sleep(limits.first_byte)),
            armed: true,
            begun: 0,
            _slot: slot,
        }
    }

    fn limit(&self) -> Option<(Duration, &'static str)> {
        match self.phase {
            Phase::New => Some((self.limits.first_byte, "no first byte")),
            Phase::Idle => Some((self.limits.idle, "idle")),
            Phase::Headers => Some((self.limits.headers, "request headers too slow")),
            Phase::Busy => None,
        }
    }

    /// Moves to `phase`, restarting the timer when the phase changes.
    fn enter(&mut self, phase: Phase) {
        if phase != self.phase {
            self.phase = phase;
            self.armed = false;
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Guarded<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let begun = this.activity.begun();
        if this.activity.busy() {
            this.enter(Phase::Busy);
        } else if this.phase == Phase::Busy || begun != this.begun {
            // A request was handled since: the connection waits for the next one.
            this.enter(Phase::Idle);
        }
        this.begun = begun;
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before && matches!(this.phase, Phase::New | Phase::Idle) {
                    this.enter(Phase::Headers);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                let Some((limit, why)) = this.limit() else { return Poll::Pending };
                if !this.armed {
                    this.timer.as_mut().reset(Instant::now() + limit);
                    this.armed = true;
                }
                match this.timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, why))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Guarded<IO> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// The count of open connections and its cap.
#[derive(Debug, Clone)]
pub struct Connections {
    open: Arc<AtomicUsize>,
    max: usize,
}

/// One open connection's place in the count.
#[derive(Debug)]
pub struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        let open = self.0.fetch_sub(1, Ordering::AcqRel) - 1;
        crate::observe::http_connections(open);
    }
}

impl Connections {
    pub fn new(max: usize) -> Self {
        Self { open: Arc::new(AtomicUsize::new(0)), max }
    }

    /// A place for one more connection, or `None` at the cap.
    pub fn admit(&self) -> Option<Slot> {
        let admitted = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < self.max).then_some(n + 1))
            .ok()?;
        crate::observe::http_connections(admitted + 1);
        Some(Slot(Arc::clone(&self.open)))
    }

    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    use super::*;

    const LIMITS: Limits = Limits {
        first_byte: Duration::from_secs(10),
        idle: Duration::from_secs(120),
        headers: Duration::from_secs(10),
    };

    #[tokio::test(start_paused = true)]
    async fn a_connection_that_never_sends_a_byte_is_closed_after_the_first_byte_timeout() {
        let (_client, server) = duplex(64);
        let mut conn = Guarded::new(server, LIMITS, Activity::default(), None);
        let started = Instant::now();
        let err = conn.read(&mut [0u8; 8]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), LIMITS.first_byte);
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_kept_alive_connection_lives_for_the_idle_timeout_not_the_header_one() {
        let (mut client, server) = duplex(64);
        let activity = Activity::default();
        let mut conn = Guarded::new(server, LIMITS, activity.clone(), None);
        client.write_all(b"GET").await.unwrap();
        assert_eq!(conn.read(&mut [0u8; 8]).await.unwrap(), 3);
        // The request is handled and answered; the connection then waits for the next one.
        drop(activity.begin());
        {
            let _handling = activity.begin();
            let mut buf = [0u8; 8];
            let read = tokio::time::timeout(Duration::from_secs(300), conn.read(&mut buf));
            assert!(read.await.is_err(), "no timer runs while a request is being handled");
        }
        let started = Instant::now();
        let err = conn.read(&mut [0u8; 8]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), LIMITS.idle);
    }

    #[tokio::test(start_paused = true)]
    async fn headers_that_trickle_are_cut_off_after_the_header_timeout() {
        let (mut client, server) = duplex(64);
        let mut conn = Guarded::new(server, LIMITS, Activity::default(), None);
        client.write_all(b"P").await.unwrap();
        assert_eq!(conn.read(&mut [0u8; 8]).await.unwrap(), 1);
        let started = Instant::now();
        let err = conn.read(&mut [0u8; 8]).await.unwrap_err();
        assert_eq!(err.to_string(), "request headers too slow");
        assert_eq!(started.elapsed(), LIMITS.headers);
    }

    #[test]
    fn connections_past_the_cap_are_not_admitted_and_a_closed_one_frees_its_place() {
        let connections = Connections::new(2);
        let a = connections.admit().unwrap();
        let _b = connections.admit().unwrap();
        assert!(connections.admit().is_none());
        drop(a);
        assert_eq!(connections.open(), 1);
        assert!(connections.admit().is_some());
    }
}
