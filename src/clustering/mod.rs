//! Warren as one node of a cluster. The `warren-cluster` crate does the consensus (openraft) and
//! the cluster link; this module starts them from the broker's settings and holds what the broker
//! asks of them.
//!
//! - `settings.rs`: the cluster flags, checked.
//! - `metadata.rs`: the metadata group's applier on this node, and changing the metadata.
//! - `state/`: what the metadata log adds up to, as one pure value (the group's snapshot), and
//!   the diff that brings the broker from one such value to another (installing a snapshot).
//! - `definitions.rs`: the vhosts' definition log of a cluster member (the metadata group).
//! - `forward.rs`: what this node does for other nodes' proxies of its queues, and with the
//!   deliveries they relay to its own proxies' consumers.
//! - `node_down.rs`: a node unreachable for a while loses its transient queues, as in RabbitMQ.
//!
//! Start-up: [`Connected::start`] opens the link (the broker's queues need it to reach other
//! nodes' queues), the broker opens with its placement and definition log, then
//! [`Connected::join`] starts the metadata group, which installs its last snapshot into the
//! broker and replays the log after it.
//!
//! A node started without cluster flags is a cluster of one: its metadata group has one member
//! (named `local`, so that a changed host name does not strand it) and no listener.

pub mod definitions;
pub mod forward;
pub mod metadata;
mod node_down;
pub mod settings;
pub mod state;

use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::net::TcpListener;
use warren_cluster::group::{Group, MemberStatus, Timing};
use warren_cluster::link::{Link, LinkConfig, LinkTls, Request};
use warren_cluster::node::ClusterNode;
use warren_cluster::NodeId;
use warren_cluster::{node_id, ClusterError, LogDb, Node};

pub use metadata::{Metadata, MetadataCommand};
pub use settings::{Settings, SettingsError};

use crate::broker::Broker;
use crate::definitions::DefinitionLog;
use crate::message::Message;
use crate::queue::factory::Placement;
use crate::queue::quorum::host::Replication;
use crate::queue::remote::wire::{self, Forward, WireMessage};
use crate::queue::remote::{Proxies, Remote};
use definitions::ClusterDefinitionLog;
use forward::{Forwarding, ForwardingHandler};
use metadata::MetadataApplier;

/// The metadata group's name on the link.
const METADATA: &str = "metadata";
/// The node's Raft database, under `data_dir/cluster`: every group's log and snapshot.
const RAFT_DB: &str = "raft.redb";
/// The name a node alone goes by in its one-member group.
const ALONE: &str = "local";

#[derive(Debug, Error)]
pub enum ClusterStartError {
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error("cannot listen for cluster peers on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start the metadata group: {0}")]
    Group(#[from] ClusterError),
    #[error(transparent)]
    Tls(#[from] warren_cluster::link::tls::LinkTlsError),
}

/// The metadata log on this node, as `/api/nodes` shows it for the node itself: its entries run
/// from `first_index` to `last_index`; those before went into the snapshot.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MetadataLog {
    pub first_index: u64,
    pub last_index: u64,
    pub entries: u64,
    /// The last entry the snapshot holds.
    pub snapshot_index: Option<u64>,
}

pub struct Clustering {
    settings: Settings,
    node: Arc<ClusterNode>,
    pub metadata: Arc<Metadata>,
    /// This node's Raft database: every group's log and snapshot.
    raft_db: LogDb,
}

/// A node's cluster link, before its metadata group starts: what the broker's queues need to
/// reach other nodes' queues.
pub struct Connected {
    settings: Settings,
    node: Arc<ClusterNode>,
    proxies: Arc<Proxies>,
    /// The vhosts' definition log (a cluster member's; none alone).
    definitions: Option<Arc<ClusterDefinitionLog>>,
    /// This node's Raft database: every group's log and snapshot.
    raft_db: LogDb,
    /// When this process started (ns since the epoch).
    process: u64,
    /// Quorum queue members leaving their group (see `Replication::leaving`).
    leaving_members: crate::queue::quorum::host::LeavingMembers,
    /// Other nodes taken for gone, for the quorum queue members here (see `Replication::gone`).
    nodes_gone: crate::queue::quorum::host::NodesGone,
}

