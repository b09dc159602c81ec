//! Checker verdicts and `results.json`.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

/// Jepsen's `:valid?`: true, false, or "unknown" when a checker could not
/// decide (time budget spent, or nothing to check).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Validity {
    Valid,
    Invalid,
    Unknown,
}

impl Validity {
    /// Combines verdicts: any invalid wins, then any unknown.
    pub fn merge(self, other: Validity) -> Validity {
        use Validity::*;
        match (self, other) {
            (Invalid, _) | (_, Invalid) => Invalid,
            (Unknown, _) | (_, Unknown) => Unknown,
            _ => Valid,
        }
    }

    pub fn all(items: impl IntoIterator<Item = Validity>) -> Validity {
        items.into_iter().fold(Validity::Valid, Validity::merge)
    }
}

impl Serialize for Validity {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Validity::Valid => s.serialize_bool(true),
            Validity::Invalid => s.serialize_bool(false),
            Validity::Unknown => s.serialize_str("unknown"),
        }
    }
}

impl<'de> Deserialize<'de> for Validity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::Bool(true) => Ok(Validity::Valid),
            Value::Bool(false) => Ok(Validity::Invalid),
            Value::String(s) if s == "unknown" => Ok(Validity::Unknown),
            other => Err(D::Error::custom(format!("bad validity {other}"))),
        }
    }
}

/// One checker's verdict with the numbers and examples that justify it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckerResult {
    pub valid: Validity,
    pub counts: BTreeMap<String, u64>,
    pub details: Map<String, Value>,
}

impl CheckerResult {
    pub fn new(valid: Validity) -> Self {
        Self { valid, counts: BTreeMap::new(), details: Map::new() }
    }

    pub fn with_count(mut self, name: &str, n: u64) -> Self {
        self.counts.insert(name.to_string(), n);
        self
    }

    pub fn with_detail(mut self, name: &str, value: Value) -> Self {
        self.details.insert(name.to_string(), value);
        self
    }

    /// A count by name, 0 when absent: keeps test assertions short.
    pub fn count(&self, name: &str) -> u64 {
        self.counts.get(name).copied().unwrap_or(0)
    }
}

/// Every checker's result keyed by checker name, plus the overall verdict.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Results {
    checkers: BTreeMap<String, CheckerResult>,
}

impl Results {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, name: &str, result: CheckerResult) {
        self.checkers.insert(name.to_string(), result);
    }

    pub fn checkers(&self) -> &BTreeMap<String, CheckerResult> {
        &self.checkers
    }

    /// Overall verdict; an empty set of checkers proves nothing.
    pub fn valid(&self) -> Validity {
        if self.checkers.is_empty() {
            return Validity::Unknown;
        }
        Validity::all(self.checkers.values().map(|r| r.valid))
    }

    pub fn to_json(&self) -> Value {
        serde_json::json!({ "valid": self.valid(), "checkers": self.checkers })
    }

    pub fn save(&self, path: &Path) -> io::Result<()> {
        let text = serde_json::to_string_pretty(&self.to_json())?;
        std::fs::write(path, text + "\n")
    }

    /// Reads `results.json` back; the stored overall verdict is recomputed.
    pub fn load(path: &Path) -> io::Result<Results> {
        #[derive(Deserialize)]
        struct OnDisk {
            checkers: BTreeMap<String, CheckerResult>,
        }
        let on_disk: OnDisk = serde_json::from_slice(&std::fs::read(path)?)?;
        Ok(Results { checkers: on_disk.checkers })
    }
}
