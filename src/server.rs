//! Listeners: accepts AMQP connections (plain, and over TLS when configured) and serves the HTTP
//! API, until told to stop.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use crate::broker::Broker;
use crate::config::Config;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen: {0}")]
    Listen(#[from] std::io::Error),
    #[error(transparent)]
    Storage(#[from] warren_storage::StorageError),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error(transparent)]
    Cluster(#[from] crate::clustering::ClusterStartError),
    #[error("cannot read the definitions file {path}: {source}")]
    DefinitionsFile {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("cannot load the definitions file {path}: {source}")]
    Definitions {
        path: std::path::PathBuf,
        source: crate::definitions::ImportError,
    },
}

pub struct Server {
    broker: Arc<Broker>,
    amqp: TcpListener,
    /// The AMQPS listener and its TLS acceptor, when configured.
    amqps: Option<(TcpListener, TlsAcceptor)>,
    http: TcpListener,
}

impl Server {
    /// Binds the listeners (port 0 picks a free port; see [`Server::amqp_addr`]).
    pub async fn bind(config: Config) -> Result<Server, ServerError> {
        let amqps = match config.amqps_listen {
            Some(addr) => {
                let acceptor = crate::tls::acceptor(&config)?;
                Some((TcpListener::bind(addr).await?, acceptor))
            }
            None => None,
        };
        // Checked before anything is bound: a mistake in the cluster flags stops the start.
        let cluster_settings = crate::clustering::Settings::from_config(&config)
            .map_err(crate::clustering::ClusterStartError::from)?;
        let amqp = TcpListener::bind(config.amqp_listen).await?;
        let http = TcpListener::bind(config.http_listen).await?;
        std::fs::create_dir_all(&config.data_dir)?;
        let connected =
            crate::clustering::Connected::start(cluster_settings, &config.data_dir).await?;
        let broker = Broker::open_in(config, connected.placement(), connected.definition_log())?;
        let commit_timeout = Duration::from_millis(broker.config.cluster_commit_timeout);
        let clustering = connected.join(&broker, commit_timeout).await?;
        let _ = broker.cluster.set(Arc::new(clustering));
        let mut listeners = vec![("amqp", amqp.local_addr()?.port())];
        if let Some((l, _)) = &amqps {
            listeners.push(("amqp/ssl", l.local_addr()?.port()));
        }
        listeners.push(("http", http.local_addr()?.port()));
        let _ = broker.listeners.set(listeners);
        // Listeners are bound (so their ports are taken) but accept nothing until `run`: clients
        // find the imported definitions in place.
        if let Some(path) = broker.config.load_definitions.clone() {
            load_definitions(&broker, path).await?;
        }
        Ok(Server {
            broker,
            amqp,
            amqps,
            http,
        })
    }

    /// The AMQPS listener's address, when there is one.
    pub fn amqps_addr(&self) -> Option<SocketAddr> {
        self.amqps.as_ref().and_then(|(l, _)| l.local_addr().ok())
    }

    pub fn amqp_addr(&self) -> SocketAddr {
        self.amqp
            .local_addr()
            .unwrap_or(self.broker.config.amqp_listen)
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http
            .local_addr()
            .unwrap_or(self.broker.config.http_listen)
    }

    pub fn broker(&self) -> Arc<Broker> {
        self.broker.clone()
    }

    /// Serves until `stop` completes, then closes every connection with 320 CONNECTION_FORCED.
    pub async fn run(self, stop: impl Future<Output = ()>) {
        tracing::info!(amqp = %self.amqp_addr(), amqps = ?self.amqps_addr(), http = %self.http_addr(), "warren listening");
        let http = tokio::spawn(crate::http::serve(self.http, self.broker.clone()));
        let disk = tokio::spawn(crate::alarm::watch_disk(self.broker.clone()));
        let memory = tokio::spawn(crate::alarm::watch_memory(self.broker.clone()));
        let rates = tokio::spawn(sample_rates(self.broker.clone()));
        let broker = &self.broker;
        let accept = accept_each(&self.amqp, |stream, peer| {
            tokio::spawn(crate::connection::serve(broker.clone(), stream, peer));
        });
        let accept_tls = async {
            let Some((listener, acceptor)) = &self.amqps else {
                return std::future::pending().await;
            };
            accept_each(listener, |stream, peer| {
                let broker = broker.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    // A client that stalls in the handshake is dropped, as in AMQP's own.
                    let handshake = tokio::time::timeout(
                        crate::connection::HANDSHAKE_TIMEOUT,
                        acceptor.accept(stream),
                    );
                    match handshake.await {
                        Ok(Ok(tls)) => crate::connection::serve_tls(broker, tls, peer).await,
                        Ok(Err(e)) => tracing::info!(%peer, "TLS handshake failed: {e}"),
                        Err(_) => tracing::info!(%peer, "TLS handshake timeout"),
                    }
                });
            })
            .await
        };
        tokio::select! {
            _ = accept => {}
            _ = accept_tls => {}
            _ = stop => {}
        }
        tracing::info!("shutting down");
        self.broker.shut_down(Duration::from_secs(5)).await;
        if tokio::time::timeout(Duration::from_secs(5), self.broker.sync_queues())
            .await
            .is_err()
        {
            tracing::warn!("queues still writing at shutdown");
        }
        if let Err(e) = self.broker.store.sync().await {
            tracing::error!("final storage sync failed: {e}");
        }
        http.abort();
        disk.abort();
        memory.abort();
        rates.abort();
        if let Some(cluster) = self.broker.cluster.get() {
            cluster.stop().await;
        }
    }
}

