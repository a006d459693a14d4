//! Broker settings, from command-line flags, `WARREN_*` environment variables or a config file
//! (in that order of precedence; see [`crate::config_file`]).

use std::net::SocketAddr;
use std::path::PathBuf;

use warren_storage::{EncryptionKey, StorageError};

use crate::auth::Mechanism;

#[derive(clap::Args, Clone, Debug)]
pub struct Config {
    /// A TOML file of settings named like these flags (`amqp_listen = "0.0.0.0:5672"`); flags
    /// and WARREN_* variables override it.
    #[arg(long, env = "WARREN_CONFIG")]
    pub config: Option<PathBuf>,
    /// AMQP 0-9-1 listener.
    #[arg(long, env = "WARREN_AMQP_LISTEN", default_value = "0.0.0.0:5672")]
    pub amqp_listen: SocketAddr,
    /// AMQPS (AMQP over TLS) listener, e.g. 0.0.0.0:5671; none by default. Needs
    /// --tls-cert-file and --tls-key-file.
    #[arg(long, env = "WARREN_AMQPS_LISTEN")]
    pub amqps_listen: Option<SocketAddr>,
    /// The server's certificate chain (PEM), leaf first (RabbitMQ's `ssl_options.certfile`).
    #[arg(long, env = "WARREN_TLS_CERT_FILE")]
    pub tls_cert_file: Option<PathBuf>,
    /// The server's private key (PEM; `ssl_options.keyfile`).
    #[arg(long, env = "WARREN_TLS_KEY_FILE")]
    pub tls_key_file: Option<PathBuf>,
    /// CA certificates (PEM) that sign client certificates (`ssl_options.cacertfile`).
    #[arg(long, env = "WARREN_TLS_CA_FILE")]
    pub tls_ca_file: Option<PathBuf>,
    /// Ask clients for a certificate and verify it (`ssl_options.verify = verify_peer`).
    #[arg(long, env = "WARREN_TLS_VERIFY_PEER")]
    pub tls_verify_peer: bool,
    /// With --tls-verify-peer, refuse clients without a certificate
    /// (`ssl_options.fail_if_no_peer_cert`).
    #[arg(long, env = "WARREN_TLS_FAIL_IF_NO_PEER_CERT")]
    pub tls_fail_if_no_peer_cert: bool,
    /// HTTP listener (health check; the management API lives here).
    #[arg(long, env = "WARREN_HTTP_LISTEN", default_value = "0.0.0.0:15672")]
    pub http_listen: SocketAddr,
    /// Where durable state is kept.
    #[arg(long, env = "WARREN_DATA_DIR", default_value = "./warren-data")]
    pub data_dir: PathBuf,
    /// Heartbeat interval offered to clients, in seconds (0 disables).
    #[arg(long, env = "WARREN_HEARTBEAT", default_value_t = 60)]
    pub heartbeat: u16,
    /// Largest frame offered to clients, in octets: at least 4096 (the protocol's minimum), or
    /// 0 for no limit.
    #[arg(long, env = "WARREN_FRAME_MAX", default_value_t = 131_072, value_parser = parse_frame_max)]
    pub frame_max: u32,
    /// How many channels a connection may open; 0 for no limit (65535), as in RabbitMQ.
    #[arg(long, env = "WARREN_CHANNEL_MAX", default_value_t = 2047)]
    pub channel_max: u16,
    /// Largest message body accepted, in octets.
    #[arg(long, env = "WARREN_MAX_MESSAGE_SIZE", default_value_t = 134_217_728)]
    pub max_message_size: u64,
    /// A delivery left unacknowledged this long (milliseconds) closes its channel with 406, as
    /// RabbitMQ's consumer_timeout does; 0 disables.
    #[arg(long, env = "WARREN_CONSUMER_TIMEOUT", default_value_t = 1_800_000)]
    pub consumer_timeout: u64,
    /// How often message rates (the management API's `*_details.rate`) are sampled, in
    /// milliseconds (RabbitMQ's `collect_statistics_interval`).
    #[arg(
        long,
        env = "WARREN_COLLECT_STATISTICS_INTERVAL",
        default_value_t = 5000
    )]
    pub collect_statistics_interval: u64,
    /// Free disk space (bytes) under the data directory below which publishers are blocked.
    #[arg(long, env = "WARREN_DISK_FREE_LIMIT", default_value_t = 50_000_000)]
    pub disk_free_limit: u64,
    /// Publishers are blocked once the messages held in memory pass this fraction of the
    /// machine's (or the cgroup's) memory (RabbitMQ's `vm_memory_high_watermark.relative`).
    #[arg(long, env = "WARREN_VM_MEMORY_HIGH_WATERMARK", default_value_t = 0.4)]
    pub vm_memory_high_watermark: f64,
    /// The same limit in bytes, instead of a fraction (`vm_memory_high_watermark.absolute`).
    #[arg(long, env = "WARREN_VM_MEMORY_HIGH_WATERMARK_ABSOLUTE")]
    pub vm_memory_high_watermark_absolute: Option<u64>,
    /// Body bytes of ready messages a durable queue keeps in memory; persistent messages beyond
    /// it are paged out to disk and read back when consumers near them.
    #[arg(long, env = "WARREN_QUEUE_MEMORY_LIMIT", default_value_t = 64 << 20)]
    pub queue_memory_limit: u64,
    /// A file holding the key (64 hex digits) that encrypts stored messages at rest
    /// (XChaCha20-Poly1305). A database created with a key needs it at every start.
    #[arg(long, env = "WARREN_ENCRYPTION_KEY_FILE")]
    pub encryption_key_file: Option<PathBuf>,
    /// The key itself (64 hex digits); meant for the environment, not the command line.
    #[arg(
        long,
        env = "WARREN_ENCRYPTION_KEY",
        hide_env_values = true,
        hide = true
    )]
    pub encryption_key: Option<String>,
    /// The user created at start (RabbitMQ's `default_user`); it may use every vhost. It may
    /// only connect from loopback if --loopback-users names it (by default, `guest`).
    #[arg(long, env = "WARREN_DEFAULT_USER", default_value = "guest")]
    pub default_user: String,
    /// Users who may only connect from loopback (RabbitMQ's `loopback_users`); `none` for nobody,
    /// as in RabbitMQ's container image.
    #[arg(
        long,
        env = "WARREN_LOOPBACK_USERS",
        value_delimiter = ',',
        default_value = "guest"
    )]
    pub loopback_users: Vec<String>,
    /// The default user's password (RabbitMQ's `default_pass`); meant for the environment.
    #[arg(
        long,
        env = "WARREN_DEFAULT_PASS",
        default_value = "guest",
        hide_env_values = true,
        hide_default_value = true
    )]
    pub default_pass: String,
    /// SASL mechanisms offered to clients, in order (RabbitMQ's `auth_mechanisms`): PLAIN,
    /// AMQPLAIN, RABBIT-CR-DEMO.
    #[arg(
        long,
        env = "WARREN_AUTH_MECHANISMS",
        value_delimiter = ',',
        default_value = "PLAIN,AMQPLAIN"
    )]
    pub auth_mechanisms: Vec<Mechanism>,
    /// A definitions file (RabbitMQ's JSON format: users, vhosts, permissions, queues,
    /// exchanges, bindings) imported at every start, before clients are accepted (RabbitMQ's
    /// `load_definitions`). A file that cannot be imported stops the start.
    #[arg(long, env = "WARREN_LOAD_DEFINITIONS")]
    pub load_definitions: Option<PathBuf>,
    /// This node's name in a cluster (RabbitMQ's node name): `warren@<hostname>` by default.
    #[arg(long, env = "WARREN_NODE_NAME")]
    pub node_name: Option<String>,
    /// The cluster link's listener, e.g. 0.0.0.0:25672. With --cluster-peers, the node is a
    /// member of a cluster; without, it runs alone.
    #[arg(long, env = "WARREN_CLUSTER_LISTEN")]
    pub cluster_listen: Option<SocketAddr>,
    /// The cluster's seed nodes, `NAME@HOST:PORT,...` (this node's own entry may be among them).
    /// The cluster forms once a majority of them is up; every node is started with the same list.
    #[arg(long, env = "WARREN_CLUSTER_PEERS", value_delimiter = ',')]
    pub cluster_peers: Vec<String>,
    /// A file holding the cluster's shared secret (RabbitMQ's Erlang cookie): a node that does
    /// not know it is refused on the cluster link.
    #[arg(long, env = "WARREN_CLUSTER_SECRET_FILE")]
    pub cluster_secret_file: Option<PathBuf>,
    /// The cluster's shared secret itself (rather than --cluster-secret-file).
    #[arg(long, env = "WARREN_CLUSTER_SECRET", hide_env_values = true)]
    pub cluster_secret: Option<String>,
    /// TLS on the cluster link, with the AMQPS certificate and key (--tls-cert-file,
    /// --tls-key-file): every node presents its certificate and requires its peers', signed by
    /// --tls-ca-file, naming the host it is called at.
    #[arg(long, env = "WARREN_CLUSTER_TLS")]
    pub cluster_tls: bool,
    /// How long a definition change (a declare, a bind, a delete) waits for a majority of the
    /// cluster before it is refused, in milliseconds.
    #[arg(long, env = "WARREN_CLUSTER_COMMIT_TIMEOUT", default_value_t = 10_000)]
    pub cluster_commit_timeout: u64,
    /// The metadata log is compacted into a snapshot after this many entries (and a node that
    /// lags further behind is sent the snapshot). A tuning knob, for tests mostly.
    #[arg(
        long,
        env = "WARREN_CLUSTER_SNAPSHOT_EVERY",
        default_value_t = 4096,
        value_parser = clap::value_parser!(u64).range(1..),
        hide = true
    )]
    pub cluster_snapshot_every: u64,
    /// A quorum queue's member idle this long (milliseconds; 0: never) stops its Raft instance
    /// until it is used again, so that idle queues cost little memory. A tuning knob, for tests
    /// mostly.
    #[arg(
        long,
        env = "WARREN_QUORUM_DORMANT_AFTER",
        default_value_t = 30_000,
        hide = true
    )]
    pub quorum_dormant_after: u64,
}

