//! openraft's network for a group, over the cluster link: each Raft message is a link request
//! naming the group, answered by the same group on the peer (`node.rs` routes it).

use std::future::Future;
use std::io::Cursor;
use std::time::Duration;

use openraft::errors::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::v2::RaftNetworkV2;
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::{EntryPayload, OptionalSend};

use crate::link::{GroupId, Link, LinkError, RaftReply, RaftRpc, Request, Response};
use crate::types::{Entry, LogId, Node, NodeId, TypeConfig, Vote};

type Snapshot = openraft::type_config::alias::SnapshotOf<TypeConfig, Cursor<Vec<u8>>>;

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
    async fn call(&self, rpc: RaftRpc, ttl: Duration) -> Result<RaftReply, RPCError<TypeConfig>> {
        let request = Request::Raft {
            group: self.group.clone(),
            rpc,
        };
        match self.link.request(&self.peer, request, ttl).await {
            Ok(Response::Raft(Ok(reply))) => Ok(reply),
            Ok(Response::Raft(Err(remote))) => Err(RPCError::Unreachable(
                Unreachable::from_string(format!("{}: {remote}", self.peer)),
            )),
            Ok(other) => Err(RPCError::Network(NetworkError::from_string(format!(
                "{} answered {other:?} to a Raft message",
                self.peer
            )))),
            Err(e @ LinkError::Encode(_)) | Err(e @ LinkError::TooLarge(_)) => {
                Err(RPCError::Network(NetworkError::new(&e)))
            }
            Err(e) => Err(RPCError::Unreachable(Unreachable::new(&e))),
        }
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
        let (rpc, sent_up_to) = within_budget(rpc, APPEND_BUDGET);
        // openraft's timeout is the heartbeat's, whatever the append carries: a big one is
        // given the time to cross the link and be written too.
        let bytes: usize = rpc.entries.iter().map(payload_len).sum();
        let ttl = option.hard_ttl() + Duration::from_secs_f64(bytes as f64 / APPEND_RATE);
        match self.call(RaftRpc::Append(rpc), ttl).await? {
            // The peer has the part sent: openraft sends the rest next.
            RaftReply::Append(AppendEntriesResponse::Success) if sent_up_to.is_some() => {
                Ok(AppendEntriesResponse::PartialSuccess(sent_up_to))
            }
            RaftReply::Append(r) => Ok(r),
            other => Err(unexpected(other)),
        }
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
}
