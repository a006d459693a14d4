//! What must survive a restart: reopening the files gives back the vote, the log, the commit and
//! purge points, and the snapshot; the snapshot plus the committed log replayed after it restore
//! the applier.

use std::collections::BTreeSet;
use std::sync::Arc;

use futures::stream;
use openraft::entry::RaftEntry;
use openraft::storage::{RaftLogStorage, RaftSnapshotBuilder, RaftStateMachine};
use openraft::{Membership, RaftLogReader, StorageHelper, StoredMembership};

use super::{append, blank, ids, log_id, normal, open, open_group, Recorder};
use crate::types::{Entry, Vote};
use crate::{ClusterError, LogDb, StateMachine};

fn membership(term: u64, index: u64) -> Entry {
    Entry::new_membership(
        log_id(term, index),
        Membership::new_with_defaults(vec![BTreeSet::from([1, 2, 3])], []),
    )
}

async fn apply(sm: &mut StateMachine, entries: &[Entry]) {
    let items: Vec<_> = entries.iter().map(|e| Ok((e.clone(), None))).collect();
    sm.apply(stream::iter(items)).await.unwrap();
}

#[tokio::test]
async fn vote_log_commit_and_purge_survive_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut log, _sm) = open(dir.path(), Arc::new(Recorder::default()));
        log.save_vote(&Vote::new_committed(3, 1)).await.unwrap();
        append(&mut log, (0..=10).map(|i| normal(1, i)).collect()).await;
        append(&mut log, vec![normal(2, 11), normal(2, 12)]).await;
        // A new leader's log replaces the tail.
        log.truncate_after(Some(log_id(2, 11))).await.unwrap();
        append(&mut log, vec![normal(3, 12)]).await;
        log.save_committed(Some(log_id(2, 11))).await.unwrap();
        // Awaited, and queued after the commit point: both are on disk when it returns.
        log.purge(log_id(1, 4)).await.unwrap();
    }

    let (mut log, _sm) = open(dir.path(), Arc::new(Recorder::default()));
    assert_eq!(
        log.read_vote().await.unwrap(),
        Some(Vote::new_committed(3, 1))
    );
    assert_eq!(log.read_committed().await.unwrap(), Some(log_id(2, 11)));
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 4)));
    assert_eq!(state.last_log_id, Some(log_id(3, 12)));
    let entries = log.try_get_log_entries(0..).await.unwrap();
    let mut want: Vec<Entry> = (5..=10).map(|i| normal(1, i)).collect();
    want.extend([normal(2, 11), normal(3, 12)]);
    assert_eq!(entries, want);

    // And the reopened log carries on where it was.
    append(&mut log, vec![normal(3, 13)]).await;
    assert_eq!(
        ids(&log.try_get_log_entries(12..).await.unwrap()),
        [(3, 12), (3, 13)]
    );
}

#[tokio::test]
async fn a_log_purged_past_its_end_stays_so() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut log, _sm) = open(dir.path(), Arc::new(Recorder::default()));
        append(&mut log, (0..=10).map(|i| blank(1, i)).collect()).await;
        // A snapshot from the leader reaches further than the log.
        log.purge(log_id(2, 20)).await.unwrap();
    }
    let (mut log, _sm) = open(dir.path(), Arc::new(Recorder::default()));
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(2, 20)));
    assert_eq!(state.last_log_id, Some(log_id(2, 20)));
    assert!(log.try_get_log_entries(0..).await.unwrap().is_empty());
    append(&mut log, vec![blank(2, 21)]).await;
    assert_eq!(ids(&log.try_get_log_entries(0..).await.unwrap()), [(2, 21)]);
}

