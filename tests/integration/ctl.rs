//! `warren ctl` as an operator runs it: the binary against an in-process broker's management
//! API. Users and permissions it sets let a client in over AMQP; listings show what clients
//! declared, with the columns asked for, as a table or JSON; policies, purges, vhost deletion,
//! definitions export and import, closing a connection; and the exit codes of rabbitmqctl for a
//! node that is down (69), refused credentials (77) and a bad column (64). Then rabbitmqctl's own
//! command lines, through a link named `rabbitmqctl`: its global flags, its tab-separated output
//! with and without banner and header, its exit codes, and `close_connection` given the pid that
//! `list_connections pid` printed.

use std::process::Output;
use std::time::Duration;

use crate::common::*;
use futures::StreamExt as _;
use serde_json::Value;

/// `warren ctl --url http://HTTP_ADDR -q ARGS...` with credentials from `auth`.
async fn ctl_as(b: &TestBroker, auth: (&str, &str), args: &[&str]) -> Output {
    let url = format!("http://{}", b.http_addr);
    ctl_raw(
        &["--url", &url, "--username", auth.0, "--password", auth.1],
        args,
    )
    .await
}

async fn ctl(b: &TestBroker, args: &[&str]) -> Output {
    ctl_as(b, ("guest", "guest"), args).await
}

