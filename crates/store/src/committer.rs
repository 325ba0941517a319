//! Group commit (PERF-NOTES): writer tasks drain a queue of write sets into one transaction
//! each and then answer every waiter, so concurrent requests share a commit while each still
//! gets its answer only after its changes are durable. SQLite gets one writer; PostgreSQL
//! several (`Store::writers`), each appending to an audit chain of its own, so they overlap
//! entirely.

use crate::{Result, Store, StoreError, WriteOutcome, WriteSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, Mutex};

const MAX_BATCH: usize = 512;

type Reply = oneshot::Sender<Result<WriteOutcome>>;
type Queue = Arc<Mutex<mpsc::Receiver<(WriteSet, Reply)>>>;

#[derive(Clone)]
pub struct Committer {
    tx: mpsc::Sender<(WriteSet, Reply)>,
}

/// Takes what is queued (waiting for at least one), up to `MAX_BATCH`. A set whose waiter has
/// given up (its wait is bounded) is dropped: it was answered "unavailable, retry" and must
/// not be applied after the fact.
async fn next_batch(queue: &Queue, sets: &mut Vec<WriteSet>, replies: &mut Vec<Reply>) -> bool {
    let mut rx = queue.lock().await;
    while sets.is_empty() {
        let Some((set, reply)) = rx.recv().await else {
            return false;
        };
        if !reply.is_closed() {
            sets.push(set);
            replies.push(reply);
        }
    }
    while sets.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok((_, reply)) if reply.is_closed() => {}
            Ok((set, reply)) => {
                sets.push(set);
                replies.push(reply);
            }
            Err(_) => break,
        }
    }
    true
}

async fn writer(store: Arc<dyn Store>, queue: Queue, index: usize) {
    let mut sets = Vec::with_capacity(MAX_BATCH);
    let mut replies = Vec::with_capacity(MAX_BATCH);
    while next_batch(&queue, &mut sets, &mut replies).await {
        match store.apply_as(index, &sets).await {
            Ok(outcomes) => {
                for (reply, outcome) in replies.drain(..).zip(outcomes) {
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(batch_err) if batch_err.rolled_back() && sets.len() > 1 => {
                // One set spoiled the batch (or a deadlock was broken) and nothing of it was
                // committed: apply each alone so only the faulty one fails.
                tracing::debug!(error = %batch_err, size = sets.len(), "batch rolled back; applying one by one");
                apply_one_by_one(store.as_ref(), index, &sets, replies.drain(..)).await;
            }
            Err(e) => {
                // Unreachable, or the commit's outcome is unknown: applying the sets again
                // could apply them twice, so every waiter gets the error as it is.
                for reply in replies.drain(..) {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
        sets.clear();
    }
}

/// Applies each set in a transaction of its own. Once one fails other than by rolling back
/// (the database went away, or a commit's outcome is unknown), the rest are not attempted.
async fn apply_one_by_one(
    store: &dyn Store,
    index: usize,
    sets: &[WriteSet],
    replies: impl Iterator<Item = Reply>,
) {
    let mut stopped: Option<StoreError> = None;
    for (set, reply) in sets.iter().zip(replies) {
        let res = match &stopped {
            Some(e) => Err(StoreError::Unavailable(format!("not attempted after: {e}"))),
            None => store
                .apply_as(index, std::slice::from_ref(set))
                .await
                .and_then(|mut o| o.pop().ok_or(StoreError::WriterGone)),
        };
        if let Err(e) = &res {
            if stopped.is_none() && !e.rolled_back() {
                stopped = Some(e.clone());
            }
        }
        let _ = reply.send(res);
    }
}

impl Committer {
    /// Starts the writers on a thread of their own, so their statement round trips never
    /// wait behind request handling; the queue is their only contact. They end when every
    /// `Committer` clone is dropped.
    pub fn spawn(store: Arc<dyn Store>) -> Self {
        let (tx, rx) = mpsc::channel::<(WriteSet, Reply)>(MAX_BATCH * 4);
        let queue: Queue = Arc::new(Mutex::new(rx));
        let writers = store.writers().max(1);
        // Writer numbers pick audit chains. Where there are several writers (PostgreSQL),
        // replicas sharing a database start from different numbers, so their writers rarely
        // append to the same chain; a single writer (SQLite) keeps to chain 1.
        static STARTED: AtomicUsize = AtomicUsize::new(0);
        let first = if writers > 1 {
            std::process::id() as usize + STARTED.fetch_add(writers, Ordering::Relaxed)
        } else {
            0
        };
        let run = async move {
            let tasks: Vec<_> = (first..first + writers)
                .map(|i| tokio::spawn(writer(store.clone(), queue.clone(), i)))
                .collect();
            for t in tasks {
                let _ = t.await;
            }
        };
        match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => {
                let spawned = std::thread::Builder::new()
                    .name("cardgate-writer".into())
                    .spawn(move || rt.block_on(run));
                if let Err(e) = spawned {
                    tracing::error!(error = %e, "cannot start the writer thread");
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot build the writer runtime"),
        }
        Self { tx }
    }

    /// How many write sets wait for a writer (not counting the batches being applied).
    pub fn queued(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
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
