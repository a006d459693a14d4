//! The `list-*` commands: each a [`Listing`] (rabbitmqctl's info items and default columns,
//! mapped onto the management API's fields) and the API path it reads.

use serde_json::Value;

use super::client::{segment, Missing, Request};
use super::table::{amqp_table, at, pid_at, same, Column, Field, Format, Listing, Style};
use super::{Ctl, CtlError};

pub const QUEUES: Listing = Listing {
    what: "queues",
    columns: &[
        same("name"),
        same("vhost"),
        same("durable"),
        same("auto_delete"),
        same("exclusive"),
        amqp_table("arguments"),
        same("policy"),
        same("operator_policy"),
        same("effective_policy_definition"),
        same("messages"),
        same("messages_ready"),
        same("messages_unacknowledged"),
        same("message_bytes"),
        same("message_bytes_ready"),
        same("message_bytes_unacknowledged"),
        same("consumers"),
        same("consumer_utilisation"),
        same("memory"),
        same("state"),
        same("type"),
        same("node"),
    ],
    defaults: &["name", "messages"],
};

/// `quorum_status`'s table (the management API's `/api/queues/quorum/…/status`), with
/// `rabbitmq-queues`' headers.
pub const QUORUM_MEMBERS: Listing = Listing {
    what: "quorum queue members",
    columns: &[
        at("Node Name", &["node"]),
        at("Raft State", &["raft_state"]),
        at("Log Index", &["log_index"]),
        at("Commit Index", &["commit_index"]),
        at("Snapshot Index", &["snapshot_index"]),
        at("Term", &["term"]),
    ],
    defaults: &[
        "Node Name",
        "Raft State",
        "Log Index",
        "Commit Index",
        "Snapshot Index",
        "Term",
    ],
};

pub const EXCHANGES: Listing = Listing {
    what: "exchanges",
    columns: &[
        same("name"),
        same("vhost"),
        same("type"),
        same("durable"),
        same("auto_delete"),
        same("internal"),
        amqp_table("arguments"),
        same("policy"),
    ],
    defaults: &["name", "type"],
};

pub const BINDINGS: Listing = Listing {
    what: "bindings",
    columns: &[
        at("source_name", &["source"]),
        Column {
            name: "source_kind",
            field: Field::Const("exchange"),
            style: Style::Plain,
        },
        at("destination_name", &["destination"]),
        at("destination_kind", &["destination_type"]),
        same("routing_key"),
        amqp_table("arguments"),
        same("vhost"),
        same("properties_key"),
    ],
    defaults: &[
        "source_name",
        "source_kind",
        "destination_name",
        "destination_kind",
        "routing_key",
        "arguments",
    ],
};

pub const CONNECTIONS: Listing = Listing {
    what: "connections",
    columns: &[
        // The API has no Erlang pid: one is made from the connection's name (see `table::pid`),
        // which `close_connection` takes back.
        pid_at("pid", &["node"], &["name"]),
        same("name"),
        same("port"),
        same("host"),
        same("peer_port"),
        same("peer_host"),
        same("ssl"),
        same("state"),
        same("channels"),
        same("protocol"),
        same("auth_mechanism"),
        same("user"),
        same("vhost"),
        same("timeout"),
        same("frame_max"),
        same("channel_max"),
        amqp_table("client_properties"),
        same("user_provided_name"),
        same("recv_oct"),
        same("recv_cnt"),
        same("send_oct"),
        same("send_cnt"),
        same("send_pend"),
        same("connected_at"),
        same("node"),
    ],
    defaults: &["user", "peer_host", "peer_port", "state"],
};

pub const CHANNELS: Listing = Listing {
    what: "channels",
    columns: &[
        pid_at("pid", &["node"], &["name"]),
        pid_at("connection", &["node"], &["connection_details", "name"]),
        same("name"),
        same("number"),
        same("user"),
        same("vhost"),
        same("transactional"),
        same("confirm"),
        same("consumer_count"),
        same("messages_unacknowledged"),
        same("messages_uncommitted"),
        same("acks_uncommitted"),
        same("messages_unconfirmed"),
        same("prefetch_count"),
        same("global_prefetch_count"),
        same("state"),
        same("node"),
    ],
    defaults: &["pid", "user", "consumer_count", "messages_unacknowledged"],
};

