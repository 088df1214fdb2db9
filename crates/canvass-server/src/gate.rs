//! A layer that checks the bearer token and the role of every call to a `canvass.v1`
//! service before its message is read: a caller without a valid token gets
//! `UNAUTHENTICATED` (and one whose role does not allow the RPC `PERMISSION_DENIED`) whatever
//! it sent, and a malformed message is judged only for a caller allowed to send it.
//! Handlers check again, for the caller's identity.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use tower::{Layer, Service};

use crate::auth::{Authenticator, Rpc};

/// Adds [`Gate`] to a service.
#[derive(Debug, Clone)]
pub(crate) struct GateLayer(pub(crate) Arc<Authenticator>);

impl<S> Layer<S> for GateLayer {
    type Service = Gate<S>;

    fn layer(&self, inner: S) -> Gate<S> {
        Gate {
            inner,
            auth: Arc::clone(&self.0),
        }
    }
}

/// Refuses a call before its message is read when its token or role does not allow it.
#[derive(Debug, Clone)]
pub(crate) struct Gate<S> {
    inner: S,
    auth: Arc<Authenticator>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> Service<http::Request<B>> for Gate<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let Some(rpc) = ours(request.uri().path()) else {
            return Box::pin(self.inner.call(request));
        };
        let method = format!("{rpc:?}");
        let started = std::time::Instant::now();
        {
            // The refusal it may log names the call, as the handler's events do.
            let _span = tracing::info_span!("grpc", method = %request.uri().path()).entered();
            let header = request
                .headers()
                .get(http::header::AUTHORIZATION)
                .map(|v| v.to_str().ok());
            if let Err(status) = self.auth.authorize(header, rpc) {
                counted(method, status.code() as i32, started);
                return Box::pin(async move { Ok(status.into_http()) });
            }
        }
        let call = self.inner.call(request);
        Box::pin(async move {
            let response = call.await?;
            // A handler's error is a trailers-only answer, its status a header; an answer
            // with a body carries its status in the trailers, OK unless a stream failed on
            // the way (counted as OK here).
            let code = response
                .headers()
                .get("grpc-status")
                .and_then(|v| v.to_str().ok()?.parse().ok())
                .unwrap_or(0);
            counted(method, code, started);
            Ok(response)
        })
    }
}

/// Counter: calls to the `canvass.v1` services, by `method` and `code`.
pub const REQUESTS: &str = "canvass_grpc_requests_total";
/// Histogram: how long a call took until its answer's headers, in seconds, by `method`.
pub const REQUEST_SECONDS: &str = "canvass_grpc_request_duration_seconds";

fn counted(method: String, code: i32, started: std::time::Instant) {
    let code = code_name(tonic::Code::from_i32(code));
    metrics::counter!(REQUESTS, "method" => method.clone(), "code" => code).increment(1);
    metrics::histogram!(REQUEST_SECONDS, "method" => method)
        .record(started.elapsed().as_secs_f64());
}

/// A status code as gRPC names it (`OK`, `INVALID_ARGUMENT`...).
fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code as C;
    match code {
        C::Ok => "OK",
        C::Cancelled => "CANCELLED",
        C::Unknown => "UNKNOWN",
        C::InvalidArgument => "INVALID_ARGUMENT",
        C::DeadlineExceeded => "DEADLINE_EXCEEDED",
        C::NotFound => "NOT_FOUND",
        C::AlreadyExists => "ALREADY_EXISTS",
        C::PermissionDenied => "PERMISSION_DENIED",
        C::ResourceExhausted => "RESOURCE_EXHAUSTED",
        C::FailedPrecondition => "FAILED_PRECONDITION",
        C::Aborted => "ABORTED",
        C::OutOfRange => "OUT_OF_RANGE",
        C::Unimplemented => "UNIMPLEMENTED",
        C::Internal => "INTERNAL",
        C::Unavailable => "UNAVAILABLE",
        C::DataLoss => "DATA_LOSS",
        C::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// The RPC a request path names, if it is one of `canvass.v1`'s (health and reflection are
/// open to all).
fn ours(path: &str) -> Option<Rpc> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    service.strip_prefix("canvass.v1.")?;
    Rpc::named(method)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_of_our_services_name_their_rpc() {
        assert_eq!(
            ours("/canvass.v1.CampaignService/CreateCampaign"),
            Some(Rpc::CreateCampaign)
        );
        assert_eq!(ours("/grpc.health.v1.Health/Check"), None);
        assert_eq!(ours("/canvass.v1.CampaignService/Nope"), None);
        for rpc in Rpc::ALL {
            assert_eq!(Rpc::named(&format!("{rpc:?}")), Some(rpc));
        }
    }
}
