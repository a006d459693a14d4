//! `warren ctl`: an operator CLI modelled on `rabbitmqctl`, talking to a running node over its
//! management API ([`client`]). It takes rabbitmqctl's command lines (underscore names, its
//! global flags, `-n` accepted) and prints rabbitmqctl 3.10's output: banners unless `-q`, then
//! tab-separated rows under a header row, or JSON, with rabbitmqctl's column selection
//! ([`table`], [`listings`]); the other commands change users, vhosts and permissions
//! ([`admin`]) or act on queues, connections, the node and definitions ([`node`]).
//!
//! Exit codes are rabbitmqctl's (sysexits): 64 a usage error, 65 data the node refused, 67 a
//! missing user, 69 the node unreachable or a missing vhost, 70 a user that exists already, 75 a
//! timeout, 77 credentials or access refused; a missing object as rabbitmqctl's command exits
//! for it ([`client::Missing`]).

mod admin;
pub mod amqp;
pub mod client;
mod listings;
mod node;
pub mod table;

use std::io::Write as _;
use std::time::Duration;

use clap::{Args, Subcommand};

use client::{Client, ClientError, Credentials, HttpTransport, Missing, Transport};
use table::UnknownColumn;

/// EX_USAGE: bad arguments (clap's own errors as well, see `main.rs`).
pub const EX_USAGE: i32 = 64;
pub const EX_DATAERR: i32 = 65;
pub const EX_NOUSER: i32 = 67;
pub const EX_UNAVAILABLE: i32 = 69;
pub const EX_SOFTWARE: i32 = 70;
pub const EX_IOERR: i32 = 74;
pub const EX_TEMPFAIL: i32 = 75;
pub const EX_NOPERM: i32 = 77;

#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Column(#[from] UnknownColumn),
    #[error("{0}")]
    Usage(String),
    /// An argument the command cannot use (rabbitmqctl's argument validation, exiting 65).
    #[error("Bad argument: {0}")]
    BadArgument(String),
    /// What `add_user` would overwrite (rabbitmqctl refuses, exiting 70).
    #[error("{what} already exists")]
    AlreadyExists { what: String },
    #[error("{what} is not valid JSON: {source}")]
    BadJson {
        what: String,
        source: serde_json::Error,
    },
    #[error("{action} {path}: {source}")]
    File {
        action: &'static str,
        path: String,
        source: std::io::Error,
    },
}

impl CtlError {
    /// The process's exit code for this failure, as rabbitmqctl's.
    pub fn exit_code(&self) -> i32 {
        match self {
            CtlError::Client(e) => match e {
                ClientError::BadUrl(_) => EX_USAGE,
                ClientError::Unreachable { .. } => EX_UNAVAILABLE,
                ClientError::Timeout { .. } => EX_TEMPFAIL,
                ClientError::CredentialsRefused { .. } | ClientError::Forbidden { .. } => EX_NOPERM,
                ClientError::NotFound { missing, .. } => missing.exit_code(),
                ClientError::BadRequest { .. } => EX_DATAERR,
                ClientError::Status { .. } | ClientError::BadResponse(_) => EX_SOFTWARE,
            },
            CtlError::Column(_) | CtlError::Usage(_) | CtlError::BadJson { .. } => EX_USAGE,
            CtlError::File { .. } => EX_IOERR,
            CtlError::AlreadyExists { .. } => EX_SOFTWARE,
            CtlError::BadArgument(_) => EX_DATAERR,
        }
    }
}

/// `warren ctl [OPTIONS] COMMAND`.
#[derive(Args, Debug)]
pub struct CtlArgs {
    #[command(flatten)]
    pub options: Options,
    #[command(subcommand)]
    pub command: Command,
}

