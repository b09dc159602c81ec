//! `Feed.Watch`: the change feed as a server stream, read from this node's
//! own applied state (the feed records the state machine writes with each
//! revision), so writers never wait for watchers.
//!
//! Limits: each stream has a buffer of `SUBSCRIBER_BUFFER_MAX` messages and
//! `SUBSCRIBER_BUFFER_BYTES_MAX` bytes of events; a consumer that leaves it
//! full for `SLOW_CONSUMER_GRACE` is cut off with RESOURCE_EXHAUSTED naming
//! the last revision it received, and resumes from there. At most
//! `WATCHERS_MAX` streams per node, `WATCHERS_PER_PRINCIPAL_MAX` of them for
//! one user or client, and `KINDS_MAX` kinds per filter.
//!
//! Memory: the buffer holds events as stored (a transfer in ~112 bytes),
//! rendered into messages only as the transport takes them (the same
//! transfer is ~1 KB of strings and map), so a stalled consumer costs its
//! buffer, one read and one rendered slice: a few MiB, not the ~40 MiB it
//! cost when whole rendered revisions waited in its buffer and producer.
//! Reading and rendering run off the async workers, `FEED_WORK_MAX` at a
//! time per node, so many watchers of large revisions cannot starve Raft
//! (a node has one worker thread in `strongbox dev`).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::Stream;
use prost::Message;
use strongbox_proto::v1::feed_server::Feed;
use strongbox_proto::v1::{ChangeEvent, WatchRequest, WatchResponse};
use strongbox_store::auth::{Access, Action, Caller, TokenHash};
use strongbox_store::feed::{StoredEvent, StoredRecord};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tonic::{Request, Response, Status};

use super::{installing, internal, token_of, Api};
use crate::auth::Rpc;

/// Messages buffered per stream.
pub const SUBSCRIBER_BUFFER_MAX: usize = 256;
/// And the bytes their events hold, as stored (a revision of 8,189
/// transfers is about 0.9 MiB).
pub const SUBSCRIBER_BUFFER_BYTES_MAX: usize = 2 << 20;
/// Events of one revision per buffered slice: what is rendered at once.
const SLICE_EVENTS_MAX: usize = 1024;
/// Slices this small are rendered on the async worker (a handoff to the
/// blocking pool costs more than they do).
const RENDER_INLINE_EVENTS_MAX: usize = 64;
/// Feed reads and large renders running at once on a node.
const FEED_WORK_MAX: usize = 1;
/// How long a full buffer is tolerated before the consumer is cut off.
pub const SLOW_CONSUMER_GRACE: Duration = Duration::from_secs(5);
/// Concurrent streams per node.
pub const WATCHERS_MAX: usize = 256;
/// Concurrent streams of one user or client on a node, so one caller
/// cannot take them all (a service may well watch with many).
pub const WATCHERS_PER_PRINCIPAL_MAX: usize = WATCHERS_MAX / 2;
/// Kinds one filter may name (each is matched against every event).
pub const KINDS_MAX: usize = 32;
/// A message's encoded bytes at most (a revision's events are split).
pub const MESSAGE_BYTES_MAX: usize = 1 << 20;
/// Feed records read per step.
const READ_CHUNK: usize = 256;
/// And the bytes of the events kept from them, as stored: what a producer
/// holds while it waits for room in its buffer (records past it are read
/// again next step; a record that crosses it is kept whole).
const READ_KEPT_BYTES_MAX: usize = 1 << 20;
const PROGRESS_DEFAULT_MS: u32 = 5_000;
const PROGRESS_MS: std::ops::RangeInclusive<u32> = 100..=60_000;

pub struct FeedService {
    api: Api,
    watchers: Arc<Mutex<Watchers>>,
    stopping: watch::Receiver<bool>,
    /// Permits for reading and rendering (`FEED_WORK_MAX`).
    work: Arc<Semaphore>,
}

