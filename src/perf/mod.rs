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

mod client;
mod consumer;
mod producer;
mod stats;
mod wire;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use amq_protocol::protocol::BasicProperties;
use amq_protocol::types::{AMQPValue, FieldTable};
use amq_protocol::uri::AMQPUri;
use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use tokio::sync::{oneshot, watch, Notify, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use client::Conn;
use consumer::{ConsumerConn, ConsumerOptions};
use producer::{ProducerConn, ProducerOptions, ProducerSpec};
use stats::{Counters, Latencies, Percentiles, Snapshot, Summary};

/// Connections being set up at once (keeps a burst of 1,000 connects under listen backlogs).
const CONNECT_CONCURRENCY: usize = 64;

/// Flags of `warren perf` (named after RabbitMQ PerfTest's where they exist).
#[derive(clap::Args, Clone, Debug)]
pub struct PerfArgs {
    /// Broker URI, amqp://user:pass@host:port/vhost (vhost "/" is %2F). Repeat it to spread
    /// connections round-robin over several brokers or nodes.
    #[arg(
        long = "uri",
        env = "WARREN_PERF_URI",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2F"
    )]
    pub uris: Vec<String>,
    /// Number of producers.
    #[arg(short = 'x', long = "producers", default_value_t = 1)]
    pub producers: usize,
    /// Number of consumers.
    #[arg(short = 'y', long = "consumers", default_value_t = 1)]
    pub consumers: usize,
    /// Message body size in octets (the first 8 carry the send timestamp).
    #[arg(short = 's', long = "size", default_value_t = 12)]
    pub size: usize,
    /// Queue to use (declared if missing, kept at the end). Default: `perf-<random>`, deleted at
    /// the end. With `--queues N`, `NAME-1` … `NAME-N`.
    #[arg(short = 'u', long = "queue")]
    pub queue: Option<String>,
    /// Number of queues; producer i publishes to queue i mod N and consumer j consumes from
    /// queue j mod N (with an exchange, every queue is bound to it).
    #[arg(long = "queues", default_value_t = 1)]
    pub queues: usize,
    /// Consumers use automatic acknowledgement (no-ack).
    #[arg(short = 'a', long = "autoack")]
    pub auto_ack: bool,
    /// Consumer prefetch (basic.qos) for manual acks; 0 = unlimited.
    #[arg(short = 'q', long = "qos", default_value_t = 0)]
    pub prefetch: u16,
    /// Manual acks: acknowledge every N messages with one multiple ack. Default: prefetch / 2
    /// (at least 1), or 100 without a prefetch limit.
    #[arg(long = "ack-every")]
    pub ack_every: Option<u64>,
    /// Publisher confirms with at most N unconfirmed messages per producer.
    #[arg(short = 'c', long = "confirm")]
    pub confirm: Option<u64>,
    /// Message flag: `persistent` (delivery-mode 2 and durable queues/exchange) or `transient`.
    #[arg(short = 'f', long = "flag")]
    pub flags: Vec<String>,
    /// Exchange to publish to (declared, and the queues bound to it). Default: the default
    /// exchange, routing by queue name.
    #[arg(short = 'e', long = "exchange")]
    pub exchange: Option<String>,
    /// Routing key to publish with (and bind with). Default: the producer's queue name.
    #[arg(short = 'k', long = "routing-key")]
    pub routing_key: Option<String>,
    /// Type of the exchange declared with `-e`.
    #[arg(short = 't', long = "type", default_value = "direct")]
    pub exchange_type: String,
    /// Publish rate limit per producer, in messages per second. Default: unlimited.
    #[arg(short = 'r', long = "rate")]
    pub rate: Option<f64>,
    /// Run time in seconds. Default: until Ctrl-C.
    #[arg(short = 'z', long = "time")]
    pub time: Option<f64>,
    /// Carry producers (and, separately, consumers) as channels on at most N connections.
    /// Default: one connection per producer and per consumer.
    #[arg(long = "connections")]
    pub connections: Option<usize>,
    /// Print a JSON summary as the last line of stdout.
    #[arg(long = "json")]
    pub json: bool,
    /// Queue arguments, `KEY=VALUE[,KEY=VALUE…]` (numbers are sent as integers), e.g.
    /// `x-max-priority=10` (PerfTest's `--queue-args`).
    #[arg(long = "queue-args", value_delimiter = ',')]
    pub queue_args: Vec<String>,
    /// Message properties, `KEY=VALUE[,…]` (PerfTest's `--message-properties`): `priority` and
    /// `expiration` (milliseconds). A range `A-B` cycles messages through the priorities A..=B, or
    /// through 10 expirations spread evenly over A..=B.
    #[arg(long = "message-properties", value_delimiter = ',')]
    pub message_properties: Vec<String>,
}

