//! The [`Store`] contract as one test suite that every backend runs.
//!
//! Each case is a `pub async fn case(store: Arc<dyn Store>)` that gets a fresh, empty store
//! (revision 1, no keys). A backend's test file declares `mod contract;` at its crate root and
//! invokes `contract::contract_tests!(factory);`, where `factory` is an
//! `async fn() -> (Arc<dyn Store>, Box<dyn Any + Send>)`: the box keeps whatever backs the store
//! (a temp dir, an etcd process) alive until the case is over. The macro expands to one
//! `#[tokio::test]` per case, named like the case.
//!
//! Every wait for a watch item is bounded by [`ITEM_TIMEOUT`] (progress notifications do not
//! extend it), every store call by [`CALL_TIMEOUT`] and every case by [`CASE_TIMEOUT`], so a
//! broken backend fails a test, naming what it waited for, instead of hanging it. Failure messages say what was expected and
//! what was seen; values are shown truncated with their length and a hash.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rkube_store::{
    Error, Event, EventType, KeyValue, ListOptions, ListResult, Result, Revision, Store, WatchItem,
    WatchStream, key_after,
};
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// One `#[tokio::test]` per contract case, each on a fresh store from `$factory`.
///
/// `$factory` is an `async fn() -> (Arc<dyn Store>, Box<dyn Any + Send>)`. The module holding
/// this file must be declared as `mod contract;` at the test crate's root.
macro_rules! contract_tests {
    ($factory:path) => {
        $crate::contract::contract_tests!(@cases $factory;
            // Revisions and single-key writes.
            a_fresh_store_starts_at_revision_one_with_no_keys,
            every_write_bumps_the_revision_by_exactly_one,
            create_stamps_both_revisions_with_the_revision_of_the_write,
            create_of_an_existing_key_fails_with_key_exists_and_changes_nothing,
            update_replaces_the_value_and_keeps_the_create_revision,
            update_with_a_stale_revision_fails_with_conflict_carrying_the_current_value,
            update_of_a_missing_key_fails_with_not_found,
            delete_returns_the_delete_revision_and_the_deleted_value,
            guarded_delete_with_a_stale_revision_fails_with_conflict_and_keeps_the_key,
            delete_of_a_missing_key_fails_with_not_found,
            a_recreated_key_gets_a_new_create_revision,
            failed_writes_change_neither_the_revision_nor_any_key_nor_any_watch,
            an_empty_key_is_refused_with_invalid_key,
            values_up_to_one_mebibyte_round_trip_byte_for_byte,
            empty_and_binary_values_round_trip,
            concurrent_writers_get_distinct_consecutive_revisions,
            // Reads.
            list_returns_only_keys_under_the_prefix,
            list_returns_keys_in_ascending_byte_order,
            list_with_a_limit_pages_through_every_key_exactly_once,
            list_from_a_start_key_begins_there_and_stays_under_the_prefix,
            list_at_a_past_revision_sees_the_store_as_it_was_then,
            list_beyond_the_current_revision_fails_with_future_revision,
            count_counts_the_live_keys_under_a_prefix,
            stats_report_live_keys_and_the_current_and_compacted_revisions,
            paging_at_the_first_page_revision_returns_one_snapshot_despite_concurrent_writes,
            // Watches.
            watch_delivers_only_events_after_the_given_revision,
            watch_delivers_only_keys_under_its_prefix,
            watch_events_carry_the_new_and_the_previous_value,
            watch_from_a_past_revision_replays_history_then_continues_live,
            concurrent_writes_reach_every_watcher_exactly_once_in_revision_order,
            request_progress_reports_a_revision_at_or_after_the_last_write,
            dropping_a_watch_leaves_the_other_watches_working,
            slow_readers_and_long_replays_still_get_every_event_exactly_once,
            // Compaction.
            list_and_watch_before_the_compacted_revision_fail_with_compacted,
            compaction_keeps_the_current_value_of_every_key,
            compaction_keeps_later_revisions_readable_and_watchable,
            compacting_beyond_the_current_revision_fails_with_future_revision,
            compacting_the_same_revision_twice_is_a_no_op,
            a_live_watch_keeps_delivering_after_compaction,
        );
    };
    (@cases $factory:path; $($case:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                let (store, guard): (
                    ::std::sync::Arc<dyn ::rkube_store::Store>,
                    ::std::boxed::Box<dyn ::std::any::Any + ::std::marker::Send>,
                ) = $factory().await;
                $crate::contract::run(store, $crate::contract::$case).await;
                drop(guard);
            }
        )+
    };
}
pub(crate) use contract_tests;

/// Panics with "`context`: expected `expected`, saw `seen`" unless the two are equal.
macro_rules! check_eq {
    ($seen:expr, $expected:expr, $($context:tt)+) => {{
        let seen = $seen;
        let expected = $expected;
        if seen != expected {
            panic!("{}: expected {expected:?}, saw {seen:?}", format_args!($($context)+));
        }
    }};
}

/// The longest a watch may take to yield the next event (or the progress notification) waited for.
pub const ITEM_TIMEOUT: Duration = Duration::from_secs(15);
/// The longest any one store call may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest a whole case may take.
pub const CASE_TIMEOUT: Duration = Duration::from_secs(240);

/// Checks that `store` is fresh, then runs `case` on it under [`CASE_TIMEOUT`], every store call
/// under [`CALL_TIMEOUT`].
pub async fn run<F, Fut>(store: Arc<dyn Store>, case: F)
where
    F: FnOnce(Arc<dyn Store>) -> Fut,
    Fut: Future<Output = ()>,
{
    let store: Arc<dyn Store> = Arc::new(Bounded(store));
    check_eq!(
        revision(&*store).await,
        1,
        "current_revision() of the fresh store the factory returned"
    );
    check_eq!(
        count(&*store, "").await,
        0,
        "count(\"\") of the fresh store the factory returned"
    );
    if timeout(CASE_TIMEOUT, case(store)).await.is_err() {
        panic!("expected the case to finish within {CASE_TIMEOUT:?}, it was still running");
    }
}

// ------------------------------------------------------------------------------------------------
// Revisions and single-key writes.
// ------------------------------------------------------------------------------------------------

/// A new store is at revision 1 and holds nothing.
pub async fn a_fresh_store_starts_at_revision_one_with_no_keys(store: Arc<dyn Store>) {
    let s = &*store;
    check_eq!(revision(s).await, 1, "current_revision() of a fresh store");
    check_kv(
        "get of a key in a fresh store",
        get(s, "/registry/pods/default/web-0").await.as_ref(),
        None,
    );
    let listed = list(s, at("/registry/", 0)).await;
    check_kvs("list of /registry/ in a fresh store", &listed.items, &[]);
    check_eq!(listed.revision, 1, "revision of a list in a fresh store");
    check_eq!(listed.next_key, None, "next_key of a list in a fresh store");
    check_eq!(
        count(s, "/registry/").await,
        0,
        "count(/registry/) in a fresh store"
    );
    let stats = stats(s).await;
    check_eq!(stats.keys, 0, "stats().keys of a fresh store");
    check_eq!(stats.revision, 1, "stats().revision of a fresh store");
}

/// Creates, updates and deletes each add exactly one, and stamp the key with it.
pub async fn every_write_bumps_the_revision_by_exactly_one(store: Arc<dyn Store>) {
    let s = &*store;
    let a = "/registry/pods/default/a";
    let b = "/registry/pods/default/b";

    check_eq!(
        create(s, a, "a1").await,
        2,
        "revision returned by the first create"
    );
    check_eq!(revision(s).await, 2, "current_revision() after one create");
    check_eq!(
        update(s, a, "a2", 2).await,
        3,
        "revision returned by an update"
    );
    check_eq!(revision(s).await, 3, "current_revision() after an update");
    check_eq!(
        create(s, b, "b1").await,
        4,
        "revision returned by a second create"
    );
    check_eq!(
        delete(s, a, None).await.0,
        5,
        "revision returned by a delete"
    );
    check_eq!(revision(s).await, 5, "current_revision() after a delete");
    check_eq!(
        delete(s, b, Some(4)).await.0,
        6,
        "revision returned by a guarded delete"
    );
    check_eq!(
        create(s, a, "a3").await,
        7,
        "revision returned by a re-create"
    );
    check_eq!(revision(s).await, 7, "current_revision() after five writes");
    check_kv(
        "get after the re-create",
        get(s, a).await.as_ref(),
        Some(&kv(a, "a3", 7, 7)),
    );
}

/// A created key reads back with `create_revision == mod_revision ==` the returned revision.
pub async fn create_stamps_both_revisions_with_the_revision_of_the_write(store: Arc<dyn Store>) {
    let s = &*store;
    let key = "/registry/pods/default/web-0";
    let rev = create(s, key, "spec").await;
    check_kv(
        "get of a created key",
        get(s, key).await.as_ref(),
        Some(&kv(key, "spec", rev, rev)),
    );
    let listed = list(s, at("/registry/pods/", 0)).await;
    check_kvs(
        "list after one create",
        &listed.items,
        &[kv(key, "spec", rev, rev)],
    );
    check_eq!(listed.revision, rev, "revision of a list after one create");
}

/// `create` of a live key is refused and leaves the key and the revision alone.
pub async fn create_of_an_existing_key_fails_with_key_exists_and_changes_nothing(
    store: Arc<dyn Store>,
) {
    let s = &*store;
    let key = "/registry/pods/default/web-0";
    let rev = create(s, key, "first").await;
    let err = expect_err(
        "create of an existing key",
        "KeyExists",
        s.create(key, val("second")).await,
    );
    match err {
        Error::KeyExists { key: k } => check_eq!(k.as_str(), key, "key carried by KeyExists"),
        other => panic!("create of an existing key: expected KeyExists, saw {other:?}"),
    }
    check_eq!(
        revision(s).await,
        rev,
        "current_revision() after a refused create"
    );
    check_kv(
        "get after a refused create",
        get(s, key).await.as_ref(),
        Some(&kv(key, "first", rev, rev)),
    );
}

/// `update` with the right revision replaces the value, keeps `create_revision`, bumps `mod`.
pub async fn update_replaces_the_value_and_keeps_the_create_revision(store: Arc<dyn Store>) {
    let s = &*store;
    let key = "/registry/pods/default/web-0";
    let created = create(s, key, "v1").await;
    let first = update(s, key, "v2", created).await;
    check_eq!(first, created + 1, "revision returned by an update");
    check_kv(
        "get after one update",
        get(s, key).await.as_ref(),
        Some(&kv(key, "v2", created, first)),
    );
    let second = update(s, key, "v3", first).await;
    check_eq!(second, first + 1, "revision returned by a second update");
    check_kv(
        "get after two updates",
        get(s, key).await.as_ref(),
        Some(&kv(key, "v3", created, second)),
    );
}

/// A stale (or made-up) expected revision gets `Conflict` with the current value, and nothing
/// changes; retrying with the carried `mod_revision` succeeds.
pub async fn update_with_a_stale_revision_fails_with_conflict_carrying_the_current_value(
    store: Arc<dyn Store>,
) {
    let s = &*store;
    let key = "/registry/pods/default/web-0";
    let created = create(s, key, "v1").await;
    let updated = update(s, key, "v2", created).await;
    let current = kv(key, "v2", created, updated);

    for stale in [created, updated + 100, 0] {
        let context = format!("update with expected revision {stale} (current is {updated})");
        let err = expect_err(&context, "Conflict", s.update(key, val("v3"), stale).await);
        check_conflict(&context, err, key, stale, &current);
        check_eq!(
            revision(s).await,
            updated,
            "current_revision() after {context}"
        );
        check_kv(
            &format!("get after {context}"),
            get(s, key).await.as_ref(),
            Some(&current),
        );
    }

    // The conflict carries what a retry needs.
    let err = expect_err(
        "update with a stale revision",
        "Conflict",
        s.update(key, val("v3"), created).await,
    );
    let Error::Conflict { current: seen, .. } = err else {
        panic!("update with a stale revision: expected Conflict, saw {err:?}");
    };
    let retried = update(s, key, "v3", seen.mod_revision).await;
    check_eq!(
        retried,
        updated + 1,
        "revision of an update retried after a conflict"
    );
    check_kv(
        "get after the retried update",
        get(s, key).await.as_ref(),
        Some(&kv(key, "v3", created, retried)),
    );
}

