//! Consistency harness for strongbox: built out by the harness issue.
