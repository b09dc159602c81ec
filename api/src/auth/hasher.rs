//! argon2id on a bounded pool off the async runtime.
//!
//! At most `hash_workers` hashes run at once (each takes ~19 MiB and tens of
//! milliseconds of one core), and at most `hash_queue_max` more wait. A flood
//! of logins beyond that gets RESOURCE_EXHAUSTED at once instead of starving
//! every other RPC of CPU and memory.

use std::sync::Arc;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;
use tonic::Status;
use zeroize::Zeroizing;

use crate::config::AuthSettings;

/// OWASP's floor for argon2id (m = 19 MiB, t = 2, p = 1).
pub const ARGON2_MEMORY_KIB_MIN: u32 = 19 * 1024;
pub const ARGON2_ITERATIONS_MIN: u32 = 2;

pub struct Hasher {
    argon: Argon2<'static>,
    running: Arc<Semaphore>,
    admitted: Arc<Semaphore>,
    /// Verified against when the user is unknown, so that answer takes as
    /// long as a wrong password.
    dummy_phc: String,
}

impl Hasher {
    pub fn new(s: &AuthSettings) -> anyhow::Result<Hasher> {
        anyhow::ensure!(
            s.argon2_memory_kib >= ARGON2_MEMORY_KIB_MIN && s.argon2_iterations >= ARGON2_ITERATIONS_MIN,
            "auth.argon2_memory_kib must be >= {ARGON2_MEMORY_KIB_MIN} and auth.argon2_iterations >= \
             {ARGON2_ITERATIONS_MIN} (OWASP's minimum for argon2id)"
        );
        anyhow::ensure!(s.hash_workers >= 1, "auth.hash_workers must be >= 1");
        let params = Params::new(s.argon2_memory_kib, s.argon2_iterations, s.argon2_parallelism, None)
            .map_err(|e| anyhow::anyhow!("argon2 parameters: {e}"))?;
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let mut random = Zeroizing::new([0u8; 32]);
        rand::fill(&mut random[..]);
        let dummy_phc = hash_with(&argon, &random[..]).map_err(|e| anyhow::anyhow!("argon2: {e}"))?;
        Ok(Hasher {
            argon,
            running: Arc::new(Semaphore::new(s.hash_workers)),
            admitted: Arc::new(Semaphore::new(s.hash_workers + s.hash_queue_max)),
            dummy_phc,
        })
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Argon2<'static>) -> T + Send + 'static,
    ) -> Result<T, Status> {
        let Ok(admitted) = self.admitted.clone().try_acquire_owned() else {
            metrics::counter!("strongbox_password_hash_rejected_total").increment(1);
            return Err(Status::resource_exhausted(
                "too many password checks in progress on this node; retry shortly",
            ));
        };
        let running =
            self.running.clone().acquire_owned().await.map_err(|_| Status::unavailable("shutting down"))?;
        let argon = self.argon.clone();
        // The permits go with the hash, not with this future: a caller that
        // gives up (a reset, a short deadline) drops the future, while the
        // hash runs on to its end; the next one must not start before.
        tokio::task::spawn_blocking(move || {
            let _permits = (admitted, running);
            f(&argon)
        })
        .await
        .map_err(|e| Status::internal(format!("password hashing task failed: {e}")))
    }

    /// A PHC string for a new password.
    pub async fn hash(&self, password: Zeroizing<String>) -> Result<String, Status> {
        self.run(move |argon| hash_with(argon, password.as_bytes()))
            .await?
            .map_err(|e| Status::internal(format!("argon2: {e}")))
    }

    /// Checks a password against a stored PHC string, or against the dummy
    /// hash when there is none (always false, same cost).
    pub async fn verify(&self, password: Zeroizing<String>, phc: Option<String>) -> Result<bool, Status> {
        let known = phc.is_some();
        let phc = phc.unwrap_or_else(|| self.dummy_phc.clone());
        let ok = self
            .run(move |argon| {
                PasswordHash::new(&phc).is_ok_and(|h| argon.verify_password(password.as_bytes(), &h).is_ok())
            })
            .await?;
        Ok(ok && known)
    }
}

fn hash_with(argon: &Argon2<'_>, password: &[u8]) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::generate(&mut OsRng);
    Ok(argon.hash_password(password, &salt)?.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(workers: usize, queue: usize) -> AuthSettings {
        AuthSettings { hash_workers: workers, hash_queue_max: queue, ..AuthSettings::default() }
    }

    #[tokio::test]
    async fn a_flood_beyond_workers_and_queue_is_refused_not_queued() {
        let h = std::sync::Arc::new(Hasher::new(&settings(1, 1)).unwrap());
        let phc = h.hash(Zeroizing::new("a long password".into())).await.unwrap();
        let mut tasks = Vec::new();
        for _ in 0..6 {
            let (h, phc) = (h.clone(), phc.clone());
            tasks.push(tokio::spawn(async move {
                h.verify(Zeroizing::new("a long password".into()), Some(phc)).await
            }));
        }
        let mut ok = 0;
        let mut refused = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(true) => ok += 1,
                Err(s) if s.code() == tonic::Code::ResourceExhausted => refused += 1,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(ok >= 1 && refused >= 1, "ok {ok}, refused {refused}");
        assert_eq!(ok + refused, 6);
    }

    #[tokio::test]
    async fn a_hash_whose_caller_gave_up_still_holds_its_place() {
        let h = std::sync::Arc::new(Hasher::new(&settings(1, 0)).unwrap());
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let (finish_tx, finish_rx) = std::sync::mpsc::channel::<()>();
        let first = {
            let h = h.clone();
            tokio::spawn(async move {
                h.run(move |_| {
                    started_tx.send(()).unwrap();
                    let _ = finish_rx.recv();
                })
                .await
            })
        };
        tokio::task::spawn_blocking(move || started_rx.recv().unwrap()).await.unwrap();
        // The caller gives up; the hash itself runs on.
        first.abort();
        let _ = first.await;
        let e = h.run(|_| ()).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::ResourceExhausted, "a second hash started beside the first: {e:?}");
        finish_tx.send(()).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while h.run(|_| ()).await.is_err() {
            assert!(std::time::Instant::now() < deadline, "the place was never given back");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn below_owasp_minimum_is_refused_and_phc_is_argon2id() {
        let weak = AuthSettings { argon2_memory_kib: 4096, ..AuthSettings::default() };
        assert!(Hasher::new(&weak).is_err());
        let h = Hasher::new(&settings(1, 1)).unwrap();
        let phc = h.hash(Zeroizing::new("a long password".into())).await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(!h.verify(Zeroizing::new("wrong".into()), Some(phc.clone())).await.unwrap());
        assert!(
            !h.verify(Zeroizing::new("a long password".into()), None).await.unwrap(),
            "unknown user never verifies"
        );
    }
}
