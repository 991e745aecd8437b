//! An in-process sink: every result event, dead letter, drift and flap event sent on a bounded channel. Tests and
//! embedding applications read from it.

use futures::{FutureExt, future::BoxFuture};
use tokio::sync::mpsc;

use super::{DeadLetter, DriftEvent, FlapEvent, PublishError, ResultEvent, Sink};

#[derive(Debug, Clone)]
pub enum Published {
    Result(ResultEvent),
    DeadLetter(DeadLetter),
    Drift(DriftEvent),
    Flap(FlapEvent),
}

#[derive(Debug, Clone)]
pub struct ChannelSink {
    tx: mpsc::Sender<Published>,
}

impl ChannelSink {
    /// A sink and its receiving end. When the channel is full the pipeline waits: a reader that
    /// stops reading slows the bridge down rather than growing memory.
    pub fn new(capacity: usize) -> (Self, mpsc::Receiver<Published>) {
        let (tx, rx) = mpsc::channel(capacity);
        (Self { tx }, rx)
    }

    async fn send(&self, item: Published) -> Result<(), PublishError> {
        self.tx
            .send(item)
            .await
            .map_err(|_| PublishError { sink: "channel", message: "receiver dropped".into() })
    }
}

impl Sink for ChannelSink {
    fn name(&self) -> &'static str {
        "channel"
    }

    fn result<'a>(&'a self, e: &'a ResultEvent) -> BoxFuture<'a, Result<(), PublishError>> {
        self.send(Published::Result(e.clone())).boxed()
    }

    fn dead_letter<'a>(&'a self, d: &'a DeadLetter) -> BoxFuture<'a, Result<(), PublishError>> {
        self.send(Published::DeadLetter(d.clone())).boxed()
    }

    fn drift<'a>(&'a self, d: &'a DriftEvent) -> BoxFuture<'a, Result<(), PublishError>> {
        self.send(Published::Drift(d.clone())).boxed()
    }

    fn flap<'a>(&'a self, f: &'a FlapEvent) -> BoxFuture<'a, Result<(), PublishError>> {
        self.send(Published::Flap(f.clone())).boxed()
    }
}
