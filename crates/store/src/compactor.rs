//! Periodic compaction, as kube-apiserver's compactor does it: every interval, compact to the
//! revision that was current one interval earlier. The last interval of history therefore stays
//! available for watches that resume and for paginated lists, while older history is dropped.
//! It drives any [`Store`], so the embedded and etcd backends behave alike.

use std::sync::Arc;
use std::time::Duration;

use crate::{Revision, Store};

/// kube-apiserver's default `--etcd-compaction-interval`.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5 * 60);

/// Runs the compaction loop until the returned task is aborted.
pub fn spawn(store: Arc<dyn Store>, interval: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut previous: Option<Revision> = None;
        loop {
            ticker.tick().await;
            previous = tick(store.as_ref(), previous).await;
        }
    })
}

/// One round: compacts to `previous` (the revision seen one interval ago) and returns the current
/// revision to compact to next time. A failure is logged and the round skipped.
pub async fn tick(store: &dyn Store, previous: Option<Revision>) -> Option<Revision> {
    if let Some(target) = previous {
        match store.compact(target).await {
            Ok(()) => tracing::debug!(revision = target, "compacted the store"),
            Err(err) => tracing::warn!(error = %err, revision = target, "store compaction failed"),
        }
    }
    match store.current_revision().await {
        Ok(revision) => Some(revision),
        Err(err) => {
            tracing::warn!(error = %err, "reading the store revision for compaction failed");
            previous
        }
    }
}
