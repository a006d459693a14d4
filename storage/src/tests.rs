//! The store's tests: definitions, deduplication memory and the data file here; messages in
//! `tests/messages.rs`.

use super::*;
use redb::ReadableTableMetadata;

pub(super) fn open(dir: &Path) -> (Store, Recovered) {
    Store::open(dir).expect("open store")
}

/// The writes that enqueue one message on `queues`, as the broker's queues make them: one per
/// queue, shared when there are several.
pub(super) fn enqueue(store: &Store, id: u64, data: Bytes, queues: &[u64]) -> Vec<Op> {
    let data = store.seal(id, data).expect("seal");
    queues
        .iter()
        .map(|&queue| Op::Enqueue {
            queue,
            messages: vec![Enqueued {
                id,
                data: data.clone(),
                shared: queues.len() > 1,
            }],
        })
        .collect()
}

mod messages;

#[tokio::test]
async fn definitions_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let binding = BindingRecord {
        vhost: "/".into(),
        source: "ex".into(),
        destination: "q".into(),
        destination_is_queue: true,
        routing_key: "a.b".into(),
        arguments: vec![1, 2],
    };
    {
        let (store, _) = open(dir.path());
        let ex = ExchangeRecord {
            vhost: "/".into(),
            name: "ex".into(),
            kind: "topic".into(),
            auto_delete: false,
            internal: false,
            arguments: vec![],
        };
        store.submit(Op::PutExchange(ex), None);
        store.submit(Op::PutBinding(binding.clone()), None);
        store.sync().await.unwrap();
    }
    let (store, rec) = open(dir.path());
    assert_eq!(rec.exchanges.len(), 1);
    assert_eq!(rec.bindings, vec![binding.clone()]);
    store.write(Op::DeleteBinding(binding)).await.unwrap();
    store
        .write(Op::DeleteExchange {
            vhost: "/".into(),
            name: "ex".into(),
        })
        .await
        .unwrap();
    drop(store);
    let (_, rec) = open(dir.path());
    assert!(rec.exchanges.is_empty() && rec.bindings.is_empty());
}

#[tokio::test]
async fn remembered_ids_survive_reopen_per_owner_in_order() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (store, _) = open(dir.path());
        let remember = |owner: &str, ids: &[(&[u8], u64)]| Op::RememberIds {
            owner: owner.into(),
            ids: ids
                .iter()
                .map(|(id, at)| (id.to_vec(), *at, at + 1000))
                .collect(),
        };
        store.submit(remember("q:1", &[(b"b", 20), (b"a", 10), (b"c", 30)]), None);
        store.submit(remember("q:10", &[(b"x", 5)]), None);
        store.submit(remember("e:/\0ex", &[(b"y", 7)]), None);
        store.submit(
            Op::ForgetIds {
                owner: "q:1".into(),
                ids: vec![b"b".to_vec()],
            },
            None,
        );
        store
            .write(Op::ForgetAllIds {
                owner: "e:/\0ex".into(),
            })
            .await
            .unwrap();
    }
    let (store, _) = open(dir.path());
    assert_eq!(
        store.dedup_ids("q:1").unwrap(),
        vec![(b"a".to_vec(), 10, 1010), (b"c".to_vec(), 30, 1030)]
    );
    assert_eq!(
        store.dedup_ids("q:10").unwrap(),
        vec![(b"x".to_vec(), 5, 1005)]
    );
    assert!(store.dedup_ids("e:/\0ex").unwrap().is_empty());
    assert!(store.dedup_ids("q:2").unwrap().is_empty());
}

/// Whether `needle` occurs anywhere in the database file.
#[tokio::test]
async fn an_existing_file_is_opened_never_started_over() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("warren.redb");
    // Absent: a fresh database, created in place of a leftover from a crashed creation.
    std::fs::write(dir.path().join("warren.redb.new"), b"partial").unwrap();
    {
        let (store, _) = open(dir.path());
        let rec = QueueRecord {
            vhost: "/".into(),
            name: "kept".into(),
            id: store.next_queue_id(),
            auto_delete: false,
            arguments: vec![],
        };
        store.write(Op::PutQueue(rec)).await.unwrap();
    }
    assert!(!dir.path().join("warren.redb.new").exists());
    assert_eq!(open(dir.path()).1.queues.len(), 1);

    // Truncated to nothing: refused, naming the file, and the file is left as it was.
    std::fs::File::create(&path).unwrap();
    let err = Store::open(dir.path())
        .err()
        .expect("an empty file is refused");
    assert!(
        matches!(&err, StorageError::EmptyFile(p) if *p == path),
        "{err}"
    );
    assert!(err.to_string().contains(&*path.to_string_lossy()), "{err}");
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);

    // Not a redb database: refused, naming the file.
    std::fs::write(&path, b"not a database at all").unwrap();
    let err = Store::open(dir.path())
        .err()
        .expect("a foreign file is refused");
    assert!(
        matches!(&err, StorageError::Open { path: p, .. } if *p == path),
        "{err}"
    );
    assert!(err.to_string().contains(&*path.to_string_lossy()), "{err}");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        b"not a database at all".to_vec()
    );
}