/// A purge moves the purge point at once and deletes the entries below it a slice per write (one
/// purge of thousands of entries in one transaction held up every group's appends): the rest go
/// soon after with no write to carry them, and those a crash leaves are found at the next start.
#[tokio::test]
async fn purged_entries_leave_the_file_a_slice_per_write_even_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("raft.redb");
    {
        let db = LogDb::open(&path).unwrap();
        let (mut log, _sm) = open_group(&db, "g", Arc::new(Recorder::default()));
        append(&mut log, (0..=1000).map(|i| blank(1, i)).collect()).await;
        log.purge(log_id(1, 900)).await.unwrap();
        let read = log.try_get_log_entries(0..).await.unwrap();
        assert_eq!(read.first().map(|e| e.log_id.index), Some(901));
        let below = db
            .stored_indexes("g")
            .into_iter()
            .filter(|i| *i <= 900)
            .count();
        assert!(
            below > 0 && below < 901,
            "the purge's own write deletes a slice: {below} left"
        );
    }

    // Closed with most of them still there, as a crash would leave it.
    let db = LogDb::open(&path).unwrap();
    let (mut log, _sm) = open_group(&db, "g", Arc::new(Recorder::default()));
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 900)));
    assert_eq!(state.last_log_id, Some(log_id(1, 1000)));
    let kept: Vec<u64> = (901..=1000).collect();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while db.stored_indexes("g") != kept {
        assert!(
            std::time::Instant::now() < deadline,
            "purged entries still stored: {:?}",
            db.stored_indexes("g").first()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    append(&mut log, vec![blank(1, 1001)]).await;
    let read = log.try_get_log_entries(0..).await.unwrap();
    assert_eq!(read.len(), 101);
    assert_eq!(read.last().map(|e| e.log_id.index), Some(1001));
}

#[tokio::test]
async fn snapshot_then_replay_restores_the_applier() {
    let dir = tempfile::tempdir().unwrap();
    let mut entries = vec![membership(1, 0), blank(1, 1)];
    entries.extend((2..=6).map(|i| normal(1, i)));

    let before = Arc::new(Recorder::default());
    let built = {
        let (mut log, mut sm) = open(dir.path(), before.clone());
        log.save_vote(&Vote::new_committed(1, 1)).await.unwrap();
        append(&mut log, entries.clone()).await;
        apply(&mut sm, &entries[..=4]).await;
        let built = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        apply(&mut sm, &entries[5..]).await;
        log.save_committed(Some(log_id(1, 6))).await.unwrap();
        log.purge(log_id(1, 2)).await.unwrap();
        built
    };
    assert_eq!(built.meta.last_log_id, Some(log_id(1, 4)));
    assert_eq!(built.meta.last_membership.log_id(), &Some(log_id(1, 0)));
    assert_eq!(before.indexes(), [2, 3, 4, 5, 6]);

    // A fresh applier: the snapshot is installed on open...
    let after = Arc::new(Recorder::default());
    let (mut log, mut sm) = open(dir.path(), after.clone());
    assert_eq!(after.indexes(), [2, 3, 4]);
    let (applied, membership) = sm.applied_state().await.unwrap();
    assert_eq!(applied, Some(log_id(1, 4)));
    assert_eq!(membership, built.meta.last_membership);
    let current = sm.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(current.meta, built.meta);
    assert_eq!(current.snapshot.into_inner(), built.snapshot.into_inner());

    // ...and openraft's start-up replays the committed log after it.
    StorageHelper::new(&mut log, &mut sm)
        .with_id(1)
        .get_initial_state()
        .await
        .unwrap();
    assert_eq!(after.applied(), before.applied());
    assert_eq!(
        sm.applied_state().await.unwrap().0,
        Some(log_id(1, 6)),
        "replayed up to the commit point"
    );
}

#[tokio::test]
async fn an_installed_snapshot_survives_restart() {
    let leader_dir = tempfile::tempdir().unwrap();
    let follower_dir = tempfile::tempdir().unwrap();
    let mut entries = vec![membership(1, 0)];
    entries.extend((1..=3).map(|i| normal(1, i)));

    let (_log, mut leader) = open(leader_dir.path(), Arc::new(Recorder::default()));
    apply(&mut leader, &entries).await;
    let snapshot = leader
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();

    let installed = Arc::new(Recorder::default());
    {
        let (_log, mut follower) = open(follower_dir.path(), installed.clone());
        follower
            .install_snapshot(&snapshot.meta, snapshot.snapshot.clone())
            .await
            .unwrap();
        assert_eq!(installed.indexes(), [1, 2, 3]);
        let (applied, _) = follower.applied_state().await.unwrap();
        assert_eq!(applied, Some(log_id(1, 3)));
    }

    let reopened = Arc::new(Recorder::default());
    let (_log, mut follower) = open(follower_dir.path(), reopened.clone());
    assert_eq!(reopened.applied(), installed.applied());
    let (applied, membership) = follower.applied_state().await.unwrap();
    assert_eq!(applied, Some(log_id(1, 3)));
    assert_eq!(
        membership,
        StoredMembership::new(
            Some(log_id(1, 0)),
            Membership::new_with_defaults(vec![BTreeSet::from([1, 2, 3])], [])
        )
    );
    let current = follower.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(current.meta, snapshot.meta);
}

#[tokio::test]
async fn a_damaged_snapshot_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let db = crate::LogDb::open(dir.path().join("raft.redb")).unwrap();
    let meta_of = |bytes: &[u8]| {
        let mut value = (bytes.len() as u64).to_le_bytes().to_vec();
        value.extend_from_slice(bytes);
        value
    };
    for value in [
        meta_of(b"\xff\xff\xff"),
        meta_of(b""),
        meta_of(b"\x01\x02"),
        b"\x09\0\0\0\0\0\0\0abc".to_vec(),
        b"\x01\x02".to_vec(),
    ] {
        let log = crate::LogStore::open(&db, "g").unwrap();
        log.snapshot_slot().save_raw(&value).unwrap();
        let err = StateMachine::open(&log, Arc::new(Recorder::default())).unwrap_err();
        assert!(
            matches!(err, ClusterError::Decode { .. } | ClusterError::Corrupt(_)),
            "{err}"
        );
    }
}