/// Where the node is, who asks, and how answers print; accepted before or after the command.
#[derive(Args, Debug, Clone)]
pub struct Options {
    /// The management API's URL, http://HOST:PORT (instead of --host and --port).
    #[arg(long, global = true, env = "WARREN_CTL_URL")]
    pub url: Option<String>,
    /// Manage over AMQP instead of HTTP: amqp://[USER:PASS@]HOST[:PORT][/VHOST] (requests go to
    /// the node's `amq.warren.management` exchange; only the AMQP port is needed).
    #[arg(long, global = true, env = "WARREN_CTL_URI", conflicts_with = "url")]
    pub uri: Option<String>,
    /// The node's HTTP listener host.
    #[arg(long, global = true, default_value = "127.0.0.1")]
    pub host: String,
    /// The node's HTTP listener port.
    #[arg(long, global = true, default_value_t = 15672)]
    pub port: u16,
    #[arg(
        long,
        global = true,
        env = "WARREN_CTL_USERNAME",
        default_value = "guest"
    )]
    pub username: String,
    #[arg(
        long,
        global = true,
        env = "WARREN_CTL_PASSWORD",
        default_value = "guest",
        hide_env_values = true,
        hide_default_value = true
    )]
    pub password: String,
    /// The vhost, as rabbitmqctl's -p.
    #[arg(short = 'p', long, global = true, default_value = "/")]
    pub vhost: String,
    /// Print JSON rather than a table (as `--formatter json`).
    #[arg(long, global = true)]
    pub json: bool,
    /// rabbitmqctl's output format: `table` (tab-separated, the default) or `json`.
    #[arg(long, global = true, value_enum)]
    pub formatter: Option<Formatter>,
    /// No banners ("Listing queues for vhost / ...", "Adding user ...").
    #[arg(short = 'q', long, global = true)]
    pub quiet: bool,
    /// No banners and no header row: `-q --no-table-headers`.
    #[arg(short = 's', long, global = true)]
    pub silent: bool,
    /// Listings print their rows without the header row of column names.
    #[arg(long, global = true)]
    pub no_table_headers: bool,
    /// rabbitmqctl's target node (`rabbit@HOST`). Accepted so that rabbitmqctl's command lines
    /// work unchanged; the node reached is the one --url, --uri or --host/--port name.
    #[arg(short = 'n', long, global = true, value_name = "NODE")]
    pub node: Option<String>,
    /// rabbitmqctl's long node names switch; node names are not resolved, so it changes nothing.
    #[arg(short = 'l', long, global = true)]
    pub longnames: bool,
    /// Seconds to wait for each answer.
    #[arg(short = 't', long, global = true, default_value_t = 60)]
    pub timeout: u64,
}

/// rabbitmqctl's `--formatter`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Formatter {
    Table,
    Json,
}

/// The columns of a listing.
#[derive(Args, Debug, Clone)]
pub struct Columns {
    /// Column names to show (rabbitmqctl's info items); none: the command's defaults.
    pub columns: Vec<String>,
}

/// A user and the password to give it.
#[derive(Args, Debug, Clone)]
pub struct UserPassword {
    pub user: String,
    // Not the id `password`: that is the global --password, which clap would set instead.
    #[arg(
        id = "new_password",
        value_name = "PASSWORD",
        allow_hyphen_values = true
    )]
    pub password: String,
}

#[derive(Args, Debug, Clone)]
pub struct PolicyArgs {
    pub name: String,
    /// A regular expression matched against queue or exchange names.
    pub pattern: String,
    /// The policy's definition, a JSON object such as '{"max-length":10}'.
    pub definition: String,
    #[arg(long, default_value_t = 0)]
    pub priority: i64,
    #[arg(long, default_value = "all", value_parser = ["queues", "exchanges", "all"])]
    pub apply_to: String,
}

