//! Topic matcher micro-benchmark: routing cost with 10 and 10,000 bindings (the trie keeps it
//! flat), against the naive reference matcher.

use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use warren::exchange::{topic_matches, Destination, Exchange, ExchangeKind, LazyHeaders};
use warren_amqp::types::FieldTable;

fn patterns(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("w{i}.*.x{}.#", i % 97)).collect()
}

fn topic(c: &mut Criterion) {
    let mut g = c.benchmark_group("topic routing");
    for n in [10usize, 10_000] {
        let mut ex = Exchange::new(
            "t",
            ExchangeKind::Topic,
            false,
            false,
            false,
            FieldTable::default(),
        );
        let pats = patterns(n);
        for (i, p) in pats.iter().enumerate() {
            ex.bind(
                Destination::Exchange(i.to_string().into()),
                p,
                FieldTable::default(),
            )
            .unwrap();
        }
        let headers = LazyHeaders::new(None);
        g.bench_function(format!("trie, {n} bindings"), |b| {
            b.iter(|| {
                let mut hits = 0;
                ex.route(&[black_box("w5.q.x5.end")], &headers, &mut |_| hits += 1);
                hits
            })
        });
        g.bench_function(format!("reference scan, {n} bindings"), |b| {
            b.iter(|| {
                pats.iter()
                    .filter(|p| topic_matches(p, black_box("w5.q.x5.end")))
                    .count()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, topic);
criterion_main!(benches);