/// `update` of a key that never existed or was deleted is `NotFound`, and changes nothing.
pub async fn update_of_a_missing_key_fails_with_not_found(store: Arc<dyn Store>) {
    let s = &*store;
    let never = "/registry/pods/default/never";
    let gone = "/registry/pods/default/gone";
    let created = create(s, gone, "v1").await;
    let (deleted, _) = delete(s, gone, None).await;

    for (key, expected) in [
        (never, 1),
        (never, deleted),
        (gone, created),
        (gone, deleted),
    ] {
        let context = format!("update of missing key {key} expecting revision {expected}");
        let err = expect_err(
            &context,
            "NotFound",
            s.update(key, val("v"), expected).await,
        );
        check_not_found(&context, err, key);
        check_eq!(
            revision(s).await,
            deleted,
            "current_revision() after {context}"
        );
        check_kv(
            &format!("get after {context}"),
            get(s, key).await.as_ref(),
            None,
        );
    }
}

/// `delete` returns its own revision and the key as it was; the key is gone afterwards.
pub async fn delete_returns_the_delete_revision_and_the_deleted_value(store: Arc<dyn Store>) {
    let s = &*store;
    let a = "/registry/pods/default/a";
    let b = "/registry/pods/default/b";
    let a_created = create(s, a, "a1").await;
    let a_updated = update(s, a, "a2", a_created).await;
    let b_created = create(s, b, "b1").await;

    let (rev, deleted) = delete(s, a, None).await;
    check_eq!(
        rev,
        b_created + 1,
        "revision returned by an unguarded delete"
    );
    check_kv(
        "value returned by an unguarded delete",
        Some(&deleted),
        Some(&kv(a, "a2", a_created, a_updated)),
    );
    check_kv("get after a delete", get(s, a).await.as_ref(), None);
    check_eq!(revision(s).await, rev, "current_revision() after a delete");
    check_eq!(
        count(s, "/registry/pods/").await,
        1,
        "count after one of two keys was deleted"
    );

    let (rev_b, deleted_b) = delete(s, b, Some(b_created)).await;
    check_eq!(rev_b, rev + 1, "revision returned by a guarded delete");
    check_kv(
        "value returned by a guarded delete",
        Some(&deleted_b),
        Some(&kv(b, "b1", b_created, b_created)),
    );
    check_kvs(
        "list after both keys were deleted",
        &list(s, at("/registry/pods/", 0)).await.items,
        &[],
    );
}

/// A guarded delete with a stale revision gets `Conflict` with the current value, keeps the key.
pub async fn guarded_delete_with_a_stale_revision_fails_with_conflict_and_keeps_the_key(
    store: Arc<dyn Store>,
) {
    let s = &*store;
    let key = "/registry/pods/default/web-0";
    let created = create(s, key, "v1").await;
    let updated = update(s, key, "v2", created).await;
    let current = kv(key, "v2", created, updated);

    for stale in [created, updated + 100] {
        let context = format!("guarded delete expecting revision {stale} (current is {updated})");
        let err = expect_err(&context, "Conflict", s.delete(key, Some(stale)).await);
        check_conflict(&context, err, key, stale, &current);
        check_eq!(
            revision(s).await,
            updated,
            "current_revision() after {context}"
        );
        check_kv(
            &format!("get after {context}"),
            get(s, key).await.as_ref(),
            Some(&current),
        );
    }
    let (rev, deleted) = delete(s, key, Some(updated)).await;
    check_eq!(
        rev,
        updated + 1,
        "revision of a guarded delete with the right revision"
    );
    check_kv(
        "value returned by the guarded delete",
        Some(&deleted),
        Some(&current),
    );
}

/// Deleting an absent key, guarded or not, is `NotFound` and changes nothing.
pub async fn delete_of_a_missing_key_fails_with_not_found(store: Arc<dyn Store>) {
    let s = &*store;
    let never = "/registry/pods/default/never";
    let gone = "/registry/pods/default/gone";
    let created = create(s, gone, "v1").await;
    let (deleted, _) = delete(s, gone, None).await;

    for (key, expected) in [
        (never, None),
        (never, Some(1)),
        (gone, None),
        (gone, Some(created)),
    ] {
        let context = format!("delete of missing key {key} expecting {expected:?}");
        let err = expect_err(&context, "NotFound", s.delete(key, expected).await);
        check_not_found(&context, err, key);
        check_eq!(
            revision(s).await,
            deleted,
            "current_revision() after {context}"
        );
    }
}

/// Delete then create: the key starts over with the new revision as its `create_revision`.
pub async fn a_recreated_key_gets_a_new_create_revision(store: Arc<dyn Store>) {
    let s = &*store;
    let key = "/registry/pods/default/web-0";
    let first = create(s, key, "v1").await;
    delete(s, key, Some(first)).await;
    let second = create(s, key, "v2").await;
    let current = kv(key, "v2", second, second);
    check_kv(
        "get of a re-created key",
        get(s, key).await.as_ref(),
        Some(&current),
    );
    let context = "update of a re-created key with the first life's revision";
    let err = expect_err(context, "Conflict", s.update(key, val("v3"), first).await);
    check_conflict(context, err, key, first, &current);
}

/// Refused writes leave the revision, every key and every watch untouched; the next successful
/// write gets exactly the next revision.
pub async fn failed_writes_change_neither_the_revision_nor_any_key_nor_any_watch(
    store: Arc<dyn Store>,
) {
    let s = &*store;
    let tracked = Tracked::new(store.clone());
    let prefix = "/registry/pods/";
    let a = "/registry/pods/default/a";
    let b = "/registry/pods/default/b";
    let missing = "/registry/pods/default/missing";
    let a_rev = tracked.create(a, val("a1")).await;
    let b_rev = tracked.create(b, val("b1")).await;
    let before = list(s, at(prefix, 0)).await.items;
    let before = &before;
    let mut watcher =
        Watcher::open(s, "watch opened before the failed writes", prefix, b_rev).await;

    let unchanged = |what: &'static str, result: Result<()>| async move {
        if result.is_ok() {
            panic!("{what}: expected an error, saw success");
        }
        check_eq!(
            revision(s).await,
            b_rev,
            "current_revision() after a failed {what}"
        );
        check_kvs(
            &format!("list after a failed {what}"),
            &list(s, at(prefix, 0)).await.items,
            before,
        );
    };
    unchanged(
        "create of an existing key",
        s.create(a, val("x")).await.map(drop),
    )
    .await;
    unchanged(
        "update with a stale revision",
        s.update(a, val("x"), a_rev + 50).await.map(drop),
    )
    .await;
    unchanged(
        "update of a missing key",
        s.update(missing, val("x"), a_rev).await.map(drop),
    )
    .await;
    unchanged(
        "guarded delete with a stale revision",
        s.delete(b, Some(a_rev)).await.map(drop),
    )
    .await;
    unchanged(
        "delete of a missing key",
        s.delete(missing, None).await.map(drop),
    )
    .await;
    unchanged(
        "guarded delete of a missing key",
        s.delete(missing, Some(b_rev)).await.map(drop),
    )
    .await;
    watcher.expect_progress(b_rev).await;

    let next = tracked.update(a, val("a2"), a_rev).await;
    check_eq!(
        next,
        b_rev + 1,
        "revision of the first successful write after failed ones"
    );
    watcher
        .expect_events(&tracked.history().events_after(prefix, b_rev))
        .await;
}

/// The empty key is refused with `InvalidKey` and does not bump the revision.
pub async fn an_empty_key_is_refused_with_invalid_key(store: Arc<dyn Store>) {
    let s = &*store;
    let err = expect_err(
        "create of the empty key",
        "InvalidKey",
        s.create("", val("x")).await,
    );
    match err {
        Error::InvalidKey { key, .. } => check_eq!(key.as_str(), "", "key carried by InvalidKey"),
        other => panic!("create of the empty key: expected InvalidKey, saw {other:?}"),
    }
    check_eq!(
        revision(s).await,
        1,
        "current_revision() after a refused empty key"
    );
}

/// 1 MiB values survive create, update, get, list and watch unchanged.
pub async fn values_up_to_one_mebibyte_round_trip_byte_for_byte(store: Arc<dyn Store>) {
    let s = &*store;
    let prefix = "/registry/configmaps/";
    let key = "/registry/configmaps/default/big";
    let mut rng = StdRng::seed_from_u64(1);
    let mut first = vec![0u8; 1 << 20];
    rng.fill(&mut first[..]);
    let mut second = vec![0u8; 1 << 20];
    rng.fill(&mut second[..]);
    let mut half = vec![0u8; 512 << 10];
    rng.fill(&mut half[..]);
    let (first, second, half) = (Bytes::from(first), Bytes::from(second), Bytes::from(half));

    let tracked = Tracked::new(store.clone());
    let mut watcher = Watcher::open(s, "watch of 1 MiB values", prefix, 1).await;
    let created = tracked.create(key, first.clone()).await;
    check_kv(
        "get of a 1 MiB value",
        get(s, key).await.as_ref(),
        Some(&kv(key, first.clone(), created, created)),
    );
    let updated = tracked.update(key, second.clone(), created).await;
    let expected = kv(key, second.clone(), created, updated);
    check_kv(
        "get of a 1 MiB value replacing another",
        get(s, key).await.as_ref(),
        Some(&expected),
    );
    check_kvs(
        "list of a 1 MiB value",
        &list(s, at(prefix, 0)).await.items,
        std::slice::from_ref(&expected),
    );
    let small = tracked
        .create("/registry/configmaps/default/half", half.clone())
        .await;
    check_kv(
        "get of a 512 KiB value",
        get(s, "/registry/configmaps/default/half").await.as_ref(),
        Some(&kv("/registry/configmaps/default/half", half, small, small)),
    );
    tracked.delete(key, Some(updated)).await;
    watcher
        .expect_events(&tracked.history().events_after(prefix, 1))
        .await;
}

/// An empty value is a value; arbitrary bytes (NUL, 0xff, invalid UTF-8) survive unchanged.
pub async fn empty_and_binary_values_round_trip(store: Arc<dyn Store>) {
    let s = &*store;
    let key = "/registry/secrets/default/s";
    let empty = create(s, key, Bytes::new()).await;
    check_kv(
        "get of an empty value",
        get(s, key).await.as_ref(),
        Some(&kv(key, Bytes::new(), empty, empty)),
    );
    check_eq!(
        count(s, "/registry/secrets/").await,
        1,
        "count of a key holding an empty value"
    );

    let mut binary: Vec<u8> = (0..=255u8).collect();
    binary.extend_from_slice(&[0xff, 0xfe, 0x00, 0xc3, 0x28, 0x00, 0x80]);
    let binary = Bytes::from(binary);
    let updated = update(s, key, binary.clone(), empty).await;
    let expected = kv(key, binary, empty, updated);
    check_kv(
        "get of a binary value",
        get(s, key).await.as_ref(),
        Some(&expected),
    );
    check_kvs(
        "list of a binary value",
        &list(s, at("/registry/secrets/", 0)).await.items,
        std::slice::from_ref(&expected),
    );
    let emptied = update(s, key, Bytes::new(), updated).await;
    check_kv(
        "get of a value updated back to empty",
        get(s, key).await.as_ref(),
        Some(&kv(key, Bytes::new(), empty, emptied)),
    );
    let (_, deleted) = delete(s, key, Some(emptied)).await;
    check_kv(
        "value returned by deleting an empty value",
        Some(&deleted),
        Some(&kv(key, Bytes::new(), empty, emptied)),
    );
}

