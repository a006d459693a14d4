//! This node's place in the cluster: its link, the Raft groups it is a member of, and where the
//! link's requests go (a group's Raft messages and proposals to that group, the application's own
//! traffic to the application).

use std::collections::HashMap;
use std::io::Cursor;
use std::sync::{Arc, Mutex, RwLock};

use futures::future::BoxFuture;

use crate::link::{
    Answer, GroupId, Handler, Link, ProposeRefused, RaftReply, RaftRpc, Request, Response,
};
use crate::types::{NodeId, Proposal, TypeConfig};

/// What the link needs of a group: to hand it Raft messages and proposals.
pub trait GroupEndpoint: Send + Sync + 'static {
    fn raft(&self, rpc: RaftRpc) -> BoxFuture<'static, Result<RaftReply, String>>;
    fn propose(&self, proposal: Proposal) -> BoxFuture<'static, Result<u64, ProposeRefused>>;
    /// Resolves once this member has applied up to `index` (true), or `within` has passed.
    fn wait_applied(&self, index: u64, within: std::time::Duration) -> BoxFuture<'static, bool>;
    /// This member's log and role.
    fn figures(&self) -> crate::group::LogFigures;
    /// If this member leads, hands its leadership to member `to`.
    fn transfer_leader(&self, to: NodeId) -> BoxFuture<'static, Result<(), String>>;
    /// The member this one takes for the leader, if any.
    fn leader(&self) -> Option<NodeId>;
}

/// The application's side of the link: requests other nodes' applications send this one.
pub trait AppHandler: Send + Sync + 'static {
    fn handle(&self, from: &str, request: Vec<u8>) -> BoxFuture<'static, Result<Vec<u8>, String>>;
}

pub struct ClusterNode {
    link: Link,
    groups: RwLock<HashMap<GroupId, Arc<dyn GroupEndpoint>>>,
    app: Mutex<Option<Arc<dyn AppHandler>>>,
    /// What keeps this node's groups led (see [`crate::group::Group::keep_led`]).
    pub(crate) keepers: crate::group::keeper::Keepers,
}

impl ClusterNode {
    pub fn new(link: Link) -> Arc<ClusterNode> {
        let node = Arc::new(ClusterNode {
            link: link.clone(),
            groups: RwLock::new(HashMap::new()),
            app: Mutex::new(None),
            keepers: Default::default(),
        });
        link.set_handler(Arc::new(Router(Arc::downgrade(&node))));
        node
    }

    pub fn link(&self) -> &Link {
        &self.link
    }

    pub fn name(&self) -> &str {
        self.link.name()
    }

    pub fn set_app_handler(&self, handler: Arc<dyn AppHandler>) {
        *self.app.lock().unwrap_or_else(|e| e.into_inner()) = Some(handler);
    }

    pub(crate) fn add_group(&self, id: GroupId, group: Arc<dyn GroupEndpoint>) {
        self.groups
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, group);
    }

    /// Whether a member of group `id` runs on this node.
    pub fn has_group(&self, id: &str) -> bool {
        self.groups
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(id)
    }

    pub(crate) fn remove_group(&self, id: &str) {
        self.groups
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }

    /// Group `group`'s figures on node `peer` (this one's from here), asked within `within`;
    /// None if that node did not answer or has no member of the group.
    pub async fn group_figures(
        &self,
        peer: &str,
        group: &str,
        within: std::time::Duration,
    ) -> Option<crate::group::LogFigures> {
        if peer == self.name() {
            return self.group(group).map(|g| g.figures());
        }
        let request = Request::Figures {
            group: group.into(),
        };
        match self.link().request(peer, request, within).await {
            Ok(Response::Figures(figures)) => figures,
            _ => None,
        }
    }

    /// How many of the groups with a member here (those `counted`) each node leads, as the
    /// members here see it; and how many groups were counted.
    pub fn leaders(&self, counted: impl Fn(&str) -> bool) -> (HashMap<NodeId, usize>, usize) {
        let groups = self.groups.read().unwrap_or_else(|e| e.into_inner());
        let mut led = HashMap::new();
        let mut total = 0;
        for group in groups
            .iter()
            .filter(|(id, _)| counted(id))
            .map(|(_, group)| group)
        {
            total += 1;
            if let Some(leader) = group.leader() {
                *led.entry(leader).or_insert(0) += 1;
            }
        }
        (led, total)
    }

    fn group(&self, id: &str) -> Option<Arc<dyn GroupEndpoint>> {
        self.groups
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }
}

/// The link's handler: a weak reference, so the node can go while the link lives on.
struct Router(std::sync::Weak<ClusterNode>);

