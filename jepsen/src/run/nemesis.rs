//! The nemesis: one fault at a time, each recorded in the history as
//! `start-<fault>` and `stop-<fault>` (an invoke, then an info with what was
//! done), so checkers and plots know when the cluster was misbehaving.

use std::sync::Arc;
use std::time::Duration;

use jepsen::history::{OpType, Process};
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::Rng;
use serde_json::{json, Value};
use strongbox_proto::v1::cluster_client::ClusterClient;
use strongbox_proto::v1::{AddLearnerRequest, PromoteRequest, RemoveRequest};
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::cluster::{api_addr, raft_addr, Cluster, NodeState};
use super::net::Net;
use super::workload::Ctx;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    Partition,
    Kill,
    Pause,
    Membership,
}

impl Fault {
    pub fn parse_list(s: &str) -> anyhow::Result<Vec<Fault>> {
        if s == "none" || s.is_empty() {
            return Ok(Vec::new());
        }
        s.split(',')
            .map(|name| match name.trim() {
                "partition" => Ok(Fault::Partition),
                "kill" => Ok(Fault::Kill),
                "pause" => Ok(Fault::Pause),
                "membership" => Ok(Fault::Membership),
                other => {
                    anyhow::bail!("unknown nemesis {other:?}: partition, kill, pause, membership or none")
                }
            })
            .collect()
    }

    pub fn name(self) -> &'static str {
        match self {
            Fault::Partition => "partition",
            Fault::Kill => "kill",
            Fault::Pause => "pause",
            Fault::Membership => "membership",
        }
    }
}

/// What is broken right now, so `stop` knows what to undo.
enum Active {
    Partition,
    Killed(u64),
    Paused(u64),
    Removed(u64),
}

pub struct Nemesis {
    pub faults: Vec<Fault>,
    pub cluster: Arc<Mutex<Cluster>>,
    pub net: Arc<Net>,
    pub ctx: Arc<Ctx>,
    pub rng: StdRng,
    /// A one-line description of the current fault, for the progress bar.
    pub now: Arc<std::sync::Mutex<String>>,
}

impl Nemesis {
    /// Alternates quiet and faulty periods of about `interval` until
    /// `until`, then heals everything.
    pub async fn run(mut self, interval: Duration, until: Instant) {
        // Faults are dealt from a shuffled deck, refilled when empty: every
        // kind asked for comes up once per round (a random pick could leave
        // one out of a short run, which would then claim a fault it never had).
        let mut deck: Vec<Fault> = Vec::new();
        while !self.faults.is_empty() {
            let quiet = jitter(&mut self.rng, interval);
            if Instant::now() + quiet >= until {
                break;
            }
            tokio::time::sleep(quiet).await;
            if deck.is_empty() {
                deck = self.faults.clone();
                deck.shuffle(&mut self.rng);
            }
            let fault = deck.pop().expect("the deck was refilled");
            let active = self.start(fault).await;
            let faulty = jitter(&mut self.rng, interval).min(until.saturating_duration_since(Instant::now()));
            tokio::time::sleep(faulty).await;
            if let Some(active) = active {
                self.stop(fault, active).await;
            }
        }
        self.heal().await;
    }

