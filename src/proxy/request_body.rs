//! The request body hoptrace sends upstream: the client's body streamed through frame by
//! frame (never buffered), cut off with an error once it passes the route's
//! `max_request_body`; or no body at all, for a retried request that had none.
//!
//! When the body fails (over the limit, or the client's own body is malformed or cut off),
//! the upstream request is aborted, and `BodyFault` tells the forwarding code that the
//! client, not the upstream, is why: 413 or 400 rather than 502.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::server::ClientBody;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug)]
pub struct RequestBody {
    /// `None`: no body.
    inner: Option<ClientBody>,
    limit: Option<u64>,
    seen: u64,
    fault: BodyFault,
}

/// Why a request body failed, if it did; shared between the body (which hyper's client owns)
/// and the request's forwarding code. The default records nothing and allocates nothing:
/// for a request without a body, which cannot fail (`shared` for one with a body).
#[derive(Clone, Debug, Default)]
pub struct BodyFault(Option<Arc<AtomicU8>>);

const FAULT_NONE: u8 = 0;
const FAULT_TOO_LARGE: u8 = 1;
const FAULT_CLIENT: u8 = 2;

impl BodyFault {
    /// One that records a fault, for a request with a body.
    pub fn shared() -> BodyFault {
        BodyFault(Some(Arc::default()))
    }

    fn get(&self) -> u8 {
        self.0
            .as_ref()
            .map_or(FAULT_NONE, |f| f.load(Ordering::Acquire))
    }

    /// The body passed `max_request_body`.
    pub fn too_large(&self) -> bool {
        self.get() == FAULT_TOO_LARGE
    }

    /// Reading the client's body failed: malformed chunked encoding, or the client went away.
    pub fn client_failed(&self) -> bool {
        self.get() == FAULT_CLIENT
    }

    fn set(&self, fault: u8) {
        if let Some(f) = &self.0 {
            let _ = f.compare_exchange(FAULT_NONE, fault, Ordering::AcqRel, Ordering::Acquire);
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("request body exceeds the limit of {max} bytes")]
pub struct TooLarge {
    pub max: u64,
}

impl RequestBody {
    /// The client's body, limited to `max` bytes when given; `fault` records why it failed.
    pub fn incoming(body: ClientBody, max: Option<u64>, fault: &BodyFault) -> RequestBody {
        RequestBody {
            inner: Some(body),
            limit: max,
            seen: 0,
            fault: fault.clone(),
        }
    }

    pub fn empty() -> RequestBody {
        RequestBody {
            inner: None,
            limit: None,
            seen: 0,
            fault: BodyFault::default(),
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let Some(body) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = match Pin::new(body).poll_frame(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(polled) => polled,
        };
        match &polled {
            Some(Ok(frame)) => {
                let len = frame.data_ref().map_or(0, |d| d.len() as u64);
                this.seen = this.seen.saturating_add(len);
                if let Some(max) = this.limit.filter(|max| this.seen > *max) {
                    this.fault.set(FAULT_TOO_LARGE);
                    // Stop reading the client: the upstream sees an aborted request.
                    this.inner = None;
                    return Poll::Ready(Some(Err(TooLarge { max }.into())));
                }
            }
            Some(Err(_)) => this.fault.set(FAULT_CLIENT),
            None => {}
        }
        Poll::Ready(polled)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Some(body) => body.size_hint(),
            None => SizeHint::with_exact(0),
        }
    }
}