/// N tasks × M writes advance the revision by exactly N*M, every revision handed out once.
pub async fn concurrent_writers_get_distinct_consecutive_revisions(store: Arc<dyn Store>) {
    const TASKS: usize = 16;
    const WRITES: usize = 50;
    const KEYS: usize = 5;
    let start = revision(&*store).await;
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let s = &*store;
            let mut rng = StdRng::seed_from_u64(t as u64);
            let mut keys: Vec<(String, Option<Revision>)> = (0..KEYS)
                .map(|k| (format!("/registry/pods/t{t:02}/k{k}"), None))
                .collect();
            let mut revisions = Vec::with_capacity(WRITES);
            for n in 0..WRITES {
                let (key, current) = &mut keys[rng.random_range(0..KEYS)];
                let value = format!("t{t}n{n}");
                let (rev, next) = match *current {
                    None => {
                        let rev = create(s, key, value).await;
                        (rev, Some(rev))
                    }
                    Some(r) if n % 7 == 3 => (delete(s, key, Some(r)).await.0, None),
                    Some(r) => {
                        let rev = update(s, key, value, r).await;
                        (rev, Some(rev))
                    }
                };
                *current = next;
                revisions.push(rev);
            }
            (revisions, keys)
        }));
    }
    let mut all = Vec::new();
    for (t, task) in tasks.into_iter().enumerate() {
        let (revisions, keys) = join(task).await;
        for pair in revisions.windows(2) {
            assert!(
                pair[0] < pair[1],
                "task {t}: expected each of its writes to get a higher revision than the one \
                 before, saw {} then {}",
                pair[0],
                pair[1]
            );
        }
        for (key, rev) in keys {
            check_eq!(
                get(&*store, &key).await.map(|kv| kv.mod_revision),
                rev,
                "mod_revision of {key} after the concurrent writes"
            );
        }
        all.extend(revisions);
    }
    all.sort_unstable();
    let expected: Vec<Revision> = (start + 1..=start + (TASKS * WRITES) as Revision).collect();
    if all != expected {
        let duplicate = all.windows(2).find(|p| p[0] == p[1]).map(|p| p[0]);
        panic!(
            "expected the {} concurrent writes to get revisions {}..={} once each, saw {} \
             revisions from {:?} to {:?} (a duplicate: {duplicate:?})",
            TASKS * WRITES,
            start + 1,
            start + (TASKS * WRITES) as Revision,
            all.len(),
            all.first(),
            all.last()
        );
    }
    check_eq!(
        revision(&*store).await,
        start + (TASKS * WRITES) as Revision,
        "current_revision() after {TASKS} tasks x {WRITES} writes"
    );
}

// ------------------------------------------------------------------------------------------------
// Reads.
// ------------------------------------------------------------------------------------------------

/// A prefix matches by bytes: `/registry/pods/` excludes `/registry/podsx/...`, `/registry/pods`,
/// `/registry/pods0/...` and `/registry/pods.x`.
pub async fn list_returns_only_keys_under_the_prefix(store: Arc<dyn Store>) {
    let s = &*store;
    let tracked = Tracked::new(store.clone());
    for key in [
        "/registry/pods/default/a",
        "/registry/podsx/default/a",
        "/registry/pods",
        "/registry/pods0/a",
        "/registry/pods.x",
        "/registry/pod/default/a",
        "/registry/pods/kube-system/b",
        "/registry/pods/é/c",
        "/registry/services/default/a",
        "/registry/pods/",
    ] {
        tracked.create(key, val(key)).await;
    }
    let history = tracked.history();
    let now = revision(s).await;
    for prefix in [
        "/registry/pods/",
        "/registry/pods",
        "/registry/podsx/",
        "/registry/pods/default/",
        "/registry/",
        "/registry/nothing/",
        "",
    ] {
        let listed = list(s, at(prefix, 0)).await;
        check_kvs(
            &format!("list of prefix {prefix:?}"),
            &listed.items,
            &history.state_at(now, prefix),
        );
        check_eq!(
            count(s, prefix).await,
            history.state_at(now, prefix).len() as u64,
            "count({prefix:?})"
        );
    }
}

/// Keys come back in ascending byte order whatever order they were written in.
pub async fn list_returns_keys_in_ascending_byte_order(store: Arc<dyn Store>) {
    let s = &*store;
    let prefix = "/registry/x/";
    let names = [
        "b", "a", "a/b", "a0", "aa", "B", "é", "~", "a.b", "z", "0", "-", "日本", "a/", "ab", "A",
        "a-", "ä",
    ];
    let mut order: Vec<usize> = (0..names.len()).collect();
    let mut rng = StdRng::seed_from_u64(7);
    for i in (1..order.len()).rev() {
        order.swap(i, rng.random_range(0..=i));
    }
    for i in order {
        create(s, &format!("{prefix}{}", names[i]), names[i]).await;
    }
    let listed = list(s, at(prefix, 0)).await;
    let seen: Vec<&str> = listed.items.iter().map(|kv| kv.key.as_str()).collect();
    let mut expected: Vec<String> = names.iter().map(|n| format!("{prefix}{n}")).collect();
    expected.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    check_eq!(seen, expected, "keys listed under {prefix}, in order");
}

/// `limit` cuts pages; `next_key` continues them; every key comes back exactly once.
pub async fn list_with_a_limit_pages_through_every_key_exactly_once(store: Arc<dyn Store>) {
    let s = &*store;
    let prefix = "/registry/pods/";
    for i in 0..25 {
        let key = format!("/registry/pods/default/p{i:02}");
        create(s, &key, key.clone()).await;
    }
    create(s, "/registry/podsx/default/p00", "outside").await;
    let all = list(s, at(prefix, 0)).await;
    check_eq!(all.items.len(), 25, "items of an unlimited list (limit 0)");
    check_eq!(all.next_key, None, "next_key of an unlimited list");
    let rev = all.revision;

    // 25 keys by 7: pages of 7, 7, 7 and 4, each cut short but the last.
    let mut opts = ListOptions {
        prefix: prefix.into(),
        limit: 7,
        ..Default::default()
    };
    let mut seen = Vec::new();
    for (page, size) in [7, 7, 7, 4].into_iter().enumerate() {
        let result = list(s, opts.clone()).await;
        check_eq!(
            result.items.len(),
            size,
            "items on page {page} of 25 keys by 7"
        );
        check_eq!(result.revision, rev, "revision of page {page}");
        let last = result.items.last().map(|kv| kv.key.clone());
        seen.extend(result.items);
        if page < 3 {
            let Some(next) = result.next_key else {
                panic!("page {page} of 25 keys by 7: expected a next_key, saw none");
            };
            let last = last.unwrap_or_default();
            assert!(
                next > last,
                "page {page}: expected next_key to sort after the page's last key {last:?}, saw \
                 {next:?}"
            );
            opts.start_key = Some(next);
            opts.revision = rev;
        } else {
            check_eq!(result.next_key, None, "next_key of the last page");
        }
    }
    check_kvs("the four pages put together", &seen, &all.items);

    // A limit of exactly the number of keys, and one above it.
    for limit in [25, 26, 100] {
        let (items, _) = list_paged(s, prefix, limit, 0).await;
        check_kvs(&format!("pages of 25 keys by {limit}"), &items, &all.items);
    }
    for limit in [1, 2, 24] {
        let (items, _) = list_paged(s, prefix, limit, rev).await;
        check_kvs(&format!("pages of 25 keys by {limit}"), &items, &all.items);
    }
}

/// `start_key` is inclusive, and the list still ends at the prefix's end (and never starts
/// before the prefix).
pub async fn list_from_a_start_key_begins_there_and_stays_under_the_prefix(store: Arc<dyn Store>) {
    let s = &*store;
    let prefix = "/registry/pods/";
    let key = |i: usize| format!("/registry/pods/default/p{i:02}");
    create(s, "/registry/a/before", "outside").await;
    create(s, "/registry/pods", "outside").await;
    for i in 0..10 {
        create(s, &key(i), key(i)).await;
    }
    create(s, "/registry/podsx/after", "outside").await;
    create(s, "/registry/z/after", "outside").await;
    let all = list(s, at(prefix, 0)).await.items;

    let from = |start: &str, limit: usize| ListOptions {
        prefix: prefix.into(),
        start_key: Some(start.into()),
        limit,
        revision: 0,
    };
    let cases: Vec<(String, ListOptions, Vec<KeyValue>)> = vec![
        (
            "start at an existing key".into(),
            from(&key(5), 0),
            all[5..].to_vec(),
        ),
        (
            "start between two keys".into(),
            from(&format!("{}x", key(5)), 0),
            all[6..].to_vec(),
        ),
        (
            "start right after a key (key_after)".into(),
            from(&key_after(&key(5)), 0),
            all[6..].to_vec(),
        ),
        (
            "start at an existing key with limit 2".into(),
            from(&key(5), 2),
            all[5..7].to_vec(),
        ),
        (
            "start past every key under the prefix".into(),
            from("/registry/pods/zzz", 0),
            vec![],
        ),
        (
            "start before the prefix".into(),
            from("/registry/a/", 0),
            all.clone(),
        ),
        ("start at the prefix".into(), from(prefix, 0), all.clone()),
    ];
    for (what, opts, expected) in cases {
        let listed = list(s, opts).await;
        check_kvs(&format!("list with {what}"), &listed.items, &expected);
    }
}

/// A list at any past revision (not compacted) sees exactly the keys and values of that
/// revision: old values, deleted keys still there, later keys not yet there.
pub async fn list_at_a_past_revision_sees_the_store_as_it_was_then(store: Arc<dyn Store>) {
    let s = &*store;
    let tracked = Tracked::new(store.clone());
    let prefix = "/registry/pods/";
    let a = "/registry/pods/default/a";
    let b = "/registry/pods/default/b";
    let c = "/registry/pods/default/c";
    let d = "/registry/pods/kube-system/d";
    let outside = "/registry/podsx/default/a";

    let a1 = tracked.create(a, val("a1")).await;
    let b1 = tracked.create(b, val("b1")).await;
    let o1 = tracked.create(outside, val("o1")).await;
    let a2 = tracked.update(a, val("a2"), a1).await;
    let c1 = tracked.create(c, val("c1")).await;
    tracked.delete(b, Some(b1)).await;
    tracked.update(a, val("a3"), a2).await;
    tracked.create(b, val("b2")).await;
    tracked.delete(c, Some(c1)).await;
    tracked.update(outside, val("o2"), o1).await;
    tracked.create(d, val("d1")).await;
    let now = revision(s).await;
    let history = tracked.history();
    history.check_contiguous(2, now);

    for rev in 1..=now {
        let listed = list(s, at(prefix, rev)).await;
        check_kvs(
            &format!("list of {prefix} at revision {rev}"),
            &listed.items,
            &history.state_at(rev, prefix),
        );
        check_eq!(
            listed.revision,
            rev,
            "revision of a list asked at revision {rev}"
        );
        let (paged, _) = list_paged(s, prefix, 1, rev).await;
        check_kvs(
            &format!("pages of 1 of {prefix} at revision {rev}"),
            &paged,
            &history.state_at(rev, prefix),
        );
        let everything = list(s, at("", rev)).await;
        check_kvs(
            &format!("list of every key at revision {rev}"),
            &everything.items,
            &history.state_at(rev, ""),
        );
    }
    let current = list(s, at(prefix, 0)).await;
    check_eq!(
        current.revision,
        now,
        "revision of a list at revision 0 (current)"
    );
    check_kvs(
        "list at the current revision",
        &current.items,
        &history.state_at(now, prefix),
    );
}

/// A list at a revision the store has not reached is `FutureRevision`.
pub async fn list_beyond_the_current_revision_fails_with_future_revision(store: Arc<dyn Store>) {
    let s = &*store;
    create(s, "/registry/pods/default/a", "a").await;
    create(s, "/registry/pods/default/b", "b").await;
    let now = revision(s).await;
    for requested in [now + 1, now + 1000] {
        let context = format!("list at revision {requested} (current is {now})");
        let err = expect_err(
            &context,
            "FutureRevision",
            s.list(at("/registry/pods/", requested)).await,
        );
        check_future(&context, err, requested, now);
    }
    let continued = ListOptions {
        prefix: "/registry/pods/".into(),
        start_key: Some("/registry/pods/default/b".into()),
        limit: 1,
        revision: now + 1,
    };
    let err = expect_err(
        "a continued page at a future revision",
        "FutureRevision",
        s.list(continued).await,
    );
    check_future("a continued page at a future revision", err, now + 1, now);
}