impl Connected {
    /// Starts the cluster link (listening for peers, and calling them, if the node has any) and
    /// opens the node's Raft database under `data_dir/cluster`.
    pub async fn start(
        settings: Settings,
        data_dir: &std::path::Path,
    ) -> Result<Connected, ClusterStartError> {
        let link = match settings.listen {
            None => Link::start(LinkConfig::new(ALONE, "", Vec::new()), None),
            Some(addr) => {
                let listener = TcpListener::bind(addr)
                    .await
                    .map_err(|source| ClusterStartError::Listen { addr, source })?;
                let mut config = LinkConfig::new(
                    settings.name.clone(),
                    settings.advertise.clone(),
                    settings.secret.clone(),
                );
                if let Some(files) = &settings.tls {
                    config.tls = Some(LinkTls::from_pem_files(&files.cert, &files.key, &files.ca)?);
                }
                Link::start(config, Some(listener))
            }
        };
        let definitions = (!settings.alone()).then(|| Arc::new(ClusterDefinitionLog::default()));
        let dir = data_dir.join("cluster");
        let raft_db = tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&dir).map_err(|e| {
                ClusterError::Failed(format!("cannot create {}: {e}", dir.display()))
            })?;
            LogDb::open(dir.join(RAFT_DB))
        })
        .await
        .map_err(ClusterError::from)??;
        let process = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        Ok(Connected {
            node: ClusterNode::new(link),
            proxies: Arc::new(Proxies::default()),
            leaving_members: Default::default(),
            nodes_gone: Default::default(),
            definitions,
            settings,
            raft_db,
            process,
        })
    }

    /// Where the broker's queues live, and how to reach the others.
    pub fn placement(&self) -> Placement {
        match self.settings.alone() {
            true => Placement::Alone,
            false => Placement::Member {
                me: self.settings.name.as_str().into(),
                remote: Remote {
                    link: self.node.link().clone(),
                    proxies: self.proxies.clone(),
                },
                replication: Replication {
                    node: self.node.clone(),
                    db: self.raft_db.clone(),
                    process: self.process,
                    nodes: self.settings.members.clone().into(),
                    leaving: self.leaving_members.clone(),
                    dormant_after: self.settings.quorum_dormant_after,
                    gone: self.nodes_gone.clone(),
                },
            },
        }
    }

    /// The definition log the broker's vhosts use: the metadata group's, in a cluster.
    pub fn definition_log(&self) -> Option<Arc<dyn DefinitionLog>> {
        self.definitions
            .clone()
            .map(|log| log as Arc<dyn DefinitionLog>)
    }

    /// Starts this node's member of the metadata group (files under `data_dir/cluster`), which
    /// applies definitions to `broker`'s vhosts, and answers other nodes' forwarded requests.
    pub async fn join(
        self,
        broker: &Arc<Broker>,
        commit_timeout: Duration,
    ) -> Result<Clustering, ClusterStartError> {
        let me = if self.settings.alone() {
            ALONE.to_owned()
        } else {
            self.settings.name.clone()
        };
        let members = match self.settings.alone() {
            true => vec![Node {
                name: ALONE.to_owned(),
                addr: String::new(),
            }],
            // In one order on every node: the first initializes the group (see Group::start).
            false => {
                let mut members = self.settings.members.clone();
                members.sort_by(|a, b| a.name.cmp(&b.name));
                members
            }
        };
        if !self.settings.alone() {
            broker.replies.set_node(node_id(&me));
            stop_when_the_log_fails(self.raft_db.failed());
        }
        let applier = Arc::new(MetadataApplier::new(node_id(&me), self.process));
        applier.set_broker(Arc::downgrade(broker));
        let forwarding = Forwarding::new(
            Arc::downgrade(broker),
            self.node.link().clone(),
            self.proxies.clone(),
        );
        self.node
            .set_app_handler(Arc::new(ForwardingHandler(forwarding)));
        let raft_db = self.raft_db.clone();
        let group = Group::start(
            self.node.clone(),
            METADATA,
            &raft_db,
            applier.clone(),
            &members,
            // The snapshot holds everything the entries did (`state`): the log is compacted
            // behind it, and a start installs it, then replays what follows.
            Timing {
                snapshot_every: Some(self.settings.snapshot_every),
                ..Timing::default()
            },
        )
        .await?;
        let metadata = Arc::new(Metadata::new(group, applier.clone(), commit_timeout));
        applier.set_recorder(&metadata);
        if let Some(log) = &self.definitions {
            log.attach(metadata.clone());
        }
        for peer in self.settings.members.iter().filter(|m| m.name != me) {
            if let Some(link) = self.node.link().watch_peer(&peer.name) {
                tokio::spawn(node_down::watch(
                    peer.name.clone(),
                    me.clone(),
                    link,
                    metadata.clone(),
                    Arc::downgrade(broker),
                ));
            }
        }
        Ok(Clustering {
            metadata,
            settings: self.settings,
            node: self.node,
            raft_db,
        })
    }
}

