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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embedded::EmbeddedStore;
    use bytes::Bytes;

    #[tokio::test]
    async fn each_round_compacts_to_the_revision_seen_one_interval_earlier() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path().join("db")).unwrap();
        store.create("/a", Bytes::from_static(b"1")).await.unwrap();
        // First round: nothing seen before, nothing compacted.
        let seen = tick(&store, None).await;
        assert_eq!(seen, Some(2));
        assert_eq!(store.stats().await.unwrap().compacted_revision, 0);
        store.create("/b", Bytes::from_static(b"2")).await.unwrap();
        // Second round: compacts to what the first saw, keeps the newer write's history.
        let seen = tick(&store, seen).await;
        assert_eq!(seen, Some(3));
        assert_eq!(store.stats().await.unwrap().compacted_revision, 2);
        assert!(store.watch("/", 2).await.is_ok());
        assert!(matches!(
            store.watch("/", 1).await,
            Err(crate::Error::Compacted { .. })
        ));
    }

    #[tokio::test]
    async fn the_spawned_loop_compacts_on_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path().join("db")).unwrap());
        for i in 0..5 {
            store.create(&format!("/k{i}"), Bytes::new()).await.unwrap();
        }
        let task = spawn(store.clone(), Duration::from_millis(50));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while store.stats().await.unwrap().compacted_revision < 6 {
            assert!(tokio::time::Instant::now() < deadline, "never compacted");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        task.abort();
        assert_eq!(
            store.count("/").await.unwrap(),
            5,
            "compaction lost live keys"
        );
    }
}
