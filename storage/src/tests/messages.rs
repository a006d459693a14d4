//! Messages in the store: enqueued inline or shared, removed, read back, recovered after a
//! reopen, sealed at rest; listeners and callbacks hearing about commits.

use super::*;

#[tokio::test]
async fn messages_survive_reopen_in_order_with_flags_and_shared_bodies() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (store, _) = open(dir.path());
        let (q1, q2) = (store.next_queue_id(), store.next_queue_id());
        for q in [q1, q2] {
            let rec = QueueRecord {
                vhost: "/".into(),
                name: format!("q{q}"),
                id: q,
                auto_delete: false,
                arguments: vec![],
            };
            store.write(Op::PutQueue(rec)).await.unwrap();
        }
        let mut ids = Vec::new();
        for i in 0..5u8 {
            let id = store.next_message_id();
            ids.push(id);
            let data = StoredMessage::encode(b"", b"k", &[0, 0], &[i]);
            for op in enqueue(&store, id, data, &[q1, q2]) {
                store.submit(op, None);
            }
        }
        store.submit(
            Op::Remove {
                queue: q1,
                messages: vec![ids[0]],
            },
            None,
        );
        store.submit(
            Op::MarkDelivered {
                queue: q1,
                through: ids[1],
            },
            None,
        );
        store
            .write(Op::Remove {
                queue: q2,
                messages: vec![ids[0], ids[4]],
            })
            .await
            .unwrap();
    }
    let (store, rec) = open(dir.path());
    assert_eq!(rec.queues.len(), 2);
    let q1 = rec
        .queues
        .iter()
        .find(|q| q.name.ends_with('1'))
        .unwrap()
        .id;
    let q2 = rec
        .queues
        .iter()
        .find(|q| q.name.ends_with('2'))
        .unwrap()
        .id;
    let got1: Vec<(u8, bool)> = store
        .queue_messages(q1)
        .unwrap()
        .into_iter()
        .map(|(_, r, m)| (m.body[0], r))
        .collect();
    assert_eq!(got1, vec![(1, true), (2, false), (3, false), (4, false)]);
    let got2: Vec<u8> = store
        .queue_messages(q2)
        .unwrap()
        .into_iter()
        .map(|(_, _, m)| m.body[0])
        .collect();
    assert_eq!(got2, vec![1, 2, 3]);
    // Message 0 was removed from both queues: its body is gone; new ids never collide.
    assert!(store.next_message_id() > 5);
}

#[tokio::test]
async fn deleting_a_queue_drops_its_messages_but_not_shared_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path());
    let data = StoredMessage::encode(b"ex", b"rk", &[0x10, 0, 2], b"body");
    for op in enqueue(&store, 7, data, &[1, 2]) {
        store.submit(op, None);
    }
    store
        .write(Op::DeleteQueue {
            vhost: "/".into(),
            name: "a".into(),
            id: 1,
        })
        .await
        .unwrap();
    assert!(store.queue_messages(1).unwrap().is_empty());
    let left = store.queue_messages(2).unwrap();
    assert_eq!(left.len(), 1);
    let m = &left[0].2;
    assert_eq!(
        (
            &m.exchange[..],
            &m.routing_key[..],
            &m.properties[..],
            &m.body[..]
        ),
        (&b"ex"[..], &b"rk"[..], &[0x10, 0, 2][..], &b"body"[..])
    );
    store
        .write(Op::Remove {
            queue: 2,
            messages: vec![7],
        })
        .await
        .unwrap();
    assert!(store.queue_messages(2).unwrap().is_empty());
}

#[tokio::test]
async fn single_queue_messages_are_inline_and_put_then_remove_in_one_batch_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path());
    // Submitted back to back, these land in one or two batches; either way the outcome is the same.
    for id in 1..=100u64 {
        let data = StoredMessage::encode(b"", b"q", &[0, 0], &id.to_be_bytes());
        for op in enqueue(&store, id, data, &[3]) {
            store.submit(op, None);
        }
        if id % 2 == 0 {
            store.submit(
                Op::Remove {
                    queue: 3,
                    messages: vec![id],
                },
                None,
            );
        }
    }
    store.sync().await.unwrap();
    let left: Vec<u64> = store
        .queue_messages(3)
        .unwrap()
        .into_iter()
        .map(|(id, _, _)| id)
        .collect();
    assert_eq!(left, (1..=100).step_by(2).collect::<Vec<_>>());
    let r = store.db().unwrap().begin_read().unwrap();
    assert_eq!(
        r.open_table(MESSAGES).unwrap().len().unwrap(),
        0,
        "single-queue messages are not in the shared table"
    );
}

struct Counter(std::sync::Mutex<Vec<(u64, bool)>>);
impl CommitListener for Counter {
    fn committed(&self, token: u64, ok: bool) {
        self.0.lock().unwrap().push((token, ok));
    }
}

