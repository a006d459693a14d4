//! openraft's network for a group, over the cluster link: each Raft message is a link request
//! naming the group, answered by the same group on the peer (`node.rs` routes it).

use std::future::Future;
use std::io::Cursor;
use std::time::Duration;

use futures::{Stream, StreamExt};
use openraft::base::{BoxFuture, BoxStream};
use openraft::errors::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::v2::RaftNetworkV2;
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, StreamAppendResult,
    TransferLeaderRequest, TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::{EntryPayload, OptionalSend};

use crate::link::{GroupId, Link, LinkError, RaftReply, RaftRpc, Request, Response};
use crate::types::{Entry, LogId, Node, NodeId, TypeConfig, Vote};

type Snapshot = openraft::type_config::alias::SnapshotOf<TypeConfig, Cursor<Vec<u8>>>;
type StreamAnswer = Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>;

/// Makes a group's connections to its peers (all share the node's link).
pub struct GroupNetwork {
    link: Link,
    group: GroupId,
}

impl GroupNetwork {
    pub fn new(link: Link, group: GroupId) -> Self {
        GroupNetwork { link, group }
    }
}

impl RaftNetworkFactory<TypeConfig> for GroupNetwork {
    type Network = GroupPeer;

    async fn new_client(&mut self, _target: NodeId, node: &Node) -> GroupPeer {
        self.link.add_peer(&node.name, &node.addr);
        GroupPeer {
            link: self.link.clone(),
            group: self.group.clone(),
            peer: node.name.clone(),
        }
    }
}

/// A group's end towards one peer.
pub struct GroupPeer {
    link: Link,
    group: GroupId,
    peer: String,
}

impl GroupPeer {
    fn request(&self, rpc: RaftRpc) -> Request {
        Request::Raft {
            group: self.group.clone(),
            rpc,
        }
    }

    /// Sends `rpc` and waits for its reply, `ttl` at most for both.
    async fn call(&self, rpc: RaftRpc, ttl: Duration) -> Result<RaftReply, RPCError<TypeConfig>> {
        let answer = self.link.request(&self.peer, self.request(rpc), ttl).await;
        reply_of(&self.peer, answer)
    }

    /// Sends `rpc` now (after those sent before it), and gives back the wait for its reply.
    async fn send(
        &self,
        rpc: RaftRpc,
        ttl: Duration,
    ) -> impl Future<Output = Result<RaftReply, RPCError<TypeConfig>>> + Send + use<'_> {
        let sent = self.link.call(&self.peer, self.request(rpc)).await;
        async move {
            let answer = match sent {
                Ok(call) => call.answer(ttl).await,
                Err(e) => Err(e),
            };
            reply_of(&self.peer, answer)
        }
    }
}

/// A Raft reply from `peer`'s link answer.
fn reply_of(
    peer: &str,
    answer: Result<Response, LinkError>,
) -> Result<RaftReply, RPCError<TypeConfig>> {
    match answer {
        Ok(Response::Raft(Ok(reply))) => Ok(reply),
        Ok(Response::Raft(Err(remote))) => Err(RPCError::Unreachable(Unreachable::from_string(
            format!("{peer}: {remote}"),
        ))),
        Ok(other) => Err(RPCError::Network(NetworkError::from_string(format!(
            "{peer} answered {other:?} to a Raft message"
        )))),
        Err(e @ LinkError::Encode(_)) | Err(e @ LinkError::TooLarge(_)) => {
            Err(RPCError::Network(NetworkError::new(&e)))
        }
        Err(e) => Err(RPCError::Unreachable(Unreachable::new(&e))),
    }
}

/// How many appends may be on their way to a peer at once: openraft streams a leader's appends
/// to a follower that has caught up, the follower takes them in the order sent (see the link's
/// reader) and answers each once it is written, so the next batch need not wait for the
/// previous one's round trip and fsync on the follower (RabbitMQ's Ra pipelines its appends
/// likewise).
const APPENDS_IN_FLIGHT: usize = 16;

