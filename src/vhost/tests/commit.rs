//! The vhost's changes through a definition log: a refused commit changes nothing and is a 541;
//! the log holds each change (its cascade included) in order, queues that deleted themselves
//! too, and replaying it onto a fresh topology gives the live one.

use std::sync::Arc;

use futures::FutureExt;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use warren_amqp::{AmqpError, ReplyCode};

use crate::definitions::DefinitionCommand;
use crate::queue::QueueHandle;
use crate::vhost::Vhost;

use super::{empty, exchange, listing, queue, Fixture, CONNECTION};

/// A command in a word or two, to compare a log with what was expected.
fn summary(command: &DefinitionCommand) -> String {
    match command {
        DefinitionCommand::DeclareQueue(q) => format!("declare queue {}", q.name),
        DefinitionCommand::DeleteQueue { name, .. } => format!("delete queue {name}"),
        DefinitionCommand::DeclareExchange(e) => format!("declare exchange {}", e.name),
        DefinitionCommand::DeleteExchange { name, .. } => format!("delete exchange {name}"),
        DefinitionCommand::Bind { binding: b, .. } => {
            format!("bind {}->{}", b.source, b.destination)
        }
        DefinitionCommand::Unbind { binding: b, .. } => {
            format!("unbind {}->{}", b.source, b.destination)
        }
        DefinitionCommand::SetPolicy(p) => format!("set policy {}", p.name),
        DefinitionCommand::ClearPolicy { name, .. } => format!("clear policy {name}"),
        DefinitionCommand::SetQueueMembers { name, members, .. } => {
            format!("members of {name}: {members:?}")
        }
    }
}

/// Declares auto-delete exchange `x` and durable queue `q`, and binds `q` to `x` with key `k`.
async fn bound_pair(vhost: &Arc<Vhost>) -> Arc<QueueHandle> {
    vhost
        .declare_exchange(exchange("x", "direct", true))
        .await
        .unwrap();
    let (q, _) = vhost.declare_queue(queue("q", true)).await.unwrap();
    vhost
        .bind_queue("q", CONNECTION, "x", "k", empty())
        .await
        .unwrap();
    q
}

fn assert_disk_error(outcome: Result<(), AmqpError>) {
    let e = outcome.expect_err("the commit was refused");
    assert_eq!(e.code, ReplyCode::InternalError);
    assert_eq!(e.text, "could not write to disk");
}

#[test]
fn a_refused_commit_changes_nothing_and_answers_541() {
    let fixture = Fixture::new();
    let vhost = &fixture.vhost;
    fixture.runtime.block_on(async {
        bound_pair(vhost).await;
        vhost
            .declare_exchange(exchange("y", "fanout", false))
            .await
            .unwrap();
        let before = listing(&vhost.read());
        let logged = fixture.log.entries();

        fixture.log.refuse(true);
        assert_disk_error(vhost.declare_queue(queue("q2", true)).await.map(|_| ()));
        assert_disk_error(
            vhost
                .declare_queue(queue("transient", false))
                .await
                .map(|_| ()),
        );
        assert_disk_error(vhost.declare_exchange(exchange("x2", "topic", false)).await);
        assert_disk_error(vhost.bind_queue("q", CONNECTION, "x", "k2", empty()).await);
        assert_disk_error(vhost.bind_exchange("y", "x", "k", empty()).await);
        // The last binding of auto-delete `x`: neither it nor `x` may go.
        assert_disk_error(vhost.unbind_queue("q", CONNECTION, "x", "k", empty()).await);
        assert_disk_error(vhost.delete_exchange("y", false).await);
        assert_eq!(listing(&vhost.read()), before);
        assert_eq!(fixture.log.entries(), logged);

        // Checks still come first: what they refuse never reaches the log.
        let e = vhost
            .bind_queue("missing", CONNECTION, "x", "k", empty())
            .await;
        assert_eq!(e.unwrap_err().code, ReplyCode::NotFound);

        fixture.log.refuse(false);
        let (_, created) = vhost.declare_queue(queue("q2", true)).await.unwrap();
        assert!(created);
    });
}

#[test]
fn the_log_holds_each_change_in_order_and_replays_to_the_live_topology() {
    let fixture = Fixture::new();
    let vhost = &fixture.vhost;
    fixture.runtime.block_on(async {
        let q = bound_pair(vhost).await;
        // Declaring again, binding again and unbinding what is not bound change nothing.
        vhost.declare_queue(queue("q", true)).await.unwrap();
        vhost
            .bind_queue("q", CONNECTION, "x", "k", empty())
            .await
            .unwrap();
        vhost
            .unbind_queue("q", CONNECTION, "x", "other", empty())
            .await
            .unwrap();
        // `x` loses its last binding: it goes in the same entry.
        vhost
            .unbind_queue("q", CONNECTION, "x", "k", empty())
            .await
            .unwrap();
        vhost
            .declare_exchange(exchange("z", "fanout", true))
            .await
            .unwrap();
        vhost
            .declare_exchange(exchange("kept", "fanout", false))
            .await
            .unwrap();
        vhost
            .bind_queue("q", CONNECTION, "z", "", empty())
            .await
            .unwrap();
        vhost.bind_exchange("z", "kept", "", empty()).await.unwrap();
        // The queue deletes itself: the vhost records its going and the cascade.
        q.delete_unconditionally().await;
    });
    let log = fixture.log.entries();
    let summaries: Vec<String> = log.iter().map(summary).collect();
    assert_eq!(
        summaries,
        [
            "declare exchange x",
            "declare queue q",
            "bind x->q",
            "bind x->q",
            "unbind x->q",
            "delete exchange x",
            "declare exchange z",
            "declare exchange kept",
            "bind z->q",
            "bind kept->z",
            "delete queue q",
            "delete exchange z",
        ]
    );
    let live = listing(&fixture.vhost.read());
    assert_eq!(
        live.exchanges.iter().filter(|e| e.name == "kept").count(),
        1
    );
    assert_eq!(listing(&fixture.replay(&log)), live);
}

