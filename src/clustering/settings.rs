//! The cluster flags (`--node-name`, `--cluster-listen`, `--cluster-peers`, the secret), checked
//! and turned into what the node starts with.

use std::net::SocketAddr;

use thiserror::Error;
use warren_cluster::Node;

use crate::config::Config;

#[derive(Debug, Error)]
pub enum SettingsError {
    #[error("--cluster-peers: '{0}' is not NAME@HOST:PORT")]
    BadPeer(String),
    #[error("--cluster-peers needs --cluster-listen (where this node's peers call it)")]
    NoListener,
    #[error("--cluster-listen needs --cluster-peers (the cluster's seed nodes)")]
    NoPeers,
    #[error("a cluster needs a shared secret: --cluster-secret-file or WARREN_CLUSTER_SECRET")]
    NoSecret,
    #[error("give the cluster secret once: --cluster-secret-file or WARREN_CLUSTER_SECRET")]
    TwoSecrets,
    #[error("cannot read the cluster secret file {path}: {source}")]
    SecretFile {
        path: String,
        source: std::io::Error,
    },
    #[error("the cluster secret is empty")]
    EmptySecret,
    #[error("--cluster-peers names node {0} twice")]
    Duplicate(String),
    #[error("--cluster-tls needs --tls-cert-file, --tls-key-file and --tls-ca-file")]
    TlsFiles,
}

/// The PEM files of the cluster link's TLS: this node's certificate and key, the cluster's CA.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
    pub ca: std::path::PathBuf,
}

/// How this node takes part in a cluster.
#[derive(Debug, Clone)]
pub struct Settings {
    pub name: String,
    /// Where the cluster link listens; none when the node runs alone.
    pub listen: Option<SocketAddr>,
    /// Where peers call this node: its own entry in the seed list, else the listener's address.
    pub advertise: String,
    pub secret: Vec<u8>,
    /// The seed members, this node among them.
    pub members: Vec<Node>,
    /// TLS on the link (`--cluster-tls`).
    pub tls: Option<TlsFiles>,
    /// The metadata group's entries between snapshots (`--cluster-snapshot-every`).
    pub snapshot_every: u64,
    /// How long a quorum queue's member stays idle before it goes dormant
    /// (`--quorum-dormant-after`).
    pub quorum_dormant_after: Option<std::time::Duration>,
}

/// `--quorum-dormant-after`, 0 for never.
fn dormant_after(config: &Config) -> Option<std::time::Duration> {
    (config.quorum_dormant_after > 0)
        .then(|| std::time::Duration::from_millis(config.quorum_dormant_after))
}

