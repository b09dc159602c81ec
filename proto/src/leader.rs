//! Leader routing: a follower forwards writes and read-index rounds to the
//! leader, which costs every request a second hop. A node that is not the
//! leader says so on each response, in the [`LEADER_HEADER`] metadata (the
//! leader's advertised client address); a client that knows several
//! endpoints can then send its next requests to the leader directly.
//! [`LeaderRouted`] does that for the generated clients.

use std::future::poll_fn;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tonic::body::Body;
use tonic::codegen::http::{HeaderValue, Request, Response};
use tonic::codegen::{BoxFuture, Service};
use tonic::transport::Channel;

/// Response metadata from a node that is not the leader but knows it: the
/// leader's client address (`host:port`, as it advertises it). Absent on
/// the leader's own responses and while no leader is known.
pub const LEADER_HEADER: &str = "strongbox-leader";

/// gRPC statuses (as a trailers-only response puts them in its headers)
/// after which the next calls try another endpoint: UNAVAILABLE (no
/// leader, a stale node) and DEADLINE_EXCEEDED (a leader cut off from its
/// quorum still believes it leads, names no one, and times out).
const GRPC_STATUSES_MOVE_ON: [&[u8]; 2] = [b"14", b"4"];

/// How long an endpoint that failed is passed over: hints naming it are
/// ignored meanwhile, so a client that cannot reach the leader stays with
/// a follower (which forwards) instead of failing every other call.
pub const FAILED_ENDPOINT_AVOID: Duration = Duration::from_secs(5);

/// A gRPC channel over several endpoints of one cluster that sends every
/// call to the endpoint it believes leads, learning it from the responses:
/// a leader hint naming one of the endpoints moves the calls there; a hint
/// naming none of them (an address the client knows by another name) moves
/// them to the next endpoint, until one answers without a hint. A failed
/// connection or an UNAVAILABLE answer also moves them on, so a node cut
/// off from the majority is left, as is one where a call timed out or was
/// given up by its caller before an answer came. An endpoint that failed
/// is passed over for [`FAILED_ENDPOINT_AVOID`]. Only the given endpoints
/// are ever used: a hint cannot send the client elsewhere.
///
/// The channels connect lazily; a clone shares the endpoints and the
/// choice.
#[derive(Clone)]
pub struct LeaderRouted {
    routes: Arc<Routes>,
}

struct Routes {
    endpoints: Vec<(String, Channel)>,
    preferred: AtomicUsize,
    /// Per endpoint: when it last failed, in ms after `epoch` (0: never).
    failed_ms: Vec<AtomicU64>,
    epoch: Instant,
}

impl LeaderRouted {
    /// `endpoints`: each endpoint's `host:port` (as nodes advertise it, for
    /// a hint to match) and its channel; calls start at `first`.
    pub fn new(endpoints: Vec<(String, Channel)>, first: usize) -> LeaderRouted {
        assert!(!endpoints.is_empty(), "a routed channel needs at least one endpoint");
        assert!(first < endpoints.len(), "first endpoint out of range");
        LeaderRouted { routes: Arc::new(Routes::new(endpoints, first)) }
    }

    /// The endpoint the next call goes to.
    pub fn preferred(&self) -> &str {
        &self.routes.endpoints[self.routes.preferred.load(Ordering::Relaxed)].0
    }
}

impl Routes {
    fn new(endpoints: Vec<(String, Channel)>, first: usize) -> Routes {
        let failed_ms = endpoints.iter().map(|_| AtomicU64::new(0)).collect();
        Routes { endpoints, preferred: AtomicUsize::new(first), failed_ms, epoch: Instant::now() }
    }