#[derive(Subcommand, Debug, Clone)]
pub enum Command {
    /// Queues of the vhost (default columns: name messages).
    #[command(alias = "list_queues")]
    ListQueues(Columns),
    /// Exchanges of the vhost (default columns: name type).
    #[command(alias = "list_exchanges")]
    ListExchanges(Columns),
    /// Bindings of the vhost.
    #[command(alias = "list_bindings")]
    ListBindings(Columns),
    /// Connections of every vhost.
    #[command(alias = "list_connections")]
    ListConnections(Columns),
    /// Channels of every vhost.
    #[command(alias = "list_channels")]
    ListChannels(Columns),
    /// Consumers of the vhost.
    #[command(alias = "list_consumers")]
    ListConsumers(Columns),
    /// Users and their tags.
    #[command(alias = "list_users")]
    ListUsers(Columns),
    /// Virtual hosts.
    #[command(alias = "list_vhosts")]
    ListVhosts(Columns),
    /// Users' permissions in the vhost.
    #[command(alias = "list_permissions")]
    ListPermissions(Columns),
    /// A user's permissions in every vhost.
    #[command(alias = "list_user_permissions")]
    ListUserPermissions {
        user: String,
        #[command(flatten)]
        columns: Columns,
    },
    /// Users' topic permissions in the vhost.
    #[command(alias = "list_topic_permissions")]
    ListTopicPermissions(Columns),
    /// Policies of the vhost.
    #[command(alias = "list_policies")]
    ListPolicies(Columns),
    /// Operator policies of the vhost.
    #[command(alias = "list_operator_policies")]
    ListOperatorPolicies(Columns),
    /// The vhost's limits (--global: every vhost's).
    #[command(alias = "list_vhost_limits")]
    ListVhostLimits {
        #[arg(long)]
        global: bool,
    },
    /// Limits of one user (--user) or of every user.
    #[command(alias = "list_user_limits")]
    ListUserLimits {
        #[arg(long)]
        user: Option<String>,
    },
    /// Adds a user with a password and no tags.
    #[command(alias = "add_user")]
    AddUser(UserPassword),
    /// Deletes a user (its connections are closed).
    #[command(alias = "delete_user")]
    DeleteUser { user: String },
    /// Sets a user's password, keeping its tags.
    #[command(alias = "change_password")]
    ChangePassword(UserPassword),
    /// Replaces a user's tags (none: no tags).
    #[command(alias = "set_user_tags")]
    SetUserTags { user: String, tags: Vec<String> },
    /// Leaves a user with no password (it can no longer log in with one).
    #[command(alias = "clear_password")]
    ClearPassword { user: String },
    /// Adds a virtual host.
    #[command(alias = "add_vhost")]
    AddVhost {
        name: String,
        #[arg(long)]
        description: Option<String>,
    },
    /// Deletes a virtual host with its queues and exchanges.
    #[command(alias = "delete_vhost")]
    DeleteVhost { name: String },
    /// Sets a user's configure, write and read permissions in the vhost.
    #[command(alias = "set_permissions")]
    SetPermissions {
        user: String,
        #[arg(allow_hyphen_values = true)]
        configure: String,
        #[arg(allow_hyphen_values = true)]
        write: String,
        #[arg(allow_hyphen_values = true)]
        read: String,
    },
    /// Removes a user's permissions in the vhost.
    #[command(alias = "clear_permissions")]
    ClearPermissions { user: String },
    /// Sets a user's topic permissions on an exchange in the vhost.
    #[command(alias = "set_topic_permissions")]
    SetTopicPermissions {
        user: String,
        exchange: String,
        #[arg(allow_hyphen_values = true)]
        write: String,
        #[arg(allow_hyphen_values = true)]
        read: String,
    },
    /// Removes a user's topic permissions in the vhost: on one exchange, or all of them.
    #[command(alias = "clear_topic_permissions")]
    ClearTopicPermissions {
        user: String,
        exchange: Option<String>,
    },
    /// Sets a policy in the vhost.
    #[command(alias = "set_policy")]
    SetPolicy(PolicyArgs),
    /// Removes a policy from the vhost.
    #[command(alias = "clear_policy")]
    ClearPolicy { name: String },
    /// Sets an operator policy in the vhost.
    #[command(alias = "set_operator_policy")]
    SetOperatorPolicy(PolicyArgs),
    /// Removes an operator policy from the vhost.
    #[command(alias = "clear_operator_policy")]
    ClearOperatorPolicy { name: String },
    /// Sets the vhost's limits from a JSON object, e.g. '{"max-connections":10}'.
    #[command(alias = "set_vhost_limits")]
    SetVhostLimits { limits: String },
    /// Removes every limit of the vhost.
    #[command(alias = "clear_vhost_limits")]
    ClearVhostLimits,
    /// Sets a user's limits from a JSON object, e.g. '{"max-channels":5}'.
    #[command(alias = "set_user_limits")]
    SetUserLimits { user: String, limits: String },
    /// Clears one of a user's limits, or `all`.
    #[command(alias = "clear_user_limits")]
    ClearUserLimits { user: String, limit: String },
    /// Closes a connection with 320 CONNECTION_FORCED and the explanation: CONNECTION is its
    /// pid as `list_connections pid` prints it, or its name as `list_connections name` does.
    #[command(alias = "close_connection")]
    CloseConnection {
        #[arg(value_name = "CONNECTION")]
        name: String,
        #[arg(value_name = "EXPLANATION")]
        reason: String,
    },
    /// Closes every connection of the vhost (--global: of every vhost) with 320.
    #[command(alias = "close_all_connections")]
    CloseAllConnections {
        #[arg(value_name = "EXPLANATION")]
        reason: String,
        /// Every vhost's connections, not only those of -p.
        #[arg(long)]
        global: bool,
        /// Close at most this many.
        #[arg(long)]
        limit: Option<usize>,
        /// rabbitmqctl's pause between closes, in milliseconds; accepted and not needed.
        #[arg(long, alias = "per_connection_delay")]
        per_connection_delay: Option<u64>,
    },
    /// Sets the memory high watermark: a FRACTION of the memory (0.0 to 1.0), or `absolute`
    /// and a size in bytes (a unit such as 512MB, 1GiB is allowed).
    #[command(alias = "set_vm_memory_high_watermark")]
    SetVmMemoryHighWatermark {
        #[arg(value_name = "FRACTION | absolute", allow_hyphen_values = true)]
        fraction_or_absolute: String,
        #[arg(value_name = "SIZE")]
        size: Option<String>,
    },
    /// Sets the cluster's name.
    #[command(alias = "set_cluster_name")]
    SetClusterName { name: String },
    /// Checks that the node answers.
    Ping,
    /// Waits (up to --timeout seconds) until the node answers.
    #[command(alias = "await_startup")]
    AwaitStartup,
    /// Removes a queue's ready messages.
    #[command(alias = "purge_queue")]
    PurgeQueue { queue: String },
    /// Deletes a queue (with --if-empty / --if-unused: only if it is).
    #[command(alias = "delete_queue")]
    DeleteQueue {
        queue: String,
        #[arg(long, alias = "if_empty")]
        if_empty: bool,
        #[arg(long, alias = "if_unused")]
        if_unused: bool,
    },
    /// The cluster's nodes and which are running.
    #[command(alias = "cluster_status")]
    ClusterStatus,
    /// A quorum queue's members: each one's Raft role and log, as its node says
    /// (`rabbitmq-queues quorum_status`).
    #[command(alias = "quorum_status")]
    QuorumStatus { queue: String },
    /// Adds a member on NODE to a quorum queue; done once it has caught up and votes
    /// (`rabbitmq-queues add_member`).
    #[command(alias = "add_member")]
    AddMember { queue: String, node: String },
    /// Removes the member on NODE from a quorum queue (`rabbitmq-queues delete_member`).
    #[command(alias = "delete_member")]
    DeleteMember { queue: String, node: String },
    /// Adds a member on NODE to every quorum queue the patterns match (`all`), or to those with
    /// an even number of members (`even`) (`rabbitmq-queues grow`).
    Grow {
        node: String,
        #[arg(value_parser = ["all", "even"])]
        strategy: String,
        #[arg(long, alias = "vhost_pattern", default_value = ".*")]
        vhost_pattern: String,
        #[arg(long, alias = "queue_pattern", default_value = ".*")]
        queue_pattern: String,
    },
    /// Removes NODE's member from every quorum queue that has another (`rabbitmq-queues shrink`).
    Shrink { node: String },
    /// Spreads the leaders of the quorum queues the patterns match over the running nodes, then
    /// prints how many each leads (`rabbitmq-queues rebalance`).
    Rebalance {
        #[arg(value_parser = ["all", "classic", "quorum"])]
        kind: String,
        #[arg(long, alias = "vhost_pattern", default_value = ".*")]
        vhost_pattern: String,
        #[arg(long, alias = "queue_pattern", default_value = ".*")]
        queue_pattern: String,
    },
    /// Writes every definition to FILE (`-`: standard output).
    #[command(alias = "export_definitions")]
    ExportDefinitions { file: String },
    /// Imports definitions from FILE (`-`: standard input).
    #[command(alias = "import_definitions")]
    ImportDefinitions { file: String },
    /// The node's overview.
    Status,
}