/// How long the sampler waits for one queue's counts.
const QUEUE_SAMPLE_WITHIN: Duration = Duration::from_millis(100);

/// Samples the message counters, the broker's and each queue's, every
/// `collect_statistics_interval` (for their rates).
async fn sample_rates(broker: Arc<Broker>) {
    let every = Duration::from_millis(broker.config.collect_statistics_interval.max(10));
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let now = std::time::Instant::now();
        broker.rates.record(now, broker.counters.totals());
        for (connection, _) in broker.tracker.open_connections() {
            let sample = (connection.message_totals(), connection.traffic());
            connection.rates.record(now, sample);
            for (_, channel) in connection.channels() {
                channel.rates.record(now, channel.counts.totals());
            }
        }
        // Each queue that lives here (a proxy's queue is sampled on its own node).
        for vhost in broker.vhosts() {
            for stats in vhost.exchange_stats().into_values() {
                stats.rates.record(now, stats.totals());
            }
            for queue in vhost.queues() {
                if queue.forwards() {
                    continue;
                }
                // A queue whose inbox publishers keep full does not hold up the others.
                let stats = tokio::time::timeout(QUEUE_SAMPLE_WITHIN, queue.stats(false));
                if let Ok(Ok(stats)) = stats.await {
                    queue.rates.record(now, stats);
                }
            }
        }
    }
}

/// RabbitMQ's `load_definitions`: the file imported as `POST /api/definitions` would import it.
async fn load_definitions(broker: &Broker, path: std::path::PathBuf) -> Result<(), ServerError> {
    use crate::definitions::import::{import, parse, Scope};
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(source) => return Err(ServerError::DefinitionsFile { path, source }),
    };
    let imported = match parse(&bytes) {
        Ok(defs) => import(broker, &defs, Scope::All).await,
        Err(e) => Err(e),
    };
    match imported {
        Ok(()) => {
            tracing::info!(file = %path.display(), "definitions loaded");
            Ok(())
        }
        Err(source) => Err(ServerError::Definitions { path, source }),
    }
}

/// Hands every connection `listener` accepts to `serve`, for ever; a failed accept (too many open
/// files, say) is logged and retried shortly after.
async fn accept_each(listener: &TcpListener, mut serve: impl FnMut(TcpStream, SocketAddr)) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => serve(stream, peer),
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
