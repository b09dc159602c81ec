//! Linked events: a chain is a run of events whose `linked` flag ties each
//! to the next; it applies completely or not at all.

use super::Abort;
use crate::state_machine::Tx;

/// The result codes a chain needs besides the event's own.
pub(crate) struct ChainCodes<R> {
    pub ok: R,
    pub linked_event_failed: R,
    pub linked_event_chain_open: R,
}

/// Applies `events` in order, chain by chain. The first failing event of a
/// chain reports its own result, every other member `linked_event_failed`,
/// and the chain's writes are rolled back; `failed` then sees the failing
/// event (what it writes stays). A chain left open by the last event is
/// evaluated up to that event and rolled back whatever happened: the last
/// reports `linked_event_chain_open`, a failing member its own result.
pub(crate) fn run_chains<E, R: Copy + PartialEq>(
    tx: &mut Tx<'_>,
    events: &[E],
    linked: impl Fn(&E) -> bool,
    codes: ChainCodes<R>,
    mut apply: impl FnMut(&mut Tx<'_>, &E) -> Result<R, Abort>,
    mut failed: impl FnMut(&mut Tx<'_>, &E, R) -> Result<(), Abort>,
) -> Result<Vec<R>, Abort> {
    let mut results = Vec::with_capacity(events.len());
    let mut start = 0;
    while start < events.len() {
        let (end, open) = match (start..events.len()).find(|&i| !linked(&events[i])) {
            Some(end) => (end, false),
            None => (events.len() - 1, true),
        };
        let applied = if open { &events[start..end] } else { &events[start..=end] };
        tx.savepoint();
        let mut failure = None;
        for (i, e) in applied.iter().enumerate() {
            let r = apply(tx, e)?;
            if r != codes.ok {
                failure = Some((i, r));
                break;
            }
        }
        let chain = end - start + 1;
        if failure.is_none() && !open {
            tx.release();
            results.extend(std::iter::repeat_n(codes.ok, chain));
        } else {
            tx.rollback();
            if let Some((i, r)) = failure {
                failed(tx, &applied[i], r)?;
            }
            results.extend((0..chain).map(|j| match failure {
                Some((i, r)) if i == j => r,
                _ if open && j == chain - 1 => codes.linked_event_chain_open,
                _ => codes.linked_event_failed,
            }));
        }
        start = end + 1;
    }
    assert_eq!(results.len(), events.len());
    Ok(results)
}
