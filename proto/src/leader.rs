//! Leader routing: a follower forwards writes and read-index rounds to the
//! leader, which costs every request a second hop. A node that is not the
//! leader says so on each response, in the [`LEADER_HEADER`] metadata (the
//! leader's advertised client address); a client that knows several
//! endpoints can then send its next requests to the leader directly.
//! [`LeaderRouted`] does that for the generated clients.

use std::future::poll_fn;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::codegen::http::{HeaderValue, Request, Response};
use tonic::codegen::{BoxFuture, Service};
use tonic::transport::Channel;

/// Response metadata from a node that is not the leader but knows it: the
/// leader's client address (`host:port`, as it advertises it). Absent on
/// the leader's own responses and while no leader is known.
pub const LEADER_HEADER: &str = "strongbox-leader";

/// gRPC's UNAVAILABLE, as a trailers-only response puts it in the headers.
const GRPC_STATUS_UNAVAILABLE: &[u8] = b"14";

/// A gRPC channel over several endpoints of one cluster that sends every
/// call to the endpoint it believes leads, learning it from the responses:
/// a leader hint naming one of the endpoints moves the calls there; a hint
/// naming none of them (an address the client knows by another name) moves
/// them to the next endpoint, until one answers without a hint. A failed
/// connection or an UNAVAILABLE answer also moves them on, so a node cut
/// off from the majority is left. Only the given endpoints are ever used:
/// a hint cannot send the client elsewhere.
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
}

impl LeaderRouted {
    /// `endpoints`: each endpoint's `host:port` (as nodes advertise it, for
    /// a hint to match) and its channel; calls start at `first`.
    pub fn new(endpoints: Vec<(String, Channel)>, first: usize) -> LeaderRouted {
        assert!(!endpoints.is_empty(), "a routed channel needs at least one endpoint");
        assert!(first < endpoints.len(), "first endpoint out of range");
        LeaderRouted { routes: Arc::new(Routes { endpoints, preferred: AtomicUsize::new(first) }) }
    }

    /// The endpoint the next call goes to.
    pub fn preferred(&self) -> &str {
        &self.routes.endpoints[self.routes.preferred.load(Ordering::Relaxed)].0
    }
}

impl Routes {
    /// After a call to endpoint `from` answered with `hint` (or failed:
    /// `moved_on`): where the next calls go. Only a choice still pointing at
    /// `from` is changed, so late answers from an endpoint already left do
    /// not undo a newer choice.
    fn learn(&self, from: usize, hint: Option<&HeaderValue>, moved_on: bool) {
        let to = match hint {
            Some(h) => match self.endpoints.iter().position(|(addr, _)| addr.as_bytes() == h.as_bytes()) {
                Some(j) => j,
                None => self.next(from),
            },
            None if moved_on => self.next(from),
            None => return,
        };
        if to != from {
            let _ = self.preferred.compare_exchange(from, to, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    fn next(&self, from: usize) -> usize {
        (from + 1) % self.endpoints.len()
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
            let res = match poll_fn(|cx| channel.poll_ready(cx)).await {
                Ok(()) => channel.call(req).await,
                Err(e) => Err(e),
            };
            match &res {
                Ok(resp) => {
                    let unavailable = resp
                        .headers()
                        .get("grpc-status")
                        .is_some_and(|s| s.as_bytes() == GRPC_STATUS_UNAVAILABLE);
                    routes.learn(from, resp.headers().get(LEADER_HEADER), unavailable);
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
        Routes { endpoints, preferred: AtomicUsize::new(first) }
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
    async fn a_hint_never_leaves_the_given_endpoints() {
        let r = routes(1, 0);
        r.learn(0, Some(&HeaderValue::from_static("10.0.0.9:7601")), false);
        assert_eq!(at(&r), 0);
        assert_eq!(r.endpoints.len(), 1);
    }
}
