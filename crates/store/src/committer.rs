//! Group commit (PERF-NOTES): one writer task drains a queue of write sets into one
//! transaction and then answers every waiter, so concurrent requests share a commit while
//! each still gets its answer only after its changes are durable.

use crate::{Result, Store, StoreError, WriteOutcome, WriteSet};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

const MAX_BATCH: usize = 512;

type Reply = oneshot::Sender<Result<WriteOutcome>>;

#[derive(Clone)]
pub struct Committer {
    tx: mpsc::Sender<(WriteSet, Reply)>,
}

impl Committer {
    /// Starts the writer task. It ends when every `Committer` clone is dropped.
    pub fn spawn(store: Arc<dyn Store>) -> Self {
        let (tx, mut rx) = mpsc::channel::<(WriteSet, Reply)>(MAX_BATCH * 4);
        let writer = async move {
            let mut sets = Vec::with_capacity(MAX_BATCH);
            let mut replies = Vec::with_capacity(MAX_BATCH);
            while let Some((set, reply)) = rx.recv().await {
                sets.push(set);
                replies.push(reply);
                while sets.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok((set, reply)) => {
                            sets.push(set);
                            replies.push(reply);
                        }
                        Err(_) => break,
                    }
                }
                match store.apply(&sets).await {
                    Ok(outcomes) => {
                        for (reply, outcome) in replies.drain(..).zip(outcomes) {
                            let _ = reply.send(Ok(outcome));
                        }
                    }
                    Err(batch_err) if sets.len() > 1 => {
                        // One set spoiled the batch: apply each alone so only it fails.
                        tracing::debug!(error = %batch_err, size = sets.len(), "batch failed; applying one by one");
                        for (set, reply) in sets.iter().zip(replies.drain(..)) {
                            let res = store.apply(std::slice::from_ref(set)).await;
                            let _ = reply
                                .send(res.and_then(|mut o| o.pop().ok_or(StoreError::WriterGone)));
                        }
                    }
                    Err(e) => {
                        for reply in replies.drain(..) {
                            let _ = reply.send(Err(StoreError::Database(e.to_string())));
                        }
                    }
                }
                sets.clear();
            }
        };
        // The writer runs on a thread of its own, so its statement round trips never wait
        // behind request handling on the shared runtime; the queue is its only contact.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
        match runtime {
            Ok(rt) => {
                let spawned = std::thread::Builder::new()
                    .name("cardgate-writer".into())
                    .spawn(move || rt.block_on(writer));
                if let Err(e) = spawned {
                    tracing::error!(error = %e, "cannot start the writer thread");
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot build the writer runtime"),
        }
        Self { tx }
    }

    /// Queues `set` and waits until it is committed (or refused by its guard).
    pub async fn submit(&self, set: WriteSet) -> Result<WriteOutcome> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send((set, reply))
            .await
            .map_err(|_| StoreError::WriterGone)?;
        rx.await.map_err(|_| StoreError::WriterGone)?
    }
}
