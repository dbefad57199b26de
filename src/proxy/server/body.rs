//! The body of a request from a client. Over HTTP/2 it is hyper's stream; over HTTP/1.1 the
//! connection's loop reads it (`Feed`) and hands it frame by frame to whoever holds the
//! body (`H1Body`): the request's own task when the upstream speaks HTTP/1.1, hyper's
//! connection task for an h2 upstream. The loop reads the socket only when the holder asks
//! for the next frame, so a slow upstream slows the client (no buffering beyond a read).
//!
//! A request without a body (every GET of a benchmark) has no channel: `ClientBody::Empty`.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::proxy::decode::{Decoded, Kind};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A client's request body.
#[derive(Debug)]
pub enum ClientBody {
    Empty,
    H1(H1Body),
    H2(Incoming),
}

/// Why an HTTP/1.1 request body failed.
#[derive(Clone, Copy, Debug, thiserror::Error)]
pub enum BodyError {
    #[error("invalid chunked request body")]
    Chunked,
    #[error("client closed the connection before the request body ended")]
    Closed,
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ClientBody::Empty => Poll::Ready(None),
            ClientBody::H1(body) => body
                .poll_frame(cx)
                .map(|f| f.map(|f| f.map_err(Into::into))),
            ClientBody::H2(body) => Pin::new(body)
                .poll_frame(cx)
                .map(|f| f.map(|f| f.map_err(Into::into))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ClientBody::Empty => true,
            ClientBody::H1(body) => body.ended,
            ClientBody::H2(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ClientBody::Empty => SizeHint::with_exact(0),
            ClientBody::H1(body) => match body.remaining {
                Some(n) => SizeHint::with_exact(n),
                None => SizeHint::default(),
            },
            ClientBody::H2(body) => body.size_hint(),
        }
    }
}

/// What the connection's loop and the body's holder share.
#[derive(Debug, Default)]
struct State {
    /// The next frame, handed over by the loop.
    frame: Option<Result<Frame<Bytes>, BodyError>>,
    /// No frame will follow `frame`.
    ended: bool,
    /// The holder waits for a frame.
    wanted: bool,
    /// The holder dropped the body.
    dropped: bool,
    holder: Option<Waker>,
    feeder: Option<Waker>,
}

#[derive(Debug, Default)]
struct Channel(Mutex<State>);

impl Channel {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The holder's end.
#[derive(Debug)]
pub struct H1Body {
    channel: Arc<Channel>,
    ended: bool,
    /// Bytes still to come, when declared.
    remaining: Option<u64>,
}

/// The connection loop's end.
#[derive(Debug)]
pub struct Feed {
    channel: Arc<Channel>,
    kind: Kind,
    /// `Expect: 100-continue` not answered yet.
    expect_continue: bool,
    /// The body failed (broken framing, or the client left): the connection's next bytes
    /// cannot be trusted to start a request.
    broken: bool,
}

/// What feeding the body needs next.
#[derive(Debug, PartialEq, Eq)]
pub enum Pump {
    /// A frame went over, or the body failed: poll the holder again.
    Progress,
    /// The holder wants a frame and the buffer holds too little: read the socket.
    NeedBytes,
    /// The holder has not asked (the loop was registered to be woken when it does).
    Idle,
    /// Send `100 Continue` before reading on (the holder asked for the body).
    Continue,
    /// The body was read to its end.
    Done,
    /// The holder dropped the body before its end.
    Abandoned,
}

/// A body read by the connection's loop, and the loop's end of it.
pub fn channel(kind: Kind, expect_continue: bool) -> (H1Body, Feed) {
    let channel = Arc::new(Channel::default());
    let body = H1Body {
        channel: channel.clone(),
        ended: false,
        remaining: kind.remaining(),
    };
    let feed = Feed {
        channel,
        kind,
        expect_continue,
        broken: false,
    };
    (body, feed)
}

impl H1Body {
    fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        let mut state = self.channel.lock();
        if let Some(frame) = state.frame.take() {
            self.ended = state.ended || frame.is_err();
            if let (Some(n), Ok(frame)) = (self.remaining.as_mut(), &frame) {
                *n = n.saturating_sub(frame.data_ref().map_or(0, |d| d.len() as u64));
            }
            return Poll::Ready(Some(frame));
        }
        if state.ended {
            self.ended = true;
            return Poll::Ready(None);
        }
        state.wanted = true;
        if !state
            .holder
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            state.holder = Some(cx.waker().clone());
        }
        // The loop runs in this task when the upstream is HTTP/1.1: it polls on after this
        // returns, and a wake would only cost a second round.
        let feeder = state.feeder.take().filter(|w| !w.will_wake(cx.waker()));
        drop(state);
        if let Some(feeder) = feeder {
            feeder.wake();
        }
        Poll::Pending
    }
}

impl Drop for H1Body {
    fn drop(&mut self) {
        let mut state = self.channel.lock();
        state.dropped = true;
        if let Some(feeder) = state.feeder.take() {
            drop(state);
            feeder.wake();
        }
    }
}

