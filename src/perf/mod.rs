//! `warren perf`: a load generator for any AMQP 0-9-1 broker, with RabbitMQ PerfTest's flags.
//!
//! It speaks AMQP through its own small pipelined client on Warren's codec crate rather than a
//! general-purpose client library, so that it is not the bottleneck: producers write batches of
//! pre-encoded publishes per syscall and read confirms on a separate task; consumers parse
//! deliveries in place and acknowledge many messages at once.
//!
//! A run: a control connection declares the exchange, queues and bindings; consumer connections
//! start consuming; producer connections then publish for `-z` seconds (or until Ctrl-C). Every
//! second a line of rates and end-to-end latency percentiles is printed (latency comes from a
//! wall-clock timestamp in the first 8 octets of each body). At the end producers wait for their
//! confirms, consumers drain for a moment, the queues' leftover messages are counted, the queues
//! the run named itself are deleted, and totals are printed — with `--json`, also one JSON object
//! as the last line of stdout.

mod args;
pub(crate) mod client;
mod consumer;
mod producer;
mod stats;
pub(crate) mod wire;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use amq_protocol::types::FieldTable;
use anyhow::{anyhow, bail, Context};
use hdrhistogram::Histogram;
use tokio::sync::{oneshot, watch, Notify, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub use args::PerfArgs;
use args::Plan;
use client::Conn;
use consumer::ConsumerConn;
use producer::ProducerConn;
use stats::{Counters, Latencies, Percentiles, Snapshot, Summary};

/// Connections being set up at once (keeps a burst of 1,000 connects under listen backlogs).
const CONNECT_CONCURRENCY: usize = 64;

/// What every producer and consumer task shares.
pub struct RunContext {
    pub counters: Counters,
    pub stop_producers: watch::Receiver<bool>,
    pub stop_consumers: watch::Receiver<bool>,
}

/// Splits `n` workers over `min(n, connections)` connections, round-robin: worker i goes on
/// connection i mod c. `None` = one connection each.
fn spread(n: usize, connections: Option<usize>) -> Vec<Vec<usize>> {
    let c = connections.map_or(n, |c| c.min(n));
    let mut groups = vec![Vec::new(); c];
    for i in 0..n {
        groups[i % c].push(i);
    }
    groups
}

/// Sets up connections `CONNECT_CONCURRENCY` at a time, keeping their order.
async fn setup_all<T, F, Fut>(count: usize, make: F) -> anyhow::Result<Vec<T>>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>> + Send + 'static,
{
    let limit = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
    let mut handles = Vec::with_capacity(count);
    for i in 0..count {
        let fut = make(i);
        let limit = limit.clone();
        handles.push(tokio::spawn(async move {
            let _permit = limit.acquire_owned().await?;
            fut.await
        }));
    }
    let mut out = Vec::with_capacity(count);
    for (i, h) in handles.into_iter().enumerate() {
        out.push(
            h.await?
                .with_context(|| format!("setting up connection {}", i + 1))?,
        );
    }
    Ok(out)
}

/// Tracks the worker tasks still running, so a run whose workers all failed ends early.
#[derive(Default)]
struct Workers {
    alive: AtomicUsize,
    failed: AtomicUsize,
    all_ended: Notify,
}

impl Workers {
    fn spawn<F>(self: &Arc<Self>, what: String, fut: F) -> JoinHandle<()>
    where
        F: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        self.alive.fetch_add(1, Ordering::SeqCst);
        let me = self.clone();
        tokio::spawn(async move {
            if let Err(e) = fut.await {
                eprintln!("warren perf: {what}: {e:#}");
                me.failed.fetch_add(1, Ordering::SeqCst);
            }
            if me.alive.fetch_sub(1, Ordering::SeqCst) == 1 {
                me.all_ended.notify_one();
            }
        })
    }
}

/// Joins tasks, giving up on (and aborting) those still running at `deadline`.
async fn join_until(handles: Vec<JoinHandle<()>>, deadline: Instant) {
    for h in handles {
        let abort = h.abort_handle();
        if tokio::time::timeout_at(deadline, h).await.is_err() {
            abort.abort();
        }
    }
}

