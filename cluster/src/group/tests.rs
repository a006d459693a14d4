//! Three members of a group in one process, each with its own link on loopback.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;

use super::*;
use crate::link::{Link, LinkConfig};

#[derive(Default)]
struct Recorder {
    applied: Mutex<Vec<Vec<u8>>>,
}

impl Applier for Recorder {
    fn apply(&self, _index: u64, proposal: &Proposal) {
        self.applied.lock().unwrap().push(proposal.payload.clone());
    }
    fn snapshot(&self) -> Vec<u8> {
        postcard::to_stdvec(&*self.applied.lock().unwrap()).unwrap()
    }
    fn install(&self, snapshot: &[u8]) {
        *self.applied.lock().unwrap() = postcard::from_bytes(snapshot).unwrap_or_default();
    }
}

impl Recorder {
    fn applied(&self) -> Vec<Vec<u8>> {
        self.applied.lock().unwrap().clone()
    }
}

fn fast() -> Timing {
    Timing {
        heartbeat: Duration::from_millis(50),
        election_min: Duration::from_millis(300),
        election_max: Duration::from_millis(600),
        snapshot_every: Some(3),
        quiet: false,
        ..Timing::default()
    }
}

struct Member {
    group: Arc<Group>,
    link: Link,
    recorder: Arc<Recorder>,
    db: LogDb,
}

async fn listeners(n: usize) -> (Vec<TcpListener>, Vec<Node>) {
    let mut ls = Vec::new();
    let mut nodes = Vec::new();
    for i in 0..n {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        nodes.push(Node {
            name: format!("m{i}"),
            addr: l.local_addr().unwrap().to_string(),
        });
        ls.push(l);
    }
    (ls, nodes)
}

/// A member of group "g"; without a listener, one that only calls out (a group of one).
async fn member(listener: Option<TcpListener>, me: &Node, all: &[Node], dir: &Path) -> Member {
    member_timed(listener, me, all, dir, fast()).await
}

/// Node `me` of a test cluster: its link (calling out only, without a listener), its cluster
/// node and its Raft database in `dir`.
fn host(listener: Option<TcpListener>, me: &Node, dir: &Path) -> (Arc<ClusterNode>, Link, LogDb) {
    let link = Link::start(
        LinkConfig::new(me.name.clone(), me.addr.clone(), b"secret".to_vec()),
        listener,
    );
    let node = ClusterNode::new(link.clone());
    let db = LogDb::open(dir.join("raft.redb")).unwrap();
    (node, link, db)
}

async fn member_timed(
    listener: Option<TcpListener>,
    me: &Node,
    all: &[Node],
    dir: &Path,
    timing: Timing,
) -> Member {
    let (node, link, db) = host(listener, me, dir);
    let recorder = Arc::new(Recorder::default());
    let group = Group::start(node, "g", &db, recorder.clone(), all, timing)
        .await
        .unwrap();
    Member {
        group,
        link,
        recorder,
        db,
    }
}

/// Three members of group "g", each with a directory of its own.
async fn three_members() -> (Vec<tempfile::TempDir>, Vec<Node>, Vec<Option<Member>>) {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let (ls, nodes) = listeners(3).await;
    let mut members = Vec::new();
    for (i, l) in ls.into_iter().enumerate() {
        members.push(Some(
            member(Some(l), &nodes[i], &nodes, dirs[i].path()).await,
        ));
    }
    (dirs, nodes, members)
}

/// Member `i` of `nodes` started again on its address (once the stopped one let it go) and
/// directory.
async fn restarted(nodes: &[Node], i: usize, dir: &Path) -> Member {
    member(Some(listener_again(&nodes[i]).await), &nodes[i], nodes, dir).await
}

