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
/// and the chain's writes are rolled back. A chain left open by the last
/// event fails as a whole (`linked_event_chain_open` on that event).
pub(crate) fn run_chains<E, R: Copy + PartialEq>(
    tx: &mut Tx<'_>,
    events: &[E],
    linked: impl Fn(&E) -> bool,
    codes: ChainCodes<R>,
    mut apply: impl FnMut(&mut Tx<'_>, &E) -> Result<R, Abort>,
) -> Result<Vec<R>, Abort> {
    let mut results = Vec::with_capacity(events.len());
    let mut start = 0;
    while start < events.len() {
        let end = (start..events.len()).find(|&i| !linked(&events[i]));
        let Some(end) = end else {
            results.extend(std::iter::repeat_n(codes.linked_event_failed, events.len() - start - 1));
            results.push(codes.linked_event_chain_open);
            break;
        };
        tx.savepoint();
        let mut failed = None;
        for (i, e) in events[start..=end].iter().enumerate() {
            let r = apply(tx, e)?;
            if r != codes.ok {
                failed = Some((i, r));
                break;
            }
        }
        match failed {
            None => {
                tx.release();
                results.extend(std::iter::repeat_n(codes.ok, end - start + 1));
            }
            Some((i, r)) => {
                tx.rollback();
                let chain = end - start + 1;
                results.extend((0..chain).map(|j| if j == i { r } else { codes.linked_event_failed }));
            }
        }
        start = end + 1;
    }
    assert_eq!(results.len(), events.len());
    Ok(results)
}