    fn now_ms(&self) -> u64 {
        // 1 at the epoch itself, so that 0 stays "never failed".
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    fn failed_recently(&self, i: usize) -> bool {
        let at = self.failed_ms[i].load(Ordering::Relaxed);
        at != 0 && self.now_ms() - at < FAILED_ENDPOINT_AVOID.as_millis() as u64
    }

    /// After a call to endpoint `from` answered with `hint`, or failed
    /// (`failed`): where the next calls go. Only a choice still pointing at
    /// `from` is changed, so late answers from an endpoint already left do
    /// not undo a newer choice.
    fn learn(&self, from: usize, hint: Option<&HeaderValue>, failed: bool) {
        if failed {
            self.failed_ms[from].store(self.now_ms(), Ordering::Relaxed);
        }
        let to = match hint {
            Some(h) => match self.endpoints.iter().position(|(addr, _)| addr.as_bytes() == h.as_bytes()) {
                Some(j) if self.failed_recently(j) => return,
                Some(j) => j,
                None => self.next(from),
            },
            None if failed => self.next(from),
            None => return,
        };
        if to != from {
            let _ = self.preferred.compare_exchange(from, to, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    /// The endpoint after `from` that has not failed recently, else simply
    /// the one after it.
    fn next(&self, from: usize) -> usize {
        let n = self.endpoints.len();
        (1..n).map(|k| (from + k) % n).find(|&i| !self.failed_recently(i)).unwrap_or((from + 1) % n)
    }
}

/// Counts a call as failed unless it is disarmed: a caller that gives up on
/// a call (its own timeout drops the future) learns nothing otherwise.
struct FailOnDrop {
    routes: Option<Arc<Routes>>,
    from: usize,
}

impl Drop for FailOnDrop {
    fn drop(&mut self) {
        if let Some(routes) = self.routes.take() {
            routes.learn(self.from, None, true);
        }
    }
}

impl Service<Request<Body>> for LeaderRouted {
    type Response = Response<Body>;
    type Error = tonic::transport::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Readiness is the chosen channel's, awaited in `call`: the choice
        // may change between the two.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let routes = self.routes.clone();
        let from = routes.preferred.load(Ordering::Relaxed);
        let mut channel = routes.endpoints[from].1.clone();
        Box::pin(async move {
            let mut guard = FailOnDrop { routes: Some(routes), from };
            let res = match poll_fn(|cx| channel.poll_ready(cx)).await {
                Ok(()) => channel.call(req).await,
                Err(e) => Err(e),
            };
            let routes = guard.routes.take().expect("armed until the answer");
            match &res {
                Ok(resp) => {
                    let status = resp.headers().get("grpc-status").map(|s| s.as_bytes());
                    let failed = status.is_some_and(|s| GRPC_STATUSES_MOVE_ON.contains(&s));
                    routes.learn(from, resp.headers().get(LEADER_HEADER), failed);
                }
                Err(_) => routes.learn(from, None, true),
            }
            res
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes(n: usize, first: usize) -> Routes {
        let endpoints = (0..n)
            .map(|i| {
                let addr = format!("127.0.0.1:{}", 7601 + i);
                let ch =
                    tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect_lazy();
                (addr, ch)
            })
            .collect();
        Routes::new(endpoints, first)
    }

    fn at(r: &Routes) -> usize {
        r.preferred.load(Ordering::Relaxed)
    }

    #[tokio::test]
    async fn a_hint_naming_an_endpoint_moves_calls_there() {
        let r = routes(3, 0);
        r.learn(0, Some(&HeaderValue::from_static("127.0.0.1:7603")), false);
        assert_eq!(at(&r), 2);
        // The leader's own answers carry no hint: the choice stays.
        r.learn(2, None, false);
        assert_eq!(at(&r), 2);
    }

    #[tokio::test]
    async fn an_unknown_hint_probes_the_next_endpoint() {
        let r = routes(3, 2);
        r.learn(2, Some(&HeaderValue::from_static("node1.internal:7001")), false);
        assert_eq!(at(&r), 0);
    }

    #[tokio::test]
    async fn failures_move_on_but_late_answers_do_not_undo_a_newer_choice() {
        let r = routes(3, 1);
        r.learn(1, None, true);
        assert_eq!(at(&r), 2);
        // An answer from endpoint 1, sent before the move, arrives late.
        r.learn(1, Some(&HeaderValue::from_static("127.0.0.1:7601")), false);
        assert_eq!(at(&r), 2);
    }

    #[tokio::test]
    async fn one_endpoint_is_never_left() {
        let r = routes(1, 0);
        r.learn(0, Some(&HeaderValue::from_static("10.0.0.9:7601")), false);
        assert_eq!(at(&r), 0);
        r.learn(0, None, true);
        assert_eq!(at(&r), 0);
    }

    /// A client that reaches the followers but not the leader: the leader
    /// failed, so the followers' hints naming it are ignored for a while
    /// and the client stays with a follower, which forwards.
    #[tokio::test]
    async fn hints_naming_an_endpoint_that_just_failed_are_ignored() {
        let r = routes(3, 0);
        r.learn(0, None, true);
        assert_eq!(at(&r), 1);
        r.learn(1, Some(&HeaderValue::from_static("127.0.0.1:7601")), false);
        assert_eq!(at(&r), 1, "stays with the follower");
        // Moving on skips the endpoint that failed.
        r.learn(1, None, true);
        assert_eq!(at(&r), 2);
    }

    #[tokio::test]
    async fn a_call_given_up_by_its_caller_moves_on() {
        let r = Arc::new(routes(3, 0));
        drop(FailOnDrop { routes: Some(r.clone()), from: 0 });
        assert_eq!(at(&r), 1);
        assert!(r.failed_recently(0));
    }
}
