//! `Feed.Watch`: the change feed as a server stream, read from this node's
//! own applied state (the feed records the state machine writes with each
//! revision), so writers never wait for watchers.
//!
//! Limits: each stream has a buffer of `SUBSCRIBER_BUFFER_MAX` messages and
//! `SUBSCRIBER_BUFFER_BYTES_MAX` encoded bytes; a consumer that leaves it
//! full for `SLOW_CONSUMER_GRACE` is cut off with RESOURCE_EXHAUSTED naming
//! the last revision it received, and resumes from there. At most
//! `WATCHERS_MAX` streams per node, `WATCHERS_PER_PRINCIPAL_MAX` of them for
//! one user or client, and `KINDS_MAX` kinds per filter.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::Stream;
use prost::Message;
use strongbox_proto::v1::feed_server::Feed;
use strongbox_proto::v1::{ChangeEvent, WatchRequest, WatchResponse};
use strongbox_store::auth::{Access, Action, Caller, TokenHash};
use strongbox_store::feed::{ChangeEvent as StoredEvent, FeedRecord};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tonic::{Request, Response, Status};

use super::{installing, internal, token_of, Api};
use crate::auth::Rpc;

/// Messages buffered per stream.
pub const SUBSCRIBER_BUFFER_MAX: usize = 256;
/// And their encoded bytes (one message of a ledger batch can hold 8,189
/// events); a message larger than this has the buffer to itself.
pub const SUBSCRIBER_BUFFER_BYTES_MAX: usize = 4 << 20;
/// How long a full buffer is tolerated before the consumer is cut off.
pub const SLOW_CONSUMER_GRACE: Duration = Duration::from_secs(5);
/// Concurrent streams per node.
pub const WATCHERS_MAX: usize = 256;
/// Concurrent streams of one user or client on a node, so one caller
/// cannot take them all (a service may well watch with many).
pub const WATCHERS_PER_PRINCIPAL_MAX: usize = WATCHERS_MAX / 2;
/// Kinds one filter may name (each is matched against every event).
pub const KINDS_MAX: usize = 32;
/// Feed records read per step.
const READ_CHUNK: usize = 256;
const PROGRESS_DEFAULT_MS: u32 = 5_000;
const PROGRESS_MS: std::ops::RangeInclusive<u32> = 100..=60_000;

pub struct FeedService {
    api: Api,
    watchers: Arc<Mutex<Watchers>>,
    stopping: watch::Receiver<bool>,
}

impl FeedService {
    pub fn new(api: Api, stopping: watch::Receiver<bool>) -> Self {
        FeedService { api, watchers: Arc::default(), stopping }
    }
}

/// The streams open on this node, in all and per principal.
#[derive(Default)]
struct Watchers {
    total: usize,
    per_principal: HashMap<String, usize>,
}

/// What a stream delivers, decided once from the request.
struct Filter {
    kinds: Vec<String>,
    prefix: String,
    ledger: u32,
}

impl Filter {
    fn parse(r: &WatchRequest) -> Result<Filter, Status> {
        if r.kinds.len() > KINDS_MAX {
            return Err(Status::invalid_argument(format!(
                "kinds: at most {KINDS_MAX}, got {}; use a family like \"secret.*\" for several",
                r.kinds.len()
            )));
        }
        for k in &r.kinds {
            if k.is_empty() || k.len() > 64 || !k.chars().all(|c| c.is_ascii_lowercase() || "._*".contains(c))
            {
                return Err(Status::invalid_argument(format!(
                    "kinds: {k:?} is not a kind like \"secret.updated\" or a family like \"secret.*\""
                )));
            }
        }
        if r.prefix.len() > 1024 {
            return Err(Status::invalid_argument("prefix: at most 1024 bytes"));
        }
        Ok(Filter { kinds: r.kinds.clone(), prefix: r.prefix.clone(), ledger: r.ledger })
    }

    fn matches(&self, e: &StoredEvent) -> bool {
        let kind_ok = self.kinds.is_empty()
            || self.kinds.iter().any(|k| match k.strip_suffix('*') {
                Some(family) => e.kind.starts_with(family),
                None => *k == e.kind,
            });
        kind_ok && e.entity.starts_with(&self.prefix) && (self.ledger == 0 || e.ledger == Some(self.ledger))
    }
}

