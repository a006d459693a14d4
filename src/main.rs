//! The `warren` binary: `warren` or `warren server` runs the broker.

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;
use warren::{Config, Server};

#[derive(Parser)]
#[command(name = "warren", version, about = "An AMQP 0-9-1 message broker")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    server: Config,
}

#[derive(Subcommand)]
enum Command {
    /// Run the broker (the default).
    Server(Config),
    /// Load generator for any AMQP 0-9-1 broker.
    Perf(warren::perf::PerfArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    let config = match cli.command {
        Some(Command::Server(config)) => config,
        Some(Command::Perf(args)) => return warren::perf::run(args).await,
        None => cli.server,
    };
    let server = Server::bind(config).await?;
    server.run(shutdown_signal()).await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