/// An append as sent: cut to [`APPEND_BUDGET`], its timeout (openraft's is the heartbeat's,
/// whatever the append carries: a big one is given the time to cross the link and be written
/// too), and the last entry sent if it was cut.
fn outgoing_append(
    rpc: AppendEntriesRequest<TypeConfig>,
    hard_ttl: Duration,
) -> (RaftRpc, Duration, Option<LogId>) {
    let (rpc, sent_up_to) = within_budget(rpc, APPEND_BUDGET);
    let bytes: usize = rpc.entries.iter().map(payload_len).sum();
    let ttl = hard_ttl + Duration::from_secs_f64(bytes as f64 / APPEND_RATE);
    (RaftRpc::Append(rpc), ttl, sent_up_to)
}

/// The peer's answer to an append sent by [`outgoing_append`].
fn append_answered(
    reply: Result<RaftReply, RPCError<TypeConfig>>,
    sent_up_to: Option<LogId>,
) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
    match reply? {
        // The peer has the part sent: openraft sends the rest next.
        RaftReply::Append(AppendEntriesResponse::Success) if sent_up_to.is_some() => {
            Ok(AppendEntriesResponse::PartialSuccess(sent_up_to))
        }
        RaftReply::Append(r) => Ok(r),
        other => Err(unexpected(other)),
    }
}

/// How many bytes of entries' payloads one append may carry (openraft batches by count): far
/// below the link's frame limit, so that a batch of large entries (a queue's enqueues of big
/// messages) goes over in parts rather than never.
const APPEND_BUDGET: usize = 16 * 1024 * 1024;

/// The rate (bytes per second) an append's timeout allows for beyond openraft's: a slow disk's,
/// on a loaded machine.
const APPEND_RATE: f64 = 16.0 * 1024.0 * 1024.0;

/// `rpc` cut to the entries whose payloads fit in `budget` bytes (the first always goes, whatever
/// its size), with the last sent entry's id when it was cut.
fn within_budget(
    mut rpc: AppendEntriesRequest<TypeConfig>,
    budget: usize,
) -> (AppendEntriesRequest<TypeConfig>, Option<LogId>) {
    let mut total = 0usize;
    let fits = rpc
        .entries
        .iter()
        .position(|entry| {
            total = total.saturating_add(payload_len(entry));
            total > budget
        })
        .map(|over| over.max(1));
    match fits {
        Some(keep) if keep < rpc.entries.len() => {
            rpc.entries.truncate(keep);
            let last = rpc.entries.last().map(|e| e.log_id);
            (rpc, last)
        }
        _ => (rpc, None),
    }
}

fn payload_len(entry: &Entry) -> usize {
    match &entry.payload {
        EntryPayload::Normal(proposal) => proposal.payload.len(),
        _ => 0,
    }
}

fn unexpected(reply: RaftReply) -> RPCError<TypeConfig> {
    RPCError::Network(NetworkError::from_string(format!(
        "mismatched Raft reply {reply:?}"
    )))
}

