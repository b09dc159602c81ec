//! Consistency harness for strongbox: the pure analysis half. A test run
//! records a Jepsen-style history (`history`); the checkers (`linear`, `bank`,
//! `set`, `revocation`, `feed`) judge it and `results` writes `results.json`.

pub mod bank;
pub mod feed;
pub mod history;
pub mod linear;
pub mod results;
pub mod revocation;
pub mod set;
