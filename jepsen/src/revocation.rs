//! Revocation checker: once `revoke(T)` has completed ok, no `use(T)` invoked
//! afterwards may succeed. A use concurrent with the revoke may go either way.
//!
//! Both ops are invoked with the token id as their value. Real-time order is
//! taken from history indices, which totally order invocations and
//! completions without clock ties.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::history::{value_key, Completed, Outcome};
use crate::results::{CheckerResult, Validity};

/// How many violations `check` writes out.
const EXAMPLES_MAX: usize = 20;

/// What the workload records as a refusal's "error" for UNAUTHENTICATED
/// (the gRPC code's description).
pub const UNAUTHENTICATED: &str = "The request does not have valid authentication credentials";

fn refused_as_revoked(op: &Completed) -> bool {
    op.value_out.get("error").and_then(Value::as_str) == Some(UNAUTHENTICATED)
}

pub fn check(ops: &[Completed]) -> CheckerResult {
    // The first ok revoke completion of each token.
    let mut revoked: BTreeMap<String, &Completed> = BTreeMap::new();
    for op in ops.iter().filter(|op| op.f == "revoke" && op.is_ok()) {
        let slot = revoked.entry(value_key(&op.value_in)).or_insert(op);
        if op.complete_index < slot.complete_index {
            *slot = op;
        }
    }
    let (mut checked, mut violations) = (0u64, Vec::new());
    for op in ops.iter().filter(|op| op.f == "use" && op.outcome != Outcome::Info) {
        let token = value_key(&op.value_in);
        let Some(revoke) = revoked.get(&token) else { continue };
        let Some(revoked_at) = revoke.complete_index else { continue };
        if op.invoke_index < revoked_at {
            continue;
        }
        // Evidence that revocation held: a use accepted (a violation) or
        // refused as unauthenticated. A use that failed for another reason
        // (no leader, a timeout in a partition) proves nothing either way.
        if !op.is_ok() && !refused_as_revoked(op) {
            continue;
        }
        checked += 1;
        if op.is_ok() {
            violations.push(json!({
                "token": token,
                "revoke_invoke_index": revoke.invoke_index,
                "revoke_complete_index": revoked_at,
                "use_invoke_index": op.invoke_index,
                "use_complete_index": op.complete_index,
            }));
        }
    }
    let valid = match (checked, violations.len()) {
        (0, _) => Validity::Unknown,
        (_, 0) => Validity::Valid,
        _ => Validity::Invalid,
    };
    CheckerResult::new(valid)
        .with_count("tokens_revoked", revoked.len() as u64)
        .with_count("uses_after_revoke", checked)
        .with_count("violations", violations.len() as u64)
        .with_detail("violations", Value::Array(violations.into_iter().take(EXAMPLES_MAX).collect()))
}