/// The permission an event needs: read on what it is about.
fn access_for(e: &StoredEvent) -> Access {
    let family = e.kind.split('.').next().unwrap_or("");
    let resource = match family {
        "secret" => format!("secrets:{}", e.entity),
        "account" | "transfer" => match e.ledger {
            Some(l) => format!("ledgers:{l}"),
            None => "ledgers".to_string(),
        },
        "user" => "users".into(),
        "client" => "clients".into(),
        "role" => "roles".into(),
        "token" => "tokens".into(),
        _ => "cluster".into(),
    };
    Access::new(Action::Read, resource)
}

fn to_proto(record: &FeedRecord, events: Vec<&StoredEvent>) -> WatchResponse {
    WatchResponse {
        revision: record.revision,
        time_ms: record.time_ms,
        actor: record.actor.clone(),
        events: events
            .into_iter()
            .map(|e| ChangeEvent {
                kind: e.kind.clone(),
                entity: e.entity.clone(),
                ledger: e.ledger.unwrap_or(0),
                fields: e.fields.clone().into_iter().collect(),
            })
            .collect(),
        progress: false,
    }
}

/// Why a stream ended early; the consumer sees it after what it received.
enum Ending {
    /// The consumer left its buffer full too long; the stream names the
    /// last revision it actually handed over.
    TooSlow,
    Status(Status),
}

type Cut = Arc<Mutex<Option<Ending>>>;

fn too_slow(last: u64) -> Status {
    Status::resource_exhausted(format!(
        "watcher too slow: its buffer of {SUBSCRIBER_BUFFER_MAX} messages stayed full for {} s; \
         last delivered revision {last}; reconnect with start_revision {}",
        SLOW_CONSUMER_GRACE.as_secs(),
        last + 1
    ))
}

struct Producer {
    api: Api,
    token: TokenHash,
    filter: Filter,
    progress: Duration,
    tx: mpsc::Sender<Buffered>,
    /// The buffer's bytes: a message holds its share until handed over.
    bytes: Arc<Semaphore>,
    cut: Cut,
    stopping: watch::Receiver<bool>,
    /// Shared with the consumer: the stream counts against `WATCHERS_MAX`
    /// until both have ended (a producer outlives a consumer that left
    /// until it notices).
    _slot: Arc<WatcherSlot>,
}

impl Producer {
    /// The watcher, checked again on every round against this node's
    /// state, which must still be in step with the cluster: a node cut off
    /// from it would otherwise go on streaming to a token revoked meanwhile.
    fn caller(&self) -> Result<Caller, Status> {
        self.api.within_staleness()?;
        self.api.check(&self.token, Rpc::FeedWatch, "")
    }

    fn end(&self, status: Status) {
        *self.cut.lock().expect("cut lock") = Some(Ending::Status(status));
    }

    /// Queues a message, cutting the consumer off if the buffer (messages
    /// or bytes) stays full.
    async fn send(&self, msg: WatchResponse) -> bool {
        let deadline = tokio::time::Instant::now() + SLOW_CONSUMER_GRACE;
        let share = msg.encoded_len().clamp(1, SUBSCRIBER_BUFFER_BYTES_MAX) as u32;
        let permit =
            match tokio::time::timeout_at(deadline, self.bytes.clone().acquire_many_owned(share)).await {
                Ok(Ok(p)) => p,
                Ok(Err(_)) => return false, // never closed while a producer holds it
                Err(_) => return self.too_slow(),
            };
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match self.tx.send_timeout((msg, permit), left).await {
            Ok(()) => true,
            Err(mpsc::error::SendTimeoutError::Timeout(_)) => self.too_slow(),
            Err(mpsc::error::SendTimeoutError::Closed(_)) => false,
        }
    }

    fn too_slow(&self) -> bool {
        metrics::counter!("strongbox_watch_cut_total", "reason" => "slow").increment(1);
        *self.cut.lock().expect("cut lock") = Some(Ending::TooSlow);
        false
    }