/// A listener on `node`'s address again, once the stopped member let it go.
async fn listener_again(node: &Node) -> TcpListener {
    loop {
        match TcpListener::bind(&node.addr).await {
            Ok(l) => return l,
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

async fn stop(m: Member) {
    m.group.shutdown().await;
    m.link.stop();
}

async fn until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proposals_from_any_member_are_applied_everywhere_in_one_order() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let (ls, nodes) = listeners(3).await;
    let mut members = Vec::new();
    for (i, l) in ls.into_iter().enumerate() {
        members.push(member(Some(l), &nodes[i], &nodes, dirs[i].path()).await);
    }
    // Every member proposes, concurrently.
    let mut proposing = Vec::new();
    for (i, m) in members.iter().enumerate() {
        for k in 0..20u8 {
            let g = m.group.clone();
            proposing.push(tokio::spawn(async move {
                let p = g.proposal(vec![i as u8, k]);
                g.propose(p, Duration::from_secs(20)).await
            }));
        }
    }
    for p in proposing {
        p.await.unwrap().unwrap();
    }
    until("every member applied the 60", || {
        members.iter().all(|m| m.recorder.applied().len() == 60)
    })
    .await;
    let first = members[0].recorder.applied();
    for m in &members[1..] {
        assert_eq!(m.recorder.applied(), first, "the same order everywhere");
    }
    let mut sorted = first.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 60, "each once");
    let leaders = members
        .iter()
        .filter(|m| {
            m.group
                .members()
                .iter()
                .any(|s| s.leader && s.name == m.link.name())
        })
        .count();
    assert_eq!(leaders, 1);
    for m in members {
        stop(m).await;
    }
}

/// openraft 0.10 pipelines appends: a leader replicates entries before its own disk has them.
/// Hostile case: the leader's disk stalls with 16 proposals in flight and a follower goes away
/// (stopped, its link with it) at once. Once the disk is back the proposals commit (leader and the
/// other follower), the follower restarted catches up, and every member has applied the 16 once
/// each, in the same order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_disk_stalls_while_a_follower_goes_loses_nothing_in_flight() {
    let (dirs, nodes, mut members) = three_members().await;
    let first = members[0].as_ref().unwrap().group.clone();
    first
        .propose(first.proposal(vec![0]), Duration::from_secs(20))
        .await
        .unwrap();
    let leader_name = first.leader().expect("a leader");
    let leader = nodes.iter().position(|n| n.name == leader_name).unwrap();
    let (gone, kept) = ((leader + 1) % 3, (leader + 2) % 3);

    let lead = members[leader].as_ref().unwrap();
    lead.db.set_stalled(true);
    let mut proposing = Vec::new();
    for k in 1..=16u8 {
        let g = lead.group.clone();
        proposing.push(tokio::spawn(async move {
            g.propose(g.proposal(vec![k]), Duration::from_secs(30))
                .await
        }));
    }
    stop(members[gone].take().unwrap()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The leader's disk and one follower make no majority: what is not committed yet waits
    // (usually some; how many depends on how far the followers got before one went).
    let waiting = proposing.iter().filter(|p| !p.is_finished()).count();
    eprintln!("{waiting} of 16 proposals in flight when the leader's disk comes back");
    members[leader].as_ref().unwrap().db.set_stalled(false);
    for p in proposing {
        p.await.unwrap().unwrap();
    }

    members[gone] = Some(restarted(&nodes, gone, dirs[gone].path()).await);
    let applied = |i: usize| members[i].as_ref().unwrap().recorder.applied();
    until("every member applied the 17", || {
        (0..3).all(|i| applied(i).len() >= 17)
    })
    .await;
    let order = applied(leader);
    let mut each: Vec<u8> = order.iter().map(|p| p[0]).collect();
    each.sort_unstable();
    assert_eq!(each, (0..=16).collect::<Vec<u8>>(), "{order:?}");
    for i in [gone, kept] {
        assert_eq!(applied(i), order, "member {i}");
    }
    for m in members.into_iter().flatten() {
        stop(m).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minority_cannot_commit_and_a_restarted_member_catches_up() {
    let (dirs, nodes, mut members) = three_members().await;
    let propose = |m: &Member, byte: u8, timeout| {
        let g = m.group.clone();
        async move {
            let p = g.proposal(vec![byte]);
            g.propose(p, timeout).await
        }
    };
    propose(members[0].as_ref().unwrap(), 1, Duration::from_secs(20))
        .await
        .unwrap();

    // m2 goes away; m0 and m1 are a majority and go on.
    let m2 = members[2].take().unwrap();
    stop(m2).await;
    propose(members[1].as_ref().unwrap(), 2, Duration::from_secs(20))
        .await
        .unwrap();

    // m2 comes back on the same address and directory: it has 1 (from its own log) and gets 2.
    let m2 = restarted(&nodes, 2, dirs[2].path()).await;
    until("m2 caught up", || {
        m2.recorder.applied() == vec![vec![1], vec![2]]
    })
    .await;
    members[2] = Some(m2);

    // m1 and m2 go: m0 alone cannot commit, and says so within its timeout.
    for i in [1, 2] {
        stop(members[i].take().unwrap()).await;
    }
    let lone = members[0].take().unwrap();
    let outcome = propose(&lone, 3, Duration::from_secs(3)).await;
    assert!(
        matches!(outcome, Err(ProposeError::Timeout(_))),
        "{outcome:?}"
    );
    assert_eq!(lone.recorder.applied(), vec![vec![1], vec![2]]);
    stop(lone).await;
}

#[tokio::test]
async fn a_single_member_group_commits_alone_and_replays_its_log_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let me = Node {
        name: "solo".into(),
        addr: String::new(),
    };
    let start = || member(None, &me, std::slice::from_ref(&me), dir.path());
    let m = start().await;
    for b in 0..5u8 {
        let p = m.group.proposal(vec![b]);
        m.group.propose(p, Duration::from_secs(10)).await.unwrap();
    }
    assert_eq!(m.recorder.applied().len(), 5);
    stop(m).await;
    let m = start().await;
    until("the log replayed", || m.recorder.applied().len() == 5).await;
    assert_eq!(
        m.recorder.applied(),
        (0..5u8).map(|b| vec![b]).collect::<Vec<_>>()
    );
    stop(m).await;
}

/// What openraft 0.10's pipelined appends gain over appends that return only once durable (as
/// 0.9's storage must): a three-member group in this process proposes 1 KiB payloads, 512 at
/// a time, from its leader, on each kind of log store. A measurement, not a check: run it with
/// `cargo test --release -p warren-cluster -- --ignored --nocapture raft_pipelining`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn raft_pipelining_measurement() {
    const PROPOSALS: usize = 20_000;
    const IN_FLIGHT: usize = 512;
    for wait_for_flush in [false, true, false, true] {
        let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        let (ls, nodes) = listeners(3).await;
        let mut members = Vec::new();
        for (i, l) in ls.into_iter().enumerate() {
            let (node, link, db) = host(Some(l), &nodes[i], dirs[i].path());
            db.set_appends_wait_for_flush(wait_for_flush);
            let timing = Timing {
                snapshot_every: None,
                ..Timing::default()
            };
            let recorder = Arc::new(Recorder::default());
            let group = Group::start(node, "g", &db, recorder, &nodes, timing)
                .await
                .unwrap();
            members.push((group, link));
        }
        let mut leader = None;
        until("a leader", || {
            leader = members
                .iter()
                .position(|(g, l)| g.leader().as_deref() == Some(l.name()));
            leader.is_some()
        })
        .await;
        let group = members[leader.unwrap()].0.clone();
        let started = tokio::time::Instant::now();
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let latencies = Arc::new(Mutex::new(Vec::with_capacity(PROPOSALS)));
        let workers: Vec<_> = (0..IN_FLIGHT)
            .map(|_| {
                let (group, next, latencies) = (group.clone(), next.clone(), latencies.clone());
                tokio::spawn(async move {
                    while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < PROPOSALS {
                        let proposal = group.proposal(vec![7; 1024]);
                        let at = tokio::time::Instant::now();
                        group
                            .propose(proposal, Duration::from_secs(30))
                            .await
                            .unwrap();
                        latencies.lock().unwrap().push(at.elapsed());
                    }
                })
            })
            .collect();
        for w in workers {
            w.await.unwrap();
        }
        let elapsed = started.elapsed();
        let mut latencies = latencies.lock().unwrap().clone();
        latencies.sort();
        let at =
            |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
        println!(
            "appends {}: {:.0} proposals/s, latency p50 {:?} p99 {:?}",
            if wait_for_flush {
                "wait for the flush (0.9)"
            } else {
                "pipelined (0.10)"
            },
            PROPOSALS as f64 / elapsed.as_secs_f64(),
            at(0.5),
            at(0.99)
        );
        for (group, link) in members {
            group.shutdown().await;
            link.stop();
        }
    }
}

/// A member that starts after the others have elected a leader joins under that leader: it
/// does not stand for election itself (openraft's initialize would make it a candidate at once,
/// and its vote outranks a leader of the same term whose id is lower: the group was left
/// without a leader for an election timeout). The late member here has the highest id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_started_late_joins_under_the_elected_leader() {
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let (ls, mut nodes) = listeners(4).await;
    // The names by id, so that the last to start outranks every other in a term.
    let mut names: Vec<String> = (0..4).map(|i| format!("m{i}")).collect();
    names.sort_by_key(|n| crate::node_id(n));
    for (node, name) in nodes.iter_mut().zip(names) {
        node.name = name;
    }
    let mut members = Vec::new();
    let mut ls = ls.into_iter();
    for i in 0..3 {
        let l = ls.next();
        members.push(member(l, &nodes[i], &nodes, dirs[i].path()).await);
    }
    let p = members[0].group.proposal(vec![1]);
    members[0]
        .group
        .propose(p, Duration::from_secs(20))
        .await
        .unwrap();
    let leader_and_term = |g: &Group| (g.leader(), g.log_figures().term);
    let before = leader_and_term(&members[0].group);
    let late = member(ls.next(), &nodes[3], &nodes, dirs[3].path()).await;
    until("the late member has the entry", || {
        late.recorder.applied() == vec![vec![1]]
    })
    .await;
    // Long enough for its own election, had it stood for one.
    tokio::time::sleep(fast().election_max * 2).await;
    let p = late.group.proposal(vec![2]);
    late.group
        .propose(p, Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(
        leader_and_term(&members[0].group),
        before,
        "the leader changed when a member joined late"
    );
    stop(late).await;
    for m in members {
        stop(m).await;
    }
}

/// Asks every member to take a step towards `wanted` until one (the leader) has made it.
async fn change_members(members: &[&Member], wanted: &[Node]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        for m in members {
            let step = m
                .group
                .change_members(wanted, Duration::from_secs(10))
                .await;
            if let Ok(MembershipStep::Done) = step {
                return;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no member made the change"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_are_added_and_removed_the_leader_included() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let (mut ls, nodes) = listeners(3).await;
    let third = ls.pop().unwrap();
    let mut members = Vec::new();
    for (i, l) in ls.into_iter().enumerate() {
        members.push(member(Some(l), &nodes[i], &nodes[..2], dirs[i].path()).await);
    }
    for k in 0..10u8 {
        let p = members[0].group.proposal(vec![k]);
        members[0]
            .group
            .propose(p, Duration::from_secs(20))
            .await
            .unwrap();
    }
    // The third joins an existing group: it never initializes one of its own, though its log
    // is empty, and has everything once the leader has added it.
    let link = Link::start(
        LinkConfig::new(
            nodes[2].name.clone(),
            nodes[2].addr.clone(),
            b"secret".to_vec(),
        ),
        Some(third),
    );
    let recorder = Arc::new(Recorder::default());
    let db = LogDb::open(dirs[2].path().join("raft.redb")).unwrap();
    let group = Group::join(
        ClusterNode::new(link.clone()),
        "g",
        &db,
        recorder.clone(),
        &nodes,
        fast(),
    )
    .await
    .unwrap();
    members.push(Member {
        group,
        link,
        recorder,
        db,
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        members[2].group.voters().is_empty(),
        "a joining member made a group of its own: {:?}",
        members[2].group.voters()
    );
    change_members(&members.iter().collect::<Vec<_>>(), &nodes).await;
    let names: Vec<String> = nodes.iter().map(|n| n.name.clone()).collect();
    until("the third has every entry and the new membership", || {
        // Not joint any more (a joint membership's voters read as the union of both).
        members[2].recorder.applied().len() >= 10 && members[2].group.has_voters(&names)
    })
    .await;
    assert_eq!(
        members[2].recorder.applied()[..10],
        members[0].recorder.applied()[..10]
    );
    assert_eq!(members[2].group.voters(), names);
    assert!(!members[2].group.has_voters(&names[..2]));

    // The leader goes: it hands the leadership to a remaining member, which completes the change.
    let leader = members
        .iter()
        .position(|m| m.group.leader().as_deref() == Some(m.link.name()))
        .expect("a leader");
    let wanted: Vec<Node> = nodes
        .iter()
        .filter(|n| n.name != nodes[leader].name)
        .cloned()
        .collect();
    let wanted_names: Vec<String> = wanted.iter().map(|n| n.name.clone()).collect();
    change_members(&members.iter().collect::<Vec<_>>(), &wanted).await;
    let rest: Vec<&Member> = members
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != leader)
        .map(|(_, m)| m)
        .collect();
    until(
        "the others have the membership without the old leader",
        || rest.iter().all(|m| m.group.voters() == wanted_names),
    )
    .await;
    let p = rest[0].group.proposal(vec![99]);
    rest[0]
        .group
        .propose(p, Duration::from_secs(20))
        .await
        .unwrap();
    until("both remaining members applied it", || {
        rest.iter()
            .all(|m| m.recorder.applied().last() == Some(&vec![99]))
    })
    .await;
    for m in members {
        stop(m).await;
    }
}

/// Quiet members that go dormant when idle: all three stop their Raft instances; a proposal
/// through a follower wakes its member and the others (its leader by the proposal, the rest by
/// the leader's election and appends) and is applied once everywhere, nothing applied before
/// applied again; dormant again, their former leader's node gone, a proposal through another
/// member is committed by the two left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dormant_members_wake_when_used_and_apply_nothing_twice() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let (ls, nodes) = listeners(3).await;
    let timing = Timing {
        quiet: true,
        dormant_after: Some(Duration::from_millis(500)),
        ..fast()
    };
    let mut members = Vec::new();
    for (i, l) in ls.into_iter().enumerate() {
        let m = member_timed(Some(l), &nodes[i], &nodes, dirs[i].path(), timing.clone()).await;
        m.group.keep_led(
            Duration::from_millis(100),
            nodes.iter().map(|n| n.name.clone()).collect(),
        );
        members.push(m);
    }
    let propose = |m: &Member, payload: u8| {
        let g = m.group.clone();
        async move {
            let p = g.proposal(vec![payload]);
            g.propose(p, Duration::from_secs(20)).await
        }
    };
    propose(&members[0], 1).await.unwrap();
    let all_dormant = |members: &[Member]| members.iter().all(|m| m.group.is_dormant());
    until("all three dormant", || all_dormant(&members)).await;
    let leader = members
        .iter()
        .position(|m| m.group.log_figures().role == "leader")
        .expect("the leader as it was");
    assert!(members.iter().all(|m| m.group.live().is_none()));
    let follower = (leader + 1) % 3;
    propose(&members[follower], 2).await.unwrap();
    until("every member applied both", || {
        members
            .iter()
            .all(|m| m.recorder.applied() == [vec![1], vec![2]])
    })
    .await;

    until("all three dormant again", || all_dormant(&members)).await;
    let leader = members
        .iter()
        .position(|m| m.group.log_figures().role == "leader")
        .expect("the leader as it was");
    stop(members.remove(leader)).await;
    propose(&members[0], 3).await.unwrap();
    until("the two left applied the third", || {
        members
            .iter()
            .all(|m| m.recorder.applied() == [vec![1], vec![2], vec![3]])
    })
    .await;
    for m in members {
        stop(m).await;
    }
}

fn born_dormant() -> Timing {
    Timing {
        quiet: true,
        dormant_after: Some(Duration::from_millis(500)),
        born_dormant: true,
        ..fast()
    }
}

/// Three members of a new group "g" born dormant, each kept led (checked every 100 ms): their
/// directories, nodes, names and members.
async fn three_born_dormant() -> (Vec<tempfile::TempDir>, Vec<Node>, Vec<String>, Vec<Member>) {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let (ls, nodes) = listeners(3).await;
    let names: Vec<String> = nodes.iter().map(|n| n.name.clone()).collect();
    let mut members = Vec::new();
    for (i, l) in ls.into_iter().enumerate() {
        let m = member_timed(Some(l), &nodes[i], &nodes, dirs[i].path(), born_dormant()).await;
        m.group.keep_led(Duration::from_millis(100), names.clone());
        members.push(m);
    }
    (dirs, nodes, names, members)
}

/// Members of a new group born dormant: no Raft instance runs until the group is used, each
/// knows the members and the first as its leader-to-be; a proposal from another member wakes
/// them, the first is elected (term 1) and everyone applies it. Members started again before
/// any use (their log holds the first entry) start as any member does, and a member that joins
/// an empty directory again while the others have gone on follows them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_born_dormant_elect_their_first_at_first_use() {
    let (_dirs, nodes, names, mut members) = three_born_dormant().await;
    for (i, m) in members.iter().enumerate() {
        assert!(
            m.group.is_dormant() && m.group.live().is_none(),
            "member {i} born dormant"
        );
        assert!(m.group.is_newborn());
        let figures = m.group.log_figures();
        assert_eq!(figures.voters, names, "member {i} knows the members");
        assert_eq!(figures.role, if i == 0 { "leader" } else { "follower" });
        assert_eq!(m.group.leader().as_deref(), Some("m0"));
        assert_eq!(
            (figures.term, figures.last, figures.applied),
            (0, Some(0), None)
        );
    }
    // Nothing wakes them meanwhile (several checks of their keeper).
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(members.iter().all(|m| m.group.is_dormant()));

    let propose = |m: &Member, payload: u8| {
        let g = m.group.clone();
        async move {
            let p = g.proposal(vec![payload]);
            g.propose(p, Duration::from_secs(20)).await
        }
    };
    propose(&members[2], 1).await.unwrap();
    until("every member applied it", || {
        members.iter().all(|m| m.recorder.applied() == [vec![1]])
    })
    .await;
    let figures = members[0].group.log_figures();
    assert_eq!((figures.role.as_str(), figures.term), ("leader", 1));

    // The first member loses its directory and comes back born again, while the others go on
    // under another leader: it follows them.
    stop(members.remove(0)).await;
    propose(&members[0], 2).await.unwrap();
    let fresh = tempfile::tempdir().unwrap();
    let listener = listener_again(&nodes[0]).await;
    let back = member_timed(
        Some(listener),
        &nodes[0],
        &nodes,
        fresh.path(),
        born_dormant(),
    )
    .await;
    back.group
        .keep_led(Duration::from_millis(100), names.clone());
    members.insert(0, back);
    propose(&members[1], 3).await.unwrap();
    until("every member applied all three", || {
        members
            .iter()
            .all(|m| m.recorder.applied() == [vec![1], vec![2], vec![3]])
    })
    .await;
    assert_ne!(members[0].group.leader().as_deref(), Some("m0"));
    for m in members {
        stop(m).await;
    }
}

/// Members m1 and m2 of a new group "g" of three born dormant, the first member's node (m0) not
/// up: the directories of all three, the nodes, and the two members.
async fn born_dormant_without_their_first() -> (Vec<tempfile::TempDir>, Vec<Node>, Vec<Member>) {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let (mut ls, nodes) = listeners(3).await;
    drop(ls.remove(0));
    let mut members = Vec::new();
    for (i, l) in ls.into_iter().enumerate() {
        let i = i + 1;
        let m = member_timed(Some(l), &nodes[i], &nodes, dirs[i].path(), born_dormant()).await;
        members.push(m);
    }
    (dirs, nodes, members)
}

/// Born dormant with its first member never up: the others, their leader-to-be unreachable,
/// elect one of themselves, and a member started again before any use starts as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_born_dormant_elect_another_when_their_first_is_down() {
    let (dirs, nodes, mut members) = born_dormant_without_their_first().await;
    let names: Vec<String> = nodes.iter().map(|n| n.name.clone()).collect();
    // Started again before any use: from its log, as any member.
    let m2 = members.pop().unwrap();
    stop(m2).await;
    let listener = listener_again(&nodes[2]).await;
    let m2 = member_timed(
        Some(listener),
        &nodes[2],
        &nodes,
        dirs[2].path(),
        born_dormant(),
    )
    .await;
    assert!(!m2.group.is_newborn());
    members.push(m2);
    for m in &members {
        m.group.keep_led(Duration::from_millis(100), names.clone());
    }
    let g = members[0].group.clone();
    g.propose(g.proposal(vec![1]), Duration::from_secs(20))
        .await
        .unwrap();
    until("both applied it", || {
        members.iter().all(|m| m.recorder.applied() == [vec![1]])
    })
    .await;
    let leader = members[0].group.leader();
    assert!(matches!(leader.as_deref(), Some("m1" | "m2")), "{leader:?}");
    for m in members {
        stop(m).await;
    }
}

