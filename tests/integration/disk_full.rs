//! A disk that fills up: commits fail, the publishes they carried are nacked (never acked),
//! publishers get `connection.blocked`; once space returns the store reopens its database,
//! publishers are unblocked and confirms resume; nothing confirmed is lost across a restart.
//!
//! Needs a small file system of its own: a tmpfs, which only root can mount. Elsewhere the test
//! says so and passes without running.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::*;
use warren_amqp::protocol::{basic, connection as conn, AMQPClass};

/// A tmpfs mounted for the test, unmounted when dropped.
pub(crate) struct Tmpfs(PathBuf);

impl Tmpfs {
    pub(crate) fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(dir.to_owned()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn body(i: u64) -> Vec<u8> {
    let mut b = format!("{i:08}").into_bytes();
    b.resize(1024, b'.');
    b
}

/// What a publisher hears back.
#[derive(Default)]
struct Heard {
    acked: BTreeSet<u64>,
    nacked: BTreeSet<u64>,
    blocked: bool,
    unblocked: bool,
}

impl Heard {
    fn take(&mut self, m: AMQPClass, confirmed_up_to: &mut u64) {
        let mut settle = |tag: u64, multiple: bool, set: &mut BTreeSet<u64>| {
            let from = if multiple { *confirmed_up_to + 1 } else { tag };
            set.extend(from..=tag);
            *confirmed_up_to = (*confirmed_up_to).max(tag);
        };
        match m {
            AMQPClass::Basic(basic::AMQPMethod::Ack(a)) => {
                settle(a.delivery_tag, a.multiple, &mut self.acked)
            }
            AMQPClass::Basic(basic::AMQPMethod::Nack(n)) => {
                settle(n.delivery_tag, n.multiple, &mut self.nacked)
            }
            AMQPClass::Connection(conn::AMQPMethod::Blocked(_)) => self.blocked = true,
            AMQPClass::Connection(conn::AMQPMethod::Unblocked(_)) => self.unblocked = true,
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Publishes `n` persistent messages numbered from `*next` and waits for their confirms (or
/// for the connection to be blocked, after which the broker stops reading).
async fn publish_batch(
    raw: &mut Raw,
    heard: &mut Heard,
    next: &mut u64,
    confirmed_up_to: &mut u64,
    n: u64,
) {
    for _ in 0..n {
        raw.publish_persistent(1, "full", &body(*next)).await;
        *next += 1;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while *confirmed_up_to + 1 < *next && Instant::now() < deadline {
        match raw.recv_within(Duration::from_millis(200)).await {
            Ok(In::Method(_, m)) => heard.take(m, confirmed_up_to),
            Ok(other) => panic!("unexpected {other:?}"),
            Err(_) if heard.blocked => break,
            Err(_) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_nacks_blocks_and_recovers_without_losing_confirmed_messages() {
    let dir = tempfile::tempdir().expect("temp dir");
    let Some(fs) = Tmpfs::mount(&dir.path().join("disk"), "16m") else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    };
    let filler = fs.0.join("filler");
    std::fs::write(&filler, vec![0u8; 4 << 20]).expect("filler");
    let data = fs.0.join("data");
    // Only failing commits raise the alarm: no free-space threshold. A tiny memory limit pages
    // messages out as soon as they are stored, never those whose commit failed.
    let args = ["--disk-free-limit", "0", "--queue-memory-limit", "4096"];
    let broker = ChildBroker::start(&data, &args);
    let addr = ([127, 0, 0, 1], broker.port).into();
    let mut raw = Raw::open(addr).await;
    raw.open_channel(1).await;
    raw.declare(
        1,
        "full",
        QOpts {
            durable: true,
            ..Default::default()
        },
    )
    .await;
    raw.confirm_select(1).await;

    // Fill the disk until the broker refuses.
    let (mut heard, mut next, mut confirmed_up_to) = (Heard::default(), 1u64, 0u64);
    while heard.nacked.is_empty() && next < 40_000 {
        publish_batch(&mut raw, &mut heard, &mut next, &mut confirmed_up_to, 200).await;
    }
    assert!(!heard.nacked.is_empty(), "the disk never filled up");
    assert!(
        heard.acked.is_disjoint(&heard.nacked),
        "a publish both acked and nacked"
    );
    // The alarm follows the failed commit.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !heard.blocked && Instant::now() < deadline {
        if let Ok(In::Method(_, m)) = raw.recv_within(Duration::from_millis(200)).await {
            heard.take(m, &mut confirmed_up_to);
        }
    }
    assert!(heard.blocked, "no connection.blocked after failed commits");
    let acked_while_full = heard.acked.clone();

    // Space returns: the broker reopens its database, unblocks, and confirms again.
    std::fs::remove_file(&filler).expect("remove filler");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !heard.unblocked && Instant::now() < deadline {
        if let Ok(In::Method(_, m)) = raw.recv_within(Duration::from_millis(200)).await {
            heard.take(m, &mut confirmed_up_to);
        }
    }
    assert!(
        heard.unblocked,
        "no connection.unblocked once space returned"
    );
    // Whatever was sent while blocked is settled now, then a fresh batch is acked.
    let settled = next - 1;
    let deadline = Instant::now() + Duration::from_secs(10);
    while confirmed_up_to < settled && Instant::now() < deadline {
        if let Ok(In::Method(_, m)) = raw.recv_within(Duration::from_millis(200)).await {
            heard.take(m, &mut confirmed_up_to);
        }
    }
    let first_after = next;
    publish_batch(&mut raw, &mut heard, &mut next, &mut confirmed_up_to, 50).await;
    assert!(
        (first_after..next).all(|i| heard.acked.contains(&i)),
        "publishes after recovery are not all acked"
    );
    drop(raw);
    broker.stop();

    // Every acked message is there after a restart, in order (nacked ones may or may not be).
    let broker = ChildBroker::start(&data, &args);
    let found: Vec<u64> = broker
        .drain("full")
        .await
        .into_iter()
        .map(|(body, _)| {
            std::str::from_utf8(&body[..8])
                .ok()
                .and_then(|s| s.parse().ok())
                .expect("message number")
        })
        .collect();
    assert!(found.windows(2).all(|w| w[0] < w[1]), "order changed");
    let found: BTreeSet<u64> = found.into_iter().collect();
    let lost: Vec<_> = heard.acked.difference(&found).collect();
    assert!(lost.is_empty(), "confirmed messages lost: {lost:?}");
    assert!(acked_while_full.len() > 100, "the disk filled too early");
    broker.stop();
}
