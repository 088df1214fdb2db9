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
        if let Some(rpc) = ours(request.uri().path()) {
            // The refusal it may log names the call, as the handler's events do.
            let _span = tracing::info_span!("grpc", method = %request.uri().path()).entered();
            let header = request
                .headers()
                .get(http::header::AUTHORIZATION)
                .map(|v| v.to_str().ok());
            if let Err(status) = self.auth.authorize(header, rpc) {
                return Box::pin(async move { Ok(status.into_http()) });
            }
        }
        Box::pin(self.inner.call(request))
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
