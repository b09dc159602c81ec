//! The forward stream (forward_link.rs) against a peer server over a real
//! socket: answers that come back out of order reach their own callers, an
//! abandoned call's late answer is never taken for another's, and a broken
//! stream fails its waiting calls instead of hanging them.

use std::pin::Pin;
use std::time::Duration;

use futures::Stream;
use strongbox_proto::raft::v1::raft_peer_client::RaftPeerClient;
use strongbox_proto::raft::v1::raft_peer_server::{RaftPeer, RaftPeerServer};
use strongbox_proto::raft::v1::{Empty, Payload, ReadIndexRequest, ReadIndexResponse};
use strongbox_raft::forward_link::ForwardLink;
use strongbox_raft::wire::{self, ForwardReply, Forwarded};
use tonic::{Request, Response, Status, Streaming};

/// Answers each `TransferLeader { to, budget_ms }` with `Ok(Some(to))`
/// after `budget_ms`, each on its own task (so out of order); `to == BREAK`
/// ends the stream with an error.
struct FakeLeader;

const BREAK: u64 = 999;

type Answers = Pin<Box<dyn Stream<Item = Result<Payload, Status>> + Send + 'static>>;

fn unused<T>() -> Result<T, Status> {
    Err(Status::unimplemented("not used by this test"))
}

#[tonic::async_trait]
impl RaftPeer for FakeLeader {
    async fn append_entries(&self, _: Request<Payload>) -> Result<Response<Payload>, Status> {
        unused()
    }
    type AppendEntriesStreamStream = Answers;
    async fn append_entries_stream(
        &self,
        _: Request<Streaming<Payload>>,
    ) -> Result<Response<Answers>, Status> {
        unused()
    }
    async fn vote(&self, _: Request<Payload>) -> Result<Response<Payload>, Status> {
        unused()
    }
    async fn pre_vote(&self, _: Request<Payload>) -> Result<Response<Payload>, Status> {
        unused()
    }
    async fn install_snapshot(&self, _: Request<Streaming<Payload>>) -> Result<Response<Payload>, Status> {
        unused()
    }
    async fn forward(&self, _: Request<Payload>) -> Result<Response<Payload>, Status> {
        unused()
    }
    type ForwardStreamStream = Answers;
    async fn forward_stream(&self, req: Request<Streaming<Payload>>) -> Result<Response<Answers>, Status> {
        let mut inbound = req.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            while let Ok(Some(msg)) = inbound.message().await {
                let (seq, fwd): (u64, Forwarded) = wire::decode(&msg).expect("decodable");
                let Forwarded::TransferLeader { to, budget_ms } = fwd else { panic!("unexpected {fwd:?}") };
                let tx = tx.clone();
                tokio::spawn(async move {
                    if to == BREAK {
                        let _ = tx.send(Err(Status::internal("broken on purpose"))).await;
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(budget_ms)).await;
                    let _ =
                        tx.send(Ok(wire::encode(&(seq, ForwardReply::TransferLeader(Ok(Some(to))))))).await;
                });
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }
    async fn read_index(&self, _: Request<ReadIndexRequest>) -> Result<Response<ReadIndexResponse>, Status> {
        unused()
    }
    async fn trigger_election(&self, _: Request<Empty>) -> Result<Response<Empty>, Status> {
        unused()
    }
}

async fn fake_leader() -> RaftPeerClient<tonic::transport::Channel> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(RaftPeerServer::new(FakeLeader))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect_lazy();
    RaftPeerClient::new(channel)
}

fn ask(to: u64, budget_ms: u64) -> Forwarded {
    Forwarded::TransferLeader { to, budget_ms }
}

fn answered_to(r: Result<ForwardReply, Status>) -> u64 {
    match r {
        Ok(ForwardReply::TransferLeader(Ok(Some(to)))) => to,
        other => panic!("expected an answer, got {other:?}"),
    }
}

#[tokio::test]
async fn answers_reach_their_own_callers_and_late_ones_are_dropped() {
    let Ok(link) = ForwardLink::open(fake_leader().await, None).await else { panic!("the stream opens") };

    // The slow call is sent first and answered last.
    let first = ask(1, 300);
    let (slow, fast) = tokio::join!(link.call(&first), async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        link.call(&ask(2, 10)).await
    });
    assert_eq!(answered_to(slow), 1);
    assert_eq!(answered_to(fast), 2);

    // An abandoned call: its answer arrives later and must not be taken as
    // the answer to the calls after it.
    let abandoned = tokio::time::timeout(Duration::from_millis(50), link.call(&ask(3, 400))).await;
    assert!(abandoned.is_err(), "the call was abandoned before its answer");
    assert_eq!(answered_to(link.call(&ask(4, 10)).await), 4);
    tokio::time::sleep(Duration::from_millis(500)).await; // 3's answer has come and gone
    assert_eq!(answered_to(link.call(&ask(5, 0)).await), 5);
    assert!(!link.is_closed());
}

#[tokio::test]
async fn a_broken_stream_fails_its_waiting_calls_and_closes() {
    let Ok(link) = ForwardLink::open(fake_leader().await, None).await else { panic!("the stream opens") };
    let slow = ask(1, 2_000);
    let both = async {
        tokio::join!(link.call(&slow), async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            link.call(&ask(BREAK, 0)).await
        })
    };
    // Well before the slow call's 2 s: the break itself fails it.
    let (waiting, breaking) = tokio::time::timeout(Duration::from_millis(1_500), both)
        .await
        .expect("no call hangs on a broken stream");
    for r in [waiting, breaking] {
        let e = r.expect_err("the stream broke under the call");
        assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
    }
    assert!(link.is_closed(), "a broken link is replaced, not reused");
    let e = link.call(&ask(2, 0)).await.expect_err("a closed link takes no calls");
    assert_eq!(e.code(), tonic::Code::Unavailable);
}