/// A follower of a group born dormant woken alone (as its keeper wakes it when the link to its
/// leader-to-be is down, the link back before it elects anyone): the one entry it holds is
/// committed by nobody until the group is used, yet it goes back to sleep as born, and the group
/// still elects its first at first use. (It stayed awake for good.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_born_follower_woken_alone_goes_back_to_sleep() {
    let (_dirs, _, _, members) = three_born_dormant().await;
    drop(members[2].group.running().await.unwrap());
    assert!(!members[2].group.is_dormant(), "woken");
    until("the woken follower asleep again", || {
        members[2].group.is_dormant()
    })
    .await;
    assert!(members[..2].iter().all(|m| m.group.is_dormant()));
    let figures = members[2].group.log_figures();
    assert_eq!(
        (
            figures.role.as_str(),
            figures.term,
            figures.last,
            figures.applied
        ),
        ("follower", 0, Some(0), None)
    );
    assert_eq!(members[2].group.leader().as_deref(), Some("m0"));

    let g = members[2].group.clone();
    g.propose(g.proposal(vec![1]), Duration::from_secs(20))
        .await
        .unwrap();
    until("every member applied it", || {
        members.iter().all(|m| m.recorder.applied() == [vec![1]])
    })
    .await;
    let figures = members[0].group.log_figures();
    assert_eq!((figures.role.as_str(), figures.term), ("leader", 1));
    for m in members {
        stop(m).await;
    }
}