pub const CONSUMERS: Listing = Listing {
    what: "consumers",
    columns: &[
        at("queue_name", &["queue", "name"]),
        pid_at(
            "channel_pid",
            &["channel_details", "node"],
            &["channel_details", "name"],
        ),
        pid_at(
            "connection",
            &["channel_details", "node"],
            &["channel_details", "connection_name"],
        ),
        same("consumer_tag"),
        same("ack_required"),
        same("exclusive"),
        same("prefetch_count"),
        same("active"),
        same("activity_status"),
        amqp_table("arguments"),
    ],
    defaults: &[
        "queue_name",
        "channel_pid",
        "consumer_tag",
        "ack_required",
        "prefetch_count",
        "active",
        "arguments",
    ],
};

pub const USERS: Listing = Listing {
    what: "users",
    columns: &[
        at("user", &["name"]),
        same("tags"),
        same("hashing_algorithm"),
        same("limits"),
    ],
    defaults: &["user", "tags"],
};

pub const VHOSTS: Listing = Listing {
    what: "vhosts",
    columns: &[
        same("name"),
        same("description"),
        same("tags"),
        same("tracing"),
        same("messages"),
    ],
    defaults: &["name"],
};

pub const PERMISSIONS: Listing = Listing {
    what: "permissions",
    columns: &[
        same("user"),
        same("vhost"),
        same("configure"),
        same("write"),
        same("read"),
    ],
    defaults: &["user", "configure", "write", "read"],
};

pub const USER_PERMISSIONS: Listing = Listing {
    what: "user permissions",
    columns: PERMISSIONS.columns,
    defaults: &["vhost", "configure", "write", "read"],
};

pub const TOPIC_PERMISSIONS: Listing = Listing {
    what: "topic permissions",
    columns: &[
        same("user"),
        same("vhost"),
        same("exchange"),
        same("write"),
        same("read"),
    ],
    defaults: &["user", "exchange", "write", "read"],
};

pub const POLICIES: Listing = Listing {
    what: "policies",
    columns: &[
        same("vhost"),
        same("name"),
        same("pattern"),
        same("apply-to"),
        same("definition"),
        same("priority"),
    ],
    defaults: &[
        "vhost",
        "name",
        "pattern",
        "apply-to",
        "definition",
        "priority",
    ],
};

pub const VHOST_LIMITS: Listing = Listing {
    what: "vhost limits",
    columns: &[same("vhost"), at("limits", &["value"])],
    defaults: &["vhost", "limits"],
};

pub const USER_LIMITS: Listing = Listing {
    what: "user limits",
    columns: &[same("user"), at("limits", &["value"])],
    defaults: &["user", "limits"],
};

/// Reads a listing from `request` and prints the columns asked for, after rabbitmqctl's banner
/// for it ("Listing users ...") unless quiet.
pub async fn list(
    ctl: &Ctl,
    listing: &Listing,
    request: Request,
    asked: &[String],
    banner: &str,
) -> Result<(), CtlError> {
    // Checked first, so that a typo is reported without a round trip (and exits 64 even when
    // the node is down).
    listing.select(asked)?;
    ctl.say(banner);
    let answer = ctl.client.call(request).await?;
    let items = match answer {
        Value::Array(items) => items,
        Value::Null => Vec::new(),
        other => {
            return Err(CtlError::Client(super::client::ClientError::BadResponse(
                format!("expected a list, got {}", kind(&other)),
            )))
        }
    };
    let format = if ctl.json {
        Format::Json
    } else {
        Format::Table {
            headers: ctl.headers,
        }
    };
    let out = super::table::render(listing, asked, &items, format)?;
    ctl.print(&out)
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// `/api/{kind}/{vhost}`, the listing of one vhost.
pub fn in_vhost(kind: &str, vhost: &str) -> Request {
    Request::get(
        format!("/api/{kind}/{}", segment(vhost)),
        format!("vhost '{vhost}'"),
    )
    .in_vhost(vhost)
    .missing(Missing::Unavailable)
}