#[test]
fn a_change_is_applied_even_when_its_caller_goes_away_during_the_commit() {
    let fixture = Fixture::new();
    let vhost = &fixture.vhost;
    fixture.runtime.block_on(async {
        // Polled once, up to the wait for the commit, then dropped.
        let gave_up = vhost.declare_queue(queue("q", true)).now_or_never();
        assert!(gave_up.is_none());
        assert!(vhost.queue("q", CONNECTION).is_err());
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        assert!(vhost.queue("q", CONNECTION).is_ok());
        // And the change lock was let go.
        vhost
            .declare_exchange(exchange("x", "direct", false))
            .await
            .unwrap();
    });
    let summaries: Vec<String> = fixture.log.entries().iter().map(summary).collect();
    assert_eq!(summaries, ["declare queue q", "declare exchange x"]);
}

/// What a client may do to a vhost, with names from small sets so that operations meet.
#[derive(Debug, Clone)]
enum Operation {
    DeclareQueue {
        name: u8,
        durable: bool,
    },
    DeleteQueue {
        name: u8,
    },
    DeclareExchange {
        name: u8,
        kind: &'static str,
        auto_delete: bool,
    },
    DeleteExchange {
        name: u8,
    },
    /// queue.bind, or queue.unbind.
    QueueBinding {
        bind: bool,
        queue: u8,
        exchange: u8,
        key: &'static str,
    },
    /// exchange.bind, or exchange.unbind.
    ExchangeBinding {
        bind: bool,
        destination: u8,
        source: u8,
    },
}

fn operation() -> impl Strategy<Value = Operation> {
    let n = || 0..3u8;
    let key = prop::sample::select(vec!["a", "b"]);
    let kind = prop::sample::select(vec!["direct", "fanout", "topic"]);
    prop_oneof![
        2 => (n(), any::<bool>()).prop_map(|(name, durable)| Operation::DeclareQueue { name, durable }),
        1 => n().prop_map(|name| Operation::DeleteQueue { name }),
        2 => (n(), kind, any::<bool>()).prop_map(|(name, kind, auto_delete)| {
            Operation::DeclareExchange { name, kind, auto_delete }
        }),
        1 => n().prop_map(|name| Operation::DeleteExchange { name }),
        5 => (any::<bool>(), n(), n(), key).prop_map(|(bind, queue, exchange, key)| {
            Operation::QueueBinding { bind, queue, exchange, key }
        }),
        3 => (any::<bool>(), n(), n()).prop_map(|(bind, destination, source)| {
            Operation::ExchangeBinding { bind, destination, source }
        }),
    ]
}

/// Carries out an operation; refusals (a missing queue, an inequivalent declare) are fine.
async fn perform(vhost: &Arc<Vhost>, op: &Operation) {
    let q = |n: &u8| format!("q{n}");
    let x = |n: &u8| format!("x{n}");
    let _ = match op {
        Operation::DeclareQueue { name, durable } => vhost
            .declare_queue(queue(&q(name), *durable))
            .await
            .map(|_| ()),
        Operation::DeleteQueue { name } => match vhost.queue(&q(name), CONNECTION) {
            Ok(handle) => {
                handle.delete_unconditionally().await;
                Ok(())
            }
            Err(e) => Err(e),
        },
        Operation::DeclareExchange {
            name,
            kind,
            auto_delete,
        } => {
            vhost
                .declare_exchange(exchange(&x(name), kind, *auto_delete))
                .await
        }
        Operation::DeleteExchange { name } => vhost.delete_exchange(&x(name), false).await,
        Operation::QueueBinding {
            bind,
            queue,
            exchange,
            key,
        } => {
            let (queue, exchange) = (q(queue), x(exchange));
            match bind {
                true => {
                    vhost
                        .bind_queue(&queue, CONNECTION, &exchange, key, empty())
                        .await
                }
                false => {
                    vhost
                        .unbind_queue(&queue, CONNECTION, &exchange, key, empty())
                        .await
                }
            }
        }
        Operation::ExchangeBinding {
            bind,
            destination,
            source,
        } => {
            let (destination, source) = (x(destination), x(source));
            match bind {
                true => {
                    vhost
                        .bind_exchange(&destination, &source, "", empty())
                        .await
                }
                false => {
                    vhost
                        .unbind_exchange(&destination, &source, "", empty())
                        .await
                }
            }
        }
    };
}

#[test]
fn any_sequence_of_client_changes_replays_from_the_log_to_the_live_topology() {
    let mut runner = TestRunner::new(Config {
        cases: 48,
        ..Config::default()
    });
    runner
        .run(&prop::collection::vec(operation(), 0..40), |ops| {
            let fixture = Fixture::new();
            fixture.runtime.block_on(async {
                for op in &ops {
                    perform(&fixture.vhost, op).await;
                }
            });
            let live = listing(&fixture.vhost.read());
            prop_assert_eq!(listing(&fixture.replay(&fixture.log.entries())), live);
            Ok(())
        })
        .unwrap();
}
