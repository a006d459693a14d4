//! Several groups in one Raft database: each keeps its own log, vote, commit and purge points and
//! snapshot, their writes share commits, and a group removed leaves nothing behind.

use std::sync::Arc;

use openraft::storage::{RaftLogStorage, RaftSnapshotBuilder, RaftStateMachine};
use openraft::RaftLogReader;

use super::{append, append_unflushed, blank, ids, log_id, normal, open_group, Recorder};
use crate::types::Vote;
use crate::{LogDb, LogStore};

#[tokio::test]
async fn groups_in_one_database_keep_their_own_logs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("raft.redb");
    {
        let db = LogDb::open(&path).unwrap();
        let (mut a, _) = open_group(&db, "a", Arc::new(Recorder::default()));
        let (mut b, _) = open_group(&db, "b", Arc::new(Recorder::default()));
        a.save_vote(&Vote::new_committed(2, 1)).await.unwrap();
        b.save_vote(&Vote::new_committed(5, 2)).await.unwrap();
        // Interleaved and unflushed: one writer commits both groups' appends together.
        let mut flushes = Vec::new();
        for i in 0..50 {
            flushes.push(append_unflushed(&mut a, vec![normal(1, i)]).await);
            flushes
                .push(append_unflushed(&mut b, vec![blank(4, i * 2), blank(4, i * 2 + 1)]).await);
        }
        for flushed in flushes {
            flushed.await.unwrap();
        }
        a.purge(log_id(1, 9)).await.unwrap();
        b.truncate_after(Some(log_id(4, 59))).await.unwrap();
        b.save_committed(Some(log_id(4, 40))).await.unwrap();
        a.save_committed(Some(log_id(1, 20))).await.unwrap();
        // Committed points are not waited for; a vote is, and is queued after them.
        a.save_vote(&Vote::new_committed(2, 1)).await.unwrap();
        b.save_vote(&Vote::new_committed(5, 2)).await.unwrap();
    }

    let db = LogDb::open(&path).unwrap();
    assert_eq!(db.group_names(), ["a", "b"]);
    let (mut a, _) = open_group(&db, "a", Arc::new(Recorder::default()));
    let (mut b, _) = open_group(&db, "b", Arc::new(Recorder::default()));
    assert_eq!(
        a.read_vote().await.unwrap(),
        Some(Vote::new_committed(2, 1))
    );
    assert_eq!(
        b.read_vote().await.unwrap(),
        Some(Vote::new_committed(5, 2))
    );
    assert_eq!(a.read_committed().await.unwrap(), Some(log_id(1, 20)));
    assert_eq!(b.read_committed().await.unwrap(), Some(log_id(4, 40)));
    let a_state = a.get_log_state().await.unwrap();
    assert_eq!(a_state.last_purged_log_id, Some(log_id(1, 9)));
    assert_eq!(a_state.last_log_id, Some(log_id(1, 49)));
    assert_eq!(
        ids(&a.try_get_log_entries(0..).await.unwrap()),
        (10..50).map(|i| (1, i)).collect::<Vec<_>>()
    );
    let b_state = b.get_log_state().await.unwrap();
    assert_eq!(b_state.last_purged_log_id, None);
    assert_eq!(b_state.last_log_id, Some(log_id(4, 59)));
    assert_eq!(
        ids(&b.try_get_log_entries(0..).await.unwrap()),
        (0..60).map(|i| (4, i)).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_group_is_opened_once_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let db = LogDb::open(dir.path().join("raft.redb")).unwrap();
    let (log, _sm) = open_group(&db, "a", Arc::new(Recorder::default()));
    let db2 = db.clone();
    let second = tokio::task::spawn_blocking(move || LogStore::open(&db2, "a").map(|_| ()))
        .await
        .unwrap();
    assert!(second.is_err(), "a second open while the first is held");
    drop((log, _sm));
    let (_log, _sm) = open_group(&db, "a", Arc::new(Recorder::default()));
}

#[tokio::test]
async fn a_removed_group_leaves_nothing_and_others_stay() {
    let dir = tempfile::tempdir().unwrap();
    let db = LogDb::open(dir.path().join("raft.redb")).unwrap();
    {
        let (mut a, mut sm) = open_group(&db, "a", Arc::new(Recorder::default()));
        let (mut b, _) = open_group(&db, "b", Arc::new(Recorder::default()));
        a.save_vote(&Vote::new_committed(1, 1)).await.unwrap();
        append(&mut a, (0..5).map(|i| normal(1, i)).collect()).await;
        append(&mut b, (0..3).map(|i| normal(1, i)).collect()).await;
        sm.get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        assert!(
            db.remove_group("a").is_err(),
            "an open group is not removed"
        );
    }
    db.remove_group("a").unwrap();
    assert_eq!(db.group_names(), ["b"]);

    // A group of the same name starts from nothing.
    let (mut a, mut sm) = open_group(&db, "a", Arc::new(Recorder::default()));
    assert_eq!(a.read_vote().await.unwrap(), None);
    assert!(a.try_get_log_entries(0..).await.unwrap().is_empty());
    assert!(sm.get_current_snapshot().await.unwrap().is_none());
    let (mut b, _) = open_group(&db, "b", Arc::new(Recorder::default()));
    assert_eq!(b.try_get_log_entries(0..).await.unwrap().len(), 3);
}