/// A dormant follower whose leader-to-be's node is unreachable wakes to elect another only at
/// the second check in a row that finds it so: a link down for one check (a reconnection, a
/// node restarting) wakes nobody, and a check that finds the link up starts the count again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dormant_follower_wakes_to_elect_only_at_the_second_check_without_its_leader() {
    use super::keeper::Step;
    let check = Duration::from_millis(100);
    let (dirs, nodes, members) = born_dormant_without_their_first().await;
    let m1 = &members[0];
    assert_eq!(m1.group.leader().as_deref(), Some("m0"));
    assert_eq!(m1.group.next_step(check), Step::Nothing, "first check");
    assert!(m1.group.is_dormant());

    // m0 comes up before the second check: the count starts again.
    let m0 = member_timed(
        Some(listener_again(&nodes[0]).await),
        &nodes[0],
        &nodes,
        dirs[0].path(),
        born_dormant(),
    )
    .await;
    until("m1's link to m0 up", || m1.link.is_connected("m0")).await;
    assert_eq!(m1.group.next_step(check), Step::Nothing, "m0 reachable");
    stop(m0).await;
    until("m1's link to m0 down", || !m1.link.is_connected("m0")).await;
    assert_eq!(
        m1.group.next_step(check),
        Step::Nothing,
        "first check again"
    );
    assert_eq!(
        m1.group.next_step(check),
        Step::WakeToElect,
        "second check in a row"
    );
    for m in members {
        stop(m).await;
    }
}

