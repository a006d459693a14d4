//! A queue that deletes itself (it is not serialized with changes: `change.rs`) while a change
//! is being committed: the change finds at apply time that what it planned on has moved, and the
//! vhost corrects for it; the log still replays to the live topology.

use crate::definitions::DefinitionCommand;

use super::{empty, exchange, listing, queue, Fixture, RecordingLog, CONNECTION};

/// Waits until the log holds `count` entries (a change in flight has appended its own).
async fn appended(log: &RecordingLog, count: usize) {
    while log.entries().len() < count {
        tokio::task::yield_now().await;
    }
}

#[test]
fn a_binding_to_a_queue_that_went_during_the_commit_is_skipped_and_unwritten() {
    let fixture = Fixture::new();
    let vhost = &fixture.vhost;
    fixture.runtime.block_on(async {
        vhost
            .declare_exchange(exchange("x", "fanout", false))
            .await
            .unwrap();
        let (q, _) = vhost.declare_queue(queue("q", true)).await.unwrap();
        let before = fixture.log.entries().len();
        fixture.log.hold(true);
        let bind = tokio::spawn({
            let vhost = vhost.clone();
            async move { vhost.bind_queue("q", CONNECTION, "x", "", empty()).await }
        });
        appended(&fixture.log, before + 1).await;
        q.delete_unconditionally().await;
        fixture.log.hold(false);
        bind.await.unwrap().unwrap();
        assert!(vhost.read().exchanges["x"].bindings().is_empty());
    });
    let log = fixture.log.entries();
    assert!(matches!(
        &log[log.len() - 3..],
        [
            DefinitionCommand::Bind { durable: true, .. },
            DefinitionCommand::DeleteQueue { .. },
            DefinitionCommand::Unbind { durable: true, .. },
        ]
    ));
    assert_eq!(listing(&fixture.replay(&log)), listing(&vhost.read()));
}

/// `s` (auto-delete) is bound to queue `q` and exchange `x`. Deleting `x` leaves `s` a binding
/// (to `q`), and `q` going leaves it one (to `x`); both together leave it none, so it goes.
#[test]
fn an_exchange_emptied_by_a_change_and_a_queue_going_together_goes() {
    let fixture = Fixture::new();
    let vhost = &fixture.vhost;
    fixture.runtime.block_on(async {
        vhost
            .declare_exchange(exchange("s", "fanout", true))
            .await
            .unwrap();
        vhost
            .declare_exchange(exchange("x", "fanout", false))
            .await
            .unwrap();
        let (q, _) = vhost.declare_queue(queue("q", true)).await.unwrap();
        vhost
            .bind_queue("q", CONNECTION, "s", "", empty())
            .await
            .unwrap();
        vhost.bind_exchange("x", "s", "", empty()).await.unwrap();
        let before = fixture.log.entries().len();
        fixture.log.hold(true);
        let delete = tokio::spawn({
            let vhost = vhost.clone();
            async move { vhost.delete_exchange("x", false).await }
        });
        appended(&fixture.log, before + 1).await;
        q.delete_unconditionally().await;
        assert!(vhost.read().exchanges.contains_key("s"));
        fixture.log.hold(false);
        delete.await.unwrap().unwrap();
        assert!(!vhost.read().exchanges.contains_key("s"));
    });
    let log = fixture.log.entries();
    assert!(matches!(
        log.last(),
        Some(DefinitionCommand::DeleteExchange { name, .. }) if name == "s"
    ));
    assert_eq!(listing(&fixture.replay(&log)), listing(&vhost.read()));
}
