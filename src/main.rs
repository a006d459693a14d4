//! The `warren` binary: `warren` or `warren server` runs the broker; `warren perf` and
//! `warren ctl` are clients of one.

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use tracing_subscriber::EnvFilter;
use warren::{Config, Server};

#[cfg(all(target_os = "linux", feature = "jemalloc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings (its `malloc_conf`, read at its start; a C string). A background thread
/// gives freed pages back to the system within about a second, instead of at the next
/// allocations of the arena that freed them (a backlog drained, idle quorum members gone to
/// sleep: nothing may allocate there for a long while); muzzy pages are given back at once.
#[cfg(all(target_os = "linux", feature = "jemalloc"))]
#[export_name = "_rjem_malloc_conf"]
static JEMALLOC_CONF: &[u8; 60] = b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

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
    Server(Box<Config>),
    /// Load generator for any AMQP 0-9-1 broker.
    Perf(warren::perf::PerfArgs),
    /// Operator commands against a running node, as rabbitmqctl's (over the management API).
    Ctl(warren::ctl::CtlArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            // openraft reports every election and vote change at info: its warnings are what an
            // operator needs, but for the failed heartbeats and appends to a node that is down,
            // one per group several times a second (Warren's link says once that it is down).
            EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                EnvFilter::new(
                    "info,openraft=warn,openraft::core::heartbeat=error,\
                     openraft::replication=error,\
                     openraft::engine::handler::replication_handler=error",
                )
            }),
        )
        .init();
    let cli = parse_with_config_file()?;
    let config = match cli.command {
        Some(Command::Server(config)) => *config,
        Some(Command::Perf(args)) => return warren::perf::run(args).await,
        Some(Command::Ctl(args)) => std::process::exit(warren::ctl::main(args).await),
        None => cli.server,
    };
    let server = Server::bind(config).await?;
    server.run(shutdown_signal()).await;
    Ok(())
}

/// The command line, plus the settings of `--config FILE` that neither a flag nor the environment
/// gave, parsed again as flags (so that the file's values are checked like flags).
fn parse_with_config_file() -> anyhow::Result<Cli> {
    let command = Cli::command();
    let args = command_line();
    let ctl = args.get(1).is_some_and(|a| a == "ctl");
    let matches = command
        .clone()
        .try_get_matches_from(&args)
        .unwrap_or_else(|e| exit_on_bad_arguments(e, ctl));
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let (config, server_matches, server_command) = match (&cli.command, matches.subcommand()) {
        (Some(Command::Server(c)), Some(("server", m))) => {
            (&**c, m, command.find_subcommand("server").cloned())
        }
        (None, _) => (&cli.server, &matches, Some(command.clone())),
        _ => return Ok(cli),
    };
    let (Some(path), Some(server_command)) = (&config.config, server_command) else {
        return Ok(cli);
    };
    let extra = warren::config_file::args_from_file(path, &server_command, server_matches)?;
    if extra.is_empty() {
        return Ok(cli);
    }
    Ok(Cli::parse_from(std::env::args_os().chain(extra)))
}

/// The name under which the binary serves as `warren ctl`: a link named `rabbitmqctl` to it
/// takes rabbitmqctl's place for scripts and test suites that run `rabbitmqctl`.
const RABBITMQCTL: &str = "rabbitmqctl";

/// The program's arguments, with `ctl` put after the program's name when it runs as
/// [`RABBITMQCTL`].
fn command_line() -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let runs_as_rabbitmqctl = args
        .first()
        .and_then(|program| std::path::Path::new(program).file_name())
        .is_some_and(|name| name == RABBITMQCTL);
    if runs_as_rabbitmqctl {
        args.insert(1, "ctl".into());
    }
    args
}

/// Reports a command line clap refused and exits: with 64 (EX_USAGE) for `warren ctl`, as
/// rabbitmqctl does, else with clap's own code (help and version exit 0).
fn exit_on_bad_arguments(e: clap::Error, ctl: bool) -> ! {
    if ctl && e.use_stderr() {
        let _ = e.print();
        std::process::exit(warren::ctl::EX_USAGE);
    }
    e.exit()
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
