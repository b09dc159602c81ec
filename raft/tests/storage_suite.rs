//! openraft's own storage conformance suite against our RocksDB log store and
//! state machine.

use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageError;
use strongbox_raft::log_store::LogStore;
use strongbox_raft::sm_store::SmStore;
use strongbox_raft::TypeConfig;
use strongbox_store::codec::Codec;
use strongbox_store::{Db, StateMachine};

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, SmStore, tempfile::TempDir> for Builder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, SmStore), StorageError<u64>> {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(dir.path(), Codec::plaintext()).expect("open db");
        Ok((dir, LogStore::new(db.clone(), Default::default()), SmStore::new(StateMachine::new(db))))
    }
}

#[test]
fn openraft_storage_suite() -> Result<(), StorageError<u64>> {
    Suite::test_all(Builder)?;
    Ok(())
}