/// What every command uses: the client and the options.
pub struct Ctl {
    pub client: Client,
    pub vhost: String,
    pub json: bool,
    pub quiet: bool,
    /// Whether listings start with a row of column names.
    pub headers: bool,
    /// How long to wait for each answer (and for `await_startup`, for the node).
    pub timeout: Duration,
}

impl Ctl {
    fn new(options: &Options) -> Result<Ctl, CtlError> {
        let url = match &options.url {
            Some(url) => url.clone(),
            None if options.host.contains(':') => {
                format!("http://[{}]:{}", options.host, options.port)
            }
            None => format!("http://{}:{}", options.host, options.port),
        };
        let credentials = Credentials {
            username: options.username.clone(),
            password: options.password.clone(),
        };
        let transport = match &options.uri {
            Some(uri) => Transport::Amqp(amqp::AmqpTransport::parse(uri, &credentials)?),
            None => Transport::Http(HttpTransport::parse(&url)?),
        };
        let timeout = Duration::from_secs(options.timeout.max(1));
        Ok(Ctl {
            client: Client::new(transport, credentials, timeout),
            timeout,
            vhost: options.vhost.clone(),
            json: options.json || options.formatter == Some(Formatter::Json),
            // rabbitmqctl prints no banner before JSON, which must parse as a whole.
            quiet: options.quiet
                || options.silent
                || options.json
                || options.formatter == Some(Formatter::Json),
            headers: !(options.no_table_headers || options.silent),
        })
    }