impl Clustering {
    /// Another node's memory, disk and alarms, if it answers within a second.
    pub async fn figures_of(&self, peer: &str) -> Option<crate::broker::NodeFigures> {
        let bytes = wire::encode(&Forward::NodeFigures).ok()?;
        let answer = self
            .node
            .link()
            .request(peer, Request::App(bytes), Duration::from_secs(1))
            .await
            .ok()?;
        let warren_cluster::link::Response::App(Ok(bytes)) = answer else {
            return None;
        };
        match wire::decode(&bytes).ok()? {
            wire::Reply::Json(json) => serde_json::from_slice(&json).ok(),
            _ => None,
        }
    }

    /// Sends a direct reply to the node with id `node` (fire and forget).
    pub fn send_direct_reply(&self, node: NodeId, routing_key: &str, message: &Message) {
        let Some(peer) = self
            .settings
            .members
            .iter()
            .find(|m| node_id(&m.name) == node)
            .map(|m| m.name.clone())
        else {
            return;
        };
        let forward = Forward::DirectReply {
            routing_key: routing_key.to_owned(),
            message: WireMessage::of(message),
        };
        let Ok(bytes) = wire::encode(&forward) else {
            return;
        };
        let link = self.node.link().clone();
        tokio::spawn(async move {
            if let Ok(call) = link.call(&peer, Request::App(bytes)).await {
                let _ = call.answer(Duration::from_secs(30)).await;
            }
        });
    }

    /// This node's Raft database, where its groups keep their logs and snapshots.
    pub fn raft_db(&self) -> &LogDb {
        &self.raft_db
    }

    /// The metadata log's span on this node.
    pub fn metadata_log(&self) -> MetadataLog {
        let log = self.metadata.group().log_figures();
        let first_index = log.purged.map_or(0, |purged| purged + 1);
        let last_index = log.last.unwrap_or(0);
        let entries = log
            .last
            .map_or(0, |last| (last + 1).saturating_sub(first_index));
        MetadataLog {
            first_index,
            last_index,
            entries,
            snapshot_index: log.snapshot,
        }
    }

    /// This node's name.
    pub fn name(&self) -> &str {
        &self.settings.name
    }

    pub fn alone(&self) -> bool {
        self.settings.alone()
    }

    /// The cluster's members and which of them this node reaches; alone, just this node.
    pub fn members(&self) -> Vec<MemberStatus> {
        if self.alone() {
            return vec![MemberStatus {
                name: self.settings.name.clone(),
                addr: String::new(),
                reachable: true,
                leader: true,
            }];
        }
        let members = self.metadata.group().members();
        if !members.is_empty() {
            return members;
        }
        // Just started, before the group has its membership: the seed list.
        let link = self.node.link();
        let mut seeds: Vec<MemberStatus> = self
            .settings
            .members
            .iter()
            .map(|m| MemberStatus {
                name: m.name.clone(),
                addr: m.addr.clone(),
                reachable: m.name == self.settings.name || link.is_connected(&m.name),
                leader: false,
            })
            .collect();
        seeds.sort_by(|a, b| a.name.cmp(&b.name));
        seeds
    }

    /// The cluster's name: the one set, else the name of its first seed node (RabbitMQ names a
    /// cluster after the node that formed it).
    pub fn cluster_name(&self) -> String {
        if let Some(name) = self.metadata.cluster_name() {
            return name;
        }
        let mut names: Vec<&str> = self
            .settings
            .members
            .iter()
            .map(|m| m.name.as_str())
            .collect();
        names.sort();
        names.first().map(|n| n.to_string()).unwrap_or_default()
    }

    /// Stops the metadata group and the link.
    pub async fn stop(&self) {
        self.metadata.group().shutdown().await;
        self.node.link().stop();
    }
}

/// A cluster member whose Raft log can no longer be written (its disk full, an I/O error) stops
/// the process (exit status 74, EX_IOERR): every group on the node has stopped with the file
/// (redb takes no more writes until it is opened again), and a member that stays up with dead
/// groups holds on to clients and stale leaders that never recover. Started again once the disk
/// is fixed (a supervisor's restart, `restart: on-failure` in docker/), it catches up from the
/// others. A node alone keeps running: its messages are in its store, and only definition
/// changes need the log.
fn stop_when_the_log_fails(mut failed: tokio::sync::watch::Receiver<Option<String>>) {
    tokio::spawn(async move {
        let Ok(reason) = failed.wait_for(Option::is_some).await.map(|r| r.clone()) else {
            return;
        };
        tracing::error!(
            "the Raft log cannot be written ({}): stopping this node; start it again once its disk is fixed",
            reason.unwrap_or_default()
        );
        // Let the log line out before the process goes.
        tokio::time::sleep(Duration::from_millis(100)).await;
        std::process::exit(74);
    });
}