pub(crate) async fn ctl_raw(options: &[&str], args: &[&str]) -> Output {
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_warren"))
        .arg("ctl")
        .arg("-q")
        .args(options)
        .args(args)
        // The environment of whoever runs the tests must not choose the node or the user.
        .env_remove("WARREN_CTL_URL")
        .env_remove("WARREN_CTL_USERNAME")
        .env_remove("WARREN_CTL_PASSWORD")
        .kill_on_drop(true)
        .output();
    within_long("warren ctl", run)
        .await
        .expect("run warren ctl")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[track_caller]
fn assert_ok(o: &Output) {
    assert!(
        o.status.success(),
        "warren ctl failed ({:?}): {}{}",
        o.status.code(),
        stdout(o),
        stderr(o)
    );
}

/// Runs `args` until its output satisfies `done` (counts settle after a publish), failing after
/// [`T`]; the last output.
async fn ctl_until(b: &TestBroker, args: &[&str], done: impl Fn(&str) -> bool) -> String {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let o = ctl(b, args).await;
        assert_ok(&o);
        let out = stdout(&o);
        if done(&out) {
            return out;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "`warren ctl {}` never gave the expected output; last:\n{out}",
            args.join(" ")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn api_get(b: &TestBroker, path: &str) -> (u16, Value) {
    let (addr, path) = (b.http_addr, path.to_owned());
    let (status, body) =
        tokio::task::spawn_blocking(move || http_get(addr, &path, Some(("guest", "guest"))))
            .await
            .expect("http get");
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// An AMQP connection to `b` as `user`, which must succeed.
async fn connect_as(b: &TestBroker, user: &str, password: &str) -> lapin::Connection {
    let uri = format!("amqp://{user}:{password}@{}/%2f", b.addr);
    within(
        "connect",
        lapin::Connection::connect(&uri, lapin::ConnectionProperties::default()),
    )
    .await
    .unwrap_or_else(|e| panic!("{user} cannot log in: {e}"))
}

/// The table's rows (after the header), split on runs of spaces.
fn table_rows(out: &str) -> Vec<Vec<String>> {
    out.lines()
        .skip(1)
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn added_user_with_permissions_logs_in_over_amqp() {
    let b = start().await;
    assert_ok(&ctl(&b, &["add-user", "alice", "s3cret"]).await);
    assert_ok(
        &ctl(
            &b,
            &["set-permissions", "-p", "/", "alice", ".*", ".*", ".*"],
        )
        .await,
    );
    let c = connect_as(&b, "alice", "s3cret").await;
    lapin_declare(&lapin_channel(&c).await, "alice-q").await;

    // Tags replaced with the password kept, then the password changed with the tags kept.
    assert_ok(&ctl(&b, &["set_user_tags", "alice", "management", "monitoring"]).await);
    assert_ok(&ctl_as(&b, ("alice", "s3cret"), &["list-queues"]).await);
    assert_ok(&ctl(&b, &["change-password", "alice", "n3w"]).await);
    let users = stdout(&ctl(&b, &["list-users"]).await);
    assert!(
        users
            .lines()
            .any(|l| l.starts_with("alice") && l.ends_with("[management, monitoring]")),
        "{users}"
    );
    assert_eq!(
        ctl_as(&b, ("alice", "s3cret"), &["list-queues"])
            .await
            .status
            .code(),
        Some(77)
    );
    assert_ok(&ctl_as(&b, ("alice", "n3w"), &["list-queues"]).await);

    let perms = stdout(&ctl(&b, &["list_permissions"]).await);
    assert!(perms.starts_with("user"), "{perms}");
    assert!(table_rows(&perms).contains(&vec![
        "alice".to_owned(),
        ".*".to_owned(),
        ".*".to_owned(),
        ".*".to_owned()
    ]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_queues_shows_selected_columns_and_json() {
    let b = start().await;
    let c = lapin_connect(&b).await;
    let ch = lapin_channel(&c).await;
    lapin_declare(&ch, "ctl-listed").await;
    for body in [b"1", b"2", b"3"] {
        lapin_publish(&ch, "", "ctl-listed", body).await;
    }
    let args = ["list-queues", "name", "messages", "consumers"];
    let out = ctl_until(&b, &args, |out| {
        table_rows(out).contains(&vec!["ctl-listed".into(), "3".into(), "0".into()])
    })
    .await;
    assert_eq!(out.lines().next(), Some("name\tmessages\tconsumers"));

    let o = ctl(&b, &["--json", "list_queues", "name", "messages"]).await;
    assert_ok(&o);
    let listed: Value = serde_json::from_str(&stdout(&o)).expect("JSON output");
    let queues = listed.as_array().expect("a list");
    assert!(queues.contains(&serde_json::json!({"name": "ctl-listed", "messages": 3})));

    // Default columns of the other listings answer too.
    for listing in [
        "list-exchanges",
        "list-bindings",
        "list-connections",
        "list-channels",
    ] {
        assert_ok(&ctl(&b, &[listing]).await);
    }
    let exchanges = stdout(&ctl(&b, &["list-exchanges"]).await);
    assert!(
        table_rows(&exchanges).contains(&vec!["amq.topic".into(), "topic".into()]),
        "{exchanges}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_policy_applies_to_matching_queues() {
    let b = start().await;
    let o = ctl(
        &b,
        &[
            "set-policy",
            "--apply-to",
            "queues",
            "--priority",
            "3",
            "cap",
            "^capped-",
            r#"{"max-length": 2}"#,
        ],
    )
    .await;
    assert_ok(&o);
    let c = lapin_connect(&b).await;
    lapin_declare(&lapin_channel(&c).await, "capped-q").await;
    let (status, q) = api_get(&b, "/api/queues/%2F/capped-q").await;
    assert_eq!(status, 200);
    assert_eq!(q["policy"], "cap");
    assert_eq!(q["effective_policy_definition"]["max-length"], 2);
    let policies = stdout(&ctl(&b, &["list-policies", "name", "priority"]).await);
    assert_eq!(policies, "name\tpriority\ncap\t3\n");

    // A bad definition is refused before it reaches the node.
    let o = ctl(&b, &["set-policy", "bad", ".*", "{max-length"]).await;
    assert_eq!(o.status.code(), Some(64));
    assert_ok(&ctl(&b, &["clear-policy", "cap"]).await);
    let (_, q) = api_get(&b, "/api/queues/%2F/capped-q").await;
    assert_eq!(q["policy"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_queue_empties_it_and_delete_queue_removes_it() {
    let b = start().await;
    let c = lapin_connect(&b).await;
    let ch = lapin_channel(&c).await;
    lapin_declare(&ch, "ctl-purged").await;
    lapin_publish(&ch, "", "ctl-purged", b"a").await;
    lapin_publish(&ch, "", "ctl-purged", b"b").await;
    ctl_until(&b, &["list-queues"], |out| {
        table_rows(out).contains(&vec!["ctl-purged".into(), "2".into()])
    })
    .await;
    assert_ok(&ctl(&b, &["purge-queue", "ctl-purged"]).await);
    assert_eq!(lapin_count(&ch, "ctl-purged").await, 0);

    assert_ok(&ctl(&b, &["delete-queue", "ctl-purged", "--if-empty"]).await);
    let (status, _) = api_get(&b, "/api/queues/%2F/ctl-purged").await;
    assert_eq!(status, 404);
    let o = ctl(&b, &["purge-queue", "ctl-purged"]).await;
    assert_eq!(o.status.code(), Some(69));
    assert!(
        stderr(&o).contains("queue 'ctl-purged' in vhost '/' does not exist"),
        "{}",
        stderr(&o)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_and_delete_vhost() {
    let b = start().await;
    assert_ok(&ctl(&b, &["add-vhost", "ctl-v"]).await);
    let o = ctl(&b, &["--json", "list-vhosts"]).await;
    let vhosts: Value = serde_json::from_str(&stdout(&o)).expect("JSON output");
    assert!(vhosts
        .as_array()
        .expect("a list")
        .contains(&serde_json::json!({"name": "ctl-v"})));
    assert_ok(&ctl(&b, &["delete-vhost", "ctl-v"]).await);
    let vhosts = stdout(&ctl(&b, &["list-vhosts"]).await);
    assert_eq!(vhosts, "name\n/\n");
    let o = ctl(&b, &["delete-vhost", "ctl-v"]).await;
    assert_eq!(o.status.code(), Some(65));
    assert!(
        stderr(&o).contains("vhost 'ctl-v' does not exist"),
        "{}",
        stderr(&o)
    );
    let o = ctl(&b, &["list-queues", "-p", "ctl-v"]).await;
    assert_eq!(o.status.code(), Some(69));
    assert!(
        stderr(&o).contains("vhost 'ctl-v' does not exist"),
        "{}",
        stderr(&o)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exported_definitions_import_into_another_broker() {
    let first = start().await;
    let c = lapin_connect(&first).await;
    let ch = lapin_channel(&c).await;
    within(
        "durable queue.declare",
        ch.queue_declare(
            "ctl-exported".into(),
            lapin::options::QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            lapin::types::FieldTable::default(),
        ),
    )
    .await
    .expect("declare");
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("defs.json");
    let file = file.to_str().expect("utf-8 path");
    assert_ok(&ctl(&first, &["export-definitions", file]).await);

    let second = start().await;
    let (status, _) = api_get(&second, "/api/queues/%2F/ctl-exported").await;
    assert_eq!(status, 404);
    assert_ok(&ctl(&second, &["import_definitions", file]).await);
    let (status, q) = api_get(&second, "/api/queues/%2F/ctl-exported").await;
    assert_eq!(status, 200);
    assert_eq!(q["durable"], true);

    let o = ctl(&second, &["export-definitions", "-"]).await;
    let exported: Value = serde_json::from_str(&stdout(&o)).expect("definitions on stdout");
    assert!(exported["queues"].is_array());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_connection_closes_it_with_320() {
    let b = start().await;
    let c = lapin_connect(&b).await;
    let mut events = c.events_listener();
    let out = ctl_until(&b, &["--json", "list-connections", "name", "user"], |out| {
        out.contains("guest")
    })
    .await;
    let listed: Value = serde_json::from_str(&out).expect("JSON output");
    let name = listed[0]["name"]
        .as_str()
        .expect("a connection name")
        .to_owned();
    assert_ok(&ctl(&b, &["close-connection", &name, "go away"]).await);
    let code = within("the connection's close", async {
        loop {
            match events.next().await {
                Some(lapin::Event::Error(e)) => break lapin_code(&e),
                Some(_) => continue,
                None => break None,
            }
        }
    })
    .await;
    assert_eq!(code, Some(320));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_cluster_status() {
    let b = start().await;
    let o = ctl(&b, &["--json", "cluster-status"]).await;
    assert_ok(&o);
    let status: Value = serde_json::from_str(&stdout(&o)).expect("JSON output");
    let running = status["running_nodes"].as_array().expect("running nodes");
    assert_eq!(running.len(), 1);
    assert!(running[0]
        .as_str()
        .is_some_and(|n| n.starts_with("warren@")));
    let o = ctl(&b, &["status"]).await;
    assert_ok(&o);
    assert!(
        stdout(&o).lines().any(|l| l.starts_with("node\t")),
        "{}",
        stdout(&o)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_have_rabbitmqctl_exit_codes() {
    // A port nothing listens on: bound, then closed.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("addr").port().to_string();
    drop(closed);
    let o = ctl_raw(&["--port", &port], &["list-queues"]).await;
    assert_eq!(o.status.code(), Some(69), "{}", stderr(&o));
    let expected = format!("cannot reach the node at http://127.0.0.1:{port}: connection refused");
    assert!(stderr(&o).contains(&expected), "{}", stderr(&o));

    let b = start().await;
    let o = ctl_as(&b, ("guest", "wrong"), &["list-queues"]).await;
    assert_eq!(o.status.code(), Some(77));
    assert!(
        stderr(&o).contains("credentials refused for user guest"),
        "{}",
        stderr(&o)
    );

    let o = ctl(&b, &["list-queues", "name", "colour"]).await;
    assert_eq!(o.status.code(), Some(64));
    assert!(
        stderr(&o).contains("unknown column 'colour' for queues; valid columns: name,"),
        "{}",
        stderr(&o)
    );
    let o = ctl(&b, &["no-such-command"]).await;
    assert_eq!(o.status.code(), Some(64));

    // The node's reason for a 400.
    let o = ctl(&b, &["set-permissions", "guest", "(", ".*", ".*"]).await;
    assert_eq!(o.status.code(), Some(65), "{}", stderr(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_and_topic_permissions_are_set_listed_and_cleared() {
    let b = start().await;
    assert_ok(&ctl(&b, &["add-user", "tp", "pw"]).await);
    assert_ok(
        &ctl(
            &b,
            &[
                "set-vhost-limits",
                r#"{"max-queues": 5, "max-connections": 10}"#,
            ],
        )
        .await,
    );
    assert_ok(&ctl(&b, &["set-user-limits", "tp", r#"{"max-channels": 3}"#]).await);
    assert_ok(
        &ctl(
            &b,
            &["set-topic-permissions", "tp", "amq.topic", "^tp\\.", ".*"],
        )
        .await,
    );
    assert_eq!(
        api_get(&b, "/api/vhost-limits/%2F").await,
        (
            200,
            serde_json::json!([{"vhost": "/", "value": {"max-queues": 5, "max-connections": 10}}])
        )
    );
    assert_eq!(
        api_get(&b, "/api/user-limits/tp").await.1,
        serde_json::json!([{"user": "tp", "value": {"max-channels": 3}}])
    );
    assert_eq!(
        api_get(&b, "/api/topic-permissions/%2F/tp").await.1,
        serde_json::json!([{"user": "tp", "vhost": "/", "exchange": "amq.topic", "write": "^tp\\.", "read": ".*"}])
    );
    let listed = ctl(&b, &["list-topic-permissions", "--json"]).await;
    assert_ok(&listed);
    let rows: Value = serde_json::from_str(&stdout(&listed)).expect("json");
    assert_eq!(rows.as_array().map(Vec::len), Some(1), "{rows}");
    // A bad limit is the API's 400 (exit 65), and changes nothing.
    assert_eq!(
        ctl(&b, &["set-user-limits", "tp", r#"{"max-queues": 1}"#])
            .await
            .status
            .code(),
        Some(65)
    );
    assert_ok(&ctl(&b, &["clear-user-limits", "tp", "all"]).await);
    assert_ok(&ctl(&b, &["clear-vhost-limits"]).await);
    assert_ok(&ctl(&b, &["clear-topic-permissions", "tp"]).await);
    assert_eq!(
        api_get(&b, "/api/user-limits/tp").await.1,
        serde_json::json!([])
    );
    assert_eq!(
        api_get(&b, "/api/vhost-limits/%2F").await.1,
        serde_json::json!([])
    );
    assert_eq!(api_get(&b, "/api/topic-permissions/%2F/tp").await.0, 404);
    b.stop().await;
}

/// `--uri amqp://...`: the same commands over AMQP (management requests to the node's
/// `amq.warren.management` exchange), with only the AMQP port known.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_work_over_amqp_with_only_the_amqp_port() {
    let b = start().await;
    let uri = format!("amqp://guest:guest@{}/%2f", b.addr);
    let over_amqp = |args: &'static [&'static str]| {
        let uri = uri.clone();
        async move { ctl_raw(&["--uri", &uri], args).await }
    };
    assert_ok(&over_amqp(&["add-user", "by-amqp", "pw"]).await);
    assert_ok(&over_amqp(&["set-permissions", "by-amqp", ".*", ".*", ".*"]).await);
    let conn = lapin_connect(&b).await;
    let ch = lapin_channel(&conn).await;
    lapin_declare(&ch, "seen-over-amqp").await;
    lapin_publish(&ch, "", "seen-over-amqp", b"one").await;
    let out = ctl_until(&b, &["list-queues", "name", "messages"], |o| {
        o.contains("seen-over-amqp")
    })
    .await;
    assert!(out.contains("seen-over-amqp"));
    let listed = over_amqp(&["--json", "list-queues", "name", "messages"]).await;
    assert_ok(&listed);
    let rows: Value = serde_json::from_str(&stdout(&listed)).expect("json");
    assert_eq!(
        rows,
        serde_json::json!([{"name": "seen-over-amqp", "messages": 1}])
    );
    let users = over_amqp(&["list-users"]).await;
    assert_ok(&users);
    assert!(stdout(&users).contains("by-amqp"), "{}", stdout(&users));
    // The user logs in with what was set over AMQP.
    connect_as(&b, "by-amqp", "pw").await;
    // Errors keep their exit codes: a missing queue (69), refused credentials (77), a node down
    // (69).
    assert_eq!(
        over_amqp(&["purge-queue", "no-such-queue"])
            .await
            .status
            .code(),
        Some(69)
    );
    let wrong = format!("amqp://guest:wrong@{}/%2f", b.addr);
    let o = ctl_raw(&["--uri", &wrong], &["list-queues"]).await;
    assert_eq!(o.status.code(), Some(77), "{}", stderr(&o));
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    let down = format!("amqp://guest:guest@127.0.0.1:{port}/%2f");
    let o = ctl_raw(&["--uri", &down], &["list-queues"]).await;
    assert_eq!(o.status.code(), Some(69), "{}", stderr(&o));
    b.stop().await;
}

/// A link named `rabbitmqctl` to the `warren` binary, in a temp dir (kept alive by the guard).
fn rabbitmqctl_link() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let link = dir.path().join("rabbitmqctl");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_warren"), &link).expect("symlink");
    (dir, link)
}

/// `rabbitmqctl ARGS...` through `link`, reaching `b` with `WARREN_CTL_URL` (rabbitmqctl's own
/// command lines name only the node, with -n).
async fn rabbitmqctl(link: &std::path::Path, b: &TestBroker, args: &[&str]) -> Output {
    let run = tokio::process::Command::new(link)
        .args(args)
        .env("WARREN_CTL_URL", format!("http://{}", b.http_addr))
        .env_remove("WARREN_CTL_USERNAME")
        .env_remove("WARREN_CTL_PASSWORD")
        .kill_on_drop(true)
        .output();
    within_long("rabbitmqctl", run)
        .await
        .expect("run rabbitmqctl")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmqctl_command_lines_print_as_rabbitmqctl() {
    let b = start().await;
    let (_dir, link) = rabbitmqctl_link();
    let node = ["-n", "rabbit@some-host"];
    let run = |args: Vec<&'static str>| {
        let (link, b) = (link.clone(), &b);
        async move {
            let args: Vec<&str> = node.iter().copied().chain(args).collect();
            rabbitmqctl(&link, b, &args).await
        }
    };
    let o = run(vec!["await_startup"]).await;
    assert_ok(&o);
    let o = run(vec!["-q", "ping"]).await;
    assert_eq!(stdout(&o), "Ping succeeded\n");

    // The banner and header by default, the header only with -q, the rows only with -s.
    let o = run(vec!["list_users"]).await;
    assert_eq!(
        stdout(&o),
        "Listing users ...\nuser\ttags\nguest\t[administrator]\n"
    );
    let o = run(vec!["list_users", "-q"]).await;
    assert_eq!(stdout(&o), "user\ttags\nguest\t[administrator]\n");
    let o = run(vec!["-q", "--no-table-headers", "list_users"]).await;
    assert_eq!(stdout(&o), "guest\t[administrator]\n");
    let o = run(vec!["--silent", "list_users"]).await;
    assert_eq!(stdout(&o), "guest\t[administrator]\n");
    let o = run(vec!["--formatter", "json", "list_vhosts", "name"]).await;
    assert_eq!(stdout(&o), "[{\"name\":\"/\"}]\n");

    assert_ok(&run(vec!["add_user", "java", "secret"]).await);
    assert_ok(
        &run(vec![
            "set_user_tags",
            "java",
            "administrator",
            "impersonator",
        ])
        .await,
    );
    assert_ok(&run(vec!["set_permissions", "-p", "/", "java", ".*", ".*", ".*"]).await);
    let o = run(vec!["-q", "list_users"]).await;
    assert!(
        stdout(&o).contains("java\t[administrator, impersonator]\n"),
        "{}",
        stdout(&o)
    );
    let o = run(vec!["--vhost", "/", "-s", "list_permissions"]).await;
    assert!(stdout(&o).contains("java\t.*\t.*\t.*\n"), "{}", stdout(&o));
    let o = run(vec![
        "set_policy",
        "--priority",
        "1",
        "ttl",
        "^ttl-",
        r#"{"message-ttl":100}"#,
    ])
    .await;
    assert_eq!(
        stdout(&o),
        "Setting policy \"ttl\" for pattern \"^ttl-\" to \"{\"message-ttl\":100}\" with priority \"1\" for vhost \"/\" ...\n"
    );
    let o = run(vec![
        "-q",
        "list_policies",
        "name",
        "pattern",
        "apply-to",
        "priority",
    ])
    .await;
    assert_eq!(
        stdout(&o),
        "name\tpattern\tapply-to\tpriority\nttl\t^ttl-\tall\t1\n"
    );
    assert_ok(&run(vec!["clear_policy", "ttl"]).await);

    let c = lapin_connect(&b).await;
    let ch = lapin_channel(&c).await;
    lapin_declare(&ch, "listed").await;
    lapin_publish(&ch, "", "listed", b"m").await;
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let o = run(vec![
            "-s",
            "list_queues",
            "name",
            "messages",
            "consumers",
            "arguments",
        ])
        .await;
        if stdout(&o) == "listed\t1\t0\t[]\n" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{}", stdout(&o));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let o = run(vec!["list_queues"]).await;
    assert_eq!(
        stdout(&o),
        "Timeout: 60.0 seconds ...\nListing queues for vhost / ...\nname\tmessages\nlisted\t1\n"
    );

    // rabbitmqctl's exit codes: a missing user 67, vhost 69, a queue to purge 69, a vhost to
    // delete 65, a user that exists 70, a fraction out of range 65, an unknown column 64.
    for (args, code) in [
        (vec!["delete_user", "nobody"], 67),
        (vec!["set_permissions", "nobody", ".*", ".*", ".*"], 67),
        (
            vec![
                "set_permissions",
                "-p",
                "no-vhost",
                "java",
                ".*",
                ".*",
                ".*",
            ],
            69,
        ),
        (vec!["purge_queue", "no-queue"], 69),
        (vec!["delete_vhost", "no-vhost"], 65),
        (vec!["add_user", "java", "other"], 70),
        (vec!["set_vm_memory_high_watermark", "2"], 65),
        (vec!["list_queues", "colour"], 64),
        (vec!["no_such_command"], 64),
    ] {
        let o = run(args.clone()).await;
        assert_eq!(o.status.code(), Some(code), "{args:?}: {}", stderr(&o));
    }
    // The refused add_user left the password as it was.
    connect_as(&b, "java", "secret").await;

    assert_ok(&run(vec!["set_vm_memory_high_watermark", "absolute", "12345"]).await);
    let (_, nodes) = api_get(&b, "/api/nodes").await;
    assert_eq!(nodes[0]["mem_limit"], 12345, "{nodes}");
    assert_ok(&run(vec!["-q", "set_vm_memory_high_watermark", "0.4"]).await);
    let (_, nodes) = api_get(&b, "/api/nodes").await;
    assert_ne!(nodes[0]["mem_limit"], 12345, "{nodes}");
    assert_ok(&run(vec!["set_cluster_name", "renamed"]).await);
    let (_, name) = api_get(&b, "/api/cluster-name").await;
    assert_eq!(name["name"], "renamed");
    b.stop().await;
}

/// The Java client's tests find a connection by its peer port in `list_connections -q pid
/// peer_port client_properties` and close it with `close_connection PID REASON`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_connection_takes_the_pid_that_list_connections_prints() {
    let b = start().await;
    let (_dir, link) = rabbitmqctl_link();
    let properties =
        lapin::ConnectionProperties::default().with_connection_name("recovering".into());
    let uri = format!("amqp://guest:guest@{}/%2f", b.addr);
    let c = within("connect", lapin::Connection::connect(&uri, properties))
        .await
        .expect("connect");
    let mut events = c.events_listener();
    let args = [
        "-n",
        "rabbit@host",
        "list_connections",
        "-q",
        "pid",
        "peer_port",
        "client_properties",
    ];
    let deadline = tokio::time::Instant::now() + T;
    let pid = loop {
        let o = rabbitmqctl(&link, &b, &args).await;
        assert_ok(&o);
        let out = stdout(&o);
        let row = out.lines().find_map(|line| {
            let cells: Vec<&str> = line.split('\t').collect();
            let named = cells
                .get(2)?
                .contains(r#"{"connection_name","recovering"}"#);
            let port_is_a_number = cells.get(1)?.parse::<u16>().is_ok();
            (named && port_is_a_number).then(|| cells[0].to_owned())
        });
        if let Some(pid) = row {
            break pid;
        }
        assert!(tokio::time::Instant::now() < deadline, "{out}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        pid.starts_with('<') && pid.ends_with('>') && !pid.contains(' '),
        "{pid}"
    );
    let o = rabbitmqctl(
        &link,
        &b,
        &["close_connection", &pid, "Closed via rabbitmqctl"],
    )
    .await;
    assert_ok(&o);
    let error = within("the connection's close", async {
        loop {
            match events.next().await {
                Some(lapin::Event::Error(e)) => break Some(e),
                Some(_) => continue,
                None => break None,
            }
        }
    })
    .await
    .expect("closed by the broker");
    assert_eq!(lapin_code(&error), Some(320));
    assert_eq!(
        lapin_text(&error),
        "CONNECTION_FORCED - Closed via rabbitmqctl"
    );
    // A pid no connection has any more: nothing to do, as rabbitmqctl.
    let o = rabbitmqctl(&link, &b, &["close_connection", &pid, "again"]).await;
    assert_ok(&o);
    b.stop().await;
}
