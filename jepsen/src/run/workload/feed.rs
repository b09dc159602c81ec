//! feed: clients write secrets; one subscriber per node watches the change
//! feed from the revision before the first write, reconnecting whenever its
//! stream breaks (kills, restarts) and every few seconds on purpose, resuming
//! from the last revision it received + 1. After the final heal every
//! subscriber must have received every acknowledged write exactly once, in
//! revision order, with no revision skipped.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jepsen::feed::{AckedWrite, Delivery};
use jepsen::history::OpType;
use serde_json::{json, Value};
use strongbox_proto::v1::cluster_client::ClusterClient;
use strongbox_proto::v1::feed_client::FeedClient;
use strongbox_proto::v1::secrets_client::SecretsClient;
use strongbox_proto::v1::{PutSecretRequest, StatusRequest, WatchRequest};

use super::{op, Client, Ctx, Effect};

/// Subscribers drop their stream this often even when nothing breaks.
const RECONNECT_EVERY: Duration = Duration::from_secs(7);
/// How long subscribers get to catch up after the heal.
const CATCH_UP_LIMIT: Duration = Duration::from_secs(60);

#[derive(Default)]
pub struct Feed {
    next: AtomicU64,
    acked: Mutex<Vec<AckedWrite>>,
    deliveries: Arc<Mutex<Vec<Delivery>>>,
    /// Per subscriber: the last revision received.
    reached: Mutex<Vec<Arc<AtomicU64>>>,
    stop: Arc<AtomicBool>,
}

impl Feed {
    pub fn subscribers(&self) -> Vec<String> {
        (1..=self.reached.lock().expect("feed lock").len()).map(|n| format!("node{n}")).collect()
    }

    pub fn acked(&self) -> Vec<AckedWrite> {
        self.acked.lock().expect("feed lock").clone()
    }

    pub fn deliveries(&self) -> Vec<Delivery> {
        self.deliveries.lock().expect("feed lock").clone()
    }

    /// Starts one subscriber per node at the revision after the current one.
    pub async fn setup(&self, ctx: &Arc<Ctx>) -> anyhow::Result<()> {
        let mut cluster = ClusterClient::new(ctx.admin(1));
        let current = cluster.status(StatusRequest {}).await?.into_inner().revision;
        for node in 1..=ctx.nodes() {
            let reached = Arc::new(AtomicU64::new(current));
            self.reached.lock().expect("feed lock").push(reached.clone());
            let sub = Subscriber {
                name: format!("node{node}"),
                node,
                ctx: ctx.clone(),
                reached,
                deliveries: self.deliveries.clone(),
                stop: self.stop.clone(),
            };
            tokio::spawn(sub.run());
        }
        Ok(())
    }

    pub async fn step(&self, ctx: &Ctx, c: &mut Client) {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let path = format!("jepsen/feed/e{n}");
        let mut secrets = SecretsClient::new(ctx.admin(c.node));
        let call = async {
            let req = PutSecretRequest {
                options: None,
                path: path.clone(),
                value: b"fed".to_vec(),
                cas: None,
                max_versions: None,
            };
            let r = secrets.put(req).await?.into_inner();
            Ok::<Value, tonic::Status>(json!({"revision": r.revision, "version": r.version}))
        };
        let (t, out) = op(&ctx.rec, c, "write", json!({"key": path}), Effect::Write, call).await;
        if let (OpType::Ok, Some(v)) = (t, out) {
            let write = AckedWrite {
                revision: v["revision"].as_u64().unwrap_or(0),
                key: path,
                value: v["version"].as_u64().unwrap_or(0).to_string(),
            };
            self.acked.lock().expect("feed lock").push(write);
        }
    }

    /// After the heal: waits until every subscriber has reached the last
    /// acknowledged revision (or the limit), then stops them.
    pub async fn catch_up(&self) {
        let target = self.acked.lock().expect("feed lock").iter().map(|w| w.revision).max().unwrap_or(0);
        let reached = self.reached.lock().expect("feed lock").clone();
        let deadline = tokio::time::Instant::now() + CATCH_UP_LIMIT;
        while tokio::time::Instant::now() < deadline
            && reached.iter().any(|r| r.load(Ordering::Relaxed) < target)
        {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        self.stop.store(true, Ordering::Relaxed);
    }
}

struct Subscriber {
    name: String,
    node: u64,
    ctx: Arc<Ctx>,
    reached: Arc<AtomicU64>,
    deliveries: Arc<Mutex<Vec<Delivery>>>,
    stop: Arc<AtomicBool>,
}

impl Subscriber {
    async fn run(self) {
        while !self.stop.load(Ordering::Relaxed) {
            let start = self.reached.load(Ordering::Relaxed) + 1;
            let req = WatchRequest { start_revision: start, progress_interval_ms: 500, ..Default::default() };
            let mut client = FeedClient::new(self.ctx.admin(self.node));
            let opened = tokio::time::timeout(Duration::from_secs(3), client.watch(req)).await;
            let Ok(Ok(stream)) = opened else {
                tokio::time::sleep(Duration::from_millis(300)).await;
                continue;
            };
            let mut stream = stream.into_inner();
            let until = tokio::time::Instant::now() + RECONNECT_EVERY;
            while !self.stop.load(Ordering::Relaxed) && tokio::time::Instant::now() < until {
                // Progress messages come every 500 ms; silence means a
                // broken or paused connection: reconnect.
                let msg = match tokio::time::timeout(Duration::from_secs(2), stream.message()).await {
                    Ok(Ok(Some(m))) => m,
                    _ => break,
                };
                // A revision split in parts (a large ledger batch) is
                // delivered at its last part.
                if msg.progress || msg.more {
                    continue;
                }
                let first = msg.events.first();
                let delivery = Delivery {
                    subscriber: self.name.clone(),
                    revision: msg.revision,
                    key: first.map(|e| e.entity.clone()).unwrap_or_default(),
                    value: first.and_then(|e| e.fields.get("version").cloned()).unwrap_or_default(),
                };
                self.deliveries.lock().expect("feed lock").push(delivery);
                self.reached.fetch_max(msg.revision, Ordering::Relaxed);
            }
        }
    }
}
