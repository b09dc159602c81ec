//! Builds histories for the checker tests through the same path the harness
//! uses: recording raw ops, then pairing them.

#![allow(dead_code)]

pub mod sim;

use jepsen::history::{pair, Completed, History, OpType, Process};
use serde_json::{json, Value};

#[derive(Default)]
pub struct Rec {
    history: History,
}

impl Rec {
    fn push(&mut self, r#type: OpType, process: Process, f: &str, value: Value) -> u64 {
        let time_ns = self.history.ops().len() as u64 * 1_000;
        self.history.push(time_ns, r#type, process, f, value)
    }

    pub fn invoke(&mut self, p: u64, f: &str, value: Value) -> u64 {
        self.push(OpType::Invoke, Process::Client(p), f, value)
    }

    pub fn ok(&mut self, p: u64, f: &str, value: Value) -> u64 {
        self.push(OpType::Ok, Process::Client(p), f, value)
    }

    pub fn fail(&mut self, p: u64, f: &str, value: Value) -> u64 {
        self.push(OpType::Fail, Process::Client(p), f, value)
    }

    pub fn info(&mut self, p: u64, f: &str, value: Value) -> u64 {
        self.push(OpType::Info, Process::Client(p), f, value)
    }

    pub fn nemesis(&mut self, f: &str) -> u64 {
        self.push(OpType::Info, Process::Nemesis, f, Value::Null)
    }

    pub fn history(&self) -> &History {
        &self.history
    }

    pub fn completed(&self) -> Vec<Completed> {
        pair(self.history.ops()).expect("well-formed history")
    }
}

pub fn write(key: &str, value: &str) -> Value {
    json!({ "key": key, "value": value })
}

pub fn read(key: &str) -> Value {
    json!({ "key": key })
}

pub fn cas(key: &str, expected: u64, value: &str) -> Value {
    json!({ "key": key, "expected": expected, "value": value })
}

pub fn version(n: u64) -> Value {
    json!({ "version": n })
}

pub fn seen(version: u64, value: Option<&str>) -> Value {
    json!({ "version": version, "value": value })
}
