//! The flags of `warren perf` and the run they describe: [`PerfArgs`] as clap parses them,
//! checked and expanded into a [`Plan`] (URIs, queue names, queue arguments, the message
//! property variants producers cycle through, ack batching).

use amq_protocol::protocol::BasicProperties;
use amq_protocol::types::{AMQPValue, FieldTable};
use amq_protocol::uri::AMQPUri;
use anyhow::{bail, Context};

use super::consumer::ConsumerOptions;
use super::producer::{ProducerOptions, ProducerSpec};

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
    /// Consumer arguments, `KEY=VALUE[,…]` as `--queue-args` (PerfTest's `--consumer-args`),
    /// e.g. `x-stream-offset=first` to read a stream from its start.
    #[arg(long = "consumer-args", value_delimiter = ',')]
    pub consumer_args: Vec<String>,
    /// Message properties, `KEY=VALUE[,…]` (PerfTest's `--message-properties`): `priority` and
    /// `expiration` (milliseconds). A range `A-B` cycles messages through the priorities A..=B, or
    /// through 10 expirations spread evenly over A..=B.
    #[arg(long = "message-properties", value_delimiter = ',')]
    pub message_properties: Vec<String>,
    /// Write every consumed message's send time (ns since the epoch) and end-to-end latency (µs),
    /// one message a line in send order, to this file at the end: to see whether a tail is a
    /// few stalls or spread evenly over the run.
    #[arg(long = "latency-log")]
    pub latency_log: Option<std::path::PathBuf>,
}

/// The run as the flags describe it, checked.
#[derive(Debug)]
pub(super) struct Plan {
    /// Arguments of the queues it declares.
    pub(super) queue_args: FieldTable,
    pub(super) uris: Vec<AMQPUri>,
    pub(super) queues: Vec<String>,
    /// Queues this run named itself (deleted at the end).
    pub(super) owns_queues: bool,
    pub(super) durable: bool,
    pub(super) exchange: Option<(String, String)>,
    pub(super) routing_key: Option<String>,
    pub(super) producer_opts: ProducerOptions,
    pub(super) consumer_opts: ConsumerOptions,
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
    pub(super) fn new(args: &PerfArgs) -> anyhow::Result<Plan> {
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
                arguments: parse_queue_args(&args.consumer_args)?,
                latency_log: args.latency_log.as_ref().map(|_| Default::default()),
            },
        })
    }

    pub(super) fn producer_spec(&self, i: usize) -> ProducerSpec {
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