/// `count` counts live keys by prefix, following creates and deletes.
pub async fn count_counts_the_live_keys_under_a_prefix(store: Arc<dyn Store>) {
    let s = &*store;
    for key in [
        "/registry/pods/default/a",
        "/registry/pods/default/b",
        "/registry/pods/kube-system/c",
        "/registry/podsx/default/a",
        "/registry/services/default/a",
        "/registry/services/default/b",
    ] {
        create(s, key, key).await;
    }
    let expect = [
        ("/registry/pods/", 3),
        ("/registry/pods/default/", 2),
        ("/registry/pods", 4),
        ("/registry/podsx/", 1),
        ("/registry/services/", 2),
        ("/registry/", 6),
        ("", 6),
        ("/registry/nodes/", 0),
        ("/registry/pods/default/a", 1),
    ];
    for (prefix, n) in expect {
        check_eq!(count(s, prefix).await, n, "count({prefix:?})");
    }
    delete(s, "/registry/pods/default/a", None).await;
    check_eq!(
        count(s, "/registry/pods/").await,
        2,
        "count of pods after deleting one"
    );
    check_eq!(
        count(s, "").await,
        5,
        "count of every key after deleting one"
    );
    create(s, "/registry/pods/default/a", "again").await;
    check_eq!(
        count(s, "/registry/pods/").await,
        3,
        "count of pods after re-creating one"
    );
}

/// `stats` reports live keys, the current revision and the compacted revision.
pub async fn stats_report_live_keys_and_the_current_and_compacted_revisions(store: Arc<dyn Store>) {
    let s = &*store;
    for i in 0..5 {
        create(s, &format!("/registry/pods/default/p{i}"), "x").await;
    }
    delete(s, "/registry/pods/default/p0", None).await;
    update(s, "/registry/pods/default/p1", "y", 3).await;
    let now = revision(s).await;
    let before = stats(s).await;
    check_eq!(before.keys, 4, "stats().keys after 5 creates and 1 delete");
    check_eq!(before.revision, now, "stats().revision");
    assert!(
        before.size_bytes > 0,
        "stats().size_bytes: expected the store's size on disk (> 0), saw 0"
    );
    compact(s, 4).await;
    let after = stats(s).await;
    check_eq!(
        after.compacted_revision,
        4,
        "stats().compacted_revision after compact(4)"
    );
    check_eq!(after.keys, 4, "stats().keys after compaction");
    check_eq!(after.revision, now, "stats().revision after compaction");
}

/// Pages read at the first page's revision form one snapshot (every key that existed then,
/// exactly once, with its value as of then) while writers create, update and delete keys under
/// the same prefix between pages.
pub async fn paging_at_the_first_page_revision_returns_one_snapshot_despite_concurrent_writes(
    store: Arc<dyn Store>,
) {
    const KEYS: usize = 10_000;
    const LOADERS: usize = 64;
    const WRITERS: usize = 4;
    const PAGE: usize = 500;
    const WRITES_PER_PAGE: Revision = 5;
    const PREFIX: &str = "/registry/pods/";
    let s = &*store;
    let tracked = Tracked::new(store.clone());
    let pod_key = |i: usize| format!("/registry/pods/ns-{}/pod-{i:05}", i % 10);

    let mut loaders = Vec::new();
    for t in 0..LOADERS {
        let tracked = tracked.clone();
        loaders.push(tokio::spawn(async move {
            for i in (t..KEYS).step_by(LOADERS) {
                let key = pod_key(i);
                let value = Bytes::from(format!("{key}@initial"));
                tracked.create(&key, value).await;
            }
        }));
    }
    for loader in loaders {
        join(loader).await;
    }
    let loaded = revision(s).await;
    check_eq!(
        loaded,
        1 + KEYS as Revision,
        "revision after creating {KEYS} keys"
    );

    // Each writer owns a disjoint share of the keys, so it knows their mod revisions.
    let mut owned: Vec<Vec<(String, Revision)>> = vec![Vec::new(); WRITERS];
    for (n, kv) in tracked
        .history()
        .state_at(loaded, PREFIX)
        .into_iter()
        .enumerate()
    {
        owned[n % WRITERS].push((kv.key, kv.mod_revision));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for (w, live) in owned.into_iter().enumerate() {
        let tracked = tracked.clone();
        let stop = stop.clone();
        writers.push(tokio::spawn(async move {
            churn(tracked, w, live, pod_key, KEYS, stop).await
        }));
    }

    let mut items: Vec<KeyValue> = Vec::new();
    let mut page = list(
        s,
        ListOptions {
            prefix: PREFIX.into(),
            limit: PAGE,
            ..Default::default()
        },
    )
    .await;
    let snapshot = page.revision;
    assert!(
        snapshot >= loaded,
        "expected the first page's revision to be at least {loaded} (all keys created), saw \
         {snapshot}"
    );
    let mut pages = 1;
    loop {
        assert!(
            page.items.len() <= PAGE,
            "page {pages}: expected at most {PAGE} items, saw {}",
            page.items.len()
        );
        let last = page.items.last().map(|kv| kv.key.clone());
        items.extend(page.items);
        let Some(next) = page.next_key else { break };
        if let Some(last) = last {
            assert!(
                next > last,
                "page {pages}: expected next_key to sort after the page's last key {last:?}, \
                 saw {next:?}"
            );
        }
        assert!(
            pages <= 3 * KEYS / PAGE,
            "expected about {} pages of {PAGE}, still paging after {pages}",
            KEYS / PAGE
        );
        // Let the writers change things between every two pages.
        let now = revision(s).await;
        wait_for_revision(s, now + WRITES_PER_PAGE, "the writers to keep writing").await;
        page = list(
            s,
            ListOptions {
                prefix: PREFIX.into(),
                start_key: Some(next),
                limit: PAGE,
                revision: snapshot,
            },
        )
        .await;
        pages += 1;
        check_eq!(page.revision, snapshot, "revision of page {pages}");
    }
    stop.store(true, Ordering::Relaxed);
    let mut churned = 0;
    for writer in writers {
        churned += join(writer).await;
    }
    let end = revision(s).await;
    let history = tracked.history();
    history.check_contiguous(2, end);
    let under_prefix_after = history
        .writes
        .iter()
        .filter(|w| w.revision > snapshot && w.key.starts_with(PREFIX))
        .count();
    assert!(
        under_prefix_after >= pages,
        "expected the writers to change keys under {PREFIX} while {pages} pages were read, saw \
         {under_prefix_after} such writes ({churned} writes in all)"
    );

    let expected = history.state_at(snapshot, PREFIX);
    check_kvs(
        &format!("{pages} pages of {PAGE} at revision {snapshot} (writers reached {end})"),
        &items,
        &expected,
    );
    let whole = list(s, at(PREFIX, snapshot)).await;
    check_kvs(
        &format!("one unlimited list at revision {snapshot}"),
        &whole.items,
        &expected,
    );
    let current = history.state_at(end, PREFIX);
    check_kvs(
        "one unlimited list at the current revision",
        &list(s, at(PREFIX, 0)).await.items,
        &current,
    );
    check_eq!(
        count(s, PREFIX).await,
        current.len() as u64,
        "count({PREFIX}) after the writers stopped"
    );
}

/// One writer of the pagination case: updates, deletes, re-creates and creates its own keys
/// under `/registry/pods/` (new ones interleaved with the others), plus keys just outside the
/// prefix, until told to stop. Returns how many writes it made.
async fn churn(
    tracked: Arc<Tracked>,
    w: usize,
    mut live: Vec<(String, Revision)>,
    pod_key: impl Fn(usize) -> String,
    keys: usize,
    stop: Arc<AtomicBool>,
) -> usize {
    let mut rng = StdRng::seed_from_u64(0x5eed + w as u64);
    let mut dead: Vec<String> = Vec::new();
    let mut outside: [(String, Option<Revision>); 2] = [
        (format!("/registry/pods0/w{w}"), None),
        (format!("/registry/pods.w{w}"), None),
    ];
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let value = Bytes::from(format!("w{w}n{n}"));
        let roll = rng.random_range(0..100);
        if roll < 10 {
            let (key, current) = &mut outside[rng.random_range(0..2)];
            *current = Some(match *current {
                None => tracked.create(key, value).await,
                Some(r) => tracked.update(key, value, r).await,
            });
        } else if roll < 45 && !live.is_empty() {
            let i = rng.random_range(0..live.len());
            let (key, current) = &mut live[i];
            *current = tracked.update(key, value, *current).await;
        } else if roll < 65 && !live.is_empty() {
            let (key, current) = live.swap_remove(rng.random_range(0..live.len()));
            tracked.delete(&key, Some(current)).await;
            dead.push(key);
        } else if roll < 80 && !dead.is_empty() {
            let key = dead.swap_remove(rng.random_range(0..dead.len()));
            let rev = tracked.create(&key, value).await;
            live.push((key, rev));
        } else {
            let key = format!("{}-w{w}n{n}", pod_key(rng.random_range(0..keys)));
            let rev = tracked.create(&key, value).await;
            live.push((key, rev));
        }
    }
    n
}

// ------------------------------------------------------------------------------------------------
// Watches.
// ------------------------------------------------------------------------------------------------

/// A watch yields events with revisions strictly greater than `after`, nothing older.
pub async fn watch_delivers_only_events_after_the_given_revision(store: Arc<dyn Store>) {
    let s = &*store;
    let tracked = Tracked::new(store.clone());
    let prefix = "/registry/pods/";
    let a = "/registry/pods/default/a";
    let a1 = tracked.create(a, val("a1")).await;
    let b1 = tracked.create("/registry/pods/default/b", val("b1")).await;
    let a2 = tracked.update(a, val("a2"), a1).await;

    let mut from_b = Watcher::open(s, "watch after the second write", prefix, b1).await;
    let mut from_now = Watcher::open(s, "watch after the last write", prefix, a2).await;
    let history = tracked.history();
    from_b
        .expect_events(&history.events_after(prefix, b1))
        .await;
    from_now.expect_progress(a2).await;

    tracked.create("/registry/pods/default/c", val("c1")).await;
    let history = tracked.history();
    from_b
        .expect_events(&history.events_after(prefix, a2))
        .await;
    from_now
        .expect_events(&history.events_after(prefix, a2))
        .await;
    let mut from_start = Watcher::open(s, "watch after revision 1", prefix, 1).await;
    from_start
        .expect_events(&history.events_after(prefix, 1))
        .await;
}

/// A watch yields only keys that start with its prefix, by bytes.
pub async fn watch_delivers_only_keys_under_its_prefix(store: Arc<dyn Store>) {
    let s = &*store;
    let tracked = Tracked::new(store.clone());
    let prefix = "/registry/pods/";
    let mut live = Watcher::open(s, "live watch of /registry/pods/", prefix, 1).await;
    let mut narrow = Watcher::open(
        s,
        "live watch of /registry/pods/default/",
        "/registry/pods/default/",
        1,
    )
    .await;
    for key in [
        "/registry/podsx/default/a",
        "/registry/pods",
        "/registry/pods/default/a",
        "/registry/pods0/a",
        "/registry/pods.a",
        "/registry/pod/default/a",
        "/registry/pods/kube-system/b",
        "/registry/services/default/a",
        "/registry/pods/default/c",
        "/registry/podsy",
    ] {
        tracked.create(key, val(key)).await;
    }
    let end = revision(s).await;
    let history = tracked.history();
    live.expect_events(&history.events_after(prefix, 1)).await;
    live.expect_progress(end).await;
    narrow
        .expect_events(&history.events_after("/registry/pods/default/", 1))
        .await;
    narrow.expect_progress(end).await;
    let mut replay = Watcher::open(s, "replaying watch of /registry/pods/", prefix, 1).await;
    replay.expect_events(&history.events_after(prefix, 1)).await;
    replay.expect_progress(end).await;
}