    fn record(&self, r#type: OpType, f: &str, value: Value) {
        self.ctx.rec.record(r#type, Process::Nemesis, f, value);
    }

    fn set_now(&self, s: String) {
        *self.now.lock().expect("nemesis status lock") = s;
    }

    async fn start(&mut self, fault: Fault) -> Option<Active> {
        let f = format!("start-{}", fault.name());
        self.record(OpType::Invoke, &f, json!({"fault": fault.name()}));
        let result = match fault {
            Fault::Partition => self.partition().await,
            Fault::Kill => self.kill().await,
            Fault::Pause => self.pause().await,
            Fault::Membership => self.remove().await,
        };
        match result {
            Ok((active, value)) => {
                self.set_now(format!("{}: {}", fault.name(), value));
                self.record(OpType::Info, &f, value);
                Some(active)
            }
            Err(e) => {
                self.record(OpType::Info, &f, json!({"error": e.to_string()}));
                None
            }
        }
    }

    async fn stop(&mut self, fault: Fault, active: Active) {
        let f = format!("stop-{}", fault.name());
        self.record(OpType::Invoke, &f, json!({"fault": fault.name()}));
        let result = match active {
            Active::Partition => self.net.heal().map(|_| json!("healed")),
            Active::Killed(id) => self.cluster.lock().await.start(id).map(|_| json!({"restarted": id})),
            Active::Paused(id) => self.cluster.lock().await.resume(id).map(|_| json!({"resumed": id})),
            Active::Removed(id) => self.add_back(id).await.map(|_| json!({"added back": id})),
        };
        self.set_now("none".into());
        let value = result.unwrap_or_else(|e| json!({"error": e.to_string()}));
        self.record(OpType::Info, &f, value);
    }

    /// The final heal: no drops, every node running, every node a voter.
    pub async fn heal(&mut self) {
        self.record(OpType::Invoke, "stop-all", json!({"fault": "all"}));
        let mut done = Vec::new();
        if let Err(e) = self.net.heal() {
            done.push(format!("heal failed: {e}"));
        }
        match self.cluster.lock().await.revive_all() {
            Ok(ids) => done.push(format!("revived {ids:?}")),
            Err(e) => done.push(format!("revive failed: {e}")),
        }
        for id in self.missing_voters().await {
            match self.add_back(id).await {
                Ok(()) => done.push(format!("added back {id}")),
                Err(e) => done.push(format!("add back {id} failed: {e}")),
            }
        }
        self.set_now("healed".into());
        self.record(OpType::Info, "stop-all", json!(done));
    }

    async fn leader(&self) -> Option<u64> {
        self.cluster.lock().await.leader(&self.ctx.admin_token).await
    }

    async fn running(&self) -> Vec<u64> {
        let c = self.cluster.lock().await;
        c.ids().into_iter().filter(|&id| c.state(id) == NodeState::Running).collect()
    }

    /// The leader half the time (the most disruptive target), else anyone.
    async fn target(&mut self) -> anyhow::Result<u64> {
        let running = self.running().await;
        if self.rng.random_bool(0.5) {
            if let Some(l) = self.leader().await.filter(|l| running.contains(l)) {
                return Ok(l);
            }
        }
        running.choose(&mut self.rng).copied().ok_or_else(|| anyhow::anyhow!("no node is running"))
    }

    async fn partition(&mut self) -> anyhow::Result<(Active, Value)> {
        let ids = self.cluster.lock().await.ids();
        // Jepsen's topologies: a bridge (two halves that hear only the node
        // between them) and, from five nodes, a ring (each node hears its
        // two neighbours: every node sees a majority, no two the same one).
        let kinds: &[&str] = if ids.len() >= 5 {
            &["isolate-one", "isolate-leader", "majority-minority", "one-way", "bridge", "ring"]
        } else {
            &["isolate-one", "isolate-leader", "majority-minority", "one-way", "bridge"]
        };
        let kind = *kinds.choose(&mut self.rng).expect("kinds is not empty");
        let value = match kind {
            "isolate-one" | "isolate-leader" => {
                let lone = match kind {
                    "isolate-leader" => self.leader().await,
                    _ => None,
                };
                let lone = lone.unwrap_or_else(|| *ids.choose(&mut self.rng).expect("nodes"));
                let rest: Vec<u64> = ids.iter().copied().filter(|&i| i != lone).collect();
                self.net.partition(&[vec![lone], rest.clone()])?;
                json!({"kind": kind, "groups": [[lone], rest]})
            }
            "majority-minority" => {
                let mut shuffled = ids.clone();
                shuffled.shuffle(&mut self.rng);
                let minority = shuffled.split_off(ids.len().div_ceil(2));
                self.net.partition(&[shuffled.clone(), minority.clone()])?;
                json!({"kind": kind, "groups": [shuffled, minority]})
            }
            "bridge" => {
                let mut shuffled = ids.clone();
                shuffled.shuffle(&mut self.rng);
                let bridge = shuffled.remove(0);
                let right = shuffled.split_off(shuffled.len() / 2);
                let left = shuffled;
                self.cut_between(&left, &right)?;
                json!({"kind": kind, "bridge": bridge, "halves": [left, right]})
            }
            "ring" => {
                let mut ring = ids.clone();
                ring.shuffle(&mut self.rng);
                for (a, b) in ring_cuts(&ring) {
                    self.cut_between(&[a], &[b])?;
                }
                json!({"kind": kind, "ring": ring})
            }
            _ => {
                // The target hears nobody, but everyone hears the target.
                let deaf = *ids.choose(&mut self.rng).expect("nodes");
                for &from in ids.iter().filter(|&&i| i != deaf) {
                    self.net.drop_from(deaf, from)?;
                }
                json!({"kind": kind, "deaf": deaf})
            }
        };
        Ok((Active::Partition, value))
    }

    /// Neither side hears the other.
    fn cut_between(&self, a: &[u64], b: &[u64]) -> anyhow::Result<()> {
        for &x in a {
            for &y in b {
                self.net.drop_from(x, y)?;
                self.net.drop_from(y, x)?;
            }
        }
        Ok(())
    }

    async fn kill(&mut self) -> anyhow::Result<(Active, Value)> {
        let id = self.target().await?;
        self.cluster.lock().await.kill(id).await?;
        Ok((Active::Killed(id), json!({"killed": id})))
    }

    async fn pause(&mut self) -> anyhow::Result<(Active, Value)> {
        let id = self.target().await?;
        self.cluster.lock().await.pause(id)?;
        Ok((Active::Paused(id), json!({"paused": id})))
    }

    /// Removes a follower from the voters (through the leader's node).
    async fn remove(&mut self) -> anyhow::Result<(Active, Value)> {
        let leader = self.leader().await.ok_or_else(|| anyhow::anyhow!("no leader to ask"))?;
        let followers: Vec<u64> = self.running().await.into_iter().filter(|&i| i != leader).collect();
        let id = *followers.choose(&mut self.rng).ok_or_else(|| anyhow::anyhow!("no follower to remove"))?;
        let mut c = ClusterClient::new(self.ctx.admin(leader));
        let call = c.remove(RemoveRequest { id });
        tokio::time::timeout(Duration::from_secs(10), call).await??;
        Ok((Active::Removed(id), json!({"removed": id})))
    }

    async fn add_back(&self, id: u64) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut last = String::new();
        while Instant::now() < deadline {
            let Some(leader) = self.leader().await else {
                tokio::time::sleep(Duration::from_millis(300)).await;
                continue;
            };
            let mut c = ClusterClient::new(self.ctx.admin(leader));
            let add = AddLearnerRequest { id, raft_addr: raft_addr(id), api_addr: api_addr(id) };
            let res = async {
                tokio::time::timeout(Duration::from_secs(10), c.add_learner(add)).await??;
                tokio::time::timeout(Duration::from_secs(10), c.promote(PromoteRequest { id })).await??;
                anyhow::Ok(())
            };
            match res.await {
                Ok(()) => return Ok(()),
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        anyhow::bail!("could not add node {id} back: {last}")
    }

    /// Nodes that are not voters in the leader's view.
    async fn missing_voters(&self) -> Vec<u64> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let c = self.cluster.lock().await;
            if let Some(leader) = c.leader(&self.ctx.admin_token).await {
                if let Ok(s) = c.status(leader, &self.ctx.admin_token).await {
                    let voters: Vec<u64> = s.members.iter().filter(|m| m.voter).map(|m| m.id).collect();
                    return c.ids().into_iter().filter(|id| !voters.contains(id)).collect();
                }
            }
            drop(c);
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        Vec::new()
    }
}

/// Between half and one and a half times `d`.
fn jitter(rng: &mut StdRng, d: Duration) -> Duration {
    d.mul_f64(rng.random_range(0.5..1.5))
}

/// The pairs of nodes that must not hear each other for `ring` (in ring
/// order) to be a ring: every pair but neighbours, each pair once.
fn ring_cuts(ring: &[u64]) -> Vec<(u64, u64)> {
    let n = ring.len();
    let mut cuts = Vec::new();
    for i in 0..n {
        for j in i + 2..n {
            if !(i == 0 && j == n - 1) {
                cuts.push((ring[i], ring[j]));
            }
        }
    }
    cuts
}

#[cfg(test)]
mod tests {
    use super::{ring_cuts, Fault};

    #[test]
    fn nemesis_lists_parse_and_unknown_names_are_refused() {
        assert_eq!(Fault::parse_list("partition,kill").unwrap(), vec![Fault::Partition, Fault::Kill]);
        assert!(Fault::parse_list("none").unwrap().is_empty());
        assert!(Fault::parse_list("partition,netem").is_err());
    }

    #[test]
    fn in_a_ring_each_node_hears_exactly_its_two_neighbours() {
        for n in 5..=7u64 {
            let ring: Vec<u64> = (1..=n).rev().collect();
            let cuts = ring_cuts(&ring);
            for (i, &node) in ring.iter().enumerate() {
                let heard: Vec<u64> = ring
                    .iter()
                    .copied()
                    .filter(|&o| o != node && !cuts.contains(&(node, o)) && !cuts.contains(&(o, node)))
                    .collect();
                let mut want = vec![ring[(i + 1) % ring.len()], ring[(i + ring.len() - 1) % ring.len()]];
                want.sort();
                let mut heard = heard;
                heard.sort();
                assert_eq!(heard, want, "node {node} in ring {ring:?}");
            }
            // A majority each, and no pair cut twice.
            assert_eq!(cuts.len() as u64, n * (n - 3) / 2);
        }
    }
}
