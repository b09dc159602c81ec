//! Histories of clients running against a real atomic register, so they are
//! linearizable by construction.

use jepsen::history::Completed;

use super::{cas, read, seen, version, write, Rec};

/// A deterministic generator (no rand dependency needed for a test).
pub struct Lcg(pub u64);

impl Lcg {
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

fn f(input: &serde_json::Value) -> &'static str {
    match (input.get("expected"), input.get("value")) {
        (Some(_), _) => "cas",
        (None, Some(_)) => "write",
        _ => "read",
    }
}

/// Simulates clients against a real atomic register: each op takes effect at
/// one instant between its invocation and completion, and some clients crash
/// (info) before or after their op took effect.
pub fn simulated_history(seed: u64, ops: usize, processes: usize) -> Vec<Completed> {
    #[derive(Clone)]
    enum Phase {
        Idle,
        Invoked(serde_json::Value),
        Applied(serde_json::Value, serde_json::Value),
    }
    let mut rng = Lcg(seed);
    let mut r = Rec::default();
    let (mut ver, mut val): (u64, Option<String>) = (0, None);
    let mut procs = vec![Phase::Idle; processes];
    let mut ids: Vec<u64> = (0..processes as u64).collect();
    let mut next_id = processes as u64;
    let mut invoked = 0;
    while invoked < ops || procs.iter().any(|p| !matches!(p, Phase::Idle)) {
        let i = rng.below(processes as u64) as usize;
        let p = ids[i];
        procs[i] = match procs[i].clone() {
            Phase::Idle if invoked < ops => {
                invoked += 1;
                let input = match rng.below(3) {
                    0 => read("k"),
                    1 => write("k", &format!("v{invoked}")),
                    _ => cas("k", ver.saturating_sub(rng.below(2)), &format!("c{invoked}")),
                };
                r.invoke(p, f(&input), input.clone());
                Phase::Invoked(input)
            }
            Phase::Idle => Phase::Idle,
            Phase::Invoked(input) if rng.below(10) == 0 => {
                r.info(p, f(&input), serde_json::Value::Null);
                ids[i] = next_id;
                next_id += 1;
                Phase::Idle
            }
            Phase::Invoked(input) => {
                let out = match f(&input) {
                    "read" => seen(ver, val.as_deref()),
                    "cas" if input["expected"].as_u64() != Some(ver) => serde_json::Value::Null,
                    _ => {
                        ver += 1;
                        val = input["value"].as_str().map(str::to_string);
                        version(ver)
                    }
                };
                Phase::Applied(input, out)
            }
            Phase::Applied(input, out) => {
                if rng.below(10) == 0 {
                    r.info(p, f(&input), serde_json::Value::Null);
                    ids[i] = next_id;
                    next_id += 1;
                } else if out.is_null() {
                    r.fail(p, f(&input), out);
                } else {
                    r.ok(p, f(&input), out);
                }
                Phase::Idle
            }
        };
    }
    r.completed()
}