    async fn run(mut self, mut next: u64) {
        // Data metrics: log and apply positions only (no timers, no roles).
        let mut applied = self.api.node.raft.data_metrics();
        let mut last_sent = tokio::time::Instant::now();
        loop {
            if *self.stopping.borrow() {
                self.end(Status::unavailable("node shutting down; reconnect to another node"));
                return;
            }
            if self.tx.is_closed() {
                return; // the consumer left (a catch-up may send nothing for long)
            }
            // A revoked or expired token ends the stream.
            let caller = match self.caller() {
                Ok(c) => c,
                Err(s) => return self.end(s),
            };
            let current = match self.api.revision() {
                Ok(r) => r,
                Err(s) => return self.end(s),
            };
            if next <= current {
                let epoch = self.api.node.sm.install_epoch();
                let records = match self.api.node.sm.feed(next, READ_CHUNK) {
                    Ok(r) => r,
                    Err(e) => return self.end(internal(e)),
                };
                if epoch % 2 == 1 || self.api.node.sm.install_epoch() != epoch {
                    // Read across a snapshot install: possibly a partial
                    // state (a gap that is not a compaction). Resume elsewhere.
                    return self.end(installing());
                }
                if records.first().map(|r| r.revision) != Some(next) {
                    // Compacted while this consumer lagged behind.
                    return self.end(compacted(&self.api, next));
                }
                for record in &records {
                    let events: Vec<&StoredEvent> = record
                        .events
                        .iter()
                        .filter(|e| self.filter.matches(e) && caller.allows(&access_for(e)))
                        .collect();
                    if !events.is_empty() {
                        if !self.send(to_proto(record, events)).await {
                            return;
                        }
                        last_sent = tokio::time::Instant::now();
                    }
                    next = record.revision + 1;
                }
                continue;
            }
            // Caught up: wait for the next apply, or tell an idle consumer
            // how far it is (so it can checkpoint without events). The data
            // metrics also change with appends and replication; only a new
            // applied index counts, so the progress timer is not reset by them.
            let seen = self.api.node.raft.data_metrics().borrow().last_applied.map(|l| l.index);
            let progress_at = last_sent + self.progress;
            tokio::select! {
                alive = async { applied.wait_for(|m| m.last_applied.map(|l| l.index) != seen).await.is_ok() } => {
                    if !alive {
                        return self.end(Status::unavailable("node shutting down"));
                    }
                }
                _ = tokio::time::sleep_until(progress_at) => {
                    let msg = WatchResponse { revision: current, progress: true, ..Default::default() };
                    if !self.send(msg).await {
                        return;
                    }
                    last_sent = tokio::time::Instant::now();
                }
                _ = self.stopping.changed() => {}
                () = self.tx.closed() => return,
            }
        }
    }
}

fn compacted(api: &Api, start: u64) -> Status {
    let oldest = api.node.sm.feed_oldest().ok().flatten().unwrap_or(0);
    metrics::counter!("strongbox_watch_cut_total", "reason" => "compacted").increment(1);
    Status::failed_precondition(format!(
        "start_revision {start} is no longer retained; the oldest available revision is {oldest}: \
         resync from a read at a known revision, then watch from the revision after it"
    ))
}

/// A buffered message and its share of the buffer's bytes.
type Buffered = (WatchResponse, OwnedSemaphorePermit);

/// The consumer's side of one watch.
struct Consumer {
    rx: mpsc::Receiver<Buffered>,
    cut: Cut,
    /// The last revision handed to the transport.
    last: u64,
    _slot: Arc<WatcherSlot>,
    done: bool,
}

/// One stream's place in the watcher counts, given back when its producer
/// and consumer have both ended, however they end.
struct WatcherSlot {
    watchers: Arc<Mutex<Watchers>>,
    principal: String,
}

impl WatcherSlot {
    fn take(watchers: &Arc<Mutex<Watchers>>, principal: String) -> Result<WatcherSlot, Status> {
        let mut w = watchers.lock().expect("watchers lock");
        if w.total >= WATCHERS_MAX {
            return Err(Status::resource_exhausted(format!(
                "this node serves at most {WATCHERS_MAX} watch streams; try another node or later"
            )));
        }
        let mine = w.per_principal.entry(principal.clone()).or_default();
        if *mine >= WATCHERS_PER_PRINCIPAL_MAX {
            return Err(Status::resource_exhausted(format!(
                "{principal} already has {WATCHERS_PER_PRINCIPAL_MAX} watch streams on this node; \
                 close one, or watch several kinds in one stream"
            )));
        }
        *mine += 1;
        w.total += 1;
        metrics::gauge!("strongbox_watch_streams").increment(1.0);
        Ok(WatcherSlot { watchers: watchers.clone(), principal })
    }
}