pub async fn run(args: PerfArgs) -> anyhow::Result<()> {
    let plan = Plan::new(&args)?;

    // Topology, on a control connection to the first URI.
    let mut control = Conn::open(&plan.uris[0], "warren perf control").await?;
    control.open_channel(1).await?;
    if let Some((exchange, kind)) = &plan.exchange {
        control
            .declare_exchange(1, exchange, kind, plan.durable)
            .await?;
    }
    for queue in &plan.queues {
        control
            .declare_queue(1, queue, plan.durable, false, &plan.queue_args)
            .await?;
        if let Some((exchange, _)) = &plan.exchange {
            let key = plan.routing_key.as_deref().unwrap_or(queue);
            control.bind_queue(1, queue, exchange, key).await?;
        }
    }

    let result = load(&args, &plan, &mut control).await;
    if plan.owns_queues {
        for queue in &plan.queues {
            if let Err(e) = control.delete_queue(1, queue).await {
                eprintln!("warren perf: {e:#}");
                break;
            }
        }
    }
    let _ = control.close().await;

    let summary = result?;
    for line in summary.lines() {
        println!("{line}");
    }
    if args.json {
        println!("{}", summary.json());
    }
    if summary.errors > 0 {
        bail!("{} connection(s) failed", summary.errors);
    }
    Ok(())
}

/// Sets up the producer and consumer connections, runs the measured phase and the drain, and
/// adds up the results.
async fn load(args: &PerfArgs, plan: &Plan, control: &mut Conn) -> anyhow::Result<Summary> {
    let uri_for = |conn_index: usize| plan.uris[conn_index % plan.uris.len()].clone();

    // Connections: consumers first, so that they are consuming before anything is published.
    let consumer_groups = spread(args.consumers, args.connections);
    let producer_groups = spread(args.producers, args.connections);
    let consumers: Vec<ConsumerConn> = setup_all(consumer_groups.len(), |c| {
        let queues = consumer_groups[c]
            .iter()
            .map(|&j| plan.queues[j % plan.queues.len()].clone())
            .collect();
        consumer::setup(
            uri_for(c),
            format!("perf consumer {}", c + 1),
            queues,
            plan.consumer_opts.clone(),
        )
    })
    .await?;
    let first_producer_conn = consumer_groups.len();
    let producers: Vec<ProducerConn> = setup_all(producer_groups.len(), |p| {
        let specs = producer_groups[p]
            .iter()
            .map(|&i| plan.producer_spec(i))
            .collect();
        producer::setup(
            uri_for(first_producer_conn + p),
            format!("perf producer {}", p + 1),
            specs,
            plan.producer_opts.clone(),
        )
    })
    .await?;
    eprintln!(
        "warren perf: {} producer(s) on {} connection(s), {} consumer(s) on {} connection(s), queue(s) {}{}",
        args.producers,
        producers.len(),
        args.consumers,
        consumers.len(),
        if plan.queues.len() > 3 {
            format!("{} … {} ({} queues)", plan.queues[0], plan.queues[plan.queues.len() - 1], plan.queues.len())
        } else {
            plan.queues.join(", ")
        },
        plan.exchange
            .as_ref()
            .map_or_else(String::new, |(e, t)| format!(", exchange {e} ({t})")),
    );

    let (stop_producers_tx, stop_producers) = watch::channel(false);
    let (stop_consumers_tx, stop_consumers) = watch::channel(false);
    let ctx = Arc::new(RunContext {
        counters: Counters::default(),
        stop_producers,
        stop_consumers,
    });
    let latencies = Arc::new(Latencies::default());
    let workers = Arc::new(Workers::default());

    // Consumers start and get their basic.consume-ok before the clock starts.
    let mut consumer_tasks = Vec::new();
    let mut readiness = Vec::new();
    for (c, conn) in consumers.into_iter().enumerate() {
        let (tx, rx) = oneshot::channel();
        readiness.push(rx);
        consumer_tasks.push(workers.spawn(
            format!("consumer connection {}", c + 1),
            conn.run(ctx.clone(), latencies.register(), tx),
        ));
    }
    for rx in readiness {
        match tokio::time::timeout(Duration::from_secs(30), rx).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => {} // that consumer failed; its error is on stderr
            Err(_) => {
                eprintln!(
                    "warren perf: a consumer got no basic.consume-ok in 30 s; starting anyway"
                );
                break;
            }
        }
    }

    let start = Instant::now();
    let producer_tasks: Vec<_> = producers
        .into_iter()
        .enumerate()
        .map(|(p, conn)| {
            workers.spawn(
                format!("producer connection {}", p + 1),
                conn.run(ctx.clone(), start),
            )
        })
        .collect();
    let (reporter_done, reporter_stop) = oneshot::channel();
    let reporter = tokio::spawn(report_every_second(
        ctx.clone(),
        latencies.clone(),
        start,
        reporter_stop,
    ));

    // The measured phase.
    let run_for = async {
        match args.time {
            Some(t) => tokio::time::sleep(Duration::from_secs_f64(t)).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = run_for => {}
        _ = tokio::signal::ctrl_c() => eprintln!("warren perf: interrupted"),
        _ = workers.all_ended.notified() => eprintln!("warren perf: every connection has ended"),
    }
    let duration = start.elapsed();
    let at_stop = ctx.counters.snapshot();

    // Producers wait for their outstanding confirms, then consumers drain what is in flight.
    let _ = stop_producers_tx.send(true);
    join_until(producer_tasks, Instant::now() + Duration::from_secs(10)).await;
    if !consumer_tasks.is_empty() {
        // Until nothing has arrived for a second (brokers may still be taking in what the
        // producers wrote), for at most 10 s.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut last = ctx.counters.snapshot().consumed;
        let mut last_change = Instant::now();
        while Instant::now() < deadline && last_change.elapsed() < Duration::from_secs(1) {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = ctx.counters.snapshot().consumed;
            if now != last {
                last = now;
                last_change = Instant::now();
            }
        }
    }
    let left_over = count_left_over(control, &plan.queues).await;
    let _ = stop_consumers_tx.send(true);
    join_until(consumer_tasks, Instant::now() + Duration::from_secs(5)).await;
    let _ = reporter_done.send(());
    let mut latency = reporter.await.unwrap_or_else(|_| stats::new_histogram());
    latencies.drain_into(&mut latency);
    if let (Some(path), Some(log)) = (&args.latency_log, &plan.consumer_opts.latency_log) {
        write_latency_log(path, log)?;
    }
    Ok(Summary {
        duration,
        at_stop,
        total: ctx.counters.snapshot(),
        left_over,
        latency: Percentiles::of(&latency),
        errors: workers.failed.load(Ordering::SeqCst),
    })
}

