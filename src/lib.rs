//! Warren: an AMQP 0-9-1 message broker that existing RabbitMQ clients use unchanged.
//!
//! Data flow: [`server`] accepts sockets → [`connection`] decodes frames and runs channels →
//! [`vhost`] routes publishes through [`exchange`]s → each [`queue`] is owned by one task that
//! delivers back to connections. [`tracking`] is what the management API sees of the live
//! connections. [`auth`] holds users and permissions and [`limits`] the vhost and user limits the
//! connection checks. [`ctl`] and [`perf`] are the clients the `warren` binary also runs.

pub mod access_change;
pub mod alarm;
pub mod auth;
pub mod broker;
pub mod clustering;
pub mod config;
pub mod config_file;
pub mod connection;
pub mod ctl;
pub mod definitions;
pub mod exchange;
pub mod http;
pub mod limits;
pub mod management;
pub mod message;
pub mod perf;
pub mod policy;
pub mod queue;
pub mod reply_to;
pub mod server;
pub mod stats;
pub mod tls;
pub mod tracking;
pub mod vhost;

pub use config::Config;
pub use server::{Server, ServerError};
