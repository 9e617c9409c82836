//! A [`Queue`] over a real one that lets a test take over chosen calls (time them, record them,
//! refuse or fail them) while every other call goes to the real queue unchanged.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use profile_worker::queue::{
    BatchFailure, OutgoingMessage, Queue, QueueDepth, QueueError, ReceivedMessage,
};

/// What a test sees of, or does instead of, the real queue's calls; each default changes nothing.
#[async_trait]
pub trait Hooks: Send + Sync + 'static {
    /// Sees each receive's answer and how long the round-trip took.
    fn received(&self, _took: Duration, _answer: &Result<Vec<ReceivedMessage>, QueueError>) {}

    /// Sees each single visibility change before it is made; an error returned is the answer
    /// instead of the real queue's (and a hook that never returns hangs the call).
    async fn changing_visibility(&self, _timeout: Duration) -> Result<(), QueueError> {
        Ok(())
    }

    /// Sends a batch; the default sends it to the real queue.
    async fn send_batch(
        &self,
        inner: &dyn Queue,
        messages: &[OutgoingMessage],
    ) -> Result<Vec<BatchFailure>, QueueError> {
        inner.send_batch(messages).await
    }
}

/// `inner` with the calls `hooks` takes over.
pub struct Intercepted<H> {
    inner: Arc<dyn Queue>,
    pub hooks: H,
}

impl<H: Hooks> Intercepted<H> {
    pub fn new(inner: Arc<dyn Queue>, hooks: H) -> Arc<Self> {
        Arc::new(Self { inner, hooks })
    }
}

#[async_trait]
impl<H: Hooks> Queue for Intercepted<H> {
    async fn receive(
        &self,
        max: usize,
        wait: Duration,
        visibility: Duration,
    ) -> Result<Vec<ReceivedMessage>, QueueError> {
        let started = Instant::now();
        let answer = self.inner.receive(max, wait, visibility).await;
        self.hooks.received(started.elapsed(), &answer);
        answer
    }

    async fn delete_batch(&self, receipts: &[String]) -> Result<Vec<BatchFailure>, QueueError> {
        self.inner.delete_batch(receipts).await
    }

    async fn change_visibility(&self, receipt: &str, timeout: Duration) -> Result<(), QueueError> {
        self.hooks.changing_visibility(timeout).await?;
        self.inner.change_visibility(receipt, timeout).await
    }

    async fn change_visibility_batch(
        &self,
        entries: &[(String, Duration)],
    ) -> Result<Vec<BatchFailure>, QueueError> {
        self.inner.change_visibility_batch(entries).await
    }

    async fn send(&self, message: &OutgoingMessage) -> Result<String, QueueError> {
        self.inner.send(message).await
    }

    async fn send_batch(
        &self,
        messages: &[OutgoingMessage],
    ) -> Result<Vec<BatchFailure>, QueueError> {
        self.hooks.send_batch(&*self.inner, messages).await
    }

    async fn approximate_depth(&self) -> Result<QueueDepth, QueueError> {
        self.inner.approximate_depth().await
    }

    fn max_receive_count(&self) -> Option<u32> {
        self.inner.max_receive_count()
    }

    fn dead_letter_queue(&self) -> Option<Arc<dyn Queue>> {
        self.inner.dead_letter_queue()
    }
}