/// What a group born dormant costs its first user, against one started awake (the first member
/// initializing it and electing itself at once): three nodes in this process, 20 groups of each
/// kind started on them one after the other, each timed from its start on the three nodes to
/// its first proposal (from the first member) committed. A measurement, not a check: run it with
/// `cargo test --release -p warren-cluster -- --ignored --nocapture first_commit`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn first_commit_measurement() {
    const GROUPS: usize = 20;
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let (ls, nodes) = listeners(3).await;
    let hosts: Vec<_> = ls
        .into_iter()
        .enumerate()
        .map(|(i, l)| host(Some(l), &nodes[i], dirs[i].path()))
        .collect();
    let names: Vec<String> = nodes.iter().map(|n| n.name.clone()).collect();
    for (round, born) in [true, false, true, false].into_iter().enumerate() {
        let (mut started, mut committed) = (Vec::new(), Vec::new());
        for g in 0..GROUPS {
            let id = format!("{round}-{g}");
            let timing = Timing {
                born_dormant: born,
                dormant_after: Some(Duration::from_secs(30)),
                quiet: true,
                ..Timing::default()
            };
            let t0 = std::time::Instant::now();
            let mut groups = Vec::new();
            for (node, _, db) in &hosts {
                let recorder = Arc::new(Recorder::default());
                let group = Group::start(
                    node.clone(),
                    id.clone(),
                    db,
                    recorder,
                    &nodes,
                    timing.clone(),
                )
                .await
                .unwrap();
                group.keep_led(Duration::from_millis(1000), names.clone());
                groups.push(group);
            }
            started.push(t0.elapsed());
            let first = &groups[0];
            first
                .propose(first.proposal(vec![1]), Duration::from_secs(20))
                .await
                .unwrap();
            committed.push(t0.elapsed());
            for group in groups {
                group.shutdown().await;
            }
        }
        started.sort();
        committed.sort();
        let median = |v: &[Duration]| v[v.len() / 2];
        eprintln!(
            "born dormant {born}: started on three nodes in {:?} (median), first proposal committed {:?} after the start (median; max {:?})",
            median(&started),
            median(&committed),
            committed[committed.len() - 1]
        );
    }
    for (_, link, _) in hosts {
        link.stop();
    }
}

