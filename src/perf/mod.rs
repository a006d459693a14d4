//! `warren perf`: a load generator for any AMQP 0-9-1 broker (placeholder; being written).

/// Flags of `warren perf`.
#[derive(clap::Args, Clone, Debug)]
pub struct PerfArgs {}

pub async fn run(_args: PerfArgs) -> anyhow::Result<()> {
    anyhow::bail!("warren perf is not built yet")
}