impl FeedService {
    pub fn new(api: Api, stopping: watch::Receiver<bool>) -> Self {
        let work = Arc::new(Semaphore::new(FEED_WORK_MAX));
        FeedService { api, watchers: Arc::default(), stopping, work }
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
            check_kind(k)?;
        }
        if r.prefix.len() > 1024 {
            return Err(Status::invalid_argument("prefix: at most 1024 bytes"));
        }
        // Secret paths are stored without a leading slash, as in role rules.
        let prefix = r.prefix.strip_prefix('/').unwrap_or(&r.prefix).to_string();
        Ok(Filter { kinds: r.kinds.clone(), prefix, ledger: r.ledger })
    }

    fn matches(&self, e: &StoredEvent) -> bool {
        let kind = e.kind();
        let kind_ok = self.kinds.is_empty()
            || self.kinds.iter().any(|k| match k.strip_suffix('*') {
                Some(family) => kind.starts_with(family),
                None => k == kind,
            });
        kind_ok
            && (self.ledger == 0 || e.ledger() == Some(self.ledger))
            && (self.prefix.is_empty() || e.entity().starts_with(&self.prefix))
    }
}

/// The longest kind a filter may name (the feed's are far shorter).
const KIND_BYTES_MAX: usize = 64;

/// A kind a filter names: one the feed writes, a family of them
/// ("secret.*"), or a command's name (the kind of a change with no finer
/// description). Anything else would match nothing, silently.
fn check_kind(k: &str) -> Result<(), Status> {
    // Not echoed whole: a long one would push the status past gRPC's
    // metadata limit, and the client would hear RESOURCE_EXHAUSTED instead.
    if k.len() > KIND_BYTES_MAX {
        return Err(Status::invalid_argument(format!(
            "kinds: a kind is at most {KIND_BYTES_MAX} bytes (like \"secret.updated\" or \"secret.*\"), got {}",
            k.len()
        )));
    }
    let families = || strongbox_store::feed::families().collect::<Vec<_>>().join(", ");
    let known = match k.split_once('.') {
        Some((family, "*")) => strongbox_store::feed::families().any(|f| f == family),
        Some(_) => strongbox_store::feed::KINDS.contains(&k),
        // A command's name; a bare family ("secret") is a likely slip for "secret.*".
        None => {
            if strongbox_store::feed::families().any(|f| f == k) {
                return Err(Status::invalid_argument(format!(
                    "kinds: {k:?} is a family; write \"{k}.*\" for all its kinds"
                )));
            }
            strongbox_store::Op::NAMES.contains(&k)
        }
    };
    if known {
        return Ok(());
    }
    Err(Status::invalid_argument(format!(
        "kinds: {k:?} is not a kind the feed writes (like \"secret.updated\") or a family like \"secret.*\"; \
         families: {}; kinds: {}; or a command's name: {}",
        families(),
        strongbox_store::feed::KINDS.join(", "),
        strongbox_store::Op::NAMES.join(", ")
    )))
}