/// Create: Put with no prev. Update: Put with prev. Delete: Delete with an empty value, the
/// delete's revision and prev. Re-create: Put with no prev. The same live and replayed.
pub async fn watch_events_carry_the_new_and_the_previous_value(store: Arc<dyn Store>) {
    let s = &*store;
    let prefix = "/registry/pods/";
    let key = "/registry/pods/default/web-0";
    let mut live = Watcher::open(s, "live watch", prefix, 1).await;
    let created = create(s, key, "v1").await;
    let updated = update(s, key, "v2", created).await;
    let (deleted, _) = delete(s, key, Some(updated)).await;
    let recreated = create(s, key, "v3").await;

    let expected = vec![
        Event {
            kind: EventType::Put,
            kv: kv(key, "v1", created, created),
            prev: None,
        },
        Event {
            kind: EventType::Put,
            kv: kv(key, "v2", created, updated),
            prev: Some(kv(key, "v1", created, created)),
        },
        Event {
            kind: EventType::Delete,
            kv: kv(key, Bytes::new(), 0, deleted),
            prev: Some(kv(key, "v2", created, updated)),
        },
        Event {
            kind: EventType::Put,
            kv: kv(key, "v3", recreated, recreated),
            prev: None,
        },
    ];
    let events = live.expect_events(&expected).await;
    for event in &events {
        check_eq!(
            event.revision(),
            event.kv.mod_revision,
            "Event::revision() of {}",
            show_event(event)
        );
    }
    let mut replay = Watcher::open(s, "replaying watch", prefix, 1).await;
    replay.expect_events(&expected).await;
}

/// A watch from a past revision first replays every later event, then continues with new ones
/// without a gap or a duplicate at the seam — also when opened while writes are going on.
pub async fn watch_from_a_past_revision_replays_history_then_continues_live(store: Arc<dyn Store>) {
    let s = &*store;
    let tracked = Tracked::new(store.clone());
    let prefix = "/registry/pods/";
    let key = |slot: usize| format!("/registry/pods/default/p{slot}");
    let mut states: Vec<Option<Revision>> = vec![None; 4];
    for n in 0..12 {
        states[n % 4] = write_next(&tracked, &key(n % 4), states[n % 4], n).await;
    }
    let mid = revision(s).await;
    let mut replaying = Watcher::open(s, "watch from revision 5", prefix, 5).await;
    replaying
        .expect_events(&tracked.history().events_after(prefix, 5))
        .await;

    // More writes, and a second watch from revision 3 opened while they go on.
    const MORE: usize = 28;
    let writer = {
        let tracked = tracked.clone();
        tokio::spawn(async move {
            for n in 12..12 + MORE {
                let slot = n % 4;
                states[slot] = write_next(&tracked, &key(slot), states[slot], n).await;
            }
        })
    };
    let mut racing =
        Watcher::open(s, "watch from revision 3 opened during writes", prefix, 3).await;
    let end = mid + MORE as Revision;
    let racing_events = racing.events((end - 3) as usize).await;
    join(writer).await;
    check_eq!(revision(s).await, end, "revision after {MORE} more writes");
    let history = tracked.history();
    check_events(
        &racing.name,
        &racing_events,
        &history.events_after(prefix, 3),
        0,
    );
    racing.expect_progress(end).await;
    replaying
        .expect_events(&history.events_after(prefix, mid))
        .await;
    replaying.expect_progress(end).await;
}

/// 16 writers × 100 writes (some outside the prefix) while watchers opened at different
/// revisions (before, during and after the writes, some from the past) read along: each sees
/// exactly the events after its start, once each, in revision order, with prev values.
pub async fn concurrent_writes_reach_every_watcher_exactly_once_in_revision_order(
    store: Arc<dyn Store>,
) {
    const WRITERS: usize = 16;
    const WRITES: usize = 100;
    const PREFIX: &str = "/registry/things/";
    let s = &*store;
    let tracked = Tracked::new(store.clone());
    let start = revision(s).await;
    let (target_tx, target_rx) = tokio::sync::watch::channel(None);

    let a = Watcher::open(s, "watcher A (opened before the writes)", PREFIX, start).await;
    let a_task = tokio::spawn(collect_until(a, target_rx.clone()));

    let writers: Vec<JoinHandle<()>> = (0..WRITERS)
        .map(|w| {
            let tracked = tracked.clone();
            tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(1000 + w as u64);
                let mut keys: Vec<(String, Option<Revision>)> = (0..4)
                    .map(|j| (format!("{PREFIX}w{w:02}/k{j}"), None))
                    .collect();
                keys.push((format!("/registry/thingsx/w{w:02}"), None));
                for n in 0..WRITES {
                    // One write in ten goes outside the prefix.
                    let slot = if rng.random_range(0..10) == 0 {
                        4
                    } else {
                        rng.random_range(0..4)
                    };
                    let (key, current) = &mut keys[slot];
                    let value = Bytes::from(format!("w{w}n{n}"));
                    *current = match *current {
                        None => Some(tracked.create(key, value).await),
                        Some(r) if rng.random_range(0..10) < 7 => {
                            Some(tracked.update(key, value, r).await)
                        }
                        Some(r) => {
                            tracked.delete(key, Some(r)).await;
                            None
                        }
                    };
                }
            })
        })
        .collect();

    let total = (WRITERS * WRITES) as Revision;
    wait_for_revision(s, start + total / 4, "a quarter of the writes").await;
    let b_after = start + total / 8;
    let b = Watcher::open(
        s,
        &format!("watcher B (opened mid-way, from past revision {b_after})"),
        PREFIX,
        b_after,
    )
    .await;
    let b_task = tokio::spawn(collect_until(b, target_rx.clone()));

    wait_for_revision(s, start + total / 2, "half of the writes").await;
    let c_after = revision(s).await;
    let c = Watcher::open(
        s,
        &format!("watcher C (opened mid-way, from the then current revision {c_after})"),
        PREFIX,
        c_after,
    )
    .await;
    let c_task = tokio::spawn(collect_until(c, target_rx.clone()));

    for writer in writers {
        join(writer).await;
    }
    let end = revision(s).await;
    check_eq!(
        end,
        start + total,
        "revision after {WRITERS} writers x {WRITES} writes"
    );
    let history = tracked.history();
    history.check_contiguous(start + 1, end);
    let last = history
        .writes
        .iter()
        .rev()
        .find(|w| w.key.starts_with(PREFIX))
        .map_or(start, |w| w.revision);
    target_tx
        .send(Some(last))
        .expect("the watchers' target channel closed early");

    for (task, after) in [(a_task, start), (b_task, b_after), (c_task, c_after)] {
        let (mut watcher, events) = join(task).await;
        watcher.expect_progress(end).await;
        check_events(
            &watcher.name,
            &events,
            &history.events_after(PREFIX, after),
            0,
        );
    }
    let mut d = Watcher::open(
        s,
        "watcher D (opened after the writes, from revision 1)",
        PREFIX,
        start,
    )
    .await;
    d.expect_events(&history.events_after(PREFIX, start)).await;
    d.expect_progress(end).await;
}

/// `request_progress` yields a `Progress(rev)` after every event already due, with `rev` at or
/// after the last write — also on a watch that matched none of the writes.
pub async fn request_progress_reports_a_revision_at_or_after_the_last_write(store: Arc<dyn Store>) {
    let s = &*store;
    let tracked = Tracked::new(store.clone());
    let prefix = "/registry/pods/";
    let mut idle = Watcher::open(s, "watch of a fresh store", prefix, 1).await;
    idle.expect_progress(1).await;

    let mut pods = Watcher::open(s, "watch of /registry/pods/", prefix, 1).await;
    let mut nodes = Watcher::open(
        s,
        "watch of /registry/nodes/ (no writes)",
        "/registry/nodes/",
        1,
    )
    .await;
    for i in 0..5 {
        tracked
            .create(&format!("/registry/pods/default/p{i}"), val("x"))
            .await;
    }
    tracked
        .create("/registry/services/default/s", val("x"))
        .await;
    let last = revision(s).await;

    // Requested before reading anything: the progress comes after the five events.
    pods.stream.request_progress();
    let mut events = Vec::new();
    let by = deadline();
    loop {
        let waiting_for = format!("5 events, then a progress notification at or after {last}");
        match pods.next_item_by(by, &waiting_for).await {
            WatchItem::Event(event) => events.push(event),
            WatchItem::Progress(rev) if rev >= last => break,
            WatchItem::Progress(_) => {}
        }
    }
    check_events(
        &format!("{} before its progress notification", pods.name),
        &events,
        &tracked.history().events_after(prefix, 1),
        0,
    );
    nodes.expect_progress(last).await;
    idle.expect_events(&tracked.history().events_after(prefix, 1))
        .await;
    idle.expect_progress(last).await;

    // Again after each further write.
    let key = "/registry/pods/default/p0";
    let mut current = 2;
    for round in 0..3 {
        current = tracked
            .update(key, val(&format!("round {round}")), current)
            .await;
        pods.expect_events(&tracked.history().events_after(prefix, current - 1))
            .await;
        pods.expect_progress(current).await;
        nodes.expect_progress(current).await;
    }
}

/// A watch that nobody reads while 12,000 writes in thousands of commits go on (it falls far
/// behind), and one opened
/// afterwards from revision 1 (it replays a long history), both still deliver every event exactly
/// once, in order.
pub async fn slow_readers_and_long_replays_still_get_every_event_exactly_once(
    store: Arc<dyn Store>,
) {
    // Not too many writers, so the writes land in many small commits.
    const TASKS: usize = 16;
    const WRITES: usize = 760;
    const PREFIX: &str = "/registry/events/";
    let s = &*store;
    let tracked = Tracked::new(store.clone());
    let mut slow = Watcher::open(s, "watch left unread during the writes", PREFIX, 1).await;
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let tracked = tracked.clone();
        tasks.push(tokio::spawn(async move {
            let mut states: Vec<Option<Revision>> = vec![None; 4];
            for n in 0..WRITES {
                let slot = n % 4;
                let key = format!("{PREFIX}t{t:02}/k{slot}");
                states[slot] = write_next(&tracked, &key, states[slot], n / 4).await;
            }
        }));
    }
    for task in tasks {
        join(task).await;
    }
    let end = revision(s).await;
    check_eq!(
        end,
        1 + (TASKS * WRITES) as Revision,
        "revision after {TASKS} x {WRITES} writes"
    );
    let history = tracked.history();
    let expected = history.events_after(PREFIX, 1);
    let mut replay = Watcher::open(
        s,
        "watch opened after the writes, from revision 1",
        PREFIX,
        1,
    )
    .await;
    for watcher in [&mut slow, &mut replay] {
        watcher.expect_events(&expected).await;
        watcher.expect_progress(end).await;
    }
    let from = end - 3000;
    let mut late = Watcher::open(s, &format!("watch from revision {from}"), PREFIX, from).await;
    late.expect_events(&history.events_after(PREFIX, from))
        .await;
    late.expect_progress(end).await;
}

/// Dropping watches (read or unread, while writes go on) leaves the others delivering.
pub async fn dropping_a_watch_leaves_the_other_watches_working(store: Arc<dyn Store>) {
    let s = &*store;
    let tracked = Tracked::new(store.clone());
    let prefix = "/registry/pods/";
    let mut w1 = Watcher::open(s, "watch 1 (dropped after reading)", prefix, 1).await;
    let w2 = Watcher::open(s, "watch 2 (dropped unread)", prefix, 1).await;
    let mut w3 = Watcher::open(s, "watch 3 (kept)", prefix, 1).await;
    let mut w4 = Watcher::open(s, "watch 4 (kept, other prefix)", "/registry/pods/b/", 1).await;
    for i in 0..3 {
        tracked
            .create(&format!("/registry/pods/a/p{i}"), val("x"))
            .await;
    }
    w1.expect_events(&tracked.history().events_after(prefix, 1))
        .await;
    drop(w1);
    drop(w2);
    for i in 0..3 {
        tracked
            .create(&format!("/registry/pods/b/p{i}"), val("x"))
            .await;
    }

    // Open and drop watches while a writer writes.
    let writer = {
        let tracked = tracked.clone();
        tokio::spawn(async move {
            for i in 0..50 {
                tracked
                    .create(&format!("/registry/pods/c/p{i:02}"), val("x"))
                    .await;
            }
        })
    };
    for i in 0..20 {
        let mut w = Watcher::open(s, &format!("short-lived watch {i}"), prefix, 1).await;
        if i % 2 == 0 {
            w.next_event().await;
        }
    }
    join(writer).await;
    let end = revision(s).await;
    let history = tracked.history();
    w3.expect_events(&history.events_after(prefix, 1)).await;
    w3.expect_progress(end).await;
    w4.expect_events(&history.events_after("/registry/pods/b/", 1))
        .await;
    w4.expect_progress(end).await;
    let mut w5 = Watcher::open(s, "watch 5 (opened after the drops)", prefix, 1).await;
    w5.expect_events(&history.events_after(prefix, 1)).await;
    w5.expect_progress(end).await;
}

