//! Listeners: accepts AMQP connections and serves the HTTP health check, until told to stop.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::broker::Broker;
use crate::config::Config;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen: {0}")]
    Listen(#[from] std::io::Error),
    #[error(transparent)]
    Storage(#[from] warren_storage::StorageError),
}

pub struct Server {
    broker: Arc<Broker>,
    amqp: TcpListener,
    http: TcpListener,
}

impl Server {
    /// Binds the listeners (port 0 picks a free port; see [`Server::amqp_addr`]).
    pub async fn bind(config: Config) -> Result<Server, ServerError> {
        let amqp = TcpListener::bind(config.amqp_listen).await?;
        let http = TcpListener::bind(config.http_listen).await?;
        std::fs::create_dir_all(&config.data_dir)?;
        Ok(Server {
            broker: Broker::open(config)?,
            amqp,
            http,
        })
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
        tracing::info!(amqp = %self.amqp_addr(), http = %self.http_addr(), "warren listening");
        let http = tokio::spawn(crate::http::serve(self.http, self.broker.clone()));
        let disk = tokio::spawn(crate::alarm::watch_disk(self.broker.clone()));
        let memory = tokio::spawn(crate::alarm::watch_memory(self.broker.clone()));
        let accept = async {
            loop {
                match self.amqp.accept().await {
                    Ok((stream, peer)) => {
                        let broker = self.broker.clone();
                        tokio::spawn(crate::connection::serve(broker, stream, peer));
                    }
                    Err(e) => {
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        };
        tokio::select! {
            _ = accept => {}
            _ = stop => {}
        }
        tracing::info!("shutting down");
        self.broker.shut_down(Duration::from_secs(5)).await;
        if let Err(e) = self.broker.store.sync().await {
            tracing::error!("final storage sync failed: {e}");
        }
        http.abort();
        disk.abort();
        memory.abort();
    }
}