/// What every producer and consumer task shares.
pub struct RunContext {
    pub counters: Counters,
    pub stop_producers: watch::Receiver<bool>,
    pub stop_consumers: watch::Receiver<bool>,
}

/// The run as the flags describe it, checked.
#[derive(Debug)]
struct Plan {
    /// Arguments of the queues it declares.
    queue_args: FieldTable,
    uris: Vec<AMQPUri>,
    queues: Vec<String>,
    /// Queues this run named itself (deleted at the end).
    owns_queues: bool,
    durable: bool,
    exchange: Option<(String, String)>,
    routing_key: Option<String>,
    producer_opts: ProducerOptions,
    consumer_opts: ConsumerOptions,
}

fn parse_uri(s: &str) -> anyhow::Result<AMQPUri> {
    let uri: AMQPUri = s
        .parse()
        .map_err(|e| anyhow::anyhow!("bad URI {s:?}: {e}"))?;
    if uri.scheme != amq_protocol::uri::AMQPScheme::AMQP {
        bail!("only amqp:// URIs are supported (got {s:?})");
    }
    Ok(uri)
}

impl Plan {
    fn new(args: &PerfArgs) -> anyhow::Result<Plan> {
        let uris = args
            .uris
            .iter()
            .map(|s| parse_uri(s))
            .collect::<anyhow::Result<Vec<_>>>()?;
        if uris.is_empty() {
            bail!("no --uri given");
        }
        if args.producers == 0 && args.consumers == 0 {
            bail!("nothing to do: -x and -y are both 0");
        }
        if args.queues == 0 {
            bail!("--queues must be at least 1");
        }
        if args.connections == Some(0) {
            bail!("--connections must be at least 1");
        }
        if args.confirm == Some(0) {
            bail!("-c (confirm window) must be at least 1");
        }
        if let Some(rate) = args.rate {
            if !(rate > 0.0 && rate.is_finite()) {
                bail!("-r must be a positive number of messages per second");
            }
        }
        if let Some(t) = args.time {
            if !(t > 0.0 && t.is_finite()) {
                bail!("-z must be a positive number of seconds");
            }
        }
        let mut persistent = false;
        for flag in &args.flags {
            match flag.to_ascii_lowercase().as_str() {
                "persistent" => persistent = true,
                "transient" => {}
                other => bail!("unsupported -f flag {other:?} (supported: persistent, transient)"),
            }
        }
        let base = args
            .queue
            .clone()
            .unwrap_or_else(|| format!("perf-{:08x}", rand::random::<u32>()));
        let queues = if args.queues == 1 {
            vec![base]
        } else {
            (1..=args.queues).map(|i| format!("{base}-{i}")).collect()
        };
        let ack_every = match args.ack_every {
            Some(0) => bail!("--ack-every must be at least 1"),
            Some(n) => n,
            None if args.prefetch > 0 => u64::from(args.prefetch / 2).max(1),
            None => 100,
        };
        // More than the prefetch would never be reached: the server stops delivering first.
        let ack_every = if args.prefetch > 0 {
            ack_every.min(u64::from(args.prefetch))
        } else {
            ack_every
        };
        Ok(Plan {
            uris,
            queues,
            owns_queues: args.queue.is_none(),
            durable: persistent,
            exchange: args
                .exchange
                .clone()
                .map(|e| (e, args.exchange_type.clone())),
            routing_key: args.routing_key.clone(),
            queue_args: parse_queue_args(&args.queue_args)?,
            producer_opts: ProducerOptions {
                body_size: args.size,
                variants: message_variants(&args.message_properties, persistent)?,
                confirm_window: args.confirm,
                rate: args.rate,
            },
            consumer_opts: ConsumerOptions {
                auto_ack: args.auto_ack,
                prefetch: args.prefetch,
                ack_every,
            },
        })
    }

