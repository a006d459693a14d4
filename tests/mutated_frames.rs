//! Bad input never panics: after a valid handshake, a session of valid frames (channel, queue,
//! exchange, publish with content, get, ack, qos, confirm, tx) is mutated at random — bytes
//! overwritten, the stream cut short, garbage spliced in — and sent. Whatever the broker answers,
//! no task of it may panic, and a fresh connection must still work. A panic hook counts panics in
//! this process, which runs the broker, so a panicking connection task cannot hide.
//!
//! `PROPTEST_CASES` raises the number of sessions (default 64 here, to keep CI short).

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use common::*;
use proptest::prelude::*;
use warren_amqp::protocol::{basic, channel as chan, confirm, exchange, queue, tx, AMQPClass};
use warren_amqp::types::FieldTable;

static PANICS: AtomicUsize = AtomicUsize::new(0);

fn count_panics() {
    static HOOK: OnceLock<()> = OnceLock::new();
    HOOK.get_or_init(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::SeqCst);
            previous(info);
        }));
    });
}

/// A session a client might send on channel 1 after the handshake.
fn session() -> Vec<u8> {
    let mut out = Vec::new();
    let mut method = |class: AMQPClass| out.extend(method_bytes(1, &class));
    method(AMQPClass::Channel(chan::AMQPMethod::Open(chan::Open {})));
    method(AMQPClass::Basic(basic::AMQPMethod::Qos(basic::Qos {
        prefetch_count: 10,
        global: false,
    })));
    method(AMQPClass::Exchange(exchange::AMQPMethod::Declare(
        exchange::Declare {
            exchange: "fz.x".into(),
            kind: "topic".into(),
            passive: false,
            durable: false,
            auto_delete: false,
            internal: false,
            nowait: false,
            arguments: FieldTable::default(),
        },
    )));
    method(AMQPClass::Queue(queue::AMQPMethod::Declare(
        queue::Declare {
            queue: "fz.q".into(),
            passive: false,
            durable: false,
            exclusive: false,
            auto_delete: true,
            nowait: false,
            arguments: FieldTable::default(),
        },
    )));
    method(AMQPClass::Queue(queue::AMQPMethod::Bind(queue::Bind {
        queue: "fz.q".into(),
        exchange: "fz.x".into(),
        routing_key: "a.#".into(),
        nowait: false,
        arguments: FieldTable::default(),
    })));
    method(AMQPClass::Confirm(confirm::AMQPMethod::Select(
        confirm::Select { nowait: false },
    )));
    let body = b"fuzzed body".to_vec();
    method(AMQPClass::Basic(basic::AMQPMethod::Publish(
        basic::Publish {
            exchange: "fz.x".into(),
            routing_key: "a.b".into(),
            mandatory: true,
            immediate: false,
        },
    )));
    out.extend(header_bytes(1, body.len() as u64));
    out.extend(body_bytes(1, &body));
    let mut method = |class: AMQPClass| out.extend(method_bytes(1, &class));
    method(AMQPClass::Basic(basic::AMQPMethod::Get(basic::Get {
        queue: "fz.q".into(),
        no_ack: false,
    })));
    method(AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
        delivery_tag: 1,
        multiple: false,
    })));
    method(AMQPClass::Tx(tx::AMQPMethod::Select(tx::Select {})));
    method(AMQPClass::Basic(basic::AMQPMethod::Consume(
        basic::Consume {
            queue: "fz.q".into(),
            consumer_tag: "fz".into(),
            no_local: false,
            no_ack: false,
            exclusive: false,
            nowait: false,
            arguments: FieldTable::default(),
        },
    )));
    method(AMQPClass::Channel(chan::AMQPMethod::Close(chan::Close {
        reply_code: 200,
        reply_text: "bye".into(),
        class_id: 0,
        method_id: 0,
    })));
    out
}

#[derive(Clone, Debug)]
enum Mutation {
    /// Overwrite the octet at this position (modulo the length).
    Set(usize, u8),
    /// Cut the stream here (modulo the length).
    Truncate(usize),
    /// Insert these octets here.
    Splice(usize, Vec<u8>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        6 => (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        1 => any::<usize>().prop_map(Mutation::Truncate),
        2 => (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(i, bytes)| Mutation::Splice(i, bytes)),
    ]
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        if bytes.is_empty() {
            break;
        }
        let n = bytes.len();
        match m {
            Mutation::Set(i, b) => bytes[i % n] = *b,
            Mutation::Truncate(i) => bytes.truncate(i % n),
            Mutation::Splice(i, more) => {
                let at = i % n;
                bytes.splice(at..at, more.iter().copied());
            }
        }
    }
    bytes
}

/// One mutated session on a fresh connection; reads whatever comes back for a short while.
async fn run_session(addr: std::net::SocketAddr, bytes: &[u8]) {
    let mut r = Raw::open(addr).await;
    if r.try_send(bytes).await.is_ok() {
        let _ = r.read_raw(1 << 20, Duration::from_millis(300)).await;
    }
}

fn runtime_and_broker() -> &'static (tokio::runtime::Runtime, Arc<TestBroker>) {
    static SHARED: OnceLock<(tokio::runtime::Runtime, Arc<TestBroker>)> = OnceLock::new();
    SHARED.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let broker = rt.block_on(start());
        (rt, Arc::new(broker))
    })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(64),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn mutated_sessions_never_panic_the_broker(
        mutations in prop::collection::vec(mutation(), 1..6)
    ) {
        count_panics();
        let (rt, broker) = runtime_and_broker();
        let before = PANICS.load(Ordering::SeqCst);
        let bytes = mutate(session(), &mutations);
        rt.block_on(async {
            run_session(broker.addr, &bytes).await;
            assert_alive(broker.addr).await;
        });
        prop_assert_eq!(PANICS.load(Ordering::SeqCst), before, "a panic while serving {:?}", mutations);
    }
}
