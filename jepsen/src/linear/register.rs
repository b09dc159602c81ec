//! A versioned register: one strongbox secret. Writes bump the version by one
//! (the store's `current + 1`), and check-and-set applies only when the current
//! version equals the expected one, 0 meaning "must not exist".
//!
//! Op values (the key lives in the invocation):
//! - `read`:  in `{"key"}`, ok `{"version": n, "value": v}`; not found is
//!   `{"version": 0, "value": null}` (or an empty object).
//! - `write`: in `{"key", "value"}`, ok `{"version": n}`.
//! - `cas`:   in `{"key", "expected": n, "value"}`, ok `{"version": n}`.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use serde_json::Value;

use super::Model;
use crate::history::{value_key, Completed};

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct RegisterState {
    pub version: u64,
    pub value: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RegisterInput {
    Read,
    Write { value: String },
    Cas { expected: u64, value: String },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegisterOutput {
    Read { version: u64, value: Option<String> },
    Written { version: u64 },
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Register;

/// The key of a register op, or None for ops of other workloads.
pub fn key_of(op: &Completed) -> Option<String> {
    match op.f.as_str() {
        "read" | "write" | "cas" => op.value_in.get("key").map(value_key),
        _ => None,
    }
}

fn value_field(v: &Value) -> Result<String, String> {
    match v.get("value") {
        Some(value) if !value.is_null() => Ok(value_key(value)),
        _ => Err("missing value".to_string()),
    }
}

fn version_field(v: &Value, name: &str) -> Result<u64, String> {
    v.get(name).and_then(Value::as_u64).ok_or_else(|| format!("missing or non-integer {name}"))
}

impl Model for Register {
    type State = RegisterState;
    type Input = RegisterInput;
    type Output = RegisterOutput;

    fn init(&self) -> RegisterState {
        RegisterState::default()
    }

    fn parse_input(&self, f: &str, value: &Value) -> Result<RegisterInput, String> {
        match f {
            "read" => Ok(RegisterInput::Read),
            "write" => Ok(RegisterInput::Write { value: value_field(value)? }),
            "cas" => Ok(RegisterInput::Cas {
                expected: version_field(value, "expected")?,
                value: value_field(value)?,
            }),
            other => Err(format!("unknown register op {other}")),
        }
    }

    fn parse_output(&self, input: &RegisterInput, value: &Value) -> Result<RegisterOutput, String> {
        match input {
            RegisterInput::Read => {
                let found = value.get("value").filter(|v| !v.is_null()).map(value_key);
                let version = match (&found, value.get("version")) {
                    (None, None) => 0,
                    _ => version_field(value, "version")?,
                };
                Ok(RegisterOutput::Read { version, value: found })
            }
            RegisterInput::Write { .. } | RegisterInput::Cas { .. } => {
                Ok(RegisterOutput::Written { version: version_field(value, "version")? })
            }
        }
    }

    /// A written value that no read returns only matters as "not what any
    /// read saw", so all such values become one value nobody read.
    fn merge_indistinguishable(&self, inputs: &mut [RegisterInput], outputs: &[&RegisterOutput]) {
        let read: HashSet<&str> = outputs
            .iter()
            .filter_map(|o| match o {
                RegisterOutput::Read { value, .. } => value.as_deref(),
                RegisterOutput::Written { .. } => None,
            })
            .collect();
        let unread = unread_value(&read);
        for input in inputs {
            if let RegisterInput::Write { value } | RegisterInput::Cas { value, .. } = input {
                if !read.contains(value.as_str()) {
                    value.clone_from(&unread);
                }
            }
        }
    }

    /// A linearization of the window can start right before its first ok op
    /// (ops ahead of that one are optional and may be dropped), and every ok
    /// op pins the version it sees; the value there matters only to a read.
    fn start_states(&self, ops: &[(&RegisterInput, Option<&RegisterOutput>)]) -> Option<Vec<RegisterState>> {
        let mut pins = BTreeSet::new();
        let mut read_at: BTreeMap<u64, BTreeSet<Option<&str>>> = BTreeMap::new();
        for (_, output) in ops {
            match output {
                Some(RegisterOutput::Read { version, value }) => {
                    pins.insert(*version);
                    read_at.entry(*version).or_default().insert(value.as_deref());
                }
                Some(RegisterOutput::Written { version }) => {
                    pins.insert(version.saturating_sub(1));
                }
                None => {}
            }
        }
        let read: HashSet<&str> = read_at.values().flatten().flatten().copied().collect();
        let unread = unread_value(&read);
        let mut states = Vec::new();
        for version in pins {
            let seen = read_at.get(&version).into_iter().flatten().map(|value| value.map(str::to_string));
            let other = if version == 0 { None } else { Some(unread.clone()) };
            let values: BTreeSet<Option<String>> = seen.chain([other]).collect();
            states.extend(values.into_iter().map(|value| RegisterState { version, value }));
        }
        Some(states)
    }

    fn step(
        &self,
        state: &RegisterState,
        input: &RegisterInput,
        output: Option<&RegisterOutput>,
    ) -> Option<RegisterState> {
        let value = match input {
            RegisterInput::Read => {
                return match output {
                    None => Some(state.clone()),
                    Some(RegisterOutput::Read { version, value }) => {
                        (*version == state.version && *value == state.value).then(|| state.clone())
                    }
                    Some(RegisterOutput::Written { .. }) => None,
                };
            }
            // A CAS that does not match cannot have succeeded; an info CAS
            // that did nothing is the same as never linearizing it.
            RegisterInput::Cas { expected, .. } if *expected != state.version => return None,
            RegisterInput::Write { value } | RegisterInput::Cas { value, .. } => value,
        };
        let next = RegisterState { version: state.version + 1, value: Some(value.clone()) };
        match output {
            None => Some(next),
            Some(RegisterOutput::Written { version }) if *version == next.version => Some(next),
            Some(_) => None,
        }
    }
}

/// A value no read returned: stands for every such value.
fn unread_value(read: &HashSet<&str>) -> String {
    let mut unread = String::from("\u{0}unread");
    while read.contains(unread.as_str()) {
        unread.push('\u{0}');
    }
    unread
}