// ------------------------------------------------------------------------------------------------
// Compaction.
// ------------------------------------------------------------------------------------------------

/// After `compact(r)`, lists at revisions clearly below `r` and watches from clearly before `r`
/// fail with `Compacted`; the current state still reads.
pub async fn list_and_watch_before_the_compacted_revision_fail_with_compacted(
    store: Arc<dyn Store>,
) {
    let s = &*store;
    let prefix = "/registry/pods/";
    let tracked = Tracked::new(store.clone());
    let mut revs = Vec::new();
    for i in 0..5 {
        revs.push(
            tracked
                .create(&format!("/registry/pods/default/p{i}"), val("v1"))
                .await,
        );
    }
    for (i, rev) in revs.iter().enumerate().take(4) {
        tracked
            .update(&format!("/registry/pods/default/p{i}"), val("v2"), *rev)
            .await;
    }
    let now = revision(s).await;
    let compacted = 7;
    compact(s, compacted).await;

    for requested in [1, 3, compacted - 2] {
        let context = format!("list at revision {requested} after compact({compacted})");
        let err = expect_err(&context, "Compacted", s.list(at(prefix, requested)).await);
        match err {
            Error::Compacted { requested: r, .. } => {
                check_eq!(
                    r,
                    requested,
                    "revision `requested` carried by Compacted for {context}"
                )
            }
            other => panic!("{context}: expected Compacted, saw {other:?}"),
        }
        let paged = ListOptions {
            prefix: prefix.into(),
            start_key: Some("/registry/pods/default/p2".into()),
            limit: 1,
            revision: requested,
        };
        let context =
            format!("a continued page at revision {requested} after compact({compacted})");
        let err = expect_err(&context, "Compacted", s.list(paged).await);
        if !matches!(err, Error::Compacted { .. }) {
            panic!("{context}: expected Compacted, saw {err:?}");
        }
    }
    for after in [1, 2, compacted - 3] {
        expect_watch_compacted(s, prefix, after).await;
    }

    let history = tracked.history();
    check_kvs(
        "list at the current revision after compaction",
        &list(s, at(prefix, 0)).await.items,
        &history.state_at(now, prefix),
    );
    check_kvs(
        "list at the current revision, given explicitly, after compaction",
        &list(s, at(prefix, now)).await.items,
        &history.state_at(now, prefix),
    );
    for kv in history.state_at(now, prefix) {
        check_kv(
            &format!("get of {} after compaction", kv.key),
            get(s, &kv.key).await.as_ref(),
            Some(&kv),
        );
    }
    check_eq!(count(s, prefix).await, 5, "count after compaction");
}

/// Compacting at the current revision keeps every live key with its value and revisions; writes,
/// reads and watches go on as before.
pub async fn compaction_keeps_the_current_value_of_every_key(store: Arc<dyn Store>) {
    let s = &*store;
    let prefix = "/registry/pods/";
    let tracked = Tracked::new(store.clone());
    let key = |i: usize| format!("/registry/pods/default/p{i:02}");
    let mut revs = Vec::new();
    for i in 0..20 {
        revs.push(tracked.create(&key(i), val(&format!("p{i} v1"))).await);
    }
    for _ in 0..2 {
        for (i, rev) in revs.iter_mut().enumerate().take(10) {
            *rev = tracked
                .update(&key(i), val(&format!("p{i} v{}", *rev)), *rev)
                .await;
        }
    }
    for (i, rev) in revs.iter().enumerate().skip(15) {
        tracked.delete(&key(i), Some(*rev)).await;
    }
    tracked.create(&key(16), val("p16 again")).await;
    tracked.create("/registry/podsx/a", val("outside")).await;
    let now = revision(s).await;
    let history = tracked.history();
    let expected = history.state_at(now, prefix);

    compact(s, now).await;
    check_kvs(
        "list after compacting at the current revision",
        &list(s, at(prefix, 0)).await.items,
        &expected,
    );
    let (paged, _) = list_paged(s, prefix, 3, 0).await;
    check_kvs("pages of 3 after compaction", &paged, &expected);
    for i in 0..20 {
        check_kv(
            &format!("get of {} after compaction", key(i)),
            get(s, &key(i)).await.as_ref(),
            history.state_at(now, &key(i)).first(),
        );
    }
    check_eq!(
        count(s, prefix).await,
        expected.len() as u64,
        "count after compaction"
    );

    // Writes go on from the same revision, guarded by the same mod revisions.
    let mut watcher = Watcher::open(s, "watch from the compacted revision", prefix, now).await;
    let p0 = &expected[0];
    let next = tracked.update(&p0.key, val("after"), p0.mod_revision).await;
    check_eq!(
        next,
        now + 1,
        "revision of the first write after compaction"
    );
    let context = format!("create of live {} after compaction", key(1));
    let err = expect_err(&context, "KeyExists", s.create(&key(1), val("x")).await);
    if !matches!(err, Error::KeyExists { .. }) {
        panic!("{context}: expected KeyExists, saw {err:?}");
    }
    tracked.create(&key(17), val("p17 again")).await;
    tracked.delete(&key(2), None).await;
    let history = tracked.history();
    watcher
        .expect_events(&history.events_after(prefix, now))
        .await;
}

/// After `compact(r)` with `r` below the current revision, lists at every later revision still
/// see their snapshot and a watch from `r` replays every later event.
pub async fn compaction_keeps_later_revisions_readable_and_watchable(store: Arc<dyn Store>) {
    let s = &*store;
    let prefix = "/registry/pods/";
    let tracked = Tracked::new(store.clone());
    let mut states: Vec<Option<Revision>> = vec![None; 4];
    for n in 0..30 {
        let slot = n % 4;
        let key = format!("/registry/pods/default/p{slot}");
        states[slot] = write_next(&tracked, &key, states[slot], n).await;
    }
    let now = revision(s).await;
    let compacted = 12;
    compact(s, compacted).await;
    let history = tracked.history();
    for rev in compacted + 1..=now {
        check_kvs(
            &format!("list at revision {rev} after compact({compacted})"),
            &list(s, at(prefix, rev)).await.items,
            &history.state_at(rev, prefix),
        );
    }
    for after in [compacted, compacted + 1, now - 3] {
        let mut watcher = Watcher::open(
            s,
            &format!("watch from revision {after} after compact({compacted})"),
            prefix,
            after,
        )
        .await;
        watcher
            .expect_events_with(&history.events_after(prefix, after), compacted)
            .await;
        watcher.expect_progress(now).await;
    }
}

/// Compacting beyond the current revision is `FutureRevision` and changes nothing.
pub async fn compacting_beyond_the_current_revision_fails_with_future_revision(
    store: Arc<dyn Store>,
) {
    let s = &*store;
    for i in 0..3 {
        create(s, &format!("/registry/pods/default/p{i}"), "x").await;
    }
    let now = revision(s).await;
    for requested in [now + 1, now + 100] {
        let context = format!("compact({requested}) at revision {now}");
        let err = expect_err(&context, "FutureRevision", s.compact(requested).await);
        check_future(&context, err, requested, now);
    }
    check_eq!(
        revision(s).await,
        now,
        "current_revision() after a refused compaction"
    );
    // Nothing was compacted: every past revision still reads.
    for rev in 1..=now {
        check_eq!(
            list(s, at("/registry/pods/", rev)).await.items.len(),
            (rev - 1) as usize,
            "keys listed at revision {rev} after a refused compaction"
        );
    }
    compact(s, now).await;
}

/// Compacting the same (or an older) revision again succeeds and changes nothing.
pub async fn compacting_the_same_revision_twice_is_a_no_op(store: Arc<dyn Store>) {
    let s = &*store;
    let tracked = Tracked::new(store.clone());
    let prefix = "/registry/pods/";
    let mut revs = Vec::new();
    for i in 0..6 {
        revs.push(
            tracked
                .create(&format!("/registry/pods/default/p{i}"), val("v1"))
                .await,
        );
    }
    tracked
        .update("/registry/pods/default/p0", val("v2"), revs[0])
        .await;
    let now = revision(s).await;
    compact(s, 5).await;
    compact(s, 5).await;
    // An older revision is already compacted too.
    compact(s, 3).await;
    check_eq!(
        revision(s).await,
        now,
        "current_revision() after compacting twice"
    );
    check_eq!(
        stats(s).await.compacted_revision,
        5,
        "stats().compacted_revision after compact(5), compact(5), compact(3)"
    );
    let history = tracked.history();
    check_kvs(
        "list after compacting twice",
        &list(s, at(prefix, 0)).await.items,
        &history.state_at(now, prefix),
    );
    check_kvs(
        "list at revision 6 after compact(5) twice",
        &list(s, at(prefix, 6)).await.items,
        &history.state_at(6, prefix),
    );
    compact(s, now).await;
    compact(s, now).await;
    let next = tracked.create("/registry/pods/default/p9", val("v1")).await;
    check_eq!(next, now + 1, "revision of a write after compacting twice");
}

/// A watch that is caught up when compaction runs keeps delivering later events.
pub async fn a_live_watch_keeps_delivering_after_compaction(store: Arc<dyn Store>) {
    let s = &*store;
    let tracked = Tracked::new(store.clone());
    let prefix = "/registry/pods/";
    let mut watcher = Watcher::open(s, "live watch across compaction", prefix, 1).await;
    let mut states: Vec<Option<Revision>> = vec![None; 3];
    for n in 0..10 {
        let slot = n % 3;
        let key = format!("/registry/pods/default/p{slot}");
        states[slot] = write_next(&tracked, &key, states[slot], n).await;
    }
    let before = revision(s).await;
    watcher
        .expect_events(&tracked.history().events_after(prefix, 1))
        .await;
    compact(s, before).await;
    for n in 10..20 {
        let slot = n % 3;
        let key = format!("/registry/pods/default/p{slot}");
        states[slot] = write_next(&tracked, &key, states[slot], n).await;
    }
    let end = revision(s).await;
    let history = tracked.history();
    watcher
        .expect_events_with(&history.events_after(prefix, before), before)
        .await;
    watcher.expect_progress(end).await;
}

// ------------------------------------------------------------------------------------------------
// Helpers: calls that panic with context on error.
// ------------------------------------------------------------------------------------------------

fn val(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn kv(
    key: &str,
    value: impl Into<Bytes>,
    create_revision: Revision,
    mod_revision: Revision,
) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: value.into(),
        create_revision,
        mod_revision,
    }
}

/// List options for every key under `prefix` at `revision` (0: current), unlimited.
fn at(prefix: &str, revision: Revision) -> ListOptions {
    ListOptions {
        prefix: prefix.to_owned(),
        revision,
        ..Default::default()
    }
}

async fn revision(store: &dyn Store) -> Revision {
    store
        .current_revision()
        .await
        .unwrap_or_else(|e| panic!("current_revision(): expected a revision, saw error {e}"))
}

async fn get(store: &dyn Store, key: &str) -> Option<KeyValue> {
    store
        .get(key)
        .await
        .unwrap_or_else(|e| panic!("get({key:?}): expected a value or none, saw error {e}"))
}

async fn count(store: &dyn Store, prefix: &str) -> u64 {
    store
        .count(prefix)
        .await
        .unwrap_or_else(|e| panic!("count({prefix:?}): expected a count, saw error {e}"))
}

async fn stats(store: &dyn Store) -> rkube_store::Stats {
    store
        .stats()
        .await
        .unwrap_or_else(|e| panic!("stats(): expected stats, saw error {e}"))
}

async fn create(store: &dyn Store, key: &str, value: impl Into<Bytes>) -> Revision {
    store
        .create(key, value.into())
        .await
        .unwrap_or_else(|e| panic!("create({key:?}): expected success, saw error {e}"))
}

async fn update(
    store: &dyn Store,
    key: &str,
    value: impl Into<Bytes>,
    expected: Revision,
) -> Revision {
    store
        .update(key, value.into(), expected)
        .await
        .unwrap_or_else(|e| {
            panic!("update({key:?}, expected {expected}): expected success, saw error {e}")
        })
}

