//! Users, vhosts and permissions: the management API's writes (status codes and bodies as
//! RabbitMQ 3.10's), logins checked against stored hashes (RabbitMQ's format), connection.open
//! refused without permission (530), vhost deletion closing its connections (320), and the
//! configure / write / read checks on AMQP methods with RabbitMQ's 403 texts.

use std::time::Duration;

use crate::common::http_json as http;
use crate::common::*;
use lapin::options::*;
use lapin::types::FieldTable;
use serde_json::json;

const GUEST: (&str, &str) = ("guest", "guest");

async fn connect_as(
    b: &TestBroker,
    user: &str,
    pass: &str,
    vhost: &str,
) -> lapin::Result<lapin::Connection> {
    let uri = format!(
        "amqp://{user}:{pass}@{}/{}",
        b.addr,
        vhost.replace('/', "%2f")
    );
    within(
        "connect",
        lapin::Connection::connect(&uri, lapin::ConnectionProperties::default()),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_are_managed_over_http_with_rabbitmq_status_codes_and_hashes() {
    let b = start().await;
    let a = b.http_addr;
    let put = |path: &str, body: &str| http(a, "PUT", path, Some(body), GUEST);
    assert_eq!(
        put(
            "/api/users/u1",
            r#"{"password":"p1","tags":"administrator"}"#
        )
        .0,
        201
    );
    assert_eq!(
        put("/api/users/u1", r#"{"password":"p2","tags":""}"#).0,
        204
    );
    // A hash made by RabbitMQ 3.10 (`rabbitmqctl add_user u p`, then export_definitions).
    let theirs = "zC2kn+lAXYtfFjnKorF4QlvLiuJnlTg+K32MFmD/oVmuzGkW";
    let body = json!({"password_hash": theirs, "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": ["monitoring"]});
    assert_eq!(put("/api/users/imported", &body.to_string()).0, 201);
    assert_eq!(put("/api/users/nopass", r#"{"tags":""}"#).0, 201);
    let (status, err) = put("/api/users/x", r#"{"password":"p"}"#);
    assert_eq!(
        (status, err),
        (
            400,
            json!({"error":"bad_request","reason":"tags_not_present"})
        )
    );
    let (status, err) = put("/api/users/x", "{bad");
    assert_eq!((status, err["reason"].clone()), (400, json!("not_json")));
    let (status, err) = put("/api/users/x", r#"{"password_hash":"abc","tags":""}"#);
    assert_eq!(
        (status, err["reason"].clone()),
        (400, json!(["not_base64", "abc"]))
    );

    let (status, u) = http(a, "GET", "/api/users/imported", None, GUEST);
    assert_eq!(status, 200);
    assert_eq!(
        u,
        json!({"name":"imported","password_hash":theirs,"hashing_algorithm":"rabbit_password_hashing_sha256","tags":["monitoring"],"limits":{}})
    );
    let (_, all) = http(a, "GET", "/api/users", None, GUEST);
    let names: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["guest", "imported", "nopass", "u1"]);
    // u1's new password took; its tags are now none, so it may not use the API at all.
    let (status, err) = http(a, "GET", "/api/users", None, ("u1", "p2"));
    assert_eq!(
        (status, err["reason"].clone()),
        (401, json!("Not management user"))
    );
    assert_eq!(http(a, "GET", "/api/overview", None, ("u1", "p1")).0, 401);
    // A monitoring user (logging in with the password RabbitMQ hashed) reads, but may not write.
    assert_eq!(
        http(a, "GET", "/api/overview", None, ("imported", "p")).0,
        200
    );
    let (status, err) = http(a, "PUT", "/api/vhosts/v", Some(""), ("imported", "p"));
    assert_eq!(
        (status, err["reason"].clone()),
        (401, json!("Not administrator user"))
    );
    assert_eq!(http(a, "GET", "/api/overview", None, ("nopass", "")).0, 401);

    // Over AMQP: the imported user logs in once it has permissions; the passwordless one never.
    assert_eq!(
        http(
            a,
            "PUT",
            "/api/permissions/%2F/imported",
            Some(r#"{"configure":".*","write":".*","read":".*"}"#),
            GUEST
        )
        .0,
        201
    );
    let c = connect_as(&b, "imported", "p", "/")
        .await
        .expect("imported user logs in");
    c.close(200, "bye".into()).await.unwrap();
    assert!(connect_as(&b, "imported", "wrong", "/").await.is_err());
    assert!(connect_as(&b, "nopass", "", "/").await.is_err());

    assert_eq!(http(a, "DELETE", "/api/users/u1", None, GUEST).0, 204);
    assert_eq!(http(a, "DELETE", "/api/users/u1", None, GUEST).0, 404);
    assert_eq!(http(a, "GET", "/api/users/u1", None, GUEST).0, 404);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vhosts_and_permissions_over_http_and_connection_open() {
    let b = start().await;
    let a = b.http_addr;
    assert_eq!(
        http(
            a,
            "PUT",
            "/api/users/pu",
            Some(r#"{"password":"pp","tags":""}"#),
            GUEST
        )
        .0,
        201
    );
    assert_eq!(http(a, "PUT", "/api/vhosts/v1", Some(""), GUEST).0, 201);
    assert_eq!(
        http(
            a,
            "PUT",
            "/api/vhosts/v1",
            Some(r#"{"description":"d","tags":"a,b"}"#),
            GUEST
        )
        .0,
        204
    );
    let (_, v) = http(a, "GET", "/api/vhosts/v1", None, GUEST);
    assert_eq!(v["metadata"], json!({"description":"d","tags":["a","b"]}));
    // The creator got every permission on the new vhost, as with RabbitMQ's plugin.
    let (_, perms) = http(a, "GET", "/api/permissions", None, GUEST);
    assert_eq!(
        perms,
        json!([
            {"user":"guest","vhost":"/","configure":".*","write":".*","read":".*"},
            {"user":"guest","vhost":"v1","configure":".*","write":".*","read":".*"}
        ])
    );
    let put_perm = |path: &str, body: &str| http(a, "PUT", path, Some(body), GUEST);
    let (status, err) = put_perm("/api/permissions/v1/pu", r#"{"configure":".*"}"#);
    assert_eq!(
        (status, err["reason"].clone()),
        (400, json!("[{key_missing,write},{key_missing,read}]"))
    );
    let (status, err) = put_perm(
        "/api/permissions/nov/pu",
        r#"{"configure":".*","write":".*","read":".*"}"#,
    );
    assert_eq!(
        (status, err["reason"].clone()),
        (400, json!("vhost_or_user_not_found"))
    );
    let (status, err) = put_perm(
        "/api/permissions/v1/pu",
        r#"{"configure":"(","write":".*","read":".*"}"#,
    );
    assert_eq!(
        (status, err["reason"][0].clone()),
        (400, json!("invalid_regexp"))
    );
    assert_eq!(
        http(a, "GET", "/api/permissions/v1/pu", None, GUEST).0,
        404,
        "nothing half-applied"
    );

    // No permission on v1: RabbitMQ's 530.
    let e = connect_as(&b, "pu", "pp", "v1").await.expect_err("refused");
    assert_eq!(lapin_code(&e), Some(530), "{e:?}");
    assert!(
        lapin_text(&e).contains("access to vhost 'v1' refused for user 'pu'"),
        "{e:?}"
    );
    let e = connect_as(&b, "pu", "pp", "nov")
        .await
        .expect_err("refused");
    assert!(lapin_text(&e).contains("vhost nov not found"), "{e:?}");

    assert_eq!(
        put_perm(
            "/api/permissions/v1/pu",
            r#"{"configure":".*","write":".*","read":".*"}"#
        )
        .0,
        201
    );
    assert_eq!(
        put_perm(
            "/api/permissions/v1/pu",
            r#"{"configure":"^q","write":".*","read":".*"}"#
        )
        .0,
        204
    );
    let (_, p) = http(a, "GET", "/api/permissions/v1/pu", None, GUEST);
    assert_eq!(
        p,
        json!({"user":"pu","vhost":"v1","configure":"^q","write":".*","read":".*"})
    );
    let c = connect_as(&b, "pu", "pp", "v1")
        .await
        .expect("permitted now");
    let ch = lapin_channel(&c).await;
    within(
        "declare",
        ch.queue_declare(
            "q1".into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await
    .unwrap();

    // Deleting the vhost closes its connections with 320 and takes its queues.
    assert_eq!(http(a, "DELETE", "/api/vhosts/v1", None, GUEST).0, 204);
    assert_eq!(http(a, "DELETE", "/api/vhosts/v1", None, GUEST).0, 404);
    within("connection closed", async {
        while c.status().connected() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(http(a, "GET", "/api/queues/v1", None, GUEST).0, 404);
    assert_eq!(http(a, "GET", "/api/permissions/v1/pu", None, GUEST).0, 404);
    // A new vhost of the same name starts empty.
    assert_eq!(http(a, "PUT", "/api/vhosts/v1", Some(""), GUEST).0, 201);
    let (_, queues) = http(a, "GET", "/api/queues/v1", None, GUEST);
    assert_eq!(queues, json!([]));
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_vhost_closes_its_connections_with_320() {
    let b = start().await;
    assert_eq!(
        http(b.http_addr, "PUT", "/api/vhosts/gone", Some(""), GUEST).0,
        201
    );
    let h = Handshake {
        vhost: "gone".into(),
        ..Handshake::default()
    };
    let mut r = Raw::open_with(b.addr, h).await;
    r.open_channel(1).await;
    assert_eq!(
        http(b.http_addr, "DELETE", "/api/vhosts/gone", None, GUEST).0,
        204
    );
    let close = r.expect_connection_close().await;
    assert_eq!(
        (close.code, close.text.as_str()),
        (320, "CONNECTION_FORCED - vhost 'gone' is deleted")
    );
    b.stop().await;
}

async fn refused<T: std::fmt::Debug>(r: lapin::Result<T>, text: &str) {
    let e = assert_lapin_code(r, 403);
    assert_eq!(lapin_text(&e), format!("ACCESS_REFUSED - {text}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permissions_are_checked_where_rabbitmq_checks_them_and_changes_apply_at_once() {
    let b = start().await;
    let a = b.http_addr;
    assert_eq!(
        http(
            a,
            "PUT",
            "/api/users/pu",
            Some(r#"{"password":"pp","tags":""}"#),
            GUEST
        )
        .0,
        201
    );
    let set = |c: &str, w: &str, r: &str| {
        let body = json!({"configure": c, "write": w, "read": r}).to_string();
        http(a, "PUT", "/api/permissions/%2F/pu", Some(&body), GUEST).0
    };
    assert_eq!(set("^q", "^(w|x)", "^r"), 201);
    let admin = lapin_connect(&b).await;
    let ach = lapin_channel(&admin).await;
    for q in ["rq", "wq", "other"] {
        lapin_declare(&ach, q).await;
    }
    for x in ["xe", "re"] {
        within(
            "exchange.declare",
            ach.exchange_declare(
                x.into(),
                lapin::ExchangeKind::Direct,
                ExchangeDeclareOptions::default(),
                FieldTable::default(),
            ),
        )
        .await
        .unwrap();
    }
    let c = connect_as(&b, "pu", "pp", "/").await.unwrap();
    let refusal = |kind: &str, name: &str| {
        format!("access to {kind} '{name}' in vhost '/' refused for user 'pu'")
    };
    let no = FieldTable::default;

    let ch = lapin_channel(&c).await;
    within(
        "declare q1",
        ch.queue_declare("q1".into(), QueueDeclareOptions::default(), no()),
    )
    .await
    .unwrap();
    // Passive declares are not checked.
    within(
        "passive",
        ch.queue_declare(
            "other".into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            no(),
        ),
    )
    .await
    .unwrap();
    within(
        "passive x",
        ch.exchange_declare(
            "xe".into(),
            lapin::ExchangeKind::Direct,
            ExchangeDeclareOptions {
                passive: true,
                ..Default::default()
            },
            no(),
        ),
    )
    .await
    .unwrap();
    within(
        "bind",
        ch.queue_bind(
            "wq".into(),
            "re".into(),
            "k".into(),
            QueueBindOptions::default(),
            no(),
        ),
    )
    .await
    .unwrap();
    within(
        "xbind",
        ch.exchange_bind(
            "xe".into(),
            "re".into(),
            "k".into(),
            ExchangeBindOptions::default(),
            no(),
        ),
    )
    .await
    .unwrap();
    within(
        "get rq",
        ch.basic_get("rq".into(), BasicGetOptions::default()),
    )
    .await
    .unwrap();
    within(
        "purge rq",
        ch.queue_purge("rq".into(), QueuePurgeOptions::default()),
    )
    .await
    .unwrap();
    within(
        "delete q1",
        ch.queue_delete("q1".into(), QueueDeleteOptions::default()),
    )
    .await
    .unwrap();

    let cases: Vec<(&str, String)> = vec![
        ("declare other", refusal("queue", "other")),
        ("exchange.declare zz", refusal("exchange", "zz")),
        ("bind rq<-re", refusal("queue", "rq")),
        ("bind wq<-xe", refusal("exchange", "xe")),
        ("bind wq<-missing", refusal("exchange", "nosuchx")),
        ("unbind rq<-re", refusal("queue", "rq")),
        ("exchange.bind re<-xe", refusal("exchange", "re")),
        ("get wq", refusal("queue", "wq")),
        ("consume wq", refusal("queue", "wq")),
        ("purge wq", refusal("queue", "wq")),
        ("delete other", refusal("queue", "other")),
        ("delete missing", refusal("queue", "nosuch")),
        ("exchange.delete xe", refusal("exchange", "xe")),
    ];
    for (what, text) in cases {
        let ch = lapin_channel(&c).await;
        let o = QueueDeclareOptions::default();
        let r: lapin::Result<()> = match what {
            "declare other" => ch.queue_declare("other".into(), o, no()).await.map(drop),
            "exchange.declare zz" => {
                ch.exchange_declare(
                    "zz".into(),
                    lapin::ExchangeKind::Direct,
                    ExchangeDeclareOptions::default(),
                    no(),
                )
                .await
            }
            "bind rq<-re" => {
                ch.queue_bind(
                    "rq".into(),
                    "re".into(),
                    "k".into(),
                    QueueBindOptions::default(),
                    no(),
                )
                .await
            }
            "bind wq<-xe" => {
                ch.queue_bind(
                    "wq".into(),
                    "xe".into(),
                    "k".into(),
                    QueueBindOptions::default(),
                    no(),
                )
                .await
            }
            "bind wq<-missing" => {
                ch.queue_bind(
                    "wq".into(),
                    "nosuchx".into(),
                    "k".into(),
                    QueueBindOptions::default(),
                    no(),
                )
                .await
            }
            "unbind rq<-re" => {
                ch.queue_unbind("rq".into(), "re".into(), "k".into(), no())
                    .await
            }
            "exchange.bind re<-xe" => {
                ch.exchange_bind(
                    "re".into(),
                    "xe".into(),
                    "k".into(),
                    ExchangeBindOptions::default(),
                    no(),
                )
                .await
            }
            "get wq" => ch
                .basic_get("wq".into(), BasicGetOptions::default())
                .await
                .map(drop),
            "consume wq" => ch
                .basic_consume("wq".into(), "".into(), BasicConsumeOptions::default(), no())
                .await
                .map(drop),
            "purge wq" => ch
                .queue_purge("wq".into(), QueuePurgeOptions::default())
                .await
                .map(drop),
            "delete other" => ch
                .queue_delete("other".into(), QueueDeleteOptions::default())
                .await
                .map(drop),
            "delete missing" => ch
                .queue_delete("nosuch".into(), QueueDeleteOptions::default())
                .await
                .map(drop),
            "exchange.delete xe" => {
                ch.exchange_delete("xe".into(), ExchangeDeleteOptions::default())
                    .await
            }
            _ => unreachable!(),
        };
        refused(within(what, async { r }).await, &text).await;
    }

    // basic.publish needs write on the exchange; the default one is `amq.default`.
    let h = Handshake {
        mechanism: "PLAIN".into(),
        response: plain("pu", "pp"),
        ..Handshake::default()
    };
    let mut r = Raw::open_with(b.addr, h).await;
    r.open_channel(1).await;
    r.publish(1, "", "rq", b"x").await;
    let close = r.expect_channel_close(1).await;
    assert_eq!(
        (close.code, close.text),
        (
            403,
            format!("ACCESS_REFUSED - {}", refusal("exchange", "amq.default"))
        )
    );
    r.open_channel(2).await;
    r.publish(2, "xe", "k", b"x").await;
    r.expect_silence(Duration::from_millis(200)).await;

    // A change applies to the open connection at once.
    assert_eq!(set("^q", "^(w|x)", "^(r|w)"), 204);
    let ch = lapin_channel(&c).await;
    within(
        "get wq now",
        ch.basic_get("wq".into(), BasicGetOptions::default()),
    )
    .await
    .unwrap();
    assert_eq!(set("^q", "", "^r"), 204);
    let ch = lapin_channel(&c).await;
    refused(
        ch.basic_get("wq".into(), BasicGetOptions::default())
            .await
            .map(drop),
        &refusal("queue", "wq"),
    )
    .await;
    // Losing every permission in the vhost: its operations are refused (the connection stays).
    assert_eq!(
        http(a, "DELETE", "/api/permissions/%2F/pu", None, GUEST).0,
        204
    );
    let ch = lapin_channel(&c).await;
    refused(
        ch.basic_get("rq".into(), BasicGetOptions::default())
            .await
            .map(drop),
        &refusal("queue", "rq"),
    )
    .await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_vhosts_and_permissions_survive_a_restart_and_the_default_user_is_seeded_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = || {
        let mut c = warren::Config::ephemeral(dir.path().to_owned());
        c.default_user = "admin".into();
        c.default_pass = "secret".into();
        c
    };
    {
        let broker = warren::broker::Broker::open(config()).unwrap();
        let lo: std::net::IpAddr = [127, 0, 0, 1].into();
        assert!(broker.users.check_password("admin", "secret", lo).is_ok());
        assert_eq!(broker.users.tags("admin"), ["administrator"]);
        assert!(broker
            .put_vhost("v1", "d".into(), vec![], None)
            .await
            .unwrap());
        let (mut user, _) = warren::auth::default_records("bob", "pw");
        user.tags = vec!["management".into()];
        assert!(broker.put_user(user).await.unwrap());
        let perm = warren_storage::PermissionRecord {
            user: "bob".into(),
            vhost: "v1".into(),
            configure: "^c".into(),
            write: "^w".into(),
            read: "^r".into(),
        };
        assert_eq!(broker.set_permission(perm).await.unwrap(), Ok(true));
        assert!(broker.delete_user("admin").await.unwrap());
    }
    // The default user is not created again, even with other settings.
    let mut c = config();
    c.default_user = "other".into();
    let broker = warren::broker::Broker::open(c).unwrap();
    let lo: std::net::IpAddr = [127, 0, 0, 1].into();
    assert!(broker.users.user("admin").is_none());
    assert!(broker.users.user("other").is_none());
    assert!(broker.users.check_password("bob", "pw", lo).is_ok());
    assert_eq!(broker.users.tags("bob"), ["management"]);
    let names: Vec<String> = broker.vhosts().iter().map(|v| v.name.clone()).collect();
    assert_eq!(names, ["/", "v1"]);
    assert_eq!(broker.vhost("v1").unwrap().metadata().0, "d");
    assert!(broker
        .users
        .permitted("bob", "v1", warren::auth::Access::Write, "w1"));
    assert!(!broker
        .users
        .permitted("bob", "v1", warren::auth::Access::Write, "c1"));
}

/// As RabbitMQ's plugin filters them: a management user sees the queues, exchanges and
/// bindings of the vhosts it may log in to, and is refused (401) another vhost's; a monitoring
/// user knows every vhost; administrators see everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_show_non_administrators_only_their_vhosts() {
    let b = start().await;
    let a = b.http_addr;
    let put = |path: &str, body: &str| http(a, "PUT", path, Some(body), GUEST).0;
    assert_eq!(put("/api/vhosts/mine", "{}"), 201);
    assert_eq!(put("/api/vhosts/theirs", "{}"), 201);
    assert_eq!(put("/api/queues/mine/q-mine", "{}"), 201);
    assert_eq!(put("/api/queues/theirs/q-theirs", "{}"), 201);
    for (user, tags) in [("mgr", "management"), ("mon", "monitoring")] {
        assert_eq!(
            put(
                &format!("/api/users/{user}"),
                &format!(r#"{{"password":"pp","tags":"{tags}"}}"#)
            ),
            201
        );
        assert_eq!(
            put(
                &format!("/api/permissions/mine/{user}"),
                r#"{"configure":".*","write":".*","read":".*"}"#
            ),
            201
        );
    }
    let names = |v: &serde_json::Value, key: &str| -> Vec<String> {
        let mut names: Vec<String> = v
            .as_array()
            .map(|list| {
                list.iter()
                    .filter_map(|o| o[key].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    };
    let as_mgr = |path: &str| http(a, "GET", path, None, ("mgr", "pp"));
    let as_mon = |path: &str| http(a, "GET", path, None, ("mon", "pp"));
    let (status, queues) = as_mgr("/api/queues");
    assert_eq!(
        (status, names(&queues, "vhost")),
        (200, vec!["mine".to_owned()])
    );
    let (_, vhosts) = as_mgr("/api/vhosts");
    assert_eq!(names(&vhosts, "name"), ["mine"]);
    let (_, exchanges) = as_mgr("/api/exchanges");
    assert!(names(&exchanges, "vhost").iter().all(|v| v == "mine"));
    for path in [
        "/api/queues/theirs",
        "/api/queues/theirs/q-theirs",
        "/api/exchanges/theirs",
        "/api/exchanges/theirs/amq.direct",
        "/api/bindings/theirs",
    ] {
        assert_eq!(
            as_mgr(path),
            (
                401,
                json!({"error": "not_authorised", "reason": "User not authorised to access virtual host"})
            ),
            "{path}"
        );
    }
    assert_eq!(as_mgr("/api/queues/mine/q-mine").0, 200);
    // One vhost is for administrators (RabbitMQ 3.10), even the user's own.
    for path in ["/api/vhosts/mine", "/api/vhosts/theirs"] {
        assert_eq!(
            as_mgr(path),
            (
                401,
                json!({"error": "not_authorised", "reason": "Not administrator user"})
            )
        );
        assert_eq!(as_mon(path).0, 401);
    }
    // Monitoring knows every vhost, and lists the objects of those it may log in to.
    let (_, vhosts) = as_mon("/api/vhosts");
    assert_eq!(names(&vhosts, "name"), ["/", "mine", "theirs"]);
    let (_, queues) = as_mon("/api/queues");
    assert_eq!(names(&queues, "vhost"), ["mine"]);
    // Administrators see all.
    let (_, queues) = http(a, "GET", "/api/queues", None, GUEST);
    assert_eq!(names(&queues, "name"), ["q-mine", "q-theirs"]);
    b.stop().await;
}

/// A vhost's default queue type (RabbitMQ's `defaultqueuetype`, set at creation): a declare
/// that names no type gets it where it fits (durable, not exclusive nor auto-delete), is then
/// equivalent to a redeclare, and shows in the listings; other declares stay classic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vhost_default_queue_type_applies_where_it_fits() {
    let b = start().await;
    let a = b.http_addr;
    assert_eq!(
        http(
            a,
            "PUT",
            "/api/vhosts/dq",
            Some(r#"{"defaultqueuetype":"bogus"}"#),
            GUEST
        ),
        (
            400,
            json!({"error": "bad_request", "reason": "invalid_queue_type"})
        )
    );
    assert_eq!(
        http(
            a,
            "PUT",
            "/api/vhosts/dq",
            Some(r#"{"defaultqueuetype":"quorum"}"#),
            GUEST
        )
        .0,
        201
    );
    // An update does not change it.
    assert_eq!(
        http(
            a,
            "PUT",
            "/api/vhosts/dq",
            Some(r#"{"defaultqueuetype":"stream"}"#),
            GUEST
        )
        .0,
        204
    );
    let (_, v) = http(a, "GET", "/api/vhosts/dq", None, GUEST);
    assert_eq!(v["default_queue_type"], "quorum");
    let conn = connect_as(&b, "guest", "guest", "dq")
        .await
        .expect("connect");
    let ch = lapin_channel(&conn).await;
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    for _ in 0..2 {
        ch.queue_declare("dq.durable".into(), durable, FieldTable::default())
            .await
            .expect("declare, then an equivalent redeclare");
    }
    lapin_declare(&ch, "dq.transient").await;
    let (_, q) = http(a, "GET", "/api/queues/dq/dq.durable", None, GUEST);
    assert_eq!(
        (&q["type"], &q["arguments"]),
        (&json!("quorum"), &json!({"x-queue-type": "quorum"}))
    );
    let (_, q) = http(a, "GET", "/api/queues/dq/dq.transient", None, GUEST);
    assert_eq!(
        (&q["type"], &q["arguments"]),
        (&json!("classic"), &json!({}))
    );
    b.stop().await;
}

/// The `user_id` property must name the publishing user (406 otherwise, the channel closed),
/// except for a user tagged `impersonator`, as in RabbitMQ (the Java client's
/// `UserIDHeader.impersonatedUserId`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_impersonator_may_publish_with_another_users_id() {
    let b = start().await;
    let a = b.http_addr;
    for (user, tags) in [("imp", "impersonator"), ("plain", "")] {
        let body = json!({"password": "pw", "tags": tags}).to_string();
        assert_eq!(
            http(a, "PUT", &format!("/api/users/{user}"), Some(&body), GUEST).0,
            201
        );
        let all = json!({"configure": ".*", "write": ".*", "read": ".*"}).to_string();
        let path = format!("/api/permissions/%2F/{user}");
        assert_eq!(http(a, "PUT", &path, Some(&all), GUEST).0, 201);
    }
    let admin = lapin_connect(&b).await;
    let ach = lapin_channel(&admin).await;
    lapin_declare(&ach, "as.someone").await;
    let publish_as = |conn: lapin::Connection| async move {
        let ch = lapin_channel(&conn).await;
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("confirms");
        let props = lapin::BasicProperties::default().with_user_id("guest".into());
        let confirm = ch
            .basic_publish(
                "".into(),
                "as.someone".into(),
                BasicPublishOptions::default(),
                b"impersonated",
                props,
            )
            .await
            .expect("publish");
        (confirm.await, conn)
    };
    let (confirmed, _imp) = publish_as(connect_as(&b, "imp", "pw", "/").await.unwrap()).await;
    assert!(confirmed.expect("a confirm").is_ack());
    let (refused, _plain) = publish_as(connect_as(&b, "plain", "pw", "/").await.unwrap()).await;
    let text = format!("{refused:?}");
    assert!(
        text.contains("PRECONDITION_FAILED") || text.contains("406"),
        "refused with 406: {text}"
    );
    let got = lapin_get(&ach, "as.someone")
        .await
        .expect("the impersonator's message");
    assert_eq!(
        got.delivery
            .properties
            .user_id()
            .as_ref()
            .map(|u| u.as_str()),
        Some("guest")
    );
    assert!(lapin_get(&ach, "as.someone").await.is_none());
    b.stop().await;
}