    fn producer_spec(&self, i: usize) -> ProducerSpec {
        let queue = &self.queues[i % self.queues.len()];
        ProducerSpec {
            exchange: self
                .exchange
                .as_ref()
                .map_or_else(String::new, |(e, _)| e.clone()),
            routing_key: self.routing_key.clone().unwrap_or_else(|| queue.clone()),
        }
    }
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
    Ok(Summary {
        duration,
        at_stop,
        total: ctx.counters.snapshot(),
        left_over,
        latency: Percentiles::of(&latency),
        errors: workers.failed.load(Ordering::SeqCst),
    })
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
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        perf: PerfArgs,
    }

    fn plan(args: &[&str]) -> anyhow::Result<Plan> {
        let cli = Cli::try_parse_from(std::iter::once("perf").chain(args.iter().copied()))?;
        Plan::new(&cli.perf)
    }

    #[test]
    fn fanout_flags_bind_one_queue_per_consumer() {
        let p = plan(&[
            "-x1",
            "-y10",
            "-e",
            "perf-fanout",
            "-t",
            "fanout",
            "--queues",
            "10",
            "-u",
            "fan",
        ])
        .unwrap();
        assert_eq!(p.queues.len(), 10);
        assert_eq!(p.queues[9], "fan-10");
        assert!(!p.owns_queues);
        assert_eq!(p.exchange, Some(("perf-fanout".into(), "fanout".into())));
        assert_eq!(p.producer_spec(0).exchange, "perf-fanout");
    }

    #[test]
    fn defaults_and_ack_batching() {
        let p = plan(&[
            "-q",
            "1000",
            "-c",
            "1000",
            "-f",
            "persistent",
            "--uri",
            "amqp://u:p@h:1234/v%2Fx",
        ])
        .unwrap();
        assert_eq!(p.consumer_opts.ack_every, 500);
        assert!(p.durable && p.producer_opts.variants[0].delivery_mode() == &Some(2));
        assert_eq!(p.producer_opts.confirm_window, Some(1000));
        assert_eq!(
            (p.uris[0].authority.port, p.uris[0].vhost.as_str()),
            (1234, "v/x")
        );
        let spec = p.producer_spec(0);
        assert_eq!(
            (spec.exchange.as_str(), spec.routing_key.as_str()),
            ("", p.queues[0].as_str())
        );
        assert!(p.owns_queues && p.queues[0].starts_with("perf-"));
        assert_eq!(plan(&["-q", "1"]).unwrap().consumer_opts.ack_every, 1);
        assert_eq!(plan(&[]).unwrap().consumer_opts.ack_every, 100);
        assert!(plan(&["-f", "mandatory"]).is_err());
        assert!(plan(&["-x0", "-y0"]).is_err());
        assert!(plan(&["--uri", "amqps://h"]).is_err());
    }

    #[test]
    fn spread_round_robins_over_connections() {
        assert_eq!(spread(3, None), vec![vec![0], vec![1], vec![2]]);
        assert_eq!(spread(5, Some(2)), vec![vec![0, 2, 4], vec![1, 3]]);
        assert_eq!(spread(2, Some(10)).len(), 2);
        assert!(spread(0, Some(4)).is_empty());
    }
}