/// `--latency-log`: one `send_ns latency_us` line per message, in send order.
fn write_latency_log(
    path: &std::path::Path,
    log: &std::sync::Mutex<Vec<(u64, u64)>>,
) -> anyhow::Result<()> {
    use std::io::Write;
    let mut samples =
        std::mem::take(&mut *log.lock().map_err(|_| anyhow!("latency log poisoned"))?);
    samples.sort_unstable();
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut out = std::io::BufWriter::new(file);
    for (sent, micros) in samples {
        writeln!(out, "{sent} {micros}")?;
    }
    out.flush()?;
    Ok(())
}

/// Ready messages left in the queues (`None` if a queue is gone or the check failed).
async fn count_left_over(control: &mut Conn, queues: &[String]) -> Option<u64> {
    let mut total = 0;
    for queue in queues {
        match control
            .declare_queue(1, queue, false, true, &FieldTable::default())
            .await
        {
            Ok(n) => total += u64::from(n),
            Err(e) => {
                eprintln!("warren perf: counting messages left over: {e:#}");
                return None;
            }
        }
    }
    Some(total)
}

/// Prints a line of rates and latency percentiles every second until `done`; returns all the
/// latency samples it took.
async fn report_every_second(
    ctx: Arc<RunContext>,
    latencies: Arc<Latencies>,
    start: Instant,
    mut done: oneshot::Receiver<()>,
) -> Histogram<u64> {
    let mut total = stats::new_histogram();
    let mut interval = stats::new_histogram();
    let mut last = Snapshot::default();
    let mut last_at = start;
    let mut ticker =
        tokio::time::interval_at(start + Duration::from_secs(1), Duration::from_secs(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = &mut done => break,
        }
        let now = Instant::now();
        let snap = ctx.counters.snapshot();
        latencies.drain_into(&mut interval);
        println!(
            "{}",
            stats::interval_line(
                now - start,
                snap.since(&last),
                now - last_at,
                Percentiles::of(&interval)
            )
        );
        let _ = total.add(&interval);
        interval.reset();
        last = snap;
        last_at = now;
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_round_robins_over_connections() {
        assert_eq!(spread(3, None), vec![vec![0], vec![1], vec![2]]);
        assert_eq!(spread(5, Some(2)), vec![vec![0, 2, 4], vec![1, 3]]);
        assert_eq!(spread(2, Some(10)).len(), 2);
        assert!(spread(0, Some(4)).is_empty());
    }
}
