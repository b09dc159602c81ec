//! Per-RPC metrics and the small helpers every handler shares.

use std::future::Future;
use std::time::Instant;

use strongbox_store::{CommandError, ErrorCode};
use tonic::{Code, Response, Status};

use crate::limits::REQUEST_BYTES_MAX;

/// Runs a handler, counting it by method and status code and timing it.
pub async fn rpc<T>(
    method: &'static str,
    f: impl Future<Output = Result<T, Status>>,
) -> Result<Response<T>, Status> {
    let started = Instant::now();
    let res = f.await;
    let code = match &res {
        Ok(_) => Code::Ok,
        Err(s) => s.code(),
    };
    let elapsed_s = started.elapsed().as_secs_f64();
    RPC_METRICS.with(|m| {
        let mut m = m.borrow_mut();
        m.0.entry((method, code))
            .or_insert_with(
                || metrics::counter!("strongbox_rpc_total", "method" => method, "code" => code_name(code)),
            )
            .increment(1);
        m.1.entry(method)
            .or_insert_with(|| metrics::histogram!("strongbox_rpc_seconds", "method" => method))
            .record(elapsed_s);
    });
    res.map(Response::new)
}

type RpcCounters = std::collections::HashMap<(&'static str, Code), metrics::Counter>;
type RpcTimers = std::collections::HashMap<&'static str, metrics::Histogram>;

thread_local! {
    /// Handles by method (and code): `counter!` with labels looks its
    /// metric up in the registry on every call (a key built, hashed and
    /// copied), about 1% of a loaded leader's CPU. Bounded: methods are
    /// the services' own, codes are gRPC's 17.
    static RPC_METRICS: std::cell::RefCell<(RpcCounters, RpcTimers)> = Default::default();
}

/// A status code's name as a metric label, without an allocation per RPC.
pub(crate) fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "Ok",
        Code::Cancelled => "Cancelled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

/// tonic refuses a request over a service's decode limit (set to
/// `REQUEST_BYTES_MAX` on every client-facing service) with OUT_OF_RANGE
/// before any handler runs; clients are told RESOURCE_EXHAUSTED for an
/// oversized request, as etcd does, so that refusal is restated here, on
/// the way out.
pub fn restate_oversize<B>(mut resp: tonic::codegen::http::Response<B>) -> tonic::codegen::http::Response<B> {
    let Some(status) = Status::from_header_map(resp.headers()) else { return resp };
    if status.code() == Code::OutOfRange
        && status.message().starts_with("Error, decoded message length too large")
    {
        let why = status.message().trim_start_matches("Error, decoded message length too large: ");
        // tonic's own words name the limit already.
        let restated = if why.contains("limit") {
            Status::resource_exhausted(format!("request too large ({why}); split it or send less"))
        } else {
            Status::resource_exhausted(format!(
                "request too large ({why}); split it or send less (limit {REQUEST_BYTES_MAX} bytes)"
            ))
        };
        // Cannot fail: the message is ASCII, percent-encoded by tonic.
        let _ = restated.add_header(resp.headers_mut());
    }
    // A body that does not decode as the method's message (a truncated
    // varint, bad UTF-8 in a string): tonic says INTERNAL, as gRPC's table
    // does, but nothing failed on this side; the request was malformed, and
    // clients and alerts read INTERNAL as a server fault.
    if status.code() == Code::Internal && status.message().starts_with(DECODE_ERROR_PREFIX) {
        let restated = Status::invalid_argument(format!(
            "the request is not a well-formed message of this method: {}",
            status.message()
        ));
        let _ = restated.add_header(resp.headers_mut());
    }
    resp
}

/// How tonic's prost codec words a request body that does not decode.
const DECODE_ERROR_PREFIX: &str = "failed to decode Protobuf message";

/// RESOURCE_EXHAUSTED for requests over the size cap.
pub fn check_size<M: prost::Message>(msg: &M) -> Result<(), Status> {
    let len = msg.encoded_len();
    if len > REQUEST_BYTES_MAX {
        return Err(Status::resource_exhausted(format!(
            "request is {len} bytes; the limit is {REQUEST_BYTES_MAX} bytes"
        )));
    }
    Ok(())
}

/// This node's clock (`strongbox_raft::clock`: the system clock, shifted
/// only by the test offset).
pub fn now_ms() -> u64 {
    strongbox_raft::clock::now_ms()
}

/// The client's idempotency key, or a fresh one. Checked here, before
/// anything (the local audit included) keeps a copy of it.
pub fn request_id(given: Option<&strongbox_proto::v1::WriteOptions>) -> Result<String, Status> {
    use strongbox_store::limits::REQUEST_ID_BYTES_MAX;
    match given.map(|o| o.request_id.as_str()) {
        Some(id) if id.len() > REQUEST_ID_BYTES_MAX => Err(Status::invalid_argument(format!(
            "options.request_id: at most {REQUEST_ID_BYTES_MAX} bytes, got {}",
            id.len()
        ))),
        // An id is echoed in the audit trail and in logs: a control
        // character there could forge a line.
        Some(id) if id.chars().any(char::is_control) => Err(Status::invalid_argument(
            "options.request_id: control characters (newline, NUL...) are not allowed; use printable text such as a UUID",
        )),
        Some(id) if !id.is_empty() => Ok(id.to_string()),
        _ => Ok(uuid::Uuid::new_v4().to_string()),
    }
}

pub fn command_status(e: CommandError) -> Status {
    match e.code {
        ErrorCode::InvalidArgument => Status::invalid_argument(e.message),
        ErrorCode::NotFound => Status::not_found(e.message),
        ErrorCode::FailedPrecondition => Status::failed_precondition(e.message),
        ErrorCode::AlreadyExists => Status::already_exists(e.message),
        ErrorCode::PermissionDenied => Status::permission_denied(e.message),
        ErrorCode::ResourceExhausted => Status::resource_exhausted(e.message),
        ErrorCode::Unauthenticated => Status::unauthenticated(e.message),
    }
}

/// As `command_status`, naming the request field that was refused.
pub fn field_status(field: &str, e: CommandError) -> Status {
    command_status(CommandError { message: format!("{field}: {}", e.message), ..e })
}

#[cfg(test)]
mod tests {
    /// The label is what `{:?}` of the code gave before (dashboards keep working).
    #[test]
    fn code_names_are_the_debug_names() {
        for i in 0..=16 {
            let code = tonic::Code::from_i32(i);
            assert_eq!(super::code_name(code), format!("{code:?}"));
        }
    }
}
