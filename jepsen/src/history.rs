//! Jepsen-style operation histories: one JSON object per line (`history.jsonl`),
//! with Jepsen's field names so existing Jepsen tooling can read our files.

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::Path;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// Jepsen's op types. An `info` completion means the outcome is unknown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpType {
    Invoke,
    Ok,
    Fail,
    Info,
}

/// Who performed an op. Jepsen writes client processes as numbers and the
/// nemesis as the string "nemesis"; we keep that encoding on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Process {
    Client(u64),
    Nemesis,
}

impl Serialize for Process {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Process::Client(p) => s.serialize_u64(*p),
            Process::Nemesis => s.serialize_str("nemesis"),
        }
    }
}

impl<'de> Deserialize<'de> for Process {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::Number(n) => {
                n.as_u64().map(Process::Client).ok_or_else(|| D::Error::custom("bad process"))
            }
            Value::String(s) if s == "nemesis" => Ok(Process::Nemesis),
            other => Err(D::Error::custom(format!("bad process {other}"))),
        }
    }
}

/// One line of the history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Op {
    pub index: u64,
    /// Nanoseconds since the test started, from one monotonic clock.
    #[serde(rename = "time")]
    pub time_ns: u64,
    #[serde(rename = "type")]
    pub r#type: OpType,
    pub process: Process,
    pub f: String,
    #[serde(default)]
    pub value: Value,
}

/// An append-only history that hands out indices; wrap it in a mutex to share.
#[derive(Clone, Debug, Default)]
pub struct History {
    ops: Vec<Op>,
}

impl History {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends an op and returns its index.
    pub fn push(&mut self, time_ns: u64, r#type: OpType, process: Process, f: &str, value: Value) -> u64 {
        let index = self.ops.len() as u64;
        self.ops.push(Op { index, time_ns, r#type, process, f: f.to_string(), value });
        index
    }

    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    pub fn into_ops(self) -> Vec<Op> {
        self.ops
    }
}

pub fn write_jsonl(mut w: impl Write, ops: &[Op]) -> io::Result<()> {
    for op in ops {
        serde_json::to_writer(&mut w, op)?;
        w.write_all(b"\n")?;
    }
    w.flush()
}

/// Reads ops back, skipping blank lines; errors name the offending line.
pub fn read_jsonl(r: impl BufRead) -> io::Result<Vec<Op>> {
    let mut ops = Vec::new();
    for (n, line) in r.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let op = serde_json::from_str(&line)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("line {}: {e}", n + 1)))?;
        ops.push(op);
    }
    Ok(ops)
}

pub fn save(path: &Path, ops: &[Op]) -> io::Result<()> {
    write_jsonl(BufWriter::new(File::create(path)?), ops)
}

pub fn load(path: &Path) -> io::Result<Vec<Op>> {
    read_jsonl(BufReader::new(File::open(path)?))
}

/// Index of the last nemesis event: checkers that need a quiet cluster (the
/// final read of the set workload) look for ops invoked after it.
pub fn last_nemesis_index(ops: &[Op]) -> Option<u64> {
    ops.iter().filter(|op| op.process == Process::Nemesis).map(|op| op.index).max()
}

/// Canonical text of a JSON scalar used as an element, token or key: strings
/// verbatim, anything else as its JSON text.
pub fn value_key(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Ok,
    /// Definitely did not happen; checkers drop these.
    Fail,
    /// May take effect at any time after its invocation, or never.
    Info,
}

/// A client invocation paired with its completion.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Completed {
    pub process: u64,
    pub f: String,
    pub invoke_index: u64,
    /// Where the completion record is; None when the history ended first.
    pub complete_index: Option<u64>,
    pub invoke_ns: u64,
    /// When the op is known to have finished: None for info and unfinished
    /// ops, whose effect may land at any later time.
    pub complete_ns: Option<u64>,
    pub outcome: Outcome,
    pub value_in: Value,
    pub value_out: Value,
}

impl Completed {
    pub fn is_ok(&self) -> bool {
        self.outcome == Outcome::Ok
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryError {
    pub index: u64,
    pub reason: String,
}

impl fmt::Display for HistoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "history op {}: {}", self.index, self.reason)
    }
}

impl std::error::Error for HistoryError {}

/// Pairs each client invocation with the next completion of the same process,
/// ordered by invocation. Nemesis events are skipped; invocations the history
/// never completed become info ops. Malformed histories are errors rather than
/// guesses, since a wrong pairing would make every checker lie.
pub fn pair(ops: &[Op]) -> Result<Vec<Completed>, HistoryError> {
    let mut pending: HashMap<u64, &Op> = HashMap::new();
    let mut out = Vec::new();
    let mut last_index = None;
    for op in ops {
        let err = |reason: &str| HistoryError { index: op.index, reason: reason.to_string() };
        if last_index.is_some_and(|last| op.index <= last) {
            return Err(err("indices are not increasing"));
        }
        last_index = Some(op.index);
        let Process::Client(process) = op.process else { continue };
        let outcome = match op.r#type {
            OpType::Invoke => {
                if pending.insert(process, op).is_some() {
                    return Err(err("process invoked while its previous op was pending"));
                }
                continue;
            }
            OpType::Ok => Outcome::Ok,
            OpType::Fail => Outcome::Fail,
            OpType::Info => Outcome::Info,
        };
        let invoke = pending.remove(&process).ok_or_else(|| err("completion without an invocation"))?;
        if invoke.f != op.f {
            return Err(err("completion's f differs from its invocation's"));
        }
        out.push(Completed {
            process,
            f: op.f.clone(),
            invoke_index: invoke.index,
            complete_index: Some(op.index),
            invoke_ns: invoke.time_ns,
            complete_ns: (outcome != Outcome::Info).then_some(op.time_ns),
            outcome,
            value_in: invoke.value.clone(),
            value_out: op.value.clone(),
        });
    }
    out.extend(pending.into_iter().map(|(process, invoke)| Completed {
        process,
        f: invoke.f.clone(),
        invoke_index: invoke.index,
        complete_index: None,
        invoke_ns: invoke.time_ns,
        complete_ns: None,
        outcome: Outcome::Info,
        value_in: invoke.value.clone(),
        value_out: Value::Null,
    }));
    out.sort_by_key(|c| c.invoke_index);
    Ok(out)
}
