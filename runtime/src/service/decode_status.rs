//! A server layer that answers a request that is not a valid protobuf message with
//! `INVALID_ARGUMENT` instead of tonic's `INTERNAL`.
//!
//! tonic decodes a request before any Keel code runs and reports a decoding failure as
//! `INTERNAL` ("failed to decode Protobuf message: ..."), which reads like a server bug. The
//! fault is the client's, so this layer rewrites the status of such answers (a trailers-only
//! response: the status is in the headers) to `INVALID_ARGUMENT` and keeps tonic's message, which
//! names the field and what was wrong with it. Every other response passes untouched. Plain
//! builds only: under madsim, messages travel as Rust values and are never decoded.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tonic::codegen::http::{HeaderMap, HeaderValue, Response};

/// gRPC's numeric code for `INTERNAL`.
const INTERNAL: &str = "13";
/// gRPC's numeric code for `INVALID_ARGUMENT`.
const INVALID_ARGUMENT: &str = "3";
/// How tonic's message for a request it could not decode starts (spaces may be percent-encoded).
const DECODE_FAILURE_PREFIX: &str = "failed to decode Protobuf message";

/// The layer; add it to the server builder.
#[derive(Clone, Copy, Debug, Default)]
pub struct DecodeErrorLayer;

impl<S> tower_layer::Layer<S> for DecodeErrorLayer {
    type Service = DecodeErrorService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        DecodeErrorService { inner }
    }
}

/// The service the layer wraps around each gRPC service.
#[derive(Clone, Debug)]
pub struct DecodeErrorService<S> {
    inner: S,
}

impl<S, Request, Body> tower_service::Service<Request> for DecodeErrorService<S>
where
    S: tower_service::Service<Request, Response = Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, S::Error>> + Send>>;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let answer = self.inner.call(request);
        Box::pin(async move {
            let mut response = answer.await?;
            rewrite_decode_failure(response.headers_mut());
            Ok(response)
        })
    }
}

/// Turns an `INTERNAL` decoding failure into `INVALID_ARGUMENT`; true when it did.
fn rewrite_decode_failure(headers: &mut HeaderMap) -> bool {
    let internal = headers.get("grpc-status").is_some_and(|status| status == INTERNAL);
    let decoding = headers
        .get("grpc-message")
        .and_then(|message| message.to_str().ok())
        .is_some_and(|message| message.replace("%20", " ").starts_with(DECODE_FAILURE_PREFIX));
    if internal && decoding {
        headers.insert("grpc-status", HeaderValue::from_static(INVALID_ARGUMENT));
    }
    internal && decoding
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(status: &'static str, message: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("grpc-status", HeaderValue::from_static(status));
        headers.insert("grpc-message", HeaderValue::from_static(message));
        headers
    }

    #[test]
    fn only_decoding_failures_become_invalid_argument() {
        let mut decoding = headers("13", "failed%20to%20decode%20Protobuf%20message: bad wire type");
        assert!(rewrite_decode_failure(&mut decoding));
        assert_eq!(decoding["grpc-status"], "3");
        assert_eq!(decoding["grpc-message"], "failed%20to%20decode%20Protobuf%20message: bad wire type");
        let mut other_internal = headers("13", "storage failed");
        assert!(!rewrite_decode_failure(&mut other_internal));
        assert_eq!(other_internal["grpc-status"], "13");
        let mut other_status = headers("14", "failed to decode Protobuf message");
        assert!(!rewrite_decode_failure(&mut other_status));
        assert_eq!(other_status["grpc-status"], "14");
    }
}
