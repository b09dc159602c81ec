//! Encryption at rest on this node: where the master key comes from, the
//! keyring next to the database, and the background re-encryption pass.

use std::sync::Arc;
use std::time::Duration;

use strongbox_store::codec::Codec;
use strongbox_store::keyring::{Keyring, MasterKey};
use strongbox_store::reencrypt::{Progress, Reencryptor};
use strongbox_store::Db;

use crate::config::NodeConfig;

/// Values re-sealed per step, and the pause between steps (the pass yields
/// to client traffic; it holds the write lock only for one step).
const REENCRYPT_STEP_VALUES: usize = 512;
const REENCRYPT_PAUSE: Duration = Duration::from_millis(5);
const REENCRYPT_IDLE: Duration = Duration::from_secs(1);

pub fn master_key(cfg: &NodeConfig) -> anyhow::Result<Option<MasterKey>> {
    if let Some(path) = &cfg.master_key_file {
        return Ok(Some(MasterKey::load_file(path)?));
    }
    if let Ok(hex) = std::env::var("STRONGBOX_MASTER_KEY").map(zeroize::Zeroizing::new) {
        return Ok(Some(
            MasterKey::from_hex(&hex).map_err(|e| anyhow::anyhow!("$STRONGBOX_MASTER_KEY: {e}"))?,
        ));
    }
    Ok(None)
}

/// The storage codec for this node. Refuses, without writing anything, a
/// wrong or missing master key, and an encrypted data dir opened without one.
pub fn codec(cfg: &NodeConfig) -> anyhow::Result<Codec> {
    let dir = &cfg.data_dir;
    let has_data = dir.join("db").join("CURRENT").exists();
    match master_key(cfg)? {
        None if cfg.insecure_no_encryption => {
            anyhow::ensure!(
                !Keyring::exists(dir),
                "{} is encrypted (it has a keyring); configure its master_key_file",
                dir.display()
            );
            tracing::warn!("INSECURE: encryption at rest is off; data is stored in plaintext");
            Ok(Codec::plaintext())
        }
        None => anyhow::bail!(
            "no master key: set master_key_file (a 0600 file with 64 hex characters) or \
             $STRONGBOX_MASTER_KEY, or pass --insecure-no-encryption (tests only)"
        ),
        Some(mk) if Keyring::exists(dir) => Ok(Codec::encrypted(Arc::new(Keyring::open(dir, mk)?))),
        Some(_) if has_data => anyhow::bail!(
            "{} holds data but no keyring.json: it was written without encryption, or its keyring \
             was lost; refusing to start",
            dir.display()
        ),
        Some(mk) => {
            let k = Keyring::create(dir, mk)?;
            tracing::info!(path = %Keyring::path_in(dir).display(), "created the keyring (encryption at rest is on)");
            Ok(Codec::encrypted(Arc::new(k)))
        }
    }
}

/// Runs forever: whenever the keyring has more than one live data key,
/// walks the database re-sealing old values, then retires the old keys.
pub async fn reencrypt_in_background(db: Db, progress: Arc<Progress>) {
    let Some(keyring) = db.codec().keyring().cloned() else { return };
    loop {
        let live = keyring.keys().iter().filter(|k| !k.retired).count();
        if live <= 1 {
            tokio::time::sleep(REENCRYPT_IDLE).await;
            continue;
        }
        tracing::info!(keys = live, "re-encrypting values under the new data key");
        let mut pass = Reencryptor::new();
        loop {
            let (db2, p2) = (db.clone(), progress.clone());
            let step = tokio::task::spawn_blocking(move || {
                let r = pass.step(&db2, REENCRYPT_STEP_VALUES, &p2);
                (pass, r)
            })
            .await;
            let Ok((p, result)) = step else { return };
            pass = p;
            match result {
                Ok(true) => break,
                Ok(false) => tokio::time::sleep(REENCRYPT_PAUSE).await,
                Err(e) => {
                    // A value that does not open is corruption: stop the
                    // pass loudly; reads of that value fail the same way.
                    tracing::error!(error = %e, "re-encryption stopped");
                    progress.running.store(false, std::sync::atomic::Ordering::Relaxed);
                    return;
                }
            }
        }
    }
}