/// The permission an event needs: read on what it is about. A failed
/// login names whatever was typed as a username (a password typed in the
/// wrong field, names being guessed): it is the audit trail's to show,
/// not every user directory's.
fn access_for(e: &StoredEvent) -> Access {
    if e.kind() == "user.login_failed" {
        return Access::new(Action::Read, "audit");
    }
    let resource = match family(e) {
        "secret" => format!("secrets:{}", e.entity()),
        "account" | "transfer" => match e.ledger() {
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

fn family(e: &StoredEvent) -> &str {
    e.kind().split('.').next().unwrap_or("")
}

/// What a stream buffers: where it stands, or some of one revision's
/// events as stored, rendered when the transport takes them.
enum Queued {
    Progress(u64),
    Events(Slice),
}

/// Up to `SLICE_EVENTS_MAX` events of one revision that a watcher may see;
/// `more`: events of the revision follow in the next slice.
struct Slice {
    revision: u64,
    time_ms: u64,
    actor: String,
    events: Vec<StoredEvent>,
    more: bool,
}

impl Slice {
    fn bytes(&self) -> usize {
        std::mem::size_of::<Slice>()
            + self.actor.len()
            + self.events.iter().map(StoredEvent::bytes).sum::<usize>()
    }

    /// Its messages, none over `MESSAGE_BYTES_MAX`.
    fn render(self) -> Vec<WatchResponse> {
        let events = self
            .events
            .iter()
            .map(|e| {
                let e = e.render();
                ChangeEvent {
                    kind: e.kind,
                    entity: e.entity,
                    ledger: e.ledger.unwrap_or(0),
                    fields: e.fields.into_iter().collect(),
                }
            })
            .collect();
        fragments(WatchResponse {
            revision: self.revision,
            time_ms: self.time_ms,
            actor: self.actor,
            events,
            progress: false,
            more: self.more,
        })
    }
}

/// The events of `record` the watcher may see, in slices (none when none
/// matches: a revision is delivered only with something in it).
fn slices(record: StoredRecord, filter: &Filter, caller: &Caller) -> Vec<Slice> {
    // A ledger event's right depends on its ledger only: asked once per
    // ledger, not for each of up to 8,189 transfers.
    let mut ledger_rights: HashMap<Option<u32>, bool> = HashMap::new();
    let mut allowed = |e: &StoredEvent| match family(e) {
        "account" | "transfer" => {
            *ledger_rights.entry(e.ledger()).or_insert_with(|| caller.allows(&access_for(e)))
        }
        _ => caller.allows(&access_for(e)),
    };
    let StoredRecord { revision, time_ms, actor, events } = record;
    let mut out: Vec<Slice> = Vec::new();
    for e in events {
        if !(filter.matches(&e) && allowed(&e)) {
            continue;
        }
        match out.last_mut() {
            Some(s) if s.events.len() < SLICE_EVENTS_MAX => s.events.push(e),
            _ => {
                if let Some(s) = out.last_mut() {
                    s.more = true;
                }
                out.push(Slice { revision, time_ms, actor: actor.clone(), events: vec![e], more: false });
            }
        }
    }
    out
}

/// One revision's message, split so that none exceeds `MESSAGE_BYTES_MAX`
/// (clients' default decode limit is 4 MiB; a ledger batch's revision can
/// be larger). All but the last carry `more`; the last keeps the message's
/// own (a slice that is not its revision's last).
fn fragments(msg: WatchResponse) -> Vec<WatchResponse> {
    if msg.encoded_len() <= MESSAGE_BYTES_MAX {
        return vec![msg];
    }
    let WatchResponse { revision, time_ms, actor, events, more, .. } = msg;
    let part = |events: Vec<ChangeEvent>| WatchResponse {
        revision,
        time_ms,
        actor: actor.clone(),
        events,
        progress: false,
        more: true,
    };
    let mut parts = Vec::new();
    let (mut chunk, mut chunk_bytes) = (Vec::new(), 0);
    for e in events {
        // An event's bytes plus its tag and length prefix.
        let bytes = e.encoded_len() + 8;
        if !chunk.is_empty() && chunk_bytes + bytes > MESSAGE_BYTES_MAX - 1024 {
            parts.push(part(std::mem::take(&mut chunk)));
            chunk_bytes = 0;
        }
        chunk.push(e);
        chunk_bytes += bytes;
    }
    parts.push(part(chunk));
    parts.last_mut().expect("one part at least").more = more;
    parts
}

/// Why a stream ended early; the consumer sees it after what it received.
enum Ending {
    /// The consumer left its buffer full too long; the stream names the
    /// last revision it actually handed over.
    TooSlow,
    /// The watcher's rights changed: what it may read is decided as records
    /// are read, so it is told rather than left with a silent gap.
    RightsChanged,
    Status(Status),
}

type Cut = Arc<Mutex<Option<Ending>>>;

fn too_slow(last: u64) -> Status {
    resume_at(
        Status::resource_exhausted(format!(
            "watcher too slow: its buffer ({SUBSCRIBER_BUFFER_MAX} messages or {} MiB of events, \
             whichever fills first) stayed full for {} s; last delivered revision {last}; reconnect with start_revision {}",
            SUBSCRIBER_BUFFER_BYTES_MAX >> 20,
            SLOW_CONSUMER_GRACE.as_secs(),
            last + 1
        )),
        last + 1,
    )
}

fn rights_changed(last: u64) -> Status {
    resume_at(
        Status::aborted(format!(
            "the watcher's roles or their rules changed; events are filtered by the rights held when \
             they are read, so the stream ends here instead of skipping what they no longer allow; \
             last delivered revision {last}; reconnect with start_revision {}",
            last + 1
        )),
        last + 1,
    )
}

/// Where to resume, as trailing metadata too (no parsing of messages).
fn resume_at(mut status: Status, revision: u64) -> Status {
    status.metadata_mut().insert(RESUME_REVISION_KEY, revision.into());
    status
}

/// Trailing metadata: the start_revision to reconnect with.
pub const RESUME_REVISION_KEY: &str = "strongbox-resume-revision";
/// Trailing metadata of a compacted start: the oldest revision retained.
pub const OLDEST_REVISION_KEY: &str = "strongbox-oldest-revision";
/// Trailing metadata of a start beyond the end: the latest revision.
pub const LATEST_REVISION_KEY: &str = "strongbox-latest-revision";
/// How often an idle stream checks its token, rights and staleness again
/// (a revoked token or a partitioned node ends it within about this).
const RECHECK: Duration = Duration::from_secs(1);

struct Producer {
    api: Api,
    token: TokenHash,
    filter: Arc<Filter>,
    /// The node's permits for reading and rendering.
    work: Arc<Semaphore>,
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
        self.api.within_staleness().map_err(stale_for_watch)?;
        self.api.check(&self.token, Rpc::FeedWatch, "")
    }

    fn end(&self, status: Status) {
        *self.cut.lock().expect("cut lock") = Some(Ending::Status(status));
    }

    /// Queues a message, cutting the consumer off if the buffer (messages
    /// or bytes) stays full.
    async fn send(&self, msg: Queued) -> bool {
        let deadline = tokio::time::Instant::now() + SLOW_CONSUMER_GRACE;
        let bytes = match &msg {
            Queued::Progress(_) => 1,
            Queued::Events(slice) => slice.bytes(),
        };
        let share = bytes.clamp(1, SUBSCRIBER_BUFFER_BYTES_MAX) as u32;
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

    /// Reads the feed from `next` (up to `current`) and keeps what the
    /// caller may see, off the async workers: about a megabyte decrypted
    /// and decoded, and up to 8,189 events a revision weighed.
    async fn read(&self, next: u64, current: u64, caller: Caller) -> Result<Read, Status> {
        let _permit = self.work.clone().acquire_owned().await.map_err(internal)?;
        let sm = self.api.node.sm.clone();
        let filter = self.filter.clone();
        tokio::task::spawn_blocking(move || {
            let records = sm.feed_stored(next, READ_CHUNK)?;
            let first = records.first().map(|r| r.revision);
            let mut read = Read { first, last: None, slices: Vec::new() };
            let mut kept_bytes = 0;
            for record in records.into_iter().take_while(|r| r.revision <= current) {
                if kept_bytes >= READ_KEPT_BYTES_MAX {
                    break;
                }
                read.last = Some(record.revision);
                for slice in slices(record, &filter, &caller) {
                    kept_bytes += slice.bytes();
                    read.slices.push(slice);
                }
            }
            Ok::<_, strongbox_store::DbError>(read)
        })
        .await
        .map_err(internal)?
        .map_err(internal)
    }

    fn too_slow(&self) -> bool {
        metrics::counter!("strongbox_watch_cut_total", "reason" => "slow").increment(1);
        *self.cut.lock().expect("cut lock") = Some(Ending::TooSlow);
        false
    }

    /// Reads the feed from `next` on. `announce`: send a progress message
    /// first (a stream from "now" learns its start at once, as etcd's
    /// `created` response tells it).
    async fn run(mut self, mut next: u64, announce: bool) {
        // Data metrics: log and apply positions only (no timers, no roles).
        let mut applied = self.api.node.raft.data_metrics();
        let mut last_sent = tokio::time::Instant::now();
        let mut progress_due = false;
        let mut rights: Option<Caller> = None;
        if announce {
            // First, whatever lands meanwhile: where a stream from now starts.
            if !self.send(Queued::Progress(next - 1)).await {
                return;
            }
        }
        loop {
            if *self.stopping.borrow() {
                self.end(Status::unavailable("node shutting down; reconnect to another node"));
                return;
            }
            if self.tx.is_closed() {
                return; // the consumer left (a catch-up may send nothing for long)
            }
            // The applied index before the revision: an apply after this
            // point wakes the wait below, however late in the round it lands.
            let seen = applied.borrow().last_applied.map(|l| l.index);
            let current = match self.api.revision() {
                Ok(r) => r,
                Err(s) => return self.end(s),
            };
            // The caller after the revision, and records only up to it: every
            // record delivered was applied before the rights it is read with.
            // A revoked or expired token ends the stream.
            let caller = match self.caller() {
                Ok(c) => c,
                Err(s) => {
                    // A node cut off from the cluster, or the token gone.
                    let reason = if s.code() == tonic::Code::Unavailable { "stale" } else { "auth" };
                    metrics::counter!("strongbox_watch_cut_total", "reason" => reason).increment(1);
                    return self.end(s);
                }
            };
            match &rights {
                Some(first) if !first.same_rights(&caller) => {
                    metrics::counter!("strongbox_watch_cut_total", "reason" => "rights").increment(1);
                    *self.cut.lock().expect("cut lock") = Some(Ending::RightsChanged);
                    return;
                }
                Some(_) => {}
                None => rights = Some(caller.clone()),
            }
            if next <= current {
                let epoch = self.api.node.sm.install_epoch();
                let read = match self.read(next, current, caller).await {
                    Ok(r) => r,
                    Err(s) => return self.end(s),
                };
                if epoch % 2 == 1 || self.api.node.sm.install_epoch() != epoch {
                    // Read across a snapshot install: possibly a partial
                    // state (a gap that is not a compaction). Resume elsewhere.
                    return self.end(installing());
                }
                if read.first != Some(next) {
                    // Compacted while this consumer lagged behind.
                    metrics::counter!("strongbox_watch_cut_total", "reason" => "compacted").increment(1);
                    return self.end(compacted(&self.api, next));
                }
                for slice in read.slices {
                    if !self.send(Queued::Events(slice)).await {
                        return;
                    }
                    last_sent = tokio::time::Instant::now();
                }
                next = read.last.map_or(next, |last| last + 1);
                continue;
            }
            if progress_due {
                // Never below what the consumer asked to start after: on a
                // follower still catching up, `current` can be.
                let reached = current.max(next - 1);
                if !self.send(Queued::Progress(reached)).await {
                    return;
                }
                last_sent = tokio::time::Instant::now();
                progress_due = false;
            }
            // Caught up: wait for the next apply, or tell an idle consumer
            // how far it is (so it can checkpoint without events). The data
            // metrics also change with appends and replication; only a new
            // applied index counts, so the progress timer is not reset by them.
            // The token, rights and staleness are checked again at least
            // every RECHECK, and before any progress message.
            let progress_at = last_sent + self.progress;
            let wake_at = progress_at.min(tokio::time::Instant::now() + RECHECK);
            tokio::select! {
                alive = async { applied.wait_for(|m| m.last_applied.map(|l| l.index) != seen).await.is_ok() } => {
                    if !alive {
                        return self.end(Status::unavailable("node shutting down"));
                    }
                }
                _ = tokio::time::sleep_until(wake_at) => {
                    progress_due = tokio::time::Instant::now() >= progress_at;
                }
                changed = self.stopping.changed() => {
                    if changed.is_err() {
                        // The node's stop signal is gone: so is the node.
                        return self.end(Status::unavailable("node shutting down"));
                    }
                }
                () = self.tx.closed() => return,
            }
        }
    }
}

/// A node out of step with the cluster refuses watches as it refuses local
/// reads, but its advice there (read options, linearizable reads) does
/// not apply to a stream, which is always served from the node's state.
fn stale_for_watch(s: Status) -> Status {
    let Some((why, _advice)) = s.message().split_once("; a local read here allows") else {
        return s;
    };
    Status::unavailable(format!(
        "{why}; a watch is served from this node's own state, so it needs the node in step: watch \
         through another node, or again once this one has caught up"
    ))
}

/// One read: the first and last revision read (up to the latest), and
/// what of them the watcher may see.
struct Read {
    first: Option<u64>,
    last: Option<u64>,
    slices: Vec<Slice>,
}

fn compacted(api: &Api, start: u64) -> Status {
    let oldest = api.node.sm.feed_oldest().ok().flatten().unwrap_or(0);
    let mut status = Status::failed_precondition(format!(
        "start_revision {start} is no longer retained; the oldest available revision is {oldest}: \
         resync from a read at a known revision, then watch from the revision after it"
    ));
    status.metadata_mut().insert(OLDEST_REVISION_KEY, oldest.into());
    status
}

/// A start past the cluster's latest revision: a typo, or a checkpoint
/// from a history that a restore from backup replaced. Waiting for it
/// would resume silently in the middle of a different history.
fn beyond_latest(start: u64, latest: u64) -> Status {
    let mut status = Status::out_of_range(format!(
        "start_revision {start} is beyond the cluster's latest revision {latest}: a checkpoint past \
         the end belongs to another history (was the cluster restored from a backup?); resync from a \
         read, or watch from at most {}",
        latest + 1
    ));
    status.metadata_mut().insert(LATEST_REVISION_KEY, latest.into());
    status
}

/// A buffered message and its share of the buffer's bytes.
type Buffered = (Queued, OwnedSemaphorePermit);

/// The consumer's side of one watch.
struct Consumer {
    rx: mpsc::Receiver<Buffered>,
    cut: Cut,
    /// The last revision handed to the transport.
    last: u64,
    /// Messages of the slice rendered last, not yet handed over.
    rendered: std::collections::VecDeque<WatchResponse>,
    work: Arc<Semaphore>,
    _slot: Arc<WatcherSlot>,
    done: bool,
}

impl Consumer {
    /// The next message for the transport: rendered from the buffer only
    /// now that the transport asks (a stalled consumer renders nothing).
    async fn next(&mut self) -> Option<Result<WatchResponse, Status>> {
        if self.rendered.is_empty() {
            let msg = match self.rx.recv().await? {
                (Queued::Progress(revision), _share) => {
                    WatchResponse { revision, progress: true, ..Default::default() }
                }
                (Queued::Events(slice), _share) if slice.events.len() <= RENDER_INLINE_EVENTS_MAX => {
                    self.rendered.extend(slice.render());
                    self.rendered.pop_front()?
                }
                (Queued::Events(slice), _share) => {
                    let rendered = async {
                        let _permit = self.work.clone().acquire_owned().await.map_err(internal)?;
                        tokio::task::spawn_blocking(move || slice.render()).await.map_err(internal)
                    };
                    match rendered.await {
                        Ok(parts) => self.rendered.extend(parts),
                        Err(s) => return Some(Err(s)),
                    }
                    self.rendered.pop_front()?
                }
            };
            return Some(Ok(msg));
        }
        self.rendered.pop_front().map(Ok)
    }
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
        self.api.within_staleness().map_err(stale_for_watch)?;
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
        let mut current = self.api.revision()?;
        if r.start_revision > current + 1 {
            // This node may only be behind: ask the cluster.
            self.api.node.read_barrier(true, 0, None, crate::limits::READ_TIMEOUT).await?;
            current = self.api.revision()?;
            if r.start_revision > current + 1 {
                return Err(beyond_latest(r.start_revision, current));
            }
        }
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
            filter: Arc::new(filter),
            work: self.work.clone(),
            progress: Duration::from_millis(progress_ms as u64),
            tx,
            bytes: Arc::new(Semaphore::new(SUBSCRIBER_BUFFER_BYTES_MAX)),
            cut: cut.clone(),
            stopping: self.stopping.clone(),
            _slot: slot.clone(),
        };
        tokio::spawn(producer.run(start, r.start_revision == 0));
        // Hands out what is buffered; once the producer has cut the stream,
        // the cause comes next (what is still buffered is dropped: the cause
        // names the last revision handed over, to resume from).
        let ending = |e: Ending, last: u64| match e {
            Ending::TooSlow => too_slow(last),
            Ending::RightsChanged => rights_changed(last),
            Ending::Status(s) => s,
        };
        let state = Consumer {
            rx,
            cut,
            last: start.saturating_sub(1),
            rendered: Default::default(),
            work: self.work.clone(),
            _slot: slot,
            done: false,
        };
        let stream = futures::stream::unfold(state, move |mut st| async move {
            if st.done {
                return None;
            }
            let early = st.cut.lock().expect("cut lock").take();
            if let Some(e) = early {
                st.done = true;
                return Some((Err(ending(e, st.last)), st));
            }
            match st.next().await {
                Some(Ok(msg)) => {
                    // A revision counts as delivered at its last part.
                    st.last = if msg.more { msg.revision - 1 } else { msg.revision };
                    Some((Ok(msg), st))
                }
                Some(Err(s)) => {
                    st.done = true;
                    Some((Err(s), st))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A long kind is refused by its length, not echoed into the status.
    #[test]
    fn a_long_kind_is_refused_without_being_echoed() {
        let s = check_kind(&"z".repeat(15_000)).unwrap_err();
        assert_eq!(s.code(), tonic::Code::InvalidArgument);
        assert!(s.message().len() < 200 && s.message().contains("at most 64 bytes"), "{}", s.message());
        assert!(check_kind("secret.*").is_ok());
        assert_eq!(check_kind(&"z".repeat(64)).unwrap_err().code(), tonic::Code::InvalidArgument);
    }

    fn event(i: usize) -> ChangeEvent {
        ChangeEvent {
            kind: "transfer.created".into(),
            entity: format!("{}{i}", u128::MAX),
            ledger: 7,
            // The most a transfer event carries: five 39-digit numbers.
            fields: ["amount_requested", "amount", "debit_account_id", "credit_account_id", "pending_id"]
                .into_iter()
                .map(|k| (k.to_string(), u128::MAX.to_string()))
                .collect(),
        }
    }

    #[test]
    fn a_large_revision_is_split_in_order_and_only_its_last_part_completes_it() {
        let events: Vec<ChangeEvent> = (0..16_378).map(event).collect();
        let msg = WatchResponse {
            revision: 9,
            time_ms: 1,
            actor: "node".into(),
            events: events.clone(),
            ..Default::default()
        };
        assert!(msg.encoded_len() > 2 * MESSAGE_BYTES_MAX);
        let parts = fragments(msg);
        assert!(parts.len() >= 3, "{} parts", parts.len());
        for (i, p) in parts.iter().enumerate() {
            assert!(p.encoded_len() <= MESSAGE_BYTES_MAX, "part {i}: {} bytes", p.encoded_len());
            assert_eq!(p.more, i + 1 < parts.len(), "part {i}");
            assert_eq!((p.revision, p.time_ms, p.actor.as_str(), p.progress), (9, 1, "node", false));
        }
        let joined: Vec<ChangeEvent> = parts.into_iter().flat_map(|p| p.events).collect();
        assert_eq!(joined, events, "every event once, in order");
    }

    /// A slice that is not its revision's last: every part says more follows.
    #[test]
    fn parts_of_a_slice_that_is_not_the_last_all_say_more() {
        let msg = WatchResponse {
            revision: 9,
            events: (0..16_378).map(event).collect(),
            more: true,
            ..Default::default()
        };
        let parts = fragments(msg);
        assert!(parts.len() >= 2 && parts.iter().all(|p| p.more), "{} parts", parts.len());
    }

    #[test]
    fn a_stale_node_gives_watchers_advice_that_applies_to_them() {
        let local = Status::from(strongbox_raft::node::NodeError::Stale { age_ms: None, max_ms: 5000 });
        let s = stale_for_watch(local);
        assert_eq!(s.code(), tonic::Code::Unavailable);
        assert!(
            s.message().starts_with("this node may be stale: it has not been in step"),
            "{}",
            s.message()
        );
        assert!(s.message().contains("watch through another node"), "{}", s.message());
        assert!(
            !s.message().contains("linearizable") && !s.message().contains("max_staleness"),
            "{}",
            s.message()
        );
        let other = Status::unavailable("node shutting down");
        assert_eq!(stale_for_watch(other).message(), "node shutting down");
    }

    #[test]
    fn a_small_revision_is_one_message() {
        let msg = WatchResponse { revision: 3, events: (0..100).map(event).collect(), ..Default::default() };
        let parts = fragments(msg.clone());
        assert_eq!(parts, vec![msg]);
    }

    #[test]
    fn a_failed_login_is_for_audit_readers_only() {
        let event = |kind: &str| {
            StoredEvent::Described(strongbox_store::feed::ChangeEvent {
                kind: kind.into(),
                entity: "hunter2".into(),
                ledger: None,
                fields: Default::default(),
            })
        };
        assert_eq!(access_for(&event("user.login_failed")).resource, "audit");
        assert_eq!(access_for(&event("user.created")).resource, "users");
    }

    #[test]
    fn kinds_that_never_occur_are_refused() {
        for k in ["secret.updated", "secret.*", "transfer.expired", "user.*", "put_secret"] {
            assert!(check_kind(k).is_ok(), "{k}");
        }
        for k in [
            "*",
            "*.created",
            "secret.update",
            "secrets.*",
            "secret.*.x",
            "",
            "Secret.updated",
            "a b",
            "secret",
        ] {
            assert!(check_kind(k).is_err(), "{k:?}");
        }
    }
}