/// `--queue-args`: `KEY=VALUE` pairs, integers as long-long, anything else as a long string.
fn parse_queue_args(pairs: &[String]) -> anyhow::Result<FieldTable> {
    let mut table = FieldTable::default();
    for pair in pairs.iter().filter(|p| !p.is_empty()) {
        let (key, value) = pair
            .split_once('=')
            .with_context(|| format!("--queue-args {pair:?} is not KEY=VALUE"))?;
        let value = match value.parse::<i64>() {
            Ok(n) => AMQPValue::LongLongInt(n),
            Err(_) => AMQPValue::LongString(value.into()),
        };
        table.insert(key.into(), value);
    }
    Ok(table)
}

/// `A-B` or `A`, as an inclusive range.
fn parse_range(key: &str, value: &str) -> anyhow::Result<(u64, u64)> {
    let (a, b) = value.split_once('-').unwrap_or((value, value));
    let parse = |s: &str| {
        s.trim()
            .parse::<u64>()
            .with_context(|| format!("--message-properties {key}={value}: not a number or range"))
    };
    let (a, b) = (parse(a)?, parse(b)?);
    if a > b {
        bail!("--message-properties {key}={value}: empty range");
    }
    Ok((a, b))
}

/// The properties messages cycle through: one per priority in the range, times one per
/// expiration (up to 10 spread over its range).
fn message_variants(pairs: &[String], persistent: bool) -> anyhow::Result<Vec<BasicProperties>> {
    let mut priorities: Vec<Option<u8>> = vec![None];
    let mut expirations: Vec<Option<u64>> = vec![None];
    for pair in pairs.iter().filter(|p| !p.is_empty()) {
        let (key, value) = pair
            .split_once('=')
            .with_context(|| format!("--message-properties {pair:?} is not KEY=VALUE"))?;
        let (a, b) = parse_range(key, value)?;
        match key {
            "priority" => {
                if b > 255 {
                    bail!("--message-properties priority={value}: priorities go up to 255");
                }
                priorities = (a..=b).map(|p| Some(p as u8)).collect();
            }
            "expiration" => {
                let steps = (b - a).min(9);
                expirations = (0..=steps)
                    .map(|i| {
                        Some(
                            a + ((u128::from(b - a) * u128::from(i)) / u128::from(steps.max(1)))
                                as u64,
                        )
                    })
                    .collect();
            }
            other => bail!("--message-properties {other}: supported are priority and expiration"),
        }
    }
    let mut variants = Vec::with_capacity(priorities.len() * expirations.len());
    for e in &expirations {
        for p in &priorities {
            let mut props = BasicProperties::default();
            if persistent {
                props = props.with_delivery_mode(2);
            }
            if let Some(p) = p {
                props = props.with_priority(*p);
            }
            if let Some(e) = e {
                props = props.with_expiration(e.to_string().into());
            }
            variants.push(props);
        }
    }
    Ok(variants)
}

#[cfg(test)]
mod flag_tests {
    use super::*;

    #[test]
    fn message_properties_expand_to_the_variants_messages_cycle_through() {
        let v = message_variants(&["priority=0-9".into()], true).unwrap();
        assert_eq!(v.len(), 10);
        assert_eq!(v[3].priority(), &Some(3));
        assert_eq!(v[0].delivery_mode(), &Some(2));
        let v = message_variants(&["expiration=1-1000".into()], false).unwrap();
        let exp: Vec<String> = v
            .iter()
            .map(|p| p.expiration().as_ref().unwrap().to_string())
            .collect();
        assert_eq!(exp.first().map(String::as_str), Some("1"));
        assert_eq!(exp.last().map(String::as_str), Some("1000"));
        assert_eq!(exp.len(), 10);
        assert_eq!(message_variants(&[], false).unwrap().len(), 1);
        assert!(message_variants(&["priority=300".into()], false).is_err());
        assert!(message_variants(&["colour=red".into()], false).is_err());
        let args =
            parse_queue_args(&["x-max-priority=10".into(), "x-queue-mode=lazy".into()]).unwrap();
        assert_eq!(
            args.inner().get("x-max-priority"),
            Some(&AMQPValue::LongLongInt(10))
        );
    }
}