/// A commit point waits for the next write (the next append's transaction takes it), but one
/// queued last, with nothing after it, is written on its own soon after: a copy of the file as it
/// is on disk (what a crash would leave) has it within a second.
#[tokio::test]
async fn a_commit_point_written_last_reaches_the_disk_on_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _sm) = open(dir.path(), Arc::new(Recorder::default()));
    append(&mut log, (0..=5).map(|i| normal(1, i)).collect()).await;
    log.save_committed(Some(log_id(1, 5))).await.unwrap();
    let copy = dir.path().join("copy");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let on_disk = loop {
        std::fs::create_dir_all(&copy).unwrap();
        std::fs::copy(dir.path().join("raft.redb"), copy.join("raft.redb")).unwrap();
        let committed = {
            let (mut copied, _sm) = open(&copy, Arc::new(Recorder::default()));
            copied.read_committed().await.unwrap()
        };
        std::fs::remove_dir_all(&copy).unwrap();
        if committed.is_some() || std::time::Instant::now() > deadline {
            break committed;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(on_disk, Some(log_id(1, 5)));
}

/// A group's number is given without a write of its own: its name reaches the file with the
/// first thing stored of the group (entries, or a snapshot before any). A group that stored
/// nothing before the database closed is not in it, and the next group opened, given that
/// number again, finds nothing of anyone's; one removed before it stored anything leaves
/// nothing either.
#[tokio::test]
async fn a_groups_name_is_stored_with_the_first_thing_it_stores() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("raft.redb");
    {
        let db = LogDb::open(&path).unwrap();
        let (mut appended, _sm) = open_group(&db, "appended", Arc::new(Recorder::default()));
        append(&mut appended, (0..=2).map(|i| normal(1, i)).collect()).await;
        let snapshotted = crate::LogStore::open(&db, "snapshotted").unwrap();
        drop(crate::LogStore::open(&db, "removed").unwrap());
        db.remove_group("removed").unwrap();
        snapshotted.snapshot_slot().save_raw(b"state").unwrap();
        // Opened after the last write: a name given, nothing stored.
        let idle = crate::LogStore::open(&db, "idle").unwrap();
        assert_eq!(db.group_names(), ["appended", "idle", "snapshotted"]);
        drop((appended, idle, snapshotted));
    }
    let db = LogDb::open(&path).unwrap();
    assert_eq!(db.group_names(), ["appended", "snapshotted"]);
    let (mut appended, _sm) = open_group(&db, "appended", Arc::new(Recorder::default()));
    let state = appended.get_log_state().await.unwrap();
    assert_eq!(state.last_log_id, Some(log_id(1, 2)));
    let (mut fresh, _sm) = open_group(&db, "fresh", Arc::new(Recorder::default()));
    let state = fresh.get_log_state().await.unwrap();
    assert_eq!((state.last_purged_log_id, state.last_log_id), (None, None));
    assert_eq!(fresh.read_vote().await.unwrap(), None);
}
