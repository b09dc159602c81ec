//! The shared history of a run: every client op and nemesis action, with
//! times from one monotonic clock, plus live counters for the progress bar.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use jepsen::history::{History, Op, OpType, Process};
use serde_json::Value;

pub struct Recorder {
    start: Instant,
    history: Mutex<History>,
    pub ok: AtomicU64,
    pub fail: AtomicU64,
    pub info: AtomicU64,
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder {
            start: Instant::now(),
            history: Mutex::new(History::new()),
            ok: AtomicU64::new(0),
            fail: AtomicU64::new(0),
            info: AtomicU64::new(0),
        }
    }

    pub fn elapsed_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    pub fn record(&self, r#type: OpType, process: Process, f: &str, value: Value) -> u64 {
        // Take the time under the lock, so index order and time order agree.
        let mut h = self.history.lock().expect("history lock");
        let time_ns = self.elapsed_ns();
        let index = h.push(time_ns, r#type, process, f, value);
        drop(h);
        if process != Process::Nemesis {
            let counter = match r#type {
                OpType::Ok => &self.ok,
                OpType::Fail => &self.fail,
                OpType::Info => &self.info,
                OpType::Invoke => return index,
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
        index
    }

    pub fn ops(&self) -> Vec<Op> {
        self.history.lock().expect("history lock").ops().to_vec()
    }
}