#[tokio::test]
async fn listeners_hear_every_write_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path());
    let listener = Arc::new(Counter(Default::default()));
    for token in 0..1000u64 {
        let id = store.next_message_id();
        let data = StoredMessage::encode(b"", b"q", &[0, 0], b"x");
        store.submit(
            enqueue(&store, id, data, &[1]).remove(0),
            Some((listener.clone(), token)),
        );
    }
    store.sync().await.unwrap();
    let heard = listener.0.lock().unwrap().clone();
    assert_eq!(heard, (0..1000).map(|t| (t, true)).collect::<Vec<_>>());
}

#[tokio::test]
async fn paged_messages_are_read_back_by_id_inline_or_shared() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path());
    let (q1, q2) = (store.next_queue_id(), store.next_queue_id());
    let only_q1 = store.next_message_id();
    let shared = store.next_message_id();
    let before = store.submitted();
    for op in enqueue(
        &store,
        only_q1,
        StoredMessage::encode(b"", b"k", &[0, 0], b"one"),
        &[q1],
    ) {
        store.submit(op, None);
    }
    for op in enqueue(
        &store,
        shared,
        StoredMessage::encode(b"x", b"k2", &[0, 0], b"both"),
        &[q1, q2],
    ) {
        store.submit(op, None);
    }
    assert_eq!(store.submitted(), before + 3);
    store.sync().await.unwrap();
    assert!(store.committed() >= before + 3);
    let read = |queue, ids: &[u64]| {
        let mut got = Vec::new();
        store
            .read_queue_messages(queue, ids, |id, parts| {
                got.push((id, parts.routing_key.to_vec(), parts.body.to_vec()))
            })
            .unwrap();
        got
    };
    assert_eq!(
        read(q1, &[shared, 999, only_q1]),
        vec![
            (shared, b"k2".to_vec(), b"both".to_vec()),
            (only_q1, b"k".to_vec(), b"one".to_vec())
        ]
    );
    // q2 never held `only_q1`.
    assert_eq!(
        read(q2, &[only_q1, shared]),
        vec![(shared, b"k2".to_vec(), b"both".to_vec())]
    );
}

fn file_contains(dir: &Path, needle: &[u8]) -> bool {
    let bytes = std::fs::read(dir.join("warren.redb")).unwrap();
    bytes.windows(needle.len()).any(|w| w == needle)
}

async fn store_marker(store: &Store, queue: u64, marker: &[u8]) {
    let id = store.next_message_id();
    store
        .write(
            enqueue(
                store,
                id,
                StoredMessage::encode(b"", b"k", &[0, 0], marker),
                &[queue],
            )
            .remove(0),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn encrypted_messages_leave_no_plaintext_and_need_their_key() {
    let marker: Vec<u8> = b"WARREN-PLAINTEXT-MARKER-".repeat(3);
    let key = EncryptionKey::from_hex(&"5a".repeat(32)).unwrap();
    let other = EncryptionKey::from_hex(&"a5".repeat(32)).unwrap();

    // Without a key the marker is in the file (the check below can see it).
    let plain_dir = tempfile::tempdir().unwrap();
    {
        let (store, _) = open(plain_dir.path());
        store_marker(&store, 1, &marker).await;
    }
    assert!(file_contains(plain_dir.path(), &marker));
    // An unencrypted database with messages is not silently mixed with encrypted ones.
    assert!(matches!(
        Store::open_with(plain_dir.path(), Some(&key)),
        Err(StorageError::NotEncrypted(_))
    ));

    let dir = tempfile::tempdir().unwrap();
    {
        let (store, _) = Store::open_with(dir.path(), Some(&key)).unwrap();
        store_marker(&store, 1, &marker).await;
    }
    assert!(!file_contains(dir.path(), &marker), "plaintext in the file");
    assert!(matches!(
        Store::open_with(dir.path(), Some(&other)),
        Err(StorageError::WrongKey(_))
    ));
    assert!(matches!(
        Store::open(dir.path()),
        Err(StorageError::KeyRequired(_))
    ));
    let (store, _) = Store::open_with(dir.path(), Some(&key)).unwrap();
    let back = store.queue_messages(1).unwrap();
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].2.body, marker);
    let mut read = Vec::new();
    store
        .read_queue_messages(1, &[back[0].0], |_, parts| read.push(parts.body.to_vec()))
        .unwrap();
    assert_eq!(read, vec![marker.clone()]);
}

#[tokio::test]
async fn transient_copies_under_a_shadow_key_are_gone_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (kept, copy) = {
        let (store, _) = open(dir.path());
        let (kept, copy) = (store.next_message_id(), store.next_message_id());
        for op in enqueue(
            &store,
            kept,
            StoredMessage::encode(b"", b"k", &[0, 0], b"persistent"),
            &[1],
        ) {
            store.submit(op, None);
        }
        store
            .write(
                enqueue(
                    &store,
                    copy,
                    StoredMessage::encode(b"", b"k", &[0, 0], b"transient"),
                    &[shadow_queue(1)],
                )
                .remove(0),
            )
            .await
            .unwrap();
        let mut seen = 0;
        store
            .read_queue_messages(shadow_queue(1), &[copy], |_, _| seen += 1)
            .unwrap();
        assert_eq!(seen, 1, "readable before the restart");
        (kept, copy)
    };
    let (store, _) = open(dir.path());
    let mut seen = 0;
    store
        .read_queue_messages(shadow_queue(1), &[copy], |_, _| seen += 1)
        .unwrap();
    assert_eq!(seen, 0, "not recovered");
    let back = store.queue_messages(1).unwrap();
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].0, kept);
}

