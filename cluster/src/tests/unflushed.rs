//! Appends are readable as soon as `append` returns, before they are flushed; what is read is the
//! log openraft wrote, whatever the writer has reached.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use openraft::storage::RaftLogStorage;
use openraft::RaftLogReader;

use super::{append, append_unflushed, blank, ids, log_id, normal, open, Recorder};
use crate::types::Entry;
use crate::Proposal;

#[tokio::test]
async fn appends_are_readable_before_they_are_flushed() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _sm) = open(dir.path(), Arc::new(Recorder::default()));
    let mut reader = log.get_log_reader().await;
    let mut flushes = Vec::new();
    for i in 0..20 {
        flushes.push(append_unflushed(&mut log, vec![normal(1, i)]).await);
        let read = reader.try_get_log_entries(0..).await.unwrap();
        assert_eq!(read.len() as u64, i + 1);
        assert_eq!(read.last(), Some(&normal(1, i)));
    }
    for flushed in flushes {
        flushed.await.unwrap();
    }
    assert_eq!(reader.try_get_log_entries(0..).await.unwrap().len(), 20);
}

#[tokio::test]
async fn a_truncation_behind_unflushed_appends_keeps_the_new_tail() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut log, _sm) = open(dir.path(), Arc::new(Recorder::default()));
        let flushed = append_unflushed(&mut log, (0..=10).map(|i| blank(1, i)).collect()).await;
        log.truncate_after(Some(log_id(1, 5))).await.unwrap();
        let reappended = append_unflushed(&mut log, (6..=8).map(|i| blank(2, i)).collect()).await;
        let want: Vec<(u64, u64)> = (0..=5)
            .map(|i| (1, i))
            .chain((6..=8).map(|i| (2, i)))
            .collect();
        assert_eq!(ids(&log.try_get_log_entries(0..).await.unwrap()), want);
        flushed.await.unwrap();
        reappended.await.unwrap();
    }
    let (mut log, _sm) = open(dir.path(), Arc::new(Recorder::default()));
    let read = log.try_get_log_entries(0..).await.unwrap();
    assert_eq!(read.len(), 9);
    assert_eq!(read[8].log_id, log_id(2, 8));
}

#[tokio::test]
async fn an_empty_append_is_flushed_after_what_came_before() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _sm) = open(dir.path(), Arc::new(Recorder::default()));
    let first = append_unflushed(&mut log, vec![blank(1, 0)]).await;
    append(&mut log, Vec::new()).await;
    // The empty append's flush came after the first one's.
    first.await.unwrap();
}

#[tokio::test]
async fn an_append_that_would_leave_a_hole_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _sm) = open(dir.path(), Arc::new(Recorder::default()));
    append(&mut log, (0..=2).map(|i| blank(1, i)).collect()).await;
    let (tx, _rx) = <crate::TypeConfig as openraft::type_config::TypeConfigExt>::oneshot();
    let err = log
        .append(vec![blank(1, 5)], openraft::storage::IOFlushed::signal(tx))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    assert_eq!(log.try_get_log_entries(0..).await.unwrap().len(), 3);
}

#[tokio::test]
async fn a_limited_read_stops_after_a_slice() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _sm) = open(dir.path(), Arc::new(Recorder::default()));
    let big = |index| {
        Entry::new_normal(
            log_id(1, index),
            Proposal {
                origin: 1,
                number: index,
                payload: vec![index as u8; 5 << 19],
            },
        )
    };
    use openraft::entry::RaftEntry;
    append(&mut log, (0..3).map(big).collect()).await;
    // 2.5 MiB each: the second one crosses the 4 MiB slice.
    let read = log.limited_get_log_entries(0, 3).await.unwrap();
    assert_eq!(ids(&read), [(1, 0), (1, 1)]);
    assert_eq!(log.try_get_log_entries(0..3).await.unwrap().len(), 3);
}

/// Readers running beside appends, truncations and purges always get a run without holes, from
/// past the purge point to the end they asked for or the log's end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_never_see_a_hole() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _sm) = open(dir.path(), Arc::new(Recorder::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for _ in 0..2 {
        let mut reader = log.get_log_reader().await;
        let stop = stop.clone();
        readers.push(tokio::spawn(async move {
            let mut reads = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let read = reader.try_get_log_entries(0..).await.unwrap();
                for pair in read.windows(2) {
                    assert_eq!(pair[0].log_id.index + 1, pair[1].log_id.index);
                }
                reads += 1;
                tokio::task::yield_now().await;
            }
            reads
        }));
    }

    let mut next = 0;
    let mut term = 1;
    let mut flushes = Vec::new();
    for round in 0..300u64 {
        let entries = (next..next + 3).map(|i| blank(term, i)).collect();
        flushes.push(append_unflushed(&mut log, entries).await);
        next += 3;
        if round % 7 == 6 {
            // A new leader drops the last two.
            term += 1;
            next -= 2;
            log.truncate_after(Some(log_id(term - 1, next - 1)))
                .await
                .unwrap();
        }
        if round % 50 == 49 {
            let state = log.get_log_state().await.unwrap();
            let last = state.last_log_id.unwrap();
            log.purge(log_id(last.leader_id.term, last.index - 10))
                .await
                .unwrap();
        }
    }
    for flushed in flushes {
        flushed.await.unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    for reader in readers {
        assert!(reader.await.unwrap() > 0);
    }

    let read = log.try_get_log_entries(0..).await.unwrap();
    assert_eq!(read.last().map(|e| e.log_id.index), Some(next - 1));
    for pair in read.windows(2) {
        assert_eq!(pair[0].log_id.index + 1, pair[1].log_id.index);
        assert!(pair[0].log_id <= pair[1].log_id);
    }
}