impl Settings {
    pub fn from_config(config: &Config) -> Result<Settings, SettingsError> {
        let name = config.node_name();
        let mut members: Vec<Node> = Vec::new();
        for spec in &config.cluster_peers {
            let spec = spec.trim();
            if spec.is_empty() {
                continue;
            }
            // A name may itself hold an '@' (warren@host): the address follows the last one.
            let (peer, addr) = spec
                .rsplit_once('@')
                .filter(|(n, a)| !n.is_empty() && a.rsplit_once(':').is_some())
                .ok_or_else(|| SettingsError::BadPeer(spec.to_owned()))?;
            if members.iter().any(|m| m.name == peer) {
                return Err(SettingsError::Duplicate(peer.to_owned()));
            }
            members.push(Node {
                name: peer.to_owned(),
                addr: addr.to_owned(),
            });
        }
        match (config.cluster_listen, members.is_empty()) {
            (None, true) => {
                // Alone: a one-node cluster whose metadata group never talks to anyone.
                return Ok(Settings {
                    advertise: String::new(),
                    listen: None,
                    secret: Vec::new(),
                    members: vec![Node {
                        name: name.clone(),
                        addr: String::new(),
                    }],
                    name,
                    tls: None,
                    snapshot_every: config.cluster_snapshot_every,
                    quorum_dormant_after: dormant_after(config),
                });
            }
            (None, false) => return Err(SettingsError::NoListener),
            (Some(_), true) => return Err(SettingsError::NoPeers),
            (Some(_), false) => {}
        }
        let listen = config.cluster_listen.ok_or(SettingsError::NoListener)?;
        let advertise = match members.iter().find(|m| m.name == name) {
            Some(me) => me.addr.clone(),
            None => {
                let me = Node {
                    name: name.clone(),
                    addr: listen.to_string(),
                };
                members.push(me.clone());
                me.addr
            }
        };
        let secret = match (&config.cluster_secret_file, &config.cluster_secret) {
            (Some(_), Some(_)) => return Err(SettingsError::TwoSecrets),
            (None, None) => return Err(SettingsError::NoSecret),
            (None, Some(secret)) => secret.trim().as_bytes().to_vec(),
            (Some(path), None) => std::fs::read_to_string(path)
                .map_err(|source| SettingsError::SecretFile {
                    path: path.display().to_string(),
                    source,
                })?
                .trim()
                .as_bytes()
                .to_vec(),
        };
        if secret.is_empty() {
            return Err(SettingsError::EmptySecret);
        }
        let tls = match config.cluster_tls {
            false => None,
            true => match (
                &config.tls_cert_file,
                &config.tls_key_file,
                &config.tls_ca_file,
            ) {
                (Some(cert), Some(key), Some(ca)) => Some(TlsFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                    ca: ca.clone(),
                }),
                _ => return Err(SettingsError::TlsFiles),
            },
        };
        Ok(Settings {
            name,
            listen: Some(listen),
            advertise,
            secret,
            members,
            tls,
            snapshot_every: config.cluster_snapshot_every,
            quorum_dormant_after: dormant_after(config),
        })
    }

    /// Whether the node runs alone (no cluster flags).
    pub fn alone(&self) -> bool {
        self.listen.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(peers: &[&str], listen: Option<&str>, secret: Option<&str>) -> Config {
        let mut c = Config::ephemeral("/tmp/unused".into());
        c.node_name = Some("warren@n1".into());
        c.cluster_peers = peers.iter().map(|p| p.to_string()).collect();
        c.cluster_listen = listen.map(|l| l.parse().unwrap());
        c.cluster_secret = secret.map(str::to_owned);
        c
    }

    #[test]
    fn peers_parse_with_names_that_hold_an_at_sign() {
        let s = Settings::from_config(&config(
            &["warren@n1@127.0.0.1:25672", "warren@n2@127.0.0.1:25673"],
            Some("0.0.0.0:25672"),
            Some("cookie"),
        ))
        .unwrap();
        assert_eq!(s.advertise, "127.0.0.1:25672");
        assert_eq!(s.members.len(), 2);
        assert_eq!(s.members[1].name, "warren@n2");
        assert!(!s.alone());
    }

    #[test]
    fn this_node_joins_the_seed_list_if_missing() {
        let s = Settings::from_config(&config(&["n2@127.0.0.1:2"], Some("127.0.0.1:1"), Some("c")))
            .unwrap();
        assert_eq!(s.members.len(), 2);
        assert_eq!(s.advertise, "127.0.0.1:1");
    }

    #[test]
    fn mistakes_are_refused_with_their_reason() {
        let e = |peers: &[&str], listen, secret| {
            Settings::from_config(&config(peers, listen, secret))
                .unwrap_err()
                .to_string()
        };
        assert!(e(&["n2"], Some("127.0.0.1:1"), Some("c")).contains("NAME@HOST:PORT"));
        assert!(e(&["n2@h:1"], None, Some("c")).contains("--cluster-listen"));
        assert!(e(&[], Some("127.0.0.1:1"), Some("c")).contains("--cluster-peers"));
        assert!(e(&["n2@h:1"], Some("127.0.0.1:1"), None).contains("secret"));
        assert!(e(&["n2@h:1"], Some("127.0.0.1:1"), Some("  ")).contains("empty"));
        assert!(e(&["n2@h:1", "n2@h:2"], Some("127.0.0.1:1"), Some("c")).contains("twice"));
        assert!(Settings::from_config(&config(&[], None, None))
            .unwrap()
            .alone());
    }
}