    /// A banner ("Adding user ...", "Listing queues for vhost / ..."): on stdout before the
    /// data, as rabbitmqctl prints it, unless `-q`; scripts that parse the output pass `-q`.
    fn say(&self, message: &str) {
        if !self.quiet {
            // A closed pipe is not worth failing for here: the data that follows reports it.
            let _ = self.print(&format!("{message}\n"));
        }
    }

    /// Output to stdout; a closed pipe (`| head`) is not an error worth reporting.
    fn print(&self, text: &str) -> Result<(), CtlError> {
        let mut out = std::io::stdout().lock();
        match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(CtlError::File {
                action: "cannot write to",
                path: "standard output".into(),
                source: e,
            }),
            _ => Ok(()),
        }
    }
}

/// Runs a command; prints its error, if any, and returns the process's exit code.
pub async fn main(args: CtlArgs) -> i32 {
    match run(args).await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("Error: {e}");
            e.exit_code()
        }
    }
}

pub async fn run(args: CtlArgs) -> Result<(), CtlError> {
    let ctl = Ctl::new(&args.options)?;
    dispatch(&ctl, args.command).await
}

async fn dispatch(ctl: &Ctl, command: Command) -> Result<(), CtlError> {
    use listings::*;
    let v = ctl.vhost.as_str();
    let get = |path: &str, what: &str| client::Request::get(path.to_owned(), what);
    match command {
        Command::ListQueues(c) => {
            // rabbitmqctl prints its timeout before this listing only.
            let banner = format!(
                "Timeout: {}.0 seconds ...\nListing queues for vhost {v} ...",
                ctl.timeout.as_secs()
            );
            list(ctl, &QUEUES, in_vhost("queues", v), &c.columns, &banner).await
        }
        Command::ListExchanges(c) => {
            let banner = format!("Listing exchanges for vhost {v} ...");
            list(
                ctl,
                &EXCHANGES,
                in_vhost("exchanges", v),
                &c.columns,
                &banner,
            )
            .await
        }
        Command::ListBindings(c) => {
            let banner = format!("Listing bindings for vhost {v}...");
            list(ctl, &BINDINGS, in_vhost("bindings", v), &c.columns, &banner).await
        }
        Command::ListConnections(c) => {
            let request = get("/api/connections", "connections");
            list(
                ctl,
                &CONNECTIONS,
                request,
                &c.columns,
                "Listing connections ...",
            )
            .await
        }
        Command::ListChannels(c) => {
            let request = get("/api/channels", "channels");
            list(ctl, &CHANNELS, request, &c.columns, "Listing channels ...").await
        }
        Command::ListConsumers(c) => {
            let banner = format!("Listing consumers in vhost {v} ...");
            list(
                ctl,
                &CONSUMERS,
                in_vhost("consumers", v),
                &c.columns,
                &banner,
            )
            .await
        }
        Command::ListUsers(c) => {
            let request = get("/api/users", "users");
            list(ctl, &USERS, request, &c.columns, "Listing users ...").await
        }
        Command::ListVhosts(c) => {
            let request = get("/api/vhosts", "vhosts");
            list(ctl, &VHOSTS, request, &c.columns, "Listing vhosts ...").await
        }
        Command::ListPermissions(c) => {
            let request = client::Request::get(
                format!("/api/vhosts/{}/permissions", client::segment(v)),
                format!("vhost '{v}'"),
            )
            .missing(Missing::Unavailable);
            let banner = format!("Listing permissions for vhost \"{v}\" ...");
            list(ctl, &PERMISSIONS, request, &c.columns, &banner).await
        }
        Command::ListUserPermissions { user, columns } => {
            let request = client::Request::get(
                format!("/api/users/{}/permissions", client::segment(&user)),
                format!("user '{user}'"),
            )
            .missing(Missing::User);
            let banner = format!("Listing permissions for user \"{user}\" ...");
            list(ctl, &USER_PERMISSIONS, request, &columns.columns, &banner).await
        }
        Command::ListTopicPermissions(c) => {
            let request = client::Request::get(
                format!("/api/vhosts/{}/topic-permissions", client::segment(v)),
                format!("vhost '{v}'"),
            )
            .missing(Missing::Unavailable);
            let banner = format!("Listing topic permissions for vhost \"{v}\" ...");
            list(ctl, &TOPIC_PERMISSIONS, request, &c.columns, &banner).await
        }
        Command::ListPolicies(c) => {
            let banner = format!("Listing policies for vhost \"{v}\" ...");
            list(ctl, &POLICIES, in_vhost("policies", v), &c.columns, &banner).await
        }
        Command::ListOperatorPolicies(c) => {
            let request = in_vhost("operator-policies", v);
            let banner = format!("Listing operator policy overrides for vhost \"{v}\" ...");
            list(ctl, &POLICIES, request, &c.columns, &banner).await
        }
        Command::ListVhostLimits { global } => {
            let (request, banner) = if global {
                let request = get("/api/vhost-limits", "vhost limits");
                (request, "Listing limits for all vhosts ...".to_owned())
            } else {
                let banner = format!("Listing limits for vhost \"{v}\" ...");
                (in_vhost("vhost-limits", v), banner)
            };
            list(ctl, &VHOST_LIMITS, request, &[], &banner).await
        }
        Command::ListUserLimits { user } => {
            let (request, banner) = match &user {
                Some(user) => (
                    client::Request::get(
                        format!("/api/user-limits/{}", client::segment(user)),
                        format!("user '{user}'"),
                    )
                    .missing(Missing::User),
                    format!("Listing limits for user \"{user}\" ..."),
                ),
                None => (
                    get("/api/user-limits", "user limits"),
                    "Listing limits for all users ...".to_owned(),
                ),
            };
            list(ctl, &USER_LIMITS, request, &[], &banner).await
        }
        Command::AddUser(u) => admin::add_user(ctl, &u.user, &u.password).await,
        Command::DeleteUser { user } => admin::delete_user(ctl, &user).await,
        Command::ChangePassword(u) => admin::change_password(ctl, &u.user, Some(&u.password)).await,
        Command::ClearPassword { user } => admin::change_password(ctl, &user, None).await,
        Command::SetUserTags { user, tags } => admin::set_user_tags(ctl, &user, &tags).await,
        Command::AddVhost { name, description } => {
            admin::add_vhost(ctl, &name, description.as_deref()).await
        }
        Command::DeleteVhost { name } => admin::delete_vhost(ctl, &name).await,
        Command::SetPermissions {
            user,
            configure,
            write,
            read,
        } => admin::set_permissions(ctl, &user, [&configure, &write, &read]).await,
        Command::ClearPermissions { user } => admin::clear_permissions(ctl, &user).await,
        Command::SetTopicPermissions {
            user,
            exchange,
            write,
            read,
        } => admin::set_topic_permissions(ctl, &user, &exchange, &write, &read).await,
        Command::ClearTopicPermissions { user, exchange } => {
            admin::clear_topic_permissions(ctl, &user, exchange.as_deref()).await
        }
        Command::SetPolicy(p) => admin::set_policy(ctl, admin::PolicyKind::User, &p).await,
        Command::ClearPolicy { name } => {
            admin::clear_policy(ctl, admin::PolicyKind::User, &name).await
        }
        Command::SetOperatorPolicy(p) => {
            admin::set_policy(ctl, admin::PolicyKind::Operator, &p).await
        }
        Command::ClearOperatorPolicy { name } => {
            admin::clear_policy(ctl, admin::PolicyKind::Operator, &name).await
        }
        Command::SetVhostLimits { limits } => {
            admin::set_limits(ctl, admin::LimitsOf::Vhost(v), &limits).await
        }
        Command::ClearVhostLimits => {
            admin::clear_limits(ctl, admin::LimitsOf::Vhost(v), "all").await
        }
        Command::SetUserLimits { user, limits } => {
            admin::set_limits(ctl, admin::LimitsOf::User(&user), &limits).await
        }
        Command::ClearUserLimits { user, limit } => {
            admin::clear_limits(ctl, admin::LimitsOf::User(&user), &limit).await
        }
        Command::CloseConnection { name, reason } => {
            node::close_connection(ctl, &name, &reason).await
        }
        Command::CloseAllConnections {
            reason,
            global,
            limit,
            per_connection_delay: _,
        } => {
            let scope = if global { None } else { Some(v) };
            node::close_all_connections(ctl, scope, limit, &reason).await
        }
        Command::SetVmMemoryHighWatermark {
            fraction_or_absolute,
            size,
        } => {
            let watermark = node::Watermark::parse(&fraction_or_absolute, size.as_deref())?;
            node::set_vm_memory_high_watermark(ctl, watermark).await
        }
        Command::SetClusterName { name } => node::set_cluster_name(ctl, &name).await,
        Command::Ping => node::ping(ctl).await,
        Command::AwaitStartup => node::await_startup(ctl).await,
        Command::PurgeQueue { queue } => node::purge_queue(ctl, &queue).await,
        Command::DeleteQueue {
            queue,
            if_empty,
            if_unused,
        } => node::delete_queue(ctl, &queue, if_empty, if_unused).await,
        Command::ClusterStatus => node::cluster_status(ctl).await,
        Command::QuorumStatus { queue } => {
            let request = get(
                &format!(
                    "/api/queues/quorum/{}/{}/status",
                    client::segment(v),
                    client::segment(&queue)
                ),
                &format!("queue '{queue}' in vhost '{v}'"),
            )
            .in_vhost(v);
            let banner = format!("Status of quorum queue {queue} ...");
            list(ctl, &QUORUM_MEMBERS, request, &[], &banner).await
        }
        Command::AddMember { queue, node } => node::add_member(ctl, &queue, &node).await,
        Command::DeleteMember { queue, node } => node::delete_member(ctl, &queue, &node).await,
        Command::Grow {
            node,
            strategy,
            vhost_pattern,
            queue_pattern,
        } => node::grow(ctl, &node, &strategy, &vhost_pattern, &queue_pattern).await,
        Command::Shrink { node } => node::shrink(ctl, &node).await,
        Command::Rebalance {
            kind,
            vhost_pattern,
            queue_pattern,
        } => node::rebalance(ctl, &kind, &vhost_pattern, &queue_pattern).await,
        Command::ExportDefinitions { file } => node::export_definitions(ctl, &file).await,
        Command::ImportDefinitions { file } => node::import_definitions(ctl, &file).await,
        Command::Status => node::status(ctl).await,
    }
}

/// A JSON argument, parsed.
fn parse_json(what: &str, text: &str) -> Result<serde_json::Value, CtlError> {
    serde_json::from_str(text).map_err(|source| CtlError::BadJson {
        what: what.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory as _, Parser};

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        ctl: CtlArgs,
    }

    #[test]
    fn arguments_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn a_new_password_is_not_the_global_password() {
        let cli = Cli::try_parse_from([
            "ctl",
            "--password",
            "admin-pw",
            "add_user",
            "alice",
            "-s3cret",
            "-p",
            "v",
        ])
        .expect("parse");
        assert_eq!(cli.ctl.options.password, "admin-pw");
        assert_eq!(cli.ctl.options.vhost, "v");
        let Command::AddUser(u) = cli.ctl.command else {
            panic!("not add-user: {:?}", cli.ctl.command);
        };
        assert_eq!((u.user.as_str(), u.password.as_str()), ("alice", "-s3cret"));
    }
}