/// An idle quiet member's ticker goes off at least one check before the member goes dormant,
/// whatever `dormant_after` is against the check (so no heartbeat is in flight when its
/// instance stops), goes off after `IDLE_CHECKS` when the member stays awake longer or for good,
/// and a member goes dormant no earlier than `dormant_after`.
#[test]
fn an_idle_members_ticker_goes_off_a_check_before_it_goes_dormant() {
    let check = Duration::from_millis(1000);
    assert_eq!(idle_schedule(check, None), (IDLE_CHECKS, None));
    for after_ms in [
        1,
        400,
        999,
        1000,
        1001,
        2000,
        3000,
        4999,
        5000,
        6000,
        30_000,
        u64::MAX,
    ] {
        let after = Duration::from_millis(after_ms);
        let (tick_off_at, dormant_at) = idle_schedule(check, Some(after));
        let dormant_at = dormant_at.expect("dormant some time");
        assert!(
            tick_off_at >= 1 && tick_off_at < dormant_at,
            "{after_ms} ms"
        );
        assert!(tick_off_at <= IDLE_CHECKS, "{after_ms} ms");
        assert!(
            check * dormant_at >= after || dormant_at == u32::MAX,
            "{after_ms} ms: dormant at check {dormant_at}, before {after:?}"
        );
        assert!(
            dormant_at == 2 || check * (dormant_at - 1) < after,
            "{after_ms} ms: dormant at check {dormant_at}, a check later than it might"
        );
    }
}
