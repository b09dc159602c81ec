//! Auditing the requests whose outcome never reaches the replicated chain:
//! reads (accepted or denied) and requests refused before proposing. Each
//! RPC runs inside a small per-request context that the read and write
//! paths fill as they learn who is asking and about what; when the handler
//! is done, its record goes to this node's local chain (store::local_audit)
//! before the answer leaves. Fail closed: if the record cannot be written,
//! the client gets UNAVAILABLE instead of the answer.
//!
//! One writer thread takes every queued record (up to a batch) and writes
//! them with one fsync, so concurrent requests share the cost.

use std::cell::RefCell;
use std::future::Future;

use strongbox_store::auth::TokenHash;
use strongbox_store::local_audit::{LocalAuditLog, LocalEntry, LOCAL_AUDIT_BATCH_MAX};
use tokio::sync::{mpsc, oneshot};
use tonic::Status;

/// Records waiting for the writer at most; beyond it requests fail closed
/// with RESOURCE_EXHAUSTED rather than queue without bound.
pub const LOCAL_AUDIT_QUEUE_MAX: usize = 4096;

/// What the request paths learned about one request.
#[derive(Debug, Default)]
pub struct Seen {
    pub token: Option<TokenHash>,
    pub actor: Option<String>,
    pub resource: String,
    pub request_id: String,
    /// The request's command reached apply: the replicated chain has it.
    pub replicated: bool,
    /// The state machine's install epoch when the request first found it
    /// readable (see `Api::rpc`).
    pub install_epoch: Option<u64>,
    /// The request changed something outside apply (a key, the membership):
    /// no later failure may answer it as "not served, retry".
    pub took_effect: bool,
}

/// Marks the current request as having changed something outside apply.
pub fn took_effect() {
    note(|s| s.took_effect = true);
}

tokio::task_local! {
    static REQUEST: RefCell<Seen>;
    /// Set once a request reaches `Api::rpc` (see `refusals`).
    static ENTERED: std::sync::Arc<std::sync::atomic::AtomicBool>;
}

/// Marks the current request as one `Api::rpc` records.
pub fn entered() {
    let _ = ENTERED.try_with(|e| e.store(true, std::sync::atomic::Ordering::Relaxed));
}

/// Runs a request's whole service future; returns whether it reached
/// `Api::rpc`.
pub async fn watch_entry<T>(f: impl Future<Output = T>) -> (T, bool) {
    let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let out = ENTERED.scope(flag.clone(), f).await;
    (out, flag.load(std::sync::atomic::Ordering::Relaxed))
}

/// Runs a handler in a fresh request context; returns what it learned.
pub async fn scoped<T>(f: impl Future<Output = T>) -> (T, Seen) {
    REQUEST
        .scope(RefCell::new(Seen::default()), async move {
            let out = f.await;
            (out, REQUEST.with(|s| s.take()))
        })
        .await
}

/// Notes something about the current request (a no-op outside an RPC).
pub fn note(f: impl FnOnce(&mut Seen)) {
    let _ = REQUEST.try_with(|s| f(&mut s.borrow_mut()));
}

struct Pending {
    entry: LocalEntry,
    done: oneshot::Sender<Result<(), String>>,
}

/// The handle requests record through.
#[derive(Clone)]
pub struct LocalAudit {
    tx: mpsc::Sender<Pending>,
}

impl LocalAudit {
    /// Starts the writer thread; it ends when the last handle is dropped.
    /// Join it before the process exits: it holds the database, and a
    /// RocksDB still closing on another thread while the process tears
    /// down its statics can abort the process ("double free").
    pub fn start(log: LocalAuditLog) -> std::io::Result<(LocalAudit, std::thread::JoinHandle<()>)> {
        let (tx, rx) = mpsc::channel(LOCAL_AUDIT_QUEUE_MAX);
        let writer = std::thread::Builder::new().name("local-audit".into()).spawn(move || writer(log, rx))?;
        Ok((LocalAudit { tx }, writer))
    }

    /// Appends one record and waits until it is durable.
    pub async fn record(&self, entry: LocalEntry) -> Result<(), Status> {
        let (done, wait) = oneshot::channel();
        self.tx.try_send(Pending { entry, done }).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => Status::resource_exhausted(format!(
                "the node-local audit log has {LOCAL_AUDIT_QUEUE_MAX} records waiting; the request was not served, retry"
            )),
            mpsc::error::TrySendError::Closed(_) => unavailable("its writer has stopped"),
        })?;
        match wait.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(unavailable(&e)),
            Err(_) => Err(unavailable("its writer has stopped")),
        }
    }
}

fn unavailable(why: &str) -> Status {
    Status::unavailable(format!(
        "the node-local audit log cannot be written ({why}); the request was not served"
    ))
}

fn writer(mut log: LocalAuditLog, mut rx: mpsc::Receiver<Pending>) {
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < LOCAL_AUDIT_BATCH_MAX {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let (entries, waiters): (Vec<_>, Vec<_>) = batch.into_iter().map(|p| (p.entry, p.done)).unzip();
        let result = log.append(entries).map(|_| ()).map_err(|e| {
            tracing::error!(error = %e, "node-local audit write failed; failing the requests it held");
            e.to_string()
        });
        metrics::counter!("strongbox_local_audit_records_total").increment(waiters.len() as u64);
        for w in waiters {
            let _ = w.send(result.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> LocalEntry {
        LocalEntry {
            time_ms: 1,
            actor: "anonymous".into(),
            action: "secrets.get".into(),
            resource: String::new(),
            outcome: "ok".into(),
            request_id: String::new(),
            revision: 0,
        }
    }

    #[tokio::test]
    async fn concurrent_records_are_all_written_in_one_chain() {
        let dir = tempfile::tempdir().unwrap();
        let db = strongbox_store::Db::open(dir.path(), strongbox_store::codec::Codec::plaintext()).unwrap();
        let (audit, writer) =
            LocalAudit::start(LocalAuditLog::open(db.clone(), 1, 1024, true).unwrap()).unwrap();
        let tasks: Vec<_> = (0..200)
            .map(|_| {
                let a = audit.clone();
                tokio::spawn(async move { a.record(entry()).await })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(strongbox_store::local_audit::head(&db).unwrap().0, 200);
        assert_eq!(strongbox_store::local_audit::verify(&db).unwrap().broken, None);
        // The writer holds the database: the test harness exiting while it
        // closes aborted the whole test binary, rarely, after every test had
        // passed.
        drop(audit);
        writer.join().unwrap();
    }

    #[tokio::test]
    async fn a_stopped_writer_fails_requests_closed() {
        let (tx, rx) = mpsc::channel(1);
        drop(rx);
        let err = LocalAudit { tx }.record(entry()).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unavailable);
    }

    #[tokio::test]
    async fn a_full_queue_refuses_instead_of_growing() {
        let (tx, _rx) = mpsc::channel(1);
        let audit = LocalAudit { tx };
        let first = audit.clone();
        // Never answered: the receiver is held but nobody drains it.
        tokio::spawn(async move { first.record(entry()).await });
        tokio::task::yield_now().await;
        let err = audit.record(entry()).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    }

    #[tokio::test]
    async fn notes_stay_within_their_request() {
        let ((), seen) = scoped(async { note(|s| s.resource = "secrets:a".into()) }).await;
        assert_eq!(seen.resource, "secrets:a");
        let ((), seen) = scoped(async {}).await;
        assert_eq!(seen.resource, "");
        note(|s| s.resource = "outside".into()); // no context: ignored, no panic
    }
}