impl RaftNetworkV2<TypeConfig> for GroupPeer {
    type SnapshotData = Cursor<Vec<u8>>;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let (rpc, ttl, sent_up_to) = outgoing_append(rpc, option.hard_ttl());
        append_answered(self.call(rpc, ttl).await, sent_up_to)
    }

    /// Pipelined: each append is sent as openraft makes it, up to [`APPENDS_IN_FLIGHT`] before
    /// the first is answered; answers come back in the order sent. The stream ends after the
    /// first answer that is not a whole success (a conflict, a higher vote, an error, an append
    /// cut to the budget): openraft starts another from what the peer has.
    // Each append's future yields the wait for its answer: sent in order, awaited `buffered`.
    #[allow(clippy::async_yields_async)]
    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> BoxFuture<'s, Result<BoxStream<'s, StreamAnswer>, RPCError<TypeConfig>>>
    where
        S: Stream<Item = AppendEntriesRequest<TypeConfig>> + OptionalSend + Unpin + 'static,
    {
        let peer: &'s GroupPeer = self;
        let hard_ttl = option.hard_ttl();
        Box::pin(async move {
            let answers = input
                .then(move |rpc| async move {
                    let prev = rpc.prev_log_id;
                    let last = rpc.entries.last().map(|e| e.log_id).or(prev);
                    let (rpc, ttl, sent_up_to) = outgoing_append(rpc, hard_ttl);
                    let reply = peer.send(rpc, ttl).await;
                    async move {
                        let answer = append_answered(reply.await, sent_up_to)
                            .map(|r| r.into_stream_result(prev, last));
                        let whole = matches!(answer, Ok(Ok(_))) && sent_up_to.is_none();
                        (answer, whole)
                    }
                })
                .buffered(APPENDS_IN_FLIGHT)
                .scan(true, |going, (answer, whole)| {
                    let this = (*going).then_some(answer);
                    *going = *going && whole;
                    futures::future::ready(this)
                });
            Ok(Box::pin(answers) as BoxStream<'s, StreamAnswer>)
        })
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self.call(RaftRpc::Vote(rpc), option.hard_ttl()).await? {
            RaftReply::Vote(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self.call(RaftRpc::PreVote(rpc), option.hard_ttl()).await? {
            RaftReply::Vote(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let rpc = RaftRpc::Snapshot {
            vote,
            meta: snapshot.meta,
            data: snapshot.snapshot.into_inner(),
        };
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            reply = self.call(rpc, option.hard_ttl()) => match reply {
                Ok(RaftReply::Snapshot(r)) => Ok(r),
                Ok(other) => Err(StreamingError::Network(NetworkError::from_string(format!("mismatched Raft reply {other:?}")))),
                Err(RPCError::Unreachable(u)) => Err(StreamingError::Unreachable(u)),
                Err(e) => Err(StreamingError::Network(NetworkError::new(&e))),
            },
        }
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self
            .call(RaftRpc::TransferLeader(req), option.hard_ttl())
            .await?
        {
            RaftReply::TransferLeader(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Proposal;
    use openraft::vote::RaftLeaderIdExt;
    use std::sync::Arc;

    fn request(sizes: &[usize]) -> AppendEntriesRequest<TypeConfig> {
        let leader = <TypeConfig as openraft::RaftTypeConfig>::LeaderId::new_committed(1, 1);
        let entries = sizes
            .iter()
            .enumerate()
            .map(|(i, &size)| Entry {
                log_id: LogId::new(leader, i as u64 + 1),
                payload: EntryPayload::Normal(Proposal {
                    origin: 1,
                    number: i as u64,
                    payload: vec![0; size],
                }),
            })
            .collect();
        AppendEntriesRequest {
            vote: Vote::new_committed(1, 1),
            prev_log_id: None,
            entries,
            leader_commit: None,
        }
    }

    #[test]
    fn an_append_over_the_budget_goes_in_parts_the_first_entry_always() {
        let (rpc, cut) = within_budget(request(&[10, 10, 10]), 100);
        assert_eq!((rpc.entries.len(), cut), (3, None));
        let (rpc, cut) = within_budget(request(&[40, 40, 40, 40]), 100);
        assert_eq!(rpc.entries.len(), 2);
        assert_eq!(cut.map(|id| id.index), Some(2));
        let (rpc, cut) = within_budget(request(&[500, 1]), 100);
        assert_eq!(rpc.entries.len(), 1);
        assert_eq!(cut.map(|id| id.index), Some(1));
        let (rpc, cut) = within_budget(request(&[500]), 100);
        assert_eq!((rpc.entries.len(), cut), (1, None));
        let (rpc, cut) = within_budget(request(&[]), 100);
        assert_eq!((rpc.entries.len(), cut), (0, None));
    }

    /// A follower's end for [`pipelined_appends_are_answered_in_order_until_the_first_refusal`]:
    /// it answers no append before it has received `expect` of them (so only a pipelined sender
    /// gets answers), then each after a delay that makes later ones answer first; it refuses
    /// (conflict) the one whose previous entry is `conflict_after`.
    struct Follower {
        expect: usize,
        conflict_after: u64,
        seen: Arc<tokio::sync::watch::Sender<Vec<u64>>>,
    }

    impl crate::link::Handler for Follower {
        fn handle(&self, _from: &str, request: Request) -> crate::link::Answer {
            let Request::Raft {
                rpc: RaftRpc::Append(rpc),
                ..
            } = request
            else {
                return Box::pin(async { Response::Raft(Err("appends only".into())) });
            };
            let prev = rpc.prev_log_id.map_or(0, |id| id.index);
            self.seen.send_modify(|seen| seen.push(prev));
            let conflict = prev == self.conflict_after;
            let (mut seen, expect) = (self.seen.subscribe(), self.expect);
            Box::pin(async move {
                let _ = seen.wait_for(|seen| seen.len() >= expect).await;
                tokio::time::sleep(Duration::from_millis(30u64.saturating_sub(prev * 3))).await;
                Response::Raft(Ok(RaftReply::Append(if conflict {
                    AppendEntriesResponse::Conflict
                } else {
                    AppendEntriesResponse::Success
                })))
            })
        }
    }

    async fn link(name: &str) -> Link {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        Link::start(
            crate::link::LinkConfig::new(name, addr, b"s".to_vec()),
            Some(listener),
        )
    }

    /// The appends of a stream are all sent before the first is answered (the follower answers
    /// none before it has all eight: one at a time, the first would time out), the answers come
    /// back in the order sent (though the follower answered the later ones first), and the
    /// stream ends with the first refusal, the appends after it unanswered.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pipelined_appends_are_answered_in_order_until_the_first_refusal() {
        let leader = link("a").await;
        let follower = link("b").await;
        let seen = Arc::new(tokio::sync::watch::Sender::new(Vec::new()));
        follower.set_handler(Arc::new(Follower {
            expect: 8,
            conflict_after: 5,
            seen: seen.clone(),
        }));
        leader.add_peer(follower.name(), follower.addr());
        follower.add_peer(leader.name(), leader.addr());
        let mut peer = GroupPeer {
            link: leader.clone(),
            group: "g".into(),
            peer: "b".into(),
        };
        let appends: Vec<AppendEntriesRequest<TypeConfig>> = (0..8u64)
            .map(|i| {
                let mut rpc = request(&[1]);
                rpc.prev_log_id = (i > 0).then(|| LogId::new(rpc.entries[0].log_id.leader_id, i));
                rpc.entries[0].log_id.index = i + 1;
                rpc
            })
            .collect();
        let answers: Vec<StreamAnswer> = {
            let stream = peer
                .stream_append(
                    futures::stream::iter(appends),
                    RPCOption::new(Duration::from_secs(5)),
                )
                .await
                .expect("a stream");
            stream.collect().await
        };
        let indexes: Vec<Option<u64>> = answers
            .iter()
            .map(|a| match a {
                Ok(Ok(last)) => last.map(|id| id.index),
                other => panic!("{other:?}"),
            })
            .take(5)
            .collect();
        assert_eq!(indexes, (1..=5).map(Some).collect::<Vec<_>>());
        assert_eq!(answers.len(), 6, "the stream ends with the refusal");
        assert!(
            matches!(&answers[5], Ok(Err(openraft::raft::StreamAppendError::Conflict(prev))) if prev.index == 5),
            "{:?}",
            answers[5]
        );
        // Received in the order sent.
        assert_eq!(*seen.borrow(), (0..8).collect::<Vec<u64>>());
    }
}
