//! Consistency harness for strongbox: the pure analysis half. A test run
//! records a Jepsen-style history (`history`); the checkers (`linear`, `bank`,
//! `set`, `revocation`, `feed`) judge it, `results` writes `results.json` and
//! `report` draws the plots and `index.html`.

pub mod bank;
pub mod feed;
pub mod history;
pub mod linear;
pub mod report;
pub mod results;
pub mod revocation;
pub mod set;
