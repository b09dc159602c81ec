//! Requests refused before any handler runs: a message over the decode
//! limit or one that does not decode, an unknown service or method. tonic
//! answers those itself, so they never reach `Api::rpc`, which records
//! every request it serves; this layer records them on the node's local
//! chain too (before the answer leaves, as `Api::rpc` does). Requests that
//! reached `Api::rpc` pass untouched, at the cost of one flag per request.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tonic::codegen::http;
use tonic::Status;
use tower::{Layer, Service};

use crate::services::Api;

/// Health probes ask for services by name; an unknown name is routine.
const UNAUDITED_PREFIX: &str = "/grpc.health.v1.Health/";

#[derive(Clone)]
pub struct AuditRefusalsLayer {
    api: Api,
}

impl AuditRefusalsLayer {
    pub fn new(api: Api) -> Self {
        AuditRefusalsLayer { api }
    }
}

impl<S> Layer<S> for AuditRefusalsLayer {
    type Service = AuditRefusals<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuditRefusals { inner, api: self.api.clone() }
    }
}

#[derive(Clone)]
pub struct AuditRefusals<S> {
    inner: S,
    api: Api,
}

/// `/strongbox.v1.Secrets/AddLearner` → `secrets.add_learner`, as
/// `Api::rpc` names actions; anything else as it came.
pub fn action_of(path: &str) -> String {
    let Some((service, method)) = path.strip_prefix("/strongbox.v1.").and_then(|p| p.split_once('/')) else {
        return path.chars().take(256).collect();
    };
    let mut out = service.to_ascii_lowercase();
    out.push('.');
    for (i, c) in method.chars().take(128).enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// The `method` label of a request refused before its handler: the routed
/// method's name as handlers count it, or `unknown` for a path nothing
/// serves (a client's path must not mint a metric series each).
fn metric_method(path: &str, code: tonic::Code) -> String {
    if code == tonic::Code::Unimplemented {
        return "unknown".to_string();
    }
    action_of(path)
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for AuditRefusals<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        let path = req.uri().path().to_string();
        // Kept aside (cheap clones) in case the request is refused.
        let authorization = req.headers().get("authorization").cloned();
        let request_id = req.headers().get("x-request-id").cloned();
        let api = self.api.clone();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let (res, entered) = crate::local_audit::watch_entry(fut).await;
            let resp = res?;
            if entered || path.starts_with(UNAUDITED_PREFIX) {
                return Ok(resp);
            }
            let Some(status) = Status::from_header_map(resp.headers()) else { return Ok(resp) };
            if status.code() == tonic::Code::Ok {
                return Ok(resp);
            }
            metrics::counter!(
                "strongbox_rpc_total",
                "method" => metric_method(&path, status.code()),
                "code" => crate::observe::code_name(status.code())
            )
            .increment(1);
            let token = authorization.and_then(|v| {
                let mut meta = tonic::metadata::MetadataMap::new();
                meta.insert("authorization", v.to_str().ok()?.parse().ok()?);
                crate::auth::tokens::bearer(&meta).ok()
            });
            let request_id = request_id
                .and_then(|v| v.to_str().ok().map(str::to_string))
                .filter(|id| id.len() <= strongbox_store::limits::REQUEST_ID_BYTES_MAX)
                .unwrap_or_default();
            if let Err(e) = api.audit_refused(action_of(&path), token, request_id, &status).await {
                // The refusal stands either way; say the record is missing.
                tracing::warn!(
                    path = path.as_str(),
                    error = e.message(),
                    "a refused request was not audited"
                );
            }
            Ok(resp)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::action_of;

    #[test]
    fn actions_are_named_as_the_handlers_name_them() {
        assert_eq!(action_of("/strongbox.v1.Secrets/Put"), "secrets.put");
        assert_eq!(action_of("/strongbox.v1.Cluster/AddLearner"), "cluster.add_learner");
        assert_eq!(action_of("/nope.Service/Call"), "/nope.Service/Call");
    }

    #[test]
    fn an_unserved_path_is_counted_as_unknown() {
        use super::metric_method;
        use tonic::Code;
        assert_eq!(metric_method("/nope.Service/Call", Code::Unimplemented), "unknown");
        assert_eq!(metric_method("/strongbox.v1.Secrets/Nope", Code::Unimplemented), "unknown");
        assert_eq!(metric_method("/strongbox.v1.Secrets/Put", Code::InvalidArgument), "secrets.put");
    }
}