impl Drop for WatcherSlot {
    fn drop(&mut self) {
        let mut w = self.watchers.lock().expect("watchers lock");
        w.total -= 1;
        let mine = w.per_principal.get_mut(&self.principal).expect("a slot's principal is counted");
        *mine -= 1;
        if *mine == 0 {
            w.per_principal.remove(&self.principal);
        }
        metrics::gauge!("strongbox_watch_streams").decrement(1.0);
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Feed for FeedService {
    type WatchStream = WatchStream;

    async fn watch(&self, req: Request<WatchRequest>) -> Result<Response<WatchStream>, Status> {
        let (meta, _, r) = req.into_parts();
        self.api.rpc("feed.watch", token_of(&meta), self.open(meta, r)).await
    }
}

impl FeedService {
    /// Checks a Watch request and starts its producer; the stream it returns
    /// hands out what the producer buffers.
    async fn open(&self, meta: tonic::metadata::MetadataMap, r: WatchRequest) -> Result<WatchStream, Status> {
        // Checked against this node's state, caught up with the leader first
        // if it says no (a token issued a moment ago through another node).
        let token = self.api.precheck(&meta, Rpc::FeedWatch, "").await?;
        self.api.within_staleness()?;
        crate::observe::check_size(&r)?;
        let filter = Filter::parse(&r)?;
        let progress_ms =
            if r.progress_interval_ms == 0 { PROGRESS_DEFAULT_MS } else { r.progress_interval_ms };
        if !PROGRESS_MS.contains(&progress_ms) {
            return Err(Status::invalid_argument(format!(
                "progress_interval_ms: {}..={} (0 = {PROGRESS_DEFAULT_MS}), got {progress_ms}",
                PROGRESS_MS.start(),
                PROGRESS_MS.end()
            )));
        }
        let current = self.api.revision()?;
        let start = if r.start_revision == 0 { current + 1 } else { r.start_revision };
        let oldest = self.api.node.sm.feed_oldest().map_err(internal)?;
        if start <= current && oldest.is_none_or(|o| start < o) {
            return Err(compacted(&self.api, start));
        }
        let principal = self.api.check(&token, Rpc::FeedWatch, "")?.principal.to_string();
        let slot = Arc::new(WatcherSlot::take(&self.watchers, principal)?);
        let (tx, rx) = mpsc::channel(SUBSCRIBER_BUFFER_MAX);
        let cut: Cut = Arc::default();
        let producer = Producer {
            api: self.api.clone(),
            token,
            filter,
            progress: Duration::from_millis(progress_ms as u64),
            tx,
            bytes: Arc::new(Semaphore::new(SUBSCRIBER_BUFFER_BYTES_MAX)),
            cut: cut.clone(),
            stopping: self.stopping.clone(),
            _slot: slot.clone(),
        };
        tokio::spawn(producer.run(start));
        // Hands out what is buffered; once the producer has cut the stream,
        // the cause comes next (what is still buffered is dropped: the cause
        // names the last revision handed over, to resume from).
        let ending = |e: Ending, last: u64| match e {
            Ending::TooSlow => too_slow(last),
            Ending::Status(s) => s,
        };
        let state = Consumer { rx, cut, last: start.saturating_sub(1), _slot: slot, done: false };
        let stream = futures::stream::unfold(state, move |mut st| async move {
            if st.done {
                return None;
            }
            let early = st.cut.lock().expect("cut lock").take();
            if let Some(e) = early {
                st.done = true;
                return Some((Err(ending(e, st.last)), st));
            }
            match st.rx.recv().await {
                Some((msg, share)) => {
                    drop(share);
                    st.last = msg.revision;
                    Some((Ok(msg), st))
                }
                None => {
                    let e = st.cut.lock().expect("cut lock").take()?;
                    st.done = true;
                    Some((Err(ending(e, st.last)), st))
                }
            }
        });
        Ok(Box::pin(stream))
    }
}
