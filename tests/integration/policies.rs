//! Policies and operator policies as a client sees them: over the management API (RabbitMQ
//! 3.10's paths, status codes, error bodies and authorisation) and in what queues and exchanges do
//! (TTL, length limits applied to queues that already hold messages, dead-lettering, alternate
//! exchanges, operator limits), live as policies are set, changed and deleted, and after a
//! restart.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::common::http_json as http;
use crate::common::*;
use lapin::options::{
    BasicGetOptions, BasicPublishOptions, BasicRejectOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::Confirmation;
use serde_json::{json, Value};

const GUEST: (&str, &str) = ("guest", "guest");

fn put_policy(addr: SocketAddr, path: &str, body: Value) -> u16 {
    http(addr, "PUT", path, Some(&body.to_string()), GUEST).0
}

fn queue_info(addr: SocketAddr, queue: &str) -> Value {
    let (status, body) = http(
        addr,
        "GET",
        &format!("/api/queues/%2F/{queue}"),
        None,
        GUEST,
    );
    assert_eq!(status, 200, "{body}");
    body
}

fn args(entries: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in entries {
        t.insert((*k).into(), v.clone());
    }
    t
}

async fn declare(ch: &lapin::Channel, name: &str, durable: bool, arguments: FieldTable) {
    within(
        "queue.declare",
        ch.queue_declare(
            name.into(),
            QueueDeclareOptions {
                durable,
                ..Default::default()
            },
            arguments,
        ),
    )
    .await
    .expect("queue.declare");
}

/// Publishes on a confirming channel and waits for the confirm: the message is in the queue (or
/// refused) once this returns.
async fn publish_confirmed(
    ch: &lapin::Channel,
    exchange: &str,
    rk: &str,
    body: &[u8],
) -> Confirmation {
    let pending = within(
        "basic.publish",
        ch.basic_publish(
            exchange.into(),
            rk.into(),
            BasicPublishOptions::default(),
            body,
            lapin::BasicProperties::default(),
        ),
    )
    .await
    .expect("basic.publish");
    within("confirm", pending).await.expect("confirm")
}

async fn confirming_channel(c: &lapin::Connection) -> lapin::Channel {
    let ch = lapin_channel(c).await;
    within(
        "confirm.select",
        ch.confirm_select(ConfirmSelectOptions::default()),
    )
    .await
    .expect("confirm.select");
    ch
}

/// Waits (polling) until the queue holds `n` ready messages.
async fn wait_for_count(ch: &lapin::Channel, queue: &str, n: u32) {
    let deadline = Instant::now() + T;
    loop {
        let count = lapin_count(ch, queue).await;
        if count == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{queue} holds {count} messages, not {n}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn bodies(ch: &lapin::Channel, queue: &str) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(m) = lapin_get(ch, queue).await {
        out.push(String::from_utf8_lossy(&m.delivery.data).into_owned());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_ttl_policy_expires_messages_and_deleting_it_lifts_it() {
    let b = start().await;
    let a = b.http_addr;
    let c = lapin_connect(&b).await;
    let ch = confirming_channel(&c).await;
    declare(&ch, "pttl.q", false, FieldTable::default()).await;
    assert_eq!(
        put_policy(
            a,
            "/api/policies/%2F/ttl",
            json!({"pattern": "^pttl\\.", "definition": {"message-ttl": 50}, "apply-to": "queues"})
        ),
        201
    );
    let info = queue_info(a, "pttl.q");
    assert_eq!(info["policy"], "ttl");
    assert_eq!(info["operator_policy"], Value::Null);
    assert_eq!(
        info["effective_policy_definition"],
        json!({"message-ttl": 50})
    );
    publish_confirmed(&ch, "", "pttl.q", b"gone").await;
    wait_for_count(&ch, "pttl.q", 0).await;

    assert_eq!(
        http(a, "DELETE", "/api/policies/%2F/ttl", None, GUEST).0,
        204
    );
    let info = queue_info(a, "pttl.q");
    assert_eq!(info["policy"], Value::Null);
    assert_eq!(info["effective_policy_definition"], json!({}));
    publish_confirmed(&ch, "", "pttl.q", b"kept").await;
    tokio::time::sleep(QUIET).await;
    assert_eq!(bodies(&ch, "pttl.q").await, ["kept"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_max_length_policy_drops_from_the_head_of_a_queue_at_once_and_deleting_it_lifts_it() {
    let b = start().await;
    let a = b.http_addr;
    let c = lapin_connect(&b).await;
    let ch = confirming_channel(&c).await;
    declare(&ch, "plen.q", true, FieldTable::default()).await;
    for i in 1..=5 {
        publish_confirmed(&ch, "", "plen.q", format!("m{i}").as_bytes()).await;
    }
    assert_eq!(
        put_policy(
            a,
            "/api/policies/%2F/len",
            json!({"pattern": "^plen\\.", "definition": {"max-length": 2}})
        ),
        201
    );
    // The queue hears of the policy before it answers anything asked after the PUT.
    assert_eq!(lapin_count(&ch, "plen.q").await, 2);
    assert_eq!(bodies(&ch, "plen.q").await, ["m4", "m5"]);

    // Changed: the new limit, at once.
    for i in 1..=5 {
        publish_confirmed(&ch, "", "plen.q", format!("n{i}").as_bytes()).await;
    }
    assert_eq!(lapin_count(&ch, "plen.q").await, 2);
    assert_eq!(
        put_policy(
            a,
            "/api/policies/%2F/len",
            json!({"pattern": "^plen\\.", "definition": {"max-length": 1}})
        ),
        204
    );
    assert_eq!(bodies(&ch, "plen.q").await, ["n5"]);

    assert_eq!(
        http(a, "DELETE", "/api/policies/%2F/len", None, GUEST).0,
        204
    );
    for i in 1..=4 {
        publish_confirmed(&ch, "", "plen.q", format!("k{i}").as_bytes()).await;
    }
    assert_eq!(lapin_count(&ch, "plen.q").await, 4);
    assert_eq!(
        http(a, "DELETE", "/api/policies/%2F/len", None, GUEST).0,
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overflow_policy_makes_a_full_queue_refuse_publishes() {
    let b = start().await;
    let a = b.http_addr;
    let c = lapin_connect(&b).await;
    let ch = confirming_channel(&c).await;
    declare(&ch, "pov.q", false, FieldTable::default()).await;
    assert_eq!(
        put_policy(
            a,
            "/api/policies/%2F/ov",
            json!({"pattern": "^pov\\.", "definition": {"max-length": 1, "overflow": "reject-publish"}})
        ),
        201
    );
    assert_eq!(
        publish_confirmed(&ch, "", "pov.q", b"in").await,
        Confirmation::Ack(None)
    );
    assert!(matches!(
        publish_confirmed(&ch, "", "pov.q", b"out").await,
        Confirmation::Nack(_)
    ));
    assert_eq!(bodies(&ch, "pov.q").await, ["in"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_exchange_policy_dead_letters_rejected_messages() {
    let b = start().await;
    let a = b.http_addr;
    let c = lapin_connect(&b).await;
    let ch = confirming_channel(&c).await;
    within(
        "exchange.declare",
        ch.exchange_declare(
            "pdlx.x".into(),
            lapin::ExchangeKind::Fanout,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
    .unwrap();
    declare(&ch, "pdlx.dead", false, FieldTable::default()).await;
    within(
        "queue.bind",
        ch.queue_bind(
            "pdlx.dead".into(),
            "pdlx.x".into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
    .unwrap();
    declare(&ch, "pdlx.src", false, FieldTable::default()).await;
    // Set after the queue was declared: it applies to it all the same.
    assert_eq!(
        put_policy(
            a,
            "/api/policies/%2F/dlx",
            json!({"pattern": "^pdlx\\.src$", "definition": {"dead-letter-exchange": "pdlx.x"}})
        ),
        201
    );
    let reject = |ch: lapin::Channel| async move {
        let m = within(
            "basic.get",
            ch.basic_get("pdlx.src".into(), BasicGetOptions { no_ack: false }),
        )
        .await
        .unwrap()
        .expect("a message");
        within(
            "basic.reject",
            ch.basic_reject(
                m.delivery.delivery_tag,
                BasicRejectOptions { requeue: false },
            ),
        )
        .await
        .unwrap();
    };
    publish_confirmed(&ch, "", "pdlx.src", b"rejected").await;
    reject(ch.clone()).await;
    wait_for_count(&ch, "pdlx.dead", 1).await;
    let m = lapin_get(&ch, "pdlx.dead").await.expect("dead-lettered");
    assert_eq!(m.delivery.data, b"rejected");
    let headers = m.delivery.properties.headers().clone().expect("headers");
    assert!(headers.inner().contains_key("x-death"));

    // Deleted: a rejected message is dropped.
    assert_eq!(
        http(a, "DELETE", "/api/policies/%2F/dlx", None, GUEST).0,
        204
    );
    publish_confirmed(&ch, "", "pdlx.src", b"dropped").await;
    reject(ch.clone()).await;
    tokio::time::sleep(QUIET).await;
    assert_eq!(lapin_count(&ch, "pdlx.dead").await, 0);
    assert_eq!(lapin_count(&ch, "pdlx.src").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alternate_exchange_policy_takes_unroutable_messages_unless_the_argument_says_otherwise()
{
    let b = start().await;
    let a = b.http_addr;
    let c = lapin_connect(&b).await;
    let ch = confirming_channel(&c).await;
    let exchange = |name: &'static str, kind: lapin::ExchangeKind, arguments: FieldTable| {
        let ch = ch.clone();
        async move {
            within(
                "exchange.declare",
                ch.exchange_declare(
                    name.into(),
                    kind,
                    ExchangeDeclareOptions::default(),
                    arguments,
                ),
            )
            .await
            .unwrap();
        }
    };
    exchange("pae.x", lapin::ExchangeKind::Direct, FieldTable::default()).await;
    exchange("pae.ae", lapin::ExchangeKind::Fanout, FieldTable::default()).await;
    exchange(
        "pae.own-ae",
        lapin::ExchangeKind::Fanout,
        FieldTable::default(),
    )
    .await;
    exchange(
        "pae.x-arg",
        lapin::ExchangeKind::Direct,
        args(&[(
            "alternate-exchange",
            AMQPValue::LongString("pae.own-ae".into()),
        )]),
    )
    .await;
    for (q, x) in [("pae.caught", "pae.ae"), ("pae.own", "pae.own-ae")] {
        declare(&ch, q, false, FieldTable::default()).await;
        within(
            "queue.bind",
            ch.queue_bind(
                q.into(),
                x.into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            ),
        )
        .await
        .unwrap();
    }
    assert_eq!(
        put_policy(
            a,
            "/api/policies/%2F/ae",
            json!({"pattern": "^pae\\.x", "definition": {"alternate-exchange": "pae.ae"}, "apply-to": "exchanges"})
        ),
        201
    );
    let (_, x) = http(a, "GET", "/api/exchanges/%2F/pae.x", None, GUEST);
    assert_eq!(x["policy"], "ae");
    let (_, other) = http(a, "GET", "/api/exchanges/%2F/pae.ae", None, GUEST);
    assert!(other.get("policy").is_none(), "{other}");
    publish_confirmed(&ch, "pae.x", "nowhere", b"caught").await;
    publish_confirmed(&ch, "pae.x-arg", "nowhere", b"own").await;
    assert_eq!(bodies(&ch, "pae.caught").await, ["caught"]);
    assert_eq!(bodies(&ch, "pae.own").await, ["own"]);

    assert_eq!(
        http(a, "DELETE", "/api/policies/%2F/ae", None, GUEST).0,
        204
    );
    let (_, x) = http(a, "GET", "/api/exchanges/%2F/pae.x", None, GUEST);
    assert!(x.get("policy").is_none(), "{x}");
    publish_confirmed(&ch, "pae.x", "nowhere", b"lost").await;
    assert_eq!(lapin_count(&ch, "pae.caught").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stricter_of_operator_policy_policy_and_argument_wins() {
    let b = start().await;
    let a = b.http_addr;
    let c = lapin_connect(&b).await;
    let ch = confirming_channel(&c).await;
    declare(
        &ch,
        "pop.q",
        false,
        args(&[("x-max-length", AMQPValue::LongInt(3))]),
    )
    .await;
    assert_eq!(
        put_policy(
            a,
            "/api/policies/%2F/user",
            json!({"pattern": "^pop\\.", "definition": {"max-length": 5, "message-ttl": 60000}})
        ),
        201
    );
    assert_eq!(
        put_policy(
            a,
            "/api/operator-policies/%2F/cap",
            json!({"pattern": "^pop\\.", "definition": {"max-length": 2, "message-ttl": 120000}})
        ),
        201
    );
    let info = queue_info(a, "pop.q");
    assert_eq!(info["policy"], "user");
    assert_eq!(info["operator_policy"], "cap");
    assert_eq!(
        info["effective_policy_definition"],
        json!({"max-length": 2, "message-ttl": 60000})
    );
    for i in 1..=4 {
        publish_confirmed(&ch, "", "pop.q", format!("m{i}").as_bytes()).await;
    }
    assert_eq!(bodies(&ch, "pop.q").await, ["m3", "m4"]);
    // A looser cap: the argument is now the strictest.
    assert_eq!(
        put_policy(
            a,
            "/api/operator-policies/%2F/cap",
            json!({"pattern": "^pop\\.", "definition": {"max-length": 10}})
        ),
        204
    );
    for i in 1..=4 {
        publish_confirmed(&ch, "", "pop.q", format!("n{i}").as_bytes()).await;
    }
    assert_eq!(lapin_count(&ch, "pop.q").await, 3);
    let (status, listing) = http(a, "GET", "/api/operator-policies/%2F", None, GUEST);
    assert_eq!(status, 200);
    assert_eq!(
        listing,
        json!([{"vhost": "/", "name": "cap", "pattern": "^pop\\.", "apply-to": "all", "definition": {"max-length": 10}, "priority": 0}])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_declared_later_get_the_highest_priority_matching_policy() {
    let b = start().await;
    let a = b.http_addr;
    for (name, pattern, priority, max) in [
        ("wide", "^pnew", 1, 10),
        ("narrow", "^pnew\\.a", 5, 1),
        ("exchanges", "^pnew", 9, 7),
    ] {
        let apply_to = if name == "exchanges" {
            "exchanges"
        } else {
            "queues"
        };
        assert_eq!(
            put_policy(
                a,
                &format!("/api/policies/%2F/{name}"),
                json!({"pattern": pattern, "definition": {"max-length": max}, "priority": priority, "apply-to": apply_to})
            ),
            201
        );
    }
    let c = lapin_connect(&b).await;
    let ch = confirming_channel(&c).await;
    declare(&ch, "pnew.a", false, FieldTable::default()).await;
    declare(&ch, "pnew.b", false, FieldTable::default()).await;
    assert_eq!(queue_info(a, "pnew.a")["policy"], "narrow");
    assert_eq!(queue_info(a, "pnew.b")["policy"], "wide");
    for q in ["pnew.a", "pnew.b"] {
        for i in 0..3 {
            publish_confirmed(&ch, "", q, format!("{i}").as_bytes()).await;
        }
    }
    assert_eq!(lapin_count(&ch, "pnew.a").await, 1);
    assert_eq!(lapin_count(&ch, "pnew.b").await, 3);
    // Listed by priority.
    let (_, listing) = http(a, "GET", "/api/policies", None, GUEST);
    let names: Vec<&str> = listing
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["wide", "narrow", "exchanges"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_policies_are_refused_with_400_and_change_nothing() {
    let b = start().await;
    let a = b.http_addr;
    let good = json!({"pattern": "^pbad\\.", "definition": {"max-length": 3}});
    assert_eq!(put_policy(a, "/api/policies/%2F/p", good.clone()), 201);
    let before = http(a, "GET", "/api/policies", None, GUEST).1;
    let huge = format!(
        r#"{{"pattern":"x","definition":{{"message-ttl":5,"junk":"{}"}}}}"#,
        "a".repeat(3 << 20)
    );
    let cases: Vec<(String, &str)> = vec![
        ("{not json".into(), "not_json"),
        (r#"{"pattern":"x","definition":{"nonsense":1}}"#.into(), "Validation failed\n\n[{&lt;&lt;\"nonsense\"&gt;&gt;,1}] are not recognised policy settings\n"),
        (r#"{"pattern":"(","definition":{"max-length":1}}"#.into(), "Validation failed\n\npattern should be regular expression but is invalid: {\"missing )\",1}\n"),
        (r#"{"pattern":"x","definition":{"max-length":1},"apply-to":"classic_queues"}"#.into(), "Validation failed\n\napply-to 'classic_queues' unrecognised; should be 'queues', 'exchanges' or 'all'\n"),
        (r#"{"pattern":"x","definition":{"max-length":-1}}"#.into(), "Validation failed\n\n-1 is not a valid maximum length\n"),
        (r#"{"pattern":"x"}"#.into(), "[{key_missing,definition}]"),
    ];
    // A 3 MB body is read (bodies up to 32 MiB are; beyond, 413 before reading, as tested with
    // the management writes) and refused for its unknown key.
    for name in ["new", "p"] {
        let (status, answer) = http(
            a,
            "PUT",
            &format!("/api/policies/%2F/{name}"),
            Some(&huge),
            GUEST,
        );
        assert_eq!(status, 400);
        let reason = answer["reason"].as_str().unwrap_or_default();
        assert!(
            reason.ends_with("are not recognised policy settings\n"),
            "{reason:.100}"
        );
    }
    for (body, reason) in &cases {
        // Both to a new name and over the existing policy.
        for name in ["new", "p"] {
            let (status, answer) = http(
                a,
                "PUT",
                &format!("/api/policies/%2F/{name}"),
                Some(body),
                GUEST,
            );
            assert_eq!(status, 400, "{body:.100}");
            assert_eq!(
                answer,
                json!({"error": "bad_request", "reason": reason}),
                "{body:.100}"
            );
        }
    }
    let (status, answer) = http(
        a,
        "PUT",
        "/api/operator-policies/%2F/o",
        Some(r#"{"pattern":"x","definition":{"overflow":"drop-head"}}"#),
        GUEST,
    );
    assert_eq!(status, 400);
    assert_eq!(answer["reason"], "Validation failed\n\n[{<<\"overflow\">>,<<\"drop-head\">>}] are not recognised policy settings\n");
    assert_eq!(http(a, "GET", "/api/policies", None, GUEST).1, before);
    assert_eq!(
        http(a, "GET", "/api/operator-policies", None, GUEST).1,
        json!([])
    );
    // Where the policy or its vhost is missing.
    assert_eq!(
        http(
            a,
            "PUT",
            "/api/policies/nowhere/p",
            Some(&good.to_string()),
            GUEST
        ),
        (
            404,
            json!({"error": "not_found", "reason": "vhost_not_found"})
        )
    );
    assert_eq!(
        http(a, "GET", "/api/policies/%2F/missing", None, GUEST).0,
        404
    );
    assert_eq!(http(a, "GET", "/api/policies/nowhere", None, GUEST).0, 404);
    // An operator policy's body must say it is JSON.
    let (status, _) = http_request(
        a,
        "PUT",
        "/api/operator-policies/%2F/o",
        &[("Content-Type", "text/plain")],
        None,
        Some(GUEST),
    );
    assert_eq!(status, 415);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_policymakers_and_administrators_change_policies() {
    let b = start().await;
    let a = b.http_addr;
    for (user, tags) in [
        ("mgmt", "management"),
        ("maker", "policymaker"),
        ("stranger", "policymaker"),
        ("plain", ""),
    ] {
        let body = json!({"password": "pw", "tags": tags}).to_string();
        assert_eq!(
            http(a, "PUT", &format!("/api/users/{user}"), Some(&body), GUEST).0,
            201
        );
    }
    let all = json!({"configure": ".*", "write": ".*", "read": ".*"}).to_string();
    for user in ["mgmt", "maker", "plain"] {
        assert_eq!(
            http(
                a,
                "PUT",
                &format!("/api/permissions/%2F/{user}"),
                Some(&all),
                GUEST
            )
            .0,
            201
        );
    }
    let policy = json!({"pattern": "^pauth", "definition": {"max-length": 1}}).to_string();
    let denied = |reason: &str| json!({"error": "not_authorised", "reason": reason});
    let object = denied("User not authorised to access object");
    let admin = denied("Not administrator user");
    let request = |method: &str, path: &str, user: &str| {
        let body = (method == "PUT").then_some(policy.as_str());
        http(a, method, path, body, (user, "pw"))
    };
    // A management user reads the listings of its vhosts, and nothing else.
    assert_eq!(
        request("PUT", "/api/policies/%2F/p", "mgmt"),
        (401, object.clone())
    );
    assert_eq!(request("GET", "/api/policies/%2F", "mgmt").0, 200);
    assert_eq!(request("PUT", "/api/policies/%2F/p", "maker").0, 201);
    assert_eq!(
        request("GET", "/api/policies/%2F/p", "mgmt"),
        (401, object.clone())
    );
    assert_eq!(
        request("DELETE", "/api/policies/%2F/p", "mgmt"),
        (401, object.clone())
    );
    assert_eq!(
        request("GET", "/api/policies", "mgmt")
            .1
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    // A policymaker without permissions in the vhost.
    assert_eq!(
        request("PUT", "/api/policies/%2F/p2", "stranger"),
        (401, object.clone())
    );
    assert_eq!(
        request("GET", "/api/policies/%2F", "stranger"),
        (401, denied("User not authorised to access virtual host"))
    );
    assert_eq!(request("GET", "/api/policies", "stranger").1, json!([]));
    // Operator policies: administrators only.
    assert_eq!(
        request("PUT", "/api/operator-policies/%2F/o", "maker"),
        (401, admin.clone())
    );
    assert_eq!(
        request("GET", "/api/operator-policies/%2F/o", "maker"),
        (401, admin)
    );
    assert_eq!(request("GET", "/api/operator-policies", "maker").0, 200);
    // No management tag at all.
    assert_eq!(
        request("GET", "/api/policies", "plain"),
        (401, denied("Not management user"))
    );
    assert_eq!(request("DELETE", "/api/policies/%2F/p", "maker").0, 204);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_vhost_deletes_its_policies() {
    let b = start().await;
    let a = b.http_addr;
    assert_eq!(http(a, "PUT", "/api/vhosts/pv", None, GUEST).0, 201);
    let policy = json!({"pattern": ".*", "definition": {"max-length": 1}});
    assert_eq!(put_policy(a, "/api/policies/pv/p", policy.clone()), 201);
    assert_eq!(put_policy(a, "/api/operator-policies/pv/o", policy), 201);
    assert_eq!(http(a, "DELETE", "/api/vhosts/pv", None, GUEST).0, 204);
    assert_eq!(http(a, "PUT", "/api/vhosts/pv", None, GUEST).0, 201);
    assert_eq!(http(a, "GET", "/api/policies/pv", None, GUEST).1, json!([]));
    assert_eq!(
        http(a, "GET", "/api/operator-policies/pv", None, GUEST).1,
        json!([])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_survive_a_restart_and_apply_to_recovered_queues() {
    let dir = tempfile::tempdir().unwrap();
    let policy = json!({"vhost": "/", "name": "keep", "pattern": "^prestart\\.", "apply-to": "queues", "definition": {"max-length": 2}, "priority": 3});
    {
        let broker = ChildBroker::start(dir.path(), &[]);
        let a: SocketAddr = ([127, 0, 0, 1], broker.http_port).into();
        assert_eq!(put_policy(a, "/api/policies/%2F/keep", policy.clone()), 201);
        assert_eq!(
            put_policy(
                a,
                "/api/operator-policies/%2F/cap",
                json!({"pattern": "^prestart\\.", "definition": {"message-ttl": 600000}})
            ),
            201
        );
        let c = broker.connect().await;
        let ch = confirming_channel(&c).await;
        declare(&ch, "prestart.q", true, FieldTable::default()).await;
        broker.stop();
    }
    let broker = ChildBroker::start(dir.path(), &[]);
    let a: SocketAddr = ([127, 0, 0, 1], broker.http_port).into();
    let c = broker.connect().await;
    let (status, got) = http(a, "GET", "/api/policies/%2F/keep", None, GUEST);
    assert_eq!((status, got), (200, policy));
    let info = queue_info(a, "prestart.q");
    assert_eq!(info["policy"], "keep");
    assert_eq!(info["operator_policy"], "cap");
    let ch = confirming_channel(&c).await;
    for i in 0..5 {
        publish_confirmed(&ch, "", "prestart.q", format!("{i}").as_bytes()).await;
    }
    assert_eq!(lapin_count(&ch, "prestart.q").await, 2);
}
