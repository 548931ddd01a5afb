//! A de-duplicating work queue with per-key retry back-off, as client-go's: a key queued twice
//! before a worker takes it is processed once, so bursts of events cost one reconcile.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

/// Keys waiting for a worker.
pub struct WorkQueue {
    tx: mpsc::UnboundedSender<String>,
    rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<String>>,
    queued: Mutex<HashSet<String>>,
    failures: Mutex<HashMap<String, u32>>,
}

impl WorkQueue {
    /// An empty queue.
    pub fn new() -> Arc<Self> {
        let (tx, rx) = mpsc::unbounded_channel();
        Arc::new(WorkQueue {
            tx,
            rx: tokio::sync::Mutex::new(rx),
            queued: Mutex::new(HashSet::new()),
            failures: Mutex::new(HashMap::new()),
        })
    }

    /// Queues `key` unless it is already waiting.
    pub fn add(&self, key: String) {
        let fresh = self.queued.lock().expect("queue lock").insert(key.clone());
        if fresh {
            let _ = self.tx.send(key);
        }
    }

    /// Queues `key` after `delay`.
    pub fn add_after(self: &Arc<Self>, key: String, delay: Duration) {
        let me = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            me.add(key);
        });
    }

    /// Takes the next key (waits for one).
    pub async fn next(&self) -> Option<String> {
        let key = self.rx.lock().await.recv().await?;
        self.queued.lock().expect("queue lock").remove(&key);
        Some(key)
    }

    /// Re-queues a key whose processing failed, 0.5 s doubling up to 30 s.
    pub fn retry(self: &Arc<Self>, key: String) {
        let n = {
            let mut f = self.failures.lock().expect("queue lock");
            let n = f.entry(key.clone()).or_insert(0);
            *n = n.saturating_add(1);
            *n
        };
        let delay = Duration::from_millis(500u64.saturating_mul(1 << n.min(6)))
            .min(Duration::from_secs(30));
        self.add_after(key, delay);
    }

    /// A key was processed: its back-off starts over.
    pub fn forget(&self, key: &str) {
        self.failures.lock().expect("queue lock").remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_key_queued_twice_is_taken_once() {
        let q = WorkQueue::new();
        q.add("a".into());
        q.add("a".into());
        q.add("b".into());
        assert_eq!(q.next().await.as_deref(), Some("a"));
        assert_eq!(q.next().await.as_deref(), Some("b"));
        // Taken keys may be queued again.
        q.add("a".into());
        assert_eq!(q.next().await.as_deref(), Some("a"));
    }
}