#[tokio::test]
async fn users_vhosts_and_permissions_survive_reopen_and_vhost_deletion_takes_its_records() {
    let dir = tempfile::tempdir().unwrap();
    let perm = |vhost: &str, user: &str| PermissionRecord {
        user: user.into(),
        vhost: vhost.into(),
        configure: ".*".into(),
        write: "^w".into(),
        read: "".into(),
    };
    let topic = |vhost: &str, user: &str, exchange: &str| TopicPermissionRecord {
        user: user.into(),
        vhost: vhost.into(),
        exchange: exchange.into(),
        write: "^{username}\\.".into(),
        read: ".*".into(),
    };
    {
        let (store, rec) = open(dir.path());
        assert!(
            rec.needs_seed,
            "a fresh store asks for the default user and vhost"
        );
        for name in ["alice", "bob"] {
            store
                .write(Op::PutUser(UserRecord {
                    name: name.into(),
                    password_hash: "aGFzaA==".into(),
                    hashing_algorithm: "rabbit_password_hashing_sha256".into(),
                    tags: vec!["administrator".into()],
                    limits: [("max-channels".to_owned(), 3)].into(),
                }))
                .await
                .unwrap();
        }
        for name in ["/", "v1"] {
            store
                .write(Op::PutVhost(VhostRecord {
                    name: name.into(),
                    limits: Some([("max-queues".to_owned(), 10)].into()),
                    ..VhostRecord::default()
                }))
                .await
                .unwrap();
        }
        for (v, u) in [("/", "alice"), ("v1", "alice"), ("/", "bob"), ("v1", "bob")] {
            store.write(Op::PutPermission(perm(v, u))).await.unwrap();
            store
                .write(Op::SetTopicPermissions {
                    vhost: v.into(),
                    user: u.into(),
                    permissions: vec![topic(v, u, "amq.topic"), topic(v, u, "t")],
                })
                .await
                .unwrap();
        }
        // An empty list removes them.
        store
            .write(Op::SetTopicPermissions {
                vhost: "/".into(),
                user: "alice".into(),
                permissions: vec![],
            })
            .await
            .unwrap();
        store
            .write(Op::PutExchange(ExchangeRecord {
                vhost: "v1".into(),
                name: "x".into(),
                kind: "direct".into(),
                auto_delete: false,
                internal: false,
                arguments: vec![],
            }))
            .await
            .unwrap();
        store
            .write(Op::DeleteUser { name: "bob".into() })
            .await
            .unwrap();
        store.write(Op::MarkSeeded).await.unwrap();
    }
    {
        let (store, rec) = open(dir.path());
        assert!(!rec.needs_seed);
        let users: Vec<&str> = rec.users.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(users, ["alice"]);
        assert_eq!(rec.users[0].tags, ["administrator"]);
        assert_eq!(rec.users[0].limits, [("max-channels".to_owned(), 3)].into());
        assert_eq!(rec.vhosts.len(), 2);
        assert_eq!(
            rec.vhosts[0].limits,
            Some([("max-queues".to_owned(), 10)].into())
        );
        assert_eq!(
            rec.permissions,
            vec![perm("/", "alice"), perm("v1", "alice")]
        );
        assert_eq!(
            rec.topic_permissions,
            vec![topic("v1", "alice", "amq.topic"), topic("v1", "alice", "t")],
            "bob's went with him, alice's on / were cleared"
        );
        assert_eq!(rec.exchanges.len(), 1);
        store
            .write(Op::DeleteVhost { name: "v1".into() })
            .await
            .unwrap();
    }
    let (_, rec) = open(dir.path());
    assert_eq!(rec.vhosts.len(), 1);
    assert_eq!(rec.permissions, vec![perm("/", "alice")]);
    assert!(rec.topic_permissions.is_empty());
    assert!(rec.exchanges.is_empty());
}

#[tokio::test]
async fn policies_of_both_kinds_survive_reopen_and_go_with_their_vhost() {
    let dir = tempfile::tempdir().unwrap();
    let policy = |vhost: &str, name: &str, operator: bool| PolicyRecord {
        vhost: vhost.into(),
        name: name.into(),
        operator,
        pattern: "^q".into(),
        apply_to: "queues".into(),
        priority: serde_json::Number::from(3),
        definition: serde_json::json!({"max-length": 2})
            .as_object()
            .unwrap()
            .clone(),
    };
    {
        let (store, _) = open(dir.path());
        // One name in both kinds: separate namespaces, as in RabbitMQ.
        for (v, n, op) in [
            ("/", "p", false),
            ("/", "p", true),
            ("v1", "p", false),
            ("/", "gone", false),
        ] {
            store.write(Op::PutPolicy(policy(v, n, op))).await.unwrap();
        }
        store
            .write(Op::DeletePolicy {
                vhost: "/".into(),
                name: "gone".into(),
                operator: false,
            })
            .await
            .unwrap();
    }
    {
        let (store, rec) = open(dir.path());
        assert_eq!(
            rec.policies,
            vec![
                policy("/", "p", false),
                policy("v1", "p", false),
                policy("/", "p", true)
            ]
        );
        store
            .write(Op::DeleteVhost { name: "v1".into() })
            .await
            .unwrap();
    }
    let (_, rec) = open(dir.path());
    assert_eq!(
        rec.policies,
        vec![policy("/", "p", false), policy("/", "p", true)]
    );
}

#[test]
fn errors_keep_their_source() {
    use std::error::Error as _;
    let e = StorageError::from(redb::StorageError::Corrupted("bad page".into()));
    assert_eq!(e.to_string(), "storage: DB corrupted: bad page");
    let source = e.source().expect("a source");
    assert!(matches!(
        source.downcast_ref::<redb::Error>(),
        Some(redb::Error::Corrupted(m)) if m == "bad page"
    ));
    // Every write of a failed batch gets the batch's error, source included.
    let shared = StorageError::Batch(Arc::new(e));
    assert_eq!(shared.to_string(), "storage: DB corrupted: bad page");
    assert!(shared.source().is_some_and(|s| s.is::<redb::Error>()));
    let e = StorageError::CorruptDefinition(serde_json::from_slice::<u8>(b"{").unwrap_err());
    assert!(e.to_string().starts_with("corrupt record: "));
    assert!(e.source().is_some_and(|s| s.is::<serde_json::Error>()));
}