impl Config {
    /// This node's name: `--node-name`, or `warren@<short hostname>` as RabbitMQ's default is
    /// `rabbit@<short hostname>`.
    pub fn node_name(&self) -> String {
        if let Some(name) = &self.node_name {
            return name.clone();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let short = host.trim().split('.').next().unwrap_or_default();
        format!(
            "warren@{}",
            if short.is_empty() { "localhost" } else { short }
        )
    }

    /// Settings for tests and embedding: loopback listeners on free ports.
    pub fn ephemeral(data_dir: PathBuf) -> Self {
        Config {
            config: None,
            amqp_listen: ([127, 0, 0, 1], 0).into(),
            http_listen: ([127, 0, 0, 1], 0).into(),
            amqps_listen: None,
            tls_cert_file: None,
            tls_key_file: None,
            tls_ca_file: None,
            tls_verify_peer: false,
            tls_fail_if_no_peer_cert: false,
            data_dir,
            heartbeat: 60,
            frame_max: 131_072,
            channel_max: 2047,
            max_message_size: 134_217_728,
            consumer_timeout: 1_800_000,
            collect_statistics_interval: 5000,
            disk_free_limit: 50_000_000,
            vm_memory_high_watermark: 0.4,
            vm_memory_high_watermark_absolute: None,
            queue_memory_limit: 64 << 20,
            encryption_key_file: None,
            encryption_key: None,
            default_user: "guest".to_owned(),
            default_pass: "guest".to_owned(),
            loopback_users: vec!["guest".to_owned()],
            auth_mechanisms: vec![Mechanism::Plain, Mechanism::Amqplain],
            load_definitions: None,
            node_name: None,
            cluster_listen: None,
            cluster_peers: Vec::new(),
            cluster_secret_file: None,
            cluster_secret: None,
            cluster_tls: false,
            cluster_commit_timeout: 10_000,
            cluster_snapshot_every: 4096,
            quorum_dormant_after: 30_000,
        }
    }

    /// The key for encryption at rest, if one is configured.
    pub fn encryption_key(&self) -> Result<Option<EncryptionKey>, StorageError> {
        match (&self.encryption_key, &self.encryption_key_file) {
            (Some(_), Some(_)) => Err(StorageError::Key(
                "give the encryption key once: WARREN_ENCRYPTION_KEY or --encryption-key-file"
                    .into(),
            )),
            (Some(hex), None) => EncryptionKey::from_hex(hex).map(Some),
            (None, Some(file)) => {
                let text = std::fs::read_to_string(file).map_err(|e| {
                    StorageError::Key(format!(
                        "cannot read the encryption key file {}: {e}",
                        file.display()
                    ))
                })?;
                EncryptionKey::from_hex(&text).map(Some)
            }
            (None, None) => Ok(None),
        }
    }
}

/// `--frame-max`: no client could connect with a limit below the protocol's 4096 octets.
fn parse_frame_max(s: &str) -> Result<u32, String> {
    let n: u32 = s.parse().map_err(|e| format!("{e}"))?;
    if n != 0 && n < 4096 {
        return Err(format!(
            "{n} is below 4096, the smallest frame_max AMQP 0-9-1 allows (0 means no limit)"
        ));
    }
    Ok(n)
}
