//! The bank as one linearizable object: transfers move money between
//! accounts that refuse overdrafts, and a read returns every balance at once.
//! A history is linearizable if some order of its ops, consistent with real
//! time, explains every read's balances and lets every ok transfer apply
//! without overdrawing. Failed transfers are left out (they did nothing);
//! info transfers may have happened at any later time, or never.
//!
//! Op values: `transfer` in `{"from", "to", "amount"}` (accounts 1..=n);
//! `read` ok with `{"1": balance, "2": ...}`.

use serde_json::Value;

use super::Model;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum BankInput {
    Transfer { from: usize, to: usize, amount: i64 },
    Read,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BankOutput {
    Transferred,
    Balances(Vec<i64>),
}

/// `accounts` accounts (named "1".."n"), each starting at `initial`.
#[derive(Clone, Debug)]
pub struct Bank {
    pub accounts: usize,
    pub initial: i64,
}

fn field(v: &Value, name: &str) -> Result<u64, String> {
    v.get(name).and_then(Value::as_u64).ok_or_else(|| format!("missing or non-integer {name}"))
}

impl Model for Bank {
    type State = Vec<i64>;
    type Input = BankInput;
    type Output = BankOutput;

    fn init(&self) -> Vec<i64> {
        vec![self.initial; self.accounts]
    }

    fn parse_input(&self, f: &str, value: &Value) -> Result<BankInput, String> {
        let account = |name: &str| -> Result<usize, String> {
            let a = field(value, name)? as usize;
            (1..=self.accounts).contains(&a).then_some(a - 1).ok_or_else(|| format!("{name}: no account {a}"))
        };
        match f {
            "transfer" => Ok(BankInput::Transfer {
                from: account("from")?,
                to: account("to")?,
                amount: field(value, "amount")? as i64,
            }),
            "read" => Ok(BankInput::Read),
            other => Err(format!("unknown bank op {other}")),
        }
    }

    fn parse_output(&self, input: &BankInput, value: &Value) -> Result<BankOutput, String> {
        match input {
            BankInput::Transfer { .. } => Ok(BankOutput::Transferred),
            BankInput::Read => (1..=self.accounts)
                .map(|a| {
                    value.get(a.to_string()).and_then(Value::as_i64).ok_or(format!("read lacks account {a}"))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(BankOutput::Balances),
        }
    }

    fn step(&self, state: &Vec<i64>, input: &BankInput, output: Option<&BankOutput>) -> Option<Vec<i64>> {
        match (input, output) {
            (BankInput::Read, None) => Some(state.clone()),
            (BankInput::Read, Some(BankOutput::Balances(b))) => (b == state).then(|| state.clone()),
            (BankInput::Transfer { from, to, amount }, None | Some(BankOutput::Transferred)) => {
                // The debit account refuses to go below zero.
                if state[*from] < *amount {
                    return None;
                }
                let mut next = state.clone();
                next[*from] -= amount;
                next[*to] += amount;
                Some(next)
            }
            _ => None,
        }
    }
}
