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
use openraft::OptionalSend;

use crate::link::{GroupId, Link, LinkError, RaftReply, RaftRpc, Request, Response};
use crate::types::{Node, NodeId, TypeConfig, Vote};

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
        match self.call(RaftRpc::Append(rpc), option.hard_ttl()).await? {
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
