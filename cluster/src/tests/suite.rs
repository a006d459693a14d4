//! openraft's storage suite (`openraft::testing::log::Suite`, compiled into openraft without a
//! feature) against the adapters, each test on fresh files.

use std::sync::Arc;

use openraft::testing::log::{StoreBuilder, Suite};
use openraft::StorageError;
use tempfile::TempDir;

use super::Recorder;
use crate::{LogStore, StateMachine, TypeConfig};

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for Builder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError<TypeConfig>> {
        // The guard keeps the directory until the test is done with the stores.
        let dir = tempfile::tempdir().unwrap();
        let (log, sm) = super::open(dir.path(), Arc::new(Recorder::default()));
        Ok((dir, log, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite() {
    Suite::<TypeConfig, LogStore, StateMachine, Builder, TempDir>::test_all(Builder)
        .await
        .unwrap();
}