#[tokio::test]
async fn a_shared_message_is_counted_per_queue_that_enqueues_it_and_goes_with_the_last() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path());
    let id = store.next_message_id();
    let data = StoredMessage::encode(b"x", b"k", &[0, 0], b"fanned out");
    let [for_q1, for_q2, for_q3]: [Op; 3] =
        enqueue(&store, id, data, &[1, 2, 3]).try_into().unwrap();
    let shared_rows = |store: &Store| {
        let r = store.db().unwrap().begin_read().unwrap();
        let rows = r.open_table(MESSAGES).unwrap().len().unwrap();
        let refs = r
            .open_table(MESSAGE_REFS)
            .unwrap()
            .get(id)
            .unwrap()
            .map(|c| c.value());
        (rows, refs)
    };
    let remove = |queue| Op::Remove {
        queue,
        messages: vec![id],
    };
    // Each queue logs it on its own schedule; one lets go before another has taken it.
    store.write(for_q1).await.unwrap();
    assert_eq!(shared_rows(&store), (1, Some(1)));
    store.write(remove(1)).await.unwrap();
    assert_eq!(shared_rows(&store), (0, None), "gone with its only entry");
    store.write(for_q2).await.unwrap();
    store.write(for_q3).await.unwrap();
    assert_eq!(shared_rows(&store), (1, Some(2)), "written again for q2");
    let mut read = Vec::new();
    store
        .read_queue_messages(3, &[id], |_, parts| read.push(parts.body.to_vec()))
        .unwrap();
    assert_eq!(read, [b"fanned out".to_vec()]);
    // A remove of an entry a queue never took changes nothing.
    store.write(remove(1)).await.unwrap();
    assert_eq!(shared_rows(&store), (1, Some(2)));
    store.write(remove(2)).await.unwrap();
    store.write(remove(3)).await.unwrap();
    assert_eq!(shared_rows(&store), (0, None));
}

#[tokio::test]
async fn callbacks_hear_whether_their_write_is_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path());
    let (tx, rx) = std::sync::mpsc::channel();
    for n in 0..3u32 {
        let tx = tx.clone();
        store.submit_then(Op::Nothing, Box::new(move |ok| tx.send((n, ok)).unwrap()));
    }
    store.sync().await.unwrap();
    let heard: Vec<_> = rx.try_iter().collect();
    assert_eq!(heard, [(0, true), (1, true), (2, true)]);
}

/// Held dead-letters: marked with their reason, read back after a reopen with the queue's
/// messages, let go by a release, and gone with their queue.
#[tokio::test]
async fn held_dead_letters_survive_reopen_until_released_or_their_queue_goes() {
    let dir = tempfile::tempdir().unwrap();
    let (q, ids) = {
        let (store, _) = open(dir.path());
        let q = store.next_queue_id();
        let mut ids = Vec::new();
        for i in 0..3u8 {
            let id = store.next_message_id();
            ids.push(id);
            let data = StoredMessage::encode(b"", b"k", &[0, 0], &[i]);
            for op in enqueue(&store, id, data, &[q]) {
                store.submit(op, None);
            }
        }
        store
            .write(Op::Hold {
                queue: q,
                messages: vec![(ids[0], 1), (ids[2], 3)],
            })
            .await
            .unwrap();
        (q, ids)
    };
    let (store, _) = open(dir.path());
    assert_eq!(store.queue_messages(q).unwrap().len(), 3);
    assert_eq!(
        store.held_dead_letters(q).unwrap(),
        vec![(ids[0], 1), (ids[2], 3)]
    );
    store
        .write(Op::Release {
            queue: q,
            messages: vec![ids[0]],
        })
        .await
        .unwrap();
    assert_eq!(store.held_dead_letters(q).unwrap(), vec![(ids[2], 3)]);
    store
        .write(Op::DeleteQueue {
            vhost: "/".into(),
            name: "q".into(),
            id: q,
        })
        .await
        .unwrap();
    assert!(store.held_dead_letters(q).unwrap().is_empty());
    // Nothing of the queue's held marks is left behind for a message id met again.
    for op in enqueue(
        &store,
        ids[2],
        StoredMessage::encode(b"", b"k", &[0, 0], &[9]),
        &[q],
    ) {
        store.submit(op, None);
    }
    store.write(Op::Nothing).await.unwrap();
    assert!(store.held_dead_letters(q).unwrap().is_empty());
}
