//! Workloads: what the clients do. Each file is one workload with its setup,
//! its op generator and its op invocation; this module holds what they share
//! (how an op is recorded and how a gRPC error maps to Jepsen's outcomes) and
//! the enum that dispatches.

pub mod bank;
pub mod feed;
pub mod register;
pub mod revocation;
pub mod set;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use jepsen::history::{OpType, Process};
use rand::rngs::StdRng;
use serde_json::{json, Value};
use strongbox_api::client::{AuthChannel, Bearer};
use strongbox_proto::leader::LeaderRouted;
use tonic::{Code, Status};

use super::recorder::Recorder;

/// A client gives up on an op after this long; a write that timed out is
/// `info` (it may still take effect), a read that timed out is `fail`.
pub const OP_TIMEOUT: Duration = Duration::from_secs(5);

/// What every client shares: the channels to each node and the admin token.
pub struct Ctx {
    pub rec: Arc<Recorder>,
    /// Indexed by node id - 1; each pinned to its node (one endpoint).
    pub channels: Vec<LeaderRouted>,
    pub admin_token: String,
    pub admin_password: String,
}

impl Ctx {
    pub fn nodes(&self) -> u64 {
        self.channels.len() as u64
    }

    /// A channel to node `id` carrying the admin token.
    pub fn admin(&self, id: u64) -> AuthChannel {
        self.with_token(id, &self.admin_token)
    }

    pub fn with_token(&self, id: u64, token: &str) -> AuthChannel {
        let bearer = Bearer::new(Some(token)).expect("tokens are ASCII");
        AuthChannel::new(self.channels[(id - 1) as usize].clone(), bearer)
    }

    pub fn plain(&self, id: u64) -> LeaderRouted {
        self.channels[(id - 1) as usize].clone()
    }
}

/// One client: a Jepsen process pinned to one node. After an `info` the
/// process is retired and the client continues as a new one, because a
/// process may have only one op outstanding and the info op never ends.
pub struct Client {
    pub process: u64,
    pub node: u64,
    pub rng: StdRng,
    /// The register versions this client last saw, for its CAS ops.
    pub seen_versions: std::collections::HashMap<u64, u64>,
    pub revocation: revocation::ClientState,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Reads: an error means nothing happened.
    Read,
    /// Writes: an ambiguous error means it may have happened.
    Write,
}

