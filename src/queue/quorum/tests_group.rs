//! The quorum queue's applier in real Raft groups: three members in this process (each with its
//! own cluster link on loopback and its own Raft database), proposals from any member, every
//! member applying the same entries with the same effects, and a member restarted after the log
//! was compacted catching up from a snapshot to the same state.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use warren_cluster::group::{Group, Timing};
use warren_cluster::link::{Link, LinkConfig};
use warren_cluster::node::ClusterNode;
use warren_cluster::{LogDb, Node};

use super::applier::{AppliedEntry, QuorumApplier};
use super::machine::QuorumCommand;
use super::tests::{describe, spec, terms, wire};
use crate::queue::remote::wire::Settle;
use crate::queue::QueueArgs;

struct Member {
    group: Arc<Group>,
    link: Link,
    applier: Arc<QuorumApplier>,
    applied: mpsc::UnboundedReceiver<Box<AppliedEntry>>,
}

fn timing() -> Timing {
    Timing {
        heartbeat: Duration::from_millis(50),
        election_min: Duration::from_millis(300),
        election_max: Duration::from_millis(600),
        snapshot_every: Some(8),
        quiet: false,
        ..Timing::default()
    }
}

async fn member(listener: TcpListener, me: &Node, all: &[Node], dir: &std::path::Path) -> Member {
    let link = Link::start(
        LinkConfig::new(me.name.clone(), me.addr.clone(), b"secret".to_vec()),
        Some(listener),
    );
    let node = ClusterNode::new(link.clone());
    let (tx, applied) = mpsc::unbounded_channel();
    let applier = Arc::new(QuorumApplier::new(spec(QueueArgs::default()), 0, tx));
    let db = LogDb::open(dir.join("raft.redb")).expect("raft db");
    let group = Group::start(node, "q", &db, applier.clone(), all, timing())
        .await
        .expect("group");
    Member {
        group,
        link,
        applier,
        applied,
    }
}

async fn propose(m: &Member, command: &QuorumCommand) {
    let payload = postcard::to_stdvec(command).expect("encodes");
    m.group
        .propose(m.group.proposal(payload), Duration::from_secs(20))
        .await
        .expect("committed");
}

/// What a member applied so far, described: (index, effects).
fn drain(m: &mut Member) -> Vec<(u64, Vec<String>)> {
    let mut out = Vec::new();
    while let Ok(entry) = m.applied.try_recv() {
        out.push((
            entry.index,
            entry.applied.effects.iter().map(describe).collect(),
        ));
    }
    out
}

async fn until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_apply_one_log_and_a_restarted_one_catches_up_from_a_snapshot() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().expect("dir")).collect();
    let mut listeners = Vec::new();
    let mut nodes = Vec::new();
    for i in 0..3 {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        nodes.push(Node {
            name: format!("m{i}"),
            addr: l.local_addr().expect("addr").to_string(),
        });
        listeners.push(l);
    }
    let mut members = Vec::new();
    for (i, l) in listeners.into_iter().enumerate() {
        members.push(member(l, &nodes[i], &nodes, dirs[i].path()).await);
    }

    // A consumer on m1, messages from m0 and m2, acks from m1.
    propose(
        &members[1],
        &QuorumCommand::Consume {
            at_ms: 1,
            process: 1,
            consumer: 9,
            terms: terms(2),
        },
    )
    .await;
    for (i, m) in [0usize, 2, 0].into_iter().enumerate() {
        let command = QuorumCommand::Enqueue {
            at_ms: 2,
            messages: vec![wire(&format!("m{i}a"), None), wire(&format!("m{i}b"), None)],
        };
        propose(&members[m], &command).await;
    }
    until("every member applied the four entries", || {
        members.iter().all(|m| {
            m.applier.with_machine(|machine| {
                machine.core().stats().ready + machine.core().stats().unacked
            }) == 6
        })
    })
    .await;
    let logs: Vec<_> = members.iter_mut().map(drain).collect();
    assert_eq!(logs[0], logs[1]);
    assert_eq!(logs[0], logs[2]);
    let delivered: Vec<&String> = logs[0].iter().flat_map(|(_, e)| e).collect();
    assert_eq!(delivered.len(), 2, "the consumer's prefetch: {delivered:?}");

    // m2 stops; the others go on past several snapshots.
    let m2 = members.pop().expect("m2");
    let m2_last = m2.group.log_figures().last.unwrap_or(0);
    m2.group.shutdown().await;
    m2.link.stop();
    drop(m2);
    for round in 0..20u64 {
        propose(
            &members[1],
            &QuorumCommand::Settle {
                at_ms: 3 + round,
                how: Settle::Ack,
                deliveries: vec![2 * round, 2 * round + 1],
            },
        )
        .await;
        let command = QuorumCommand::Enqueue {
            at_ms: 3 + round,
            messages: vec![
                wire(&format!("r{round}a"), None),
                wire(&format!("r{round}b"), None),
            ],
        };
        propose(&members[0], &command).await;
    }
    until("m0 and m1 agree", || {
        let a = members[0]
            .applier
            .with_machine(|m| m.state().expect("state"));
        let b = members[1]
            .applier
            .with_machine(|m| m.state().expect("state"));
        a == b
    })
    .await;
    // Their logs no longer hold what m2 lacks (snapshots, then purges, come in the background).
    until("m0 and m1 compacted past m2's log", || {
        members
            .iter()
            .all(|m| m.group.log_figures().purged.is_some_and(|p| p > m2_last))
    })
    .await;

    // m2 back on the same address and database: from its snapshot or the leader's, then the
    // entries after it, to the same state as the others.
    let listener = TcpListener::bind(&nodes[2].addr).await.expect("rebind");
    let m2 = member(listener, &nodes[2], &nodes, dirs[2].path()).await;
    until("m2 catches up to the same state", || {
        let a = members[0]
            .applier
            .with_machine(|m| m.state().expect("state"));
        let c = m2.applier.with_machine(|m| m.state().expect("state"));
        a == c
    })
    .await;
    let stats = m2.applier.with_machine(|m| m.core().stats());
    assert_eq!(stats.ready + stats.unacked, 6, "{stats:?}");
    assert!(
        m2.group.log_figures().purged.is_some_and(|p| p > m2_last),
        "m2 was brought up by a snapshot: {:?}, its log ended at {m2_last}",
        m2.group.log_figures()
    );
    for m in members.into_iter().chain([m2]) {
        m.group.shutdown().await;
        m.link.stop();
    }
}