impl Feed {
    /// Moves the next frame from `read` to the holder, if it wants one.
    pub fn pump(&mut self, cx: &mut Context<'_>, read: &mut BytesMut) -> Pump {
        let mut state = self.channel.lock();
        if state.ended {
            return Pump::Done;
        }
        if state.dropped {
            return Pump::Abandoned;
        }
        if !state.wanted || state.frame.is_some() {
            if !state
                .feeder
                .as_ref()
                .is_some_and(|w| w.will_wake(cx.waker()))
            {
                state.feeder = Some(cx.waker().clone());
            }
            return Pump::Idle;
        }
        if self.expect_continue {
            self.expect_continue = false;
            return Pump::Continue;
        }
        let (frame, ended) = match self.kind.decode(read) {
            Ok(Decoded::NeedMore) => return Pump::NeedBytes,
            Ok(Decoded::Frame(frame)) => {
                let ended = self.kind == Kind::Done;
                (Some(Ok(frame)), ended)
            }
            Ok(Decoded::End) => (None, true),
            Err(_) => {
                self.broken = true;
                (Some(Err(BodyError::Chunked)), true)
            }
        };
        state.frame = frame;
        state.ended = ended;
        state.wanted = false;
        let holder = state.holder.take().filter(|w| !w.will_wake(cx.waker()));
        drop(state);
        if let Some(holder) = holder {
            holder.wake();
        }
        Pump::Progress
    }

    /// The client went away (or its connection failed) before the body's end.
    pub fn fail(&mut self, cx: &mut Context<'_>) {
        self.broken = true;
        let mut state = self.channel.lock();
        if state.ended {
            return;
        }
        state.frame = Some(Err(BodyError::Closed));
        state.ended = true;
        let holder = state.holder.take().filter(|w| !w.will_wake(cx.waker()));
        drop(state);
        if let Some(holder) = holder {
            holder.wake();
        }
    }

    /// After the response: skips what is left of the body if all of it is already in
    /// `read`, so that the connection can carry the next request. False when the rest has
    /// not arrived (the connection must close: its next bytes are still this body's).
    /// The body failed: the connection must close after the response.
    pub fn broken(&self) -> bool {
        self.broken
    }

    pub fn discard_buffered(&mut self, read: &mut BytesMut) -> bool {
        if self.broken {
            return false;
        }
        if self.channel.lock().ended {
            return true;
        }
        loop {
            match self.kind.decode(read) {
                Ok(Decoded::Frame(_)) => {}
                Ok(Decoded::End) => return true,
                Ok(Decoded::NeedMore) | Err(_) => return false,
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;
    use std::task::Waker;

    fn cx() -> Context<'static> {
        Context::from_waker(Waker::noop())
    }

    #[test]
    fn frames_go_over_only_when_asked_for() {
        let (mut body, mut feed) = channel(Kind::length(5), false);
        let mut read = BytesMut::from(&b"hel"[..]);
        let mut cx = cx();
        assert_eq!(
            feed.pump(&mut cx, &mut read),
            Pump::Idle,
            "nobody asked yet"
        );
        assert!(body.poll_frame(&mut cx).is_pending());
        assert_eq!(feed.pump(&mut cx, &mut read), Pump::Progress);
        let frame = match body.poll_frame(&mut cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            other => panic!("{other:?}"),
        };
        assert_eq!(frame.into_data().unwrap(), "hel");
        assert_eq!(body.remaining, Some(2));
        assert!(body.poll_frame(&mut cx).is_pending());
        assert_eq!(feed.pump(&mut cx, &mut read), Pump::NeedBytes);
        read.extend_from_slice(b"loGET");
        assert_eq!(feed.pump(&mut cx, &mut read), Pump::Progress);
        assert!(matches!(body.poll_frame(&mut cx), Poll::Ready(Some(Ok(_)))));
        assert!(body.ended, "the last frame ends it");
        assert!(matches!(body.poll_frame(&mut cx), Poll::Ready(None)));
        assert_eq!(feed.pump(&mut cx, &mut read), Pump::Done);
        assert_eq!(&read[..], b"GET");
    }

    #[test]
    fn expect_continue_is_answered_when_the_body_is_first_wanted() {
        let (mut body, mut feed) = channel(Kind::length(1), true);
        let mut read = BytesMut::new();
        let mut cx = cx();
        assert_eq!(feed.pump(&mut cx, &mut read), Pump::Idle);
        assert!(body.poll_frame(&mut cx).is_pending());
        assert_eq!(feed.pump(&mut cx, &mut read), Pump::Continue);
        assert_eq!(feed.pump(&mut cx, &mut read), Pump::NeedBytes);
    }

    #[test]
    fn a_client_gone_mid_body_is_an_error_and_a_dropped_body_abandoned() {
        let (mut body, mut feed) = channel(Kind::CHUNKED, false);
        let mut cx = cx();
        assert!(body.poll_frame(&mut cx).is_pending());
        feed.fail(&mut cx);
        assert!(matches!(
            body.poll_frame(&mut cx),
            Poll::Ready(Some(Err(BodyError::Closed)))
        ));
        assert!(matches!(body.poll_frame(&mut cx), Poll::Ready(None)));

        let (body, mut feed) = channel(Kind::length(3), false);
        drop(body);
        let mut read = BytesMut::from(&b"abcGET"[..]);
        assert_eq!(feed.pump(&mut cx, &mut read), Pump::Abandoned);
        assert!(feed.discard_buffered(&mut read));
        assert_eq!(&read[..], b"GET");
        let (_body, mut feed) = channel(Kind::length(10), false);
        assert!(!feed.discard_buffered(&mut BytesMut::from(&b"abc"[..])));
    }
}
