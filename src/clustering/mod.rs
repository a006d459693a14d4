//! Warren as one node of a cluster. The `warren-cluster` crate does the consensus (openraft) and
//! the cluster link; this module starts them from the broker's settings and holds what the broker
//! asks of them.
//!
//! - `settings.rs`: the cluster flags, checked.
//! - `metadata.rs`: the metadata group's state on this node, and changing it.
//!
//! A node started without cluster flags is a cluster of one: its metadata group has one member
//! (named `local`, so that a changed host name does not strand it) and no listener.

pub mod metadata;
pub mod settings;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::net::TcpListener;
use warren_cluster::group::{Group, MemberStatus, Timing};
use warren_cluster::link::{Link, LinkConfig};
use warren_cluster::node::ClusterNode;
use warren_cluster::{ClusterError, Node};

pub use metadata::{Metadata, MetadataCommand};
pub use settings::{Settings, SettingsError};

use metadata::MetadataApplier;

/// The metadata group's name on the link.
const METADATA: &str = "metadata";
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
}

pub struct Clustering {
    settings: Settings,
    node: Arc<ClusterNode>,
    pub metadata: Metadata,
}

impl Clustering {
    /// Starts this node's cluster link (if it has peers) and its member of the metadata group,
    /// with its files under `data_dir/cluster`.
    pub async fn start(
        settings: Settings,
        data_dir: &Path,
        commit_timeout: Duration,
    ) -> Result<Clustering, ClusterStartError> {
        let (link, members) = match settings.listen {
            None => {
                let config = LinkConfig::new(ALONE, "", Vec::new());
                let me = Node {
                    name: ALONE.to_owned(),
                    addr: String::new(),
                };
                (Link::start(config, None), vec![me])
            }
            Some(addr) => {
                let listener = TcpListener::bind(addr)
                    .await
                    .map_err(|source| ClusterStartError::Listen { addr, source })?;
                let config = LinkConfig::new(
                    settings.name.clone(),
                    settings.advertise.clone(),
                    settings.secret.clone(),
                );
                (
                    Link::start(config, Some(listener)),
                    settings.members.clone(),
                )
            }
        };
        let node = ClusterNode::new(link);
        let applier = Arc::new(MetadataApplier::default());
        let group = Group::start(
            node.clone(),
            METADATA,
            &data_dir.join("cluster").join(METADATA),
            applier.clone(),
            &members,
            Timing::default(),
        )
        .await?;
        Ok(Clustering {
            metadata: Metadata::new(group, applier, commit_timeout),
            settings,
            node,
        })
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
        self.metadata.group().members()
    }

    /// The cluster's name: the one set, else the name of its first seed node (RabbitMQ names a
    /// cluster after the node that formed it).
    pub fn cluster_name(&self) -> String {
        if let Some(name) = self.metadata.state().cluster_name {
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