async fn delete(store: &dyn Store, key: &str, expected: Option<Revision>) -> (Revision, KeyValue) {
    store.delete(key, expected).await.unwrap_or_else(|e| {
        panic!("delete({key:?}, expected {expected:?}): expected success, saw error {e}")
    })
}

async fn compact(store: &dyn Store, revision: Revision) {
    store
        .compact(revision)
        .await
        .unwrap_or_else(|e| panic!("compact({revision}): expected success, saw error {e}"))
}

async fn list(store: &dyn Store, opts: ListOptions) -> ListResult {
    let what = format!("{opts:?}");
    store
        .list(opts)
        .await
        .unwrap_or_else(|e| panic!("list({what}): expected a list, saw error {e}"))
}

/// Every key under `prefix` by pages of `limit` at `revision` (0: current, then the first page's).
/// Returns the items and the revision the pages were read at.
async fn list_paged(
    store: &dyn Store,
    prefix: &str,
    limit: usize,
    revision: Revision,
) -> (Vec<KeyValue>, Revision) {
    let mut opts = ListOptions {
        prefix: prefix.to_owned(),
        limit,
        revision,
        start_key: None,
    };
    let mut items = Vec::new();
    let mut snapshot = None;
    let mut pages = 0usize;
    loop {
        let page = list(store, opts.clone()).await;
        pages += 1;
        assert!(
            page.items.len() <= limit,
            "page {pages} of {prefix} by {limit}: expected at most {limit} items, saw {}",
            page.items.len()
        );
        let snapshot = *snapshot.get_or_insert(page.revision);
        check_eq!(
            page.revision,
            snapshot,
            "revision of page {pages} of {prefix} by {limit}"
        );
        if revision != 0 {
            check_eq!(
                page.revision,
                revision,
                "revision of page {pages} asked at {revision}"
            );
        }
        let last = page.items.last().map(|kv| kv.key.clone());
        items.extend(page.items);
        let Some(next) = page.next_key else {
            return (items, snapshot);
        };
        if let Some(last) = last {
            assert!(
                next > last,
                "page {pages} of {prefix} by {limit}: expected next_key to sort after the page's \
                 last key {last:?}, saw {next:?}"
            );
        }
        assert!(
            pages <= items.len() + 1,
            "pages of {prefix} by {limit}: expected pagination to advance, saw {pages} pages for \
             {} items",
            items.len()
        );
        opts.start_key = Some(next);
        opts.revision = snapshot;
    }
}