/// Invokes one op: records the invocation, runs it with a timeout, records
/// the completion. Returns the completion type and the ok value.
pub async fn op<F>(
    rec: &Recorder,
    client: &mut Client,
    f: &str,
    value: Value,
    effect: Effect,
    call: F,
) -> (OpType, Option<Value>)
where
    F: Future<Output = Result<Value, Status>>,
{
    let process = Process::Client(client.process);
    rec.record(OpType::Invoke, process, f, value.clone());
    let (r#type, out) = match tokio::time::timeout(OP_TIMEOUT, call).await {
        Ok(Ok(out)) => (OpType::Ok, out),
        Ok(Err(status)) => {
            let t = classify(&status, effect);
            (t, with_error(value, status.code().description(), status.message()))
        }
        Err(_) => {
            let t = if effect == Effect::Write { OpType::Info } else { OpType::Fail };
            (t, with_error(value, "timeout", &format!("no answer within {OP_TIMEOUT:?}")))
        }
    };
    rec.record(r#type, process, f, out.clone());
    if r#type == OpType::Info {
        client.process += PROCESS_STRIDE;
    }
    (r#type, (r#type == OpType::Ok).then_some(out))
}

/// Retired processes skip ahead by this much, so ids never collide across
/// clients (there are fewer clients than this).
pub const PROCESS_STRIDE: u64 = 1000;

/// Codes that say the request was refused before it could take effect are
/// definite failures; anything else on a write is unknown.
pub(super) fn classify(status: &Status, effect: Effect) -> OpType {
    match status.code() {
        Code::InvalidArgument
        | Code::NotFound
        | Code::FailedPrecondition
        | Code::AlreadyExists
        | Code::PermissionDenied
        | Code::Unauthenticated
        | Code::ResourceExhausted
        | Code::OutOfRange => OpType::Fail,
        _ if effect == Effect::Read => OpType::Fail,
        // No connection (a killed node): the request was never sent.
        Code::Unavailable if status.message().contains("tcp connect error") => OpType::Fail,
        _ => OpType::Info,
    }
}

fn with_error(value: Value, code: &str, message: &str) -> Value {
    let mut v = match value {
        Value::Object(m) => m,
        other => {
            let mut m = serde_json::Map::new();
            m.insert("value".into(), other);
            m
        }
    };
    v.insert("error".into(), json!(code));
    v.insert("message".into(), json!(message));
    Value::Object(v)
}

/// The workloads, by name.
pub enum Workload {
    Register(register::Register),
    Bank(bank::Bank),
    Set(set::Set),
    Revocation(revocation::Revocation),
    Feed(feed::Feed),
}

impl Workload {
    pub fn parse(name: &str) -> anyhow::Result<Workload> {
        Ok(match name {
            "register" => Workload::Register(register::Register::default()),
            "bank" => Workload::Bank(bank::Bank::default()),
            "set" => Workload::Set(set::Set::default()),
            "revocation" => Workload::Revocation(revocation::Revocation),
            "feed" => Workload::Feed(feed::Feed::default()),
            other => anyhow::bail!("unknown workload {other:?}: register, bank, set, revocation or feed"),
        })
    }

    pub fn name(&self) -> &'static str {
        match self {
            Workload::Register(_) => "register",
            Workload::Bank(_) => "bank",
            Workload::Set(_) => "set",
            Workload::Revocation(_) => "revocation",
            Workload::Feed(_) => "feed",
        }
    }

    /// Creates what the workload needs before faults start.
    pub async fn setup(&self, ctx: &Arc<Ctx>) -> anyhow::Result<()> {
        match self {
            Workload::Bank(w) => w.setup(ctx).await,
            Workload::Feed(w) => w.setup(ctx).await,
            _ => Ok(()),
        }
    }

    /// One op by one client.
    pub async fn step(&self, ctx: &Ctx, client: &mut Client) {
        match self {
            Workload::Register(w) => w.step(ctx, client).await,
            Workload::Bank(w) => w.step(ctx, client).await,
            Workload::Set(w) => w.step(ctx, client).await,
            Workload::Revocation(w) => w.step(ctx, client).await,
            Workload::Feed(w) => w.step(ctx, client).await,
        }
    }

    /// Reads taken after the final heal, which some checkers need.
    pub async fn final_reads(&self, ctx: &Ctx, client: &mut Client) {
        match self {
            Workload::Bank(w) => w.final_reads(ctx, client).await,
            Workload::Set(w) => w.final_read(ctx, client).await,
            Workload::Feed(w) => w.catch_up().await,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ambiguous_write_error_is_info_but_a_refusal_is_fail() {
        for code in
            [Code::Unavailable, Code::DeadlineExceeded, Code::Internal, Code::Cancelled, Code::Unknown]
        {
            assert_eq!(classify(&Status::new(code, ""), Effect::Write), OpType::Info, "{code:?}");
            assert_eq!(classify(&Status::new(code, ""), Effect::Read), OpType::Fail, "{code:?}");
        }
        for code in
            [Code::FailedPrecondition, Code::InvalidArgument, Code::PermissionDenied, Code::ResourceExhausted]
        {
            assert_eq!(classify(&Status::new(code, ""), Effect::Write), OpType::Fail, "{code:?}");
        }
    }

    #[test]
    fn errors_keep_the_invocation_value() {
        let v = with_error(json!({"key": 3}), "Unavailable", "no leader");
        assert_eq!(v, json!({"key": 3, "error": "Unavailable", "message": "no leader"}));
        let v = with_error(json!(7), "timeout", "x");
        assert_eq!(v["value"], json!(7));
    }
}