impl Handler for Router {
    fn handle(&self, from: &str, request: Request) -> Answer {
        let Some(node) = self.0.upgrade() else {
            return Box::pin(async move { Response::refusal(&request, "the node is stopping") });
        };
        match request {
            Request::Raft { group, rpc } => match node.group(&group) {
                Some(g) => {
                    let reply = g.raft(rpc);
                    Box::pin(async move { Response::Raft(reply.await) })
                }
                None => Box::pin(async move {
                    Response::Raft(Err(format!("no group {group} on this node")))
                }),
            },
            Request::Propose { group, proposal } => match node.group(&group) {
                Some(g) => {
                    let outcome = g.propose(proposal);
                    Box::pin(async move { Response::Propose(outcome.await) })
                }
                None => Box::pin(async move {
                    Response::Propose(Err(ProposeRefused::Failed(format!(
                        "no group {group} on this node"
                    ))))
                }),
            },
            Request::WaitApplied {
                group,
                index,
                within_ms,
            } => match node.group(&group) {
                Some(g) => {
                    let applied =
                        g.wait_applied(index, std::time::Duration::from_millis(within_ms));
                    Box::pin(async move { Response::Applied(applied.await) })
                }
                None => Box::pin(async { Response::Applied(false) }),
            },
            Request::Figures { group } => {
                let figures = node.group(&group).map(|g| g.figures());
                Box::pin(async move { Response::Figures(figures) })
            }
            Request::TransferLeader { group, to } => match node.group(&group) {
                Some(g) => {
                    let transferred = g.transfer_leader(crate::types::node_id(&to));
                    Box::pin(async move { Response::Transferred(transferred.await) })
                }
                None => Box::pin(async move {
                    Response::Transferred(Err(format!("no group {group} on this node")))
                }),
            },
            Request::App(bytes) => {
                let app = node.app.lock().unwrap_or_else(|e| e.into_inner()).clone();
                let from = from.to_owned();
                match app {
                    Some(app) => {
                        let answer = app.handle(&from, bytes);
                        Box::pin(async move { Response::App(answer.await) })
                    }
                    None => Box::pin(async { Response::App(Err("the node is starting".into())) }),
                }
            }
        }
    }
}

/// Any group whose state machine takes snapshots as bytes is an endpoint.
impl<SM> GroupEndpoint for openraft::Raft<TypeConfig, SM>
where
    SM: openraft::storage::RaftStateMachine<TypeConfig, SnapshotData = Cursor<Vec<u8>>>,
{
    fn raft(&self, rpc: RaftRpc) -> BoxFuture<'static, Result<RaftReply, String>> {
        let raft = self.clone();
        Box::pin(async move {
            match rpc {
                RaftRpc::Append(r) => raft
                    .append_entries(r)
                    .await
                    .map(RaftReply::Append)
                    .map_err(|e| e.to_string()),
                RaftRpc::Vote(r) => raft
                    .vote(r)
                    .await
                    .map(RaftReply::Vote)
                    .map_err(|e| e.to_string()),
                RaftRpc::PreVote(r) => raft
                    .pre_vote(r)
                    .await
                    .map(RaftReply::Vote)
                    .map_err(|e| e.to_string()),
                RaftRpc::Snapshot { vote, meta, data } => raft
                    .install_full_snapshot(
                        vote,
                        openraft::storage::Snapshot {
                            meta,
                            snapshot: Cursor::new(data),
                        },
                    )
                    .await
                    .map(RaftReply::Snapshot)
                    .map_err(|e| e.to_string()),
                RaftRpc::TransferLeader(r) => raft
                    .handle_transfer_leader(r)
                    .await
                    .map(RaftReply::TransferLeader)
                    .map_err(|e| e.to_string()),
            }
        })
    }

    fn wait_applied(&self, index: u64, within: std::time::Duration) -> BoxFuture<'static, bool> {
        let raft = self.clone();
        Box::pin(async move {
            raft.wait(Some(within))
                .applied_index_at_least(Some(index), "wait applied")
                .await
                .is_ok()
        })
    }

    fn figures(&self) -> crate::group::LogFigures {
        use openraft::type_config::async_runtime::WatchReceiver;
        crate::group::figures_of(&crate::group::Known::of(&self.metrics().borrow_watched()))
    }

    fn leader(&self) -> Option<NodeId> {
        use openraft::type_config::async_runtime::WatchReceiver;
        self.metrics().borrow_watched().current_leader
    }

    fn transfer_leader(&self, to: NodeId) -> BoxFuture<'static, Result<(), String>> {
        use openraft::type_config::async_runtime::WatchReceiver;
        let leads = {
            let metrics = self.metrics();
            let metrics = metrics.borrow_watched();
            metrics.current_leader == Some(metrics.id)
        };
        let raft = self.clone();
        Box::pin(async move {
            if !leads {
                return Err("this member does not lead the group".into());
            }
            raft.trigger()
                .transfer_leader(to)
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn propose(&self, proposal: Proposal) -> BoxFuture<'static, Result<u64, ProposeRefused>> {
        // A quiet group's leader ticks while it is in use (see `Group::wake`); its own member
        // turns it off again once idle.
        self.runtime_config().tick(true);
        let raft = self.clone();
        Box::pin(async move {
            use openraft::errors::{ClientWriteError, RaftError};
            match raft.client_write(proposal).await {
                Ok(written) => {
                    // The followers learn of the commit now rather than at the next heartbeat.
                    let _ = raft.trigger().heartbeat().await;
                    Ok(written.log_id.index)
                }
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                    Err(ProposeRefused::NotLeader {
                        leader: f.leader_id,
                    })
                }
                Err(e) => Err(ProposeRefused::Failed(e.to_string())),
            }
        })
    }
}