/// Waits (polling) until the store reaches `target`.
async fn wait_for_revision(store: &dyn Store, target: Revision, what: &str) {
    let deadline = Instant::now() + ITEM_TIMEOUT;
    loop {
        let now = revision(store).await;
        if now >= target {
            return;
        }
        if Instant::now() > deadline {
            panic!(
                "waiting for {what}: expected the revision to reach {target} within \
                 {ITEM_TIMEOUT:?}, it stayed at {now}"
            );
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Awaits a spawned task, re-raising its panic with the original message.
async fn join<T>(handle: JoinHandle<T>) -> T {
    match handle.await {
        Ok(value) => value,
        Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
        Err(err) => panic!("expected a spawned task to finish, saw {err}"),
    }
}

/// A write in the same rotation every multi-write case uses: create when absent, otherwise
/// update, and delete every fifth write. Returns the key's new mod revision (`None`: deleted).
async fn write_next(
    tracked: &Tracked,
    key: &str,
    current: Option<Revision>,
    n: usize,
) -> Option<Revision> {
    let value = Bytes::from(format!("{key} n{n}"));
    match current {
        None => Some(tracked.create(key, value).await),
        Some(r) if n % 5 == 4 => {
            tracked.delete(key, Some(r)).await;
            None
        }
        Some(r) => Some(tracked.update(key, value, r).await),
    }
}

/// A store whose every call panics, naming the call, when it takes longer than [`CALL_TIMEOUT`]:
/// a hung backend fails the case at the call that hung.
struct Bounded(Arc<dyn Store>);

async fn within<T>(call: impl FnOnce() -> String, future: impl Future<Output = T>) -> T {
    match timeout(CALL_TIMEOUT, future).await {
        Ok(value) => value,
        Err(_) => panic!(
            "{}: expected an answer within {CALL_TIMEOUT:?}, saw none",
            call()
        ),
    }
}

#[async_trait::async_trait]
impl Store for Bounded {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        within(|| format!("get({key:?})"), self.0.get(key)).await
    }

    async fn list(&self, opts: ListOptions) -> Result<ListResult> {
        let call = format!("list({opts:?})");
        within(|| call, self.0.list(opts)).await
    }

    async fn count(&self, prefix: &str) -> Result<u64> {
        within(|| format!("count({prefix:?})"), self.0.count(prefix)).await
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<Revision> {
        within(|| format!("create({key:?})"), self.0.create(key, value)).await
    }

    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<Revision> {
        within(
            || format!("update({key:?}, expected {expected})"),
            self.0.update(key, value, expected),
        )
        .await
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<(Revision, KeyValue)> {
        within(
            || format!("delete({key:?}, expected {expected:?})"),
            self.0.delete(key, expected),
        )
        .await
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream> {
        within(
            || format!("watch({prefix:?}, after {after})"),
            self.0.watch(prefix, after),
        )
        .await
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        within(|| format!("compact({revision})"), self.0.compact(revision)).await
    }

    async fn current_revision(&self) -> Result<Revision> {
        within(
            || "current_revision()".to_owned(),
            self.0.current_revision(),
        )
        .await
    }

    async fn stats(&self) -> Result<rkube_store::Stats> {
        within(|| "stats()".to_owned(), self.0.stats()).await
    }
}

// ------------------------------------------------------------------------------------------------
// Helpers: error checks.
// ------------------------------------------------------------------------------------------------

fn expect_err<T: std::fmt::Debug>(what: &str, expected: &str, result: Result<T>) -> Error {
    match result {
        Ok(value) => panic!("{what}: expected {expected}, saw success {value:?}"),
        Err(err) => err,
    }
}

#[track_caller]
fn check_conflict(context: &str, err: Error, key: &str, expected: Revision, current: &KeyValue) {
    match err {
        Error::Conflict {
            key: k,
            expected: e,
            current: c,
        } => {
            check_eq!(k.as_str(), key, "{context}: key carried by Conflict");
            check_eq!(
                e,
                expected,
                "{context}: expected revision carried by Conflict"
            );
            check_kv(
                &format!("{context}: current value carried by Conflict"),
                Some(&c),
                Some(current),
            );
        }
        other => panic!("{context}: expected Conflict, saw {other:?}"),
    }
}

#[track_caller]
fn check_not_found(context: &str, err: Error, key: &str) {
    match err {
        Error::NotFound { key: k } => check_eq!(k.as_str(), key, "{context}: key of NotFound"),
        other => panic!("{context}: expected NotFound, saw {other:?}"),
    }
}

#[track_caller]
fn check_future(context: &str, err: Error, requested: Revision, current: Revision) {
    match err {
        Error::FutureRevision {
            requested: r,
            current: c,
        } => {
            check_eq!(r, requested, "{context}: `requested` of FutureRevision");
            check_eq!(c, current, "{context}: `current` of FutureRevision");
        }
        other => panic!("{context}: expected FutureRevision, saw {other:?}"),
    }
}

/// A watch from `after` fails with `Compacted`, at the call or as the stream's only item.
async fn expect_watch_compacted(store: &dyn Store, prefix: &str, after: Revision) {
    let context = format!("watch({prefix:?}, after {after}) after compaction");
    let mut stream = match store.watch(prefix, after).await {
        Err(Error::Compacted { .. }) => return,
        Err(other) => panic!("{context}: expected Compacted, saw {other:?}"),
        Ok(stream) => stream,
    };
    match timeout(ITEM_TIMEOUT, stream.next()).await {
        Ok(Some(Err(Error::Compacted { .. }))) => {}
        Ok(Some(Err(other))) => {
            panic!("{context}: expected Compacted as the only item, saw error {other:?}")
        }
        Ok(Some(Ok(item))) => {
            panic!("{context}: expected Compacted as the only item, saw {item:?}")
        }
        Ok(None) => panic!("{context}: expected Compacted as the only item, saw the stream end"),
        Err(_) => panic!(
            "{context}: expected Compacted at the call or as the only item, saw nothing within \
             {ITEM_TIMEOUT:?}"
        ),
    }
    match timeout(ITEM_TIMEOUT, stream.next()).await {
        Ok(None) => {}
        Ok(Some(item)) => {
            panic!("{context}: expected the stream to end after Compacted, saw {item:?}")
        }
        Err(_) => panic!(
            "{context}: expected the stream to end after Compacted, it stayed open for \
             {ITEM_TIMEOUT:?}"
        ),
    }
}

// ------------------------------------------------------------------------------------------------
// Helpers: showing and comparing values.
// ------------------------------------------------------------------------------------------------

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn show_value(value: &[u8]) -> String {
    const SHOWN: usize = 40;
    let head = &value[..value.len().min(SHOWN)];
    let shown = match std::str::from_utf8(head) {
        Ok(text) => format!("{text:?}"),
        Err(_) => format!(
            "0x{}",
            head.iter().map(|b| format!("{b:02x}")).collect::<String>()
        ),
    };
    if value.len() > SHOWN {
        format!("{shown}.. ({} bytes, fnv {:016x})", value.len(), fnv(value))
    } else {
        shown
    }
}

fn show_kv(kv: &KeyValue) -> String {
    format!(
        "{} = {} (create {}, mod {})",
        kv.key,
        show_value(&kv.value),
        kv.create_revision,
        kv.mod_revision
    )
}

fn show_opt(kv: Option<&KeyValue>) -> String {
    kv.map_or_else(|| "nothing".to_owned(), show_kv)
}

fn show_event(event: &Event) -> String {
    format!(
        "{:?} {} [prev: {}]",
        event.kind,
        show_kv(&event.kv),
        show_opt(event.prev.as_ref())
    )
}

#[track_caller]
fn check_kv(context: &str, seen: Option<&KeyValue>, expected: Option<&KeyValue>) {
    if seen != expected {
        panic!(
            "{context}: expected {}, saw {}",
            show_opt(expected),
            show_opt(seen)
        );
    }
}

/// Compares two lists of keys and, when they differ, names the first few differences.
#[track_caller]
fn check_kvs(context: &str, seen: &[KeyValue], expected: &[KeyValue]) {
    if seen == expected {
        return;
    }
    let mut problems = Vec::new();
    for pair in seen.windows(2) {
        if pair[0].key >= pair[1].key {
            problems.push(format!(
                "{:?} listed before {:?} (keys must be unique and ascending)",
                pair[0].key, pair[1].key
            ));
        }
    }
    let seen_by_key: BTreeMap<&str, &KeyValue> =
        seen.iter().map(|kv| (kv.key.as_str(), kv)).collect();
    let expected_by_key: BTreeMap<&str, &KeyValue> =
        expected.iter().map(|kv| (kv.key.as_str(), kv)).collect();
    for (key, want) in &expected_by_key {
        match seen_by_key.get(key) {
            None => problems.push(format!("missing {}", show_kv(want))),
            Some(got) if got != want => {
                problems.push(format!("expected {}, saw {}", show_kv(want), show_kv(got)))
            }
            Some(_) => {}
        }
    }
    for (key, got) in &seen_by_key {
        if !expected_by_key.contains_key(key) {
            problems.push(format!("unexpected {}", show_kv(got)));
        }
    }
    let total = problems.len();
    problems.truncate(12);
    panic!(
        "{context}: expected {} keys, saw {}; {total} differences, first ones:\n  {}",
        expected.len(),
        seen.len(),
        problems.join("\n  ")
    );
}

/// Whether `seen` is the `expected` event. A delete's `kv.create_revision` is not compared (the
/// contract leaves it open), and `prev` may be missing if its revision is at or below
/// `lost_prev_at_or_below` (compacted away, which the contract allows).
fn event_matches(seen: &Event, expected: &Event, lost_prev_at_or_below: Revision) -> bool {
    let prev_ok = seen.prev == expected.prev
        || (seen.prev.is_none()
            && expected
                .prev
                .as_ref()
                .is_some_and(|p| p.mod_revision <= lost_prev_at_or_below));
    seen.kind == expected.kind
        && seen.kv.key == expected.kv.key
        && seen.kv.value == expected.kv.value
        && seen.kv.mod_revision == expected.kv.mod_revision
        && (expected.kind == EventType::Delete
            || seen.kv.create_revision == expected.kv.create_revision)
        && prev_ok
}

#[track_caller]
fn check_events(
    context: &str,
    seen: &[Event],
    expected: &[Event],
    lost_prev_at_or_below: Revision,
) {
    for (i, (got, want)) in seen.iter().zip(expected).enumerate() {
        if !event_matches(got, want, lost_prev_at_or_below) {
            panic!(
                "{context}: event #{i} of {}: expected {}, saw {}",
                expected.len(),
                show_event(want),
                show_event(got)
            );
        }
    }
    if seen.len() != expected.len() {
        let detail = if seen.len() > expected.len() {
            format!("first extra: {}", show_event(&seen[expected.len()]))
        } else {
            format!("first missing: {}", show_event(&expected[seen.len()]))
        };
        panic!(
            "{context}: expected {} events, saw {}; {detail}",
            expected.len(),
            seen.len()
        );
    }
}

// ------------------------------------------------------------------------------------------------
// Helpers: a model of the store built from every successful write.
// ------------------------------------------------------------------------------------------------

/// One successful write: `value` is `None` for a delete.
#[derive(Clone, Debug)]
struct Write {
    revision: Revision,
    key: String,
    value: Option<Bytes>,
}

/// The store plus a record of every successful write made through it, with its revision. As long
/// as every write of a case goes through it, [`History`] can say what the store held at any
/// revision and which events a watch from any revision must see.
struct Tracked {
    store: Arc<dyn Store>,
    writes: Mutex<Vec<Write>>,
}

impl Tracked {
    fn new(store: Arc<dyn Store>) -> Arc<Tracked> {
        Arc::new(Tracked {
            store,
            writes: Mutex::new(Vec::new()),
        })
    }

    fn record(&self, revision: Revision, key: &str, value: Option<Bytes>) {
        self.writes
            .lock()
            .expect("the write log's lock is poisoned")
            .push(Write {
                revision,
                key: key.to_owned(),
                value,
            });
    }

    async fn create(&self, key: &str, value: Bytes) -> Revision {
        let revision = create(&*self.store, key, value.clone()).await;
        self.record(revision, key, Some(value));
        revision
    }

    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Revision {
        let revision = update(&*self.store, key, value.clone(), expected).await;
        self.record(revision, key, Some(value));
        revision
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> (Revision, KeyValue) {
        let (revision, prev) = delete(&*self.store, key, expected).await;
        self.record(revision, key, None);
        (revision, prev)
    }

    /// The writes so far, in revision order; panics if two got the same revision.
    fn history(&self) -> History {
        let mut writes = self
            .writes
            .lock()
            .expect("the write log's lock is poisoned")
            .clone();
        writes.sort_by_key(|w| w.revision);
        for pair in writes.windows(2) {
            assert!(
                pair[0].revision != pair[1].revision,
                "expected every write to get its own revision, saw revision {} returned for both \
                 {} and {}",
                pair[0].revision,
                pair[0].key,
                pair[1].key
            );
        }
        History { writes }
    }
}

/// Every write of a case in revision order, replayable from an empty store.
struct History {
    writes: Vec<Write>,
}

impl History {
    /// Asserts the writes hold exactly the revisions `from..=to`.
    #[track_caller]
    fn check_contiguous(&self, from: Revision, to: Revision) {
        let seen: Vec<Revision> = self.writes.iter().map(|w| w.revision).collect();
        let expected: Vec<Revision> = (from..=to).collect();
        if seen != expected {
            let gap = expected.iter().find(|r| !seen.contains(r));
            panic!(
                "expected the writes to have revisions {from}..={to} exactly, saw {} revisions \
                 from {:?} to {:?} (first missing: {gap:?})",
                seen.len(),
                seen.first(),
                seen.last()
            );
        }
    }

    /// Replays the writes, calling `each(write, prev)` with the key's value before each one.
    fn replay(
        &self,
        upto: Revision,
        mut each: impl FnMut(&Write, Option<&KeyValue>),
    ) -> BTreeMap<String, KeyValue> {
        let mut state: BTreeMap<String, KeyValue> = BTreeMap::new();
        for write in self.writes.iter().take_while(|w| w.revision <= upto) {
            let prev = state.get(&write.key);
            each(write, prev);
            match &write.value {
                Some(value) => {
                    let create_revision = prev.map_or(write.revision, |p| p.create_revision);
                    state.insert(
                        write.key.clone(),
                        kv(&write.key, value.clone(), create_revision, write.revision),
                    );
                }
                None => {
                    state.remove(&write.key);
                }
            }
        }
        state
    }

    /// The keys under `prefix` at `revision`, in key order.
    fn state_at(&self, revision: Revision, prefix: &str) -> Vec<KeyValue> {
        self.replay(revision, |_, _| {})
            .into_values()
            .filter(|kv| kv.key.starts_with(prefix))
            .collect()
    }

    /// The events a watch of `prefix` from `after` must deliver, in order.
    fn events_after(&self, prefix: &str, after: Revision) -> Vec<Event> {
        let mut events = Vec::new();
        self.replay(Revision::MAX, |write, prev| {
            if write.revision <= after || !write.key.starts_with(prefix) {
                return;
            }
            events.push(match &write.value {
                Some(value) => Event {
                    kind: EventType::Put,
                    kv: kv(
                        &write.key,
                        value.clone(),
                        prev.map_or(write.revision, |p| p.create_revision),
                        write.revision,
                    ),
                    prev: prev.cloned(),
                },
                None => Event {
                    kind: EventType::Delete,
                    kv: kv(&write.key, Bytes::new(), 0, write.revision),
                    prev: prev.cloned(),
                },
            });
        });
        events
    }
}

// ------------------------------------------------------------------------------------------------
// Helpers: reading watches with timeouts and ordering checks.
// ------------------------------------------------------------------------------------------------

/// A watch stream that checks, item by item, that events come in increasing revision order after
/// the watch's start and after any progress notification.
struct Watcher {
    name: String,
    stream: WatchStream,
    /// Every event at or below this revision has been delivered (start, last event or progress).
    delivered: Revision,
}

impl Watcher {
    async fn open(store: &dyn Store, name: &str, prefix: &str, after: Revision) -> Watcher {
        let stream = store.watch(prefix, after).await.unwrap_or_else(|e| {
            panic!("{name}: watch({prefix:?}, after {after}): expected a stream, saw error {e}")
        });
        Watcher {
            name: name.to_owned(),
            stream,
            delivered: after,
        }
    }

    /// The next item, before `deadline`. Loops that skip progress notifications pass one deadline
    /// for the whole wait, so a stream of progress notifications cannot keep a missing event
    /// waited for forever.
    async fn next_item_by(
        &mut self,
        deadline: tokio::time::Instant,
        waiting_for: &str,
    ) -> WatchItem {
        let name = &self.name;
        let delivered = self.delivered;
        let item = match tokio::time::timeout_at(deadline, self.stream.next()).await {
            Err(_) => panic!(
                "{name}: expected {waiting_for} within {ITEM_TIMEOUT:?}, saw none (delivered up \
                 to revision {delivered}, counting progress notifications)"
            ),
            Ok(None) => panic!(
                "{name}: expected {waiting_for}, saw the stream end without an error (delivered \
                 up to revision {delivered})"
            ),
            Ok(Some(Err(e))) => panic!(
                "{name}: expected {waiting_for}, saw error {e} (delivered up to revision \
                 {delivered})"
            ),
            Ok(Some(Ok(item))) => item,
        };
        match &item {
            WatchItem::Event(event) => {
                assert!(
                    event.revision() > delivered,
                    "{name}: expected events after revision {delivered} (the watch's start, last \
                     event or last progress), in increasing order; saw {}",
                    show_event(event)
                );
                self.delivered = event.revision();
            }
            WatchItem::Progress(rev) => self.delivered = self.delivered.max(*rev),
        }
        item
    }

    /// The next event, skipping progress notifications.
    async fn next_event(&mut self) -> Event {
        let deadline = deadline();
        loop {
            if let WatchItem::Event(event) = self.next_item_by(deadline, "an event").await {
                return event;
            }
        }
    }

    /// The next `n` events, each within [`ITEM_TIMEOUT`] of the one before.
    async fn events(&mut self, n: usize) -> Vec<Event> {
        let mut events = Vec::with_capacity(n);
        let mut by = deadline();
        while events.len() < n {
            let waiting_for = format!("event {} of {n}", events.len() + 1);
            if let WatchItem::Event(event) = self.next_item_by(by, &waiting_for).await {
                events.push(event);
                by = deadline();
            }
        }
        events
    }

    /// Reads `expected.len()` events and checks them against `expected`.
    async fn expect_events(&mut self, expected: &[Event]) -> Vec<Event> {
        self.expect_events_with(expected, 0).await
    }

    /// Reads `expected.len()` events and checks each against `expected` as it arrives (see
    /// [`event_matches`] for `lost_prev_at_or_below`). A progress notification covering the next
    /// expected event fails at once: that event was skipped.
    async fn expect_events_with(
        &mut self,
        expected: &[Event],
        lost_prev_at_or_below: Revision,
    ) -> Vec<Event> {
        let mut events = Vec::with_capacity(expected.len());
        let mut by = deadline();
        while let Some(want) = expected.get(events.len()) {
            let i = events.len();
            let waiting_for = format!("event #{i} of {}: {}", expected.len(), show_event(want));
            match self.next_item_by(by, &waiting_for).await {
                WatchItem::Event(event) => {
                    if !event_matches(&event, want, lost_prev_at_or_below) {
                        panic!(
                            "{}: expected {waiting_for}, saw {}",
                            self.name,
                            show_event(&event)
                        );
                    }
                    events.push(event);
                    by = deadline();
                }
                WatchItem::Progress(rev) if rev >= want.revision() => panic!(
                    "{}: expected {waiting_for}, saw Progress({rev}) first, which says every \
                     event up to {rev} was delivered",
                    self.name
                ),
                WatchItem::Progress(_) => {}
            }
        }
        events
    }

    /// Requests progress and reads until a `Progress(rev)` with `rev >= at_least`, allowing no
    /// event before it. Returns `rev`.
    async fn expect_progress(&mut self, at_least: Revision) -> Revision {
        self.stream.request_progress();
        let waiting_for = format!("a progress notification at or after revision {at_least}");
        let by = deadline();
        loop {
            match self.next_item_by(by, &waiting_for).await {
                WatchItem::Progress(rev) if rev >= at_least => return rev,
                WatchItem::Progress(_) => {}
                WatchItem::Event(event) => panic!(
                    "{}: expected {waiting_for} and no more events, saw {}",
                    self.name,
                    show_event(&event)
                ),
            }
        }
    }
}

/// [`ITEM_TIMEOUT`] from now.
fn deadline() -> tokio::time::Instant {
    tokio::time::Instant::now() + ITEM_TIMEOUT
}

/// Reads `watcher` until it has delivered everything up to the revision `target` is set to.
async fn collect_until(
    mut watcher: Watcher,
    mut target: tokio::sync::watch::Receiver<Option<Revision>>,
) -> (Watcher, Vec<Event>) {
    let mut events = Vec::new();
    let mut by = deadline();
    loop {
        let goal = *target.borrow_and_update();
        if goal.is_some_and(|goal| watcher.delivered >= goal) {
            return (watcher, events);
        }
        let waiting_for = match goal {
            Some(goal) => format!("the concurrent writers' events up to revision {goal}"),
            None => "the concurrent writers' events".to_owned(),
        };
        tokio::select! {
            changed = target.changed(), if goal.is_none() => {
                changed.expect("the watchers' target channel closed early");
                by = deadline();
            }
            item = watcher.next_item_by(by, &waiting_for) => {
                if let WatchItem::Event(event) = item {
                    events.push(event);
                    by = deadline();
                }
            }
        }
    }
}
