//! The end of a hop's spans: durations, the outcome's `error.type`, and for tail keeping
//! (`keep_errors`, `keep_slower_than`) whether an unsampled hop's spans are exported at all.

use std::time::{Duration, Instant};

use super::{Recording, Tail};
use crate::trace::span::SpanRecord;

/// How the response ended, for the spans' status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The whole body was handed to the client.
    Complete,
    /// The upstream's body failed mid-stream.
    UpstreamFailed,
    /// The upstream's body sent nothing for `body_timeout`.
    UpstreamStalled,
    /// The client went away before the body was complete.
    ClientGone,
}

/// Finishes a hop's spans when the response ends (see `ResponseBody`).
#[derive(Debug)]
pub struct SpanFinish {
    pub(super) recording: Box<Recording>,
}

impl SpanFinish {
    pub fn finish(self, outcome: Outcome) {
        let Recording {
            sink,
            started,
            mut base,
            has_server,
            client,
            client_started,
            tail,
            inferred,
            ..
        } = *self.recording;
        let now = Instant::now();
        let error = match outcome {
            Outcome::Complete => None,
            Outcome::UpstreamFailed => Some("upstream_reset"),
            Outcome::UpstreamStalled => Some("timeout"),
            Outcome::ClientGone => Some("client_closed"),
        };
        let mut spans: [Option<SpanRecord>; 2] = [None, None];
        if let Some(mut client) = client {
            client.duration = now.duration_since(client_started.unwrap_or(started));
            if client.error_type.is_none() {
                client.error_type = error;
            }
            if let Some(inferred) = &inferred {
                inferred.check_contained(&mut client);
            }
            spans[0] = Some(client);
        }
        if has_server {
            base.duration = now.duration_since(started);
            if base.error_type.is_none() {
                base.error_type = error;
            }
            spans[1] = Some(base);
        }
        if let Some(tail) = tail {
            let Some(reason) = tail.kept(now.duration_since(started), &spans) else {
                return;
            };
            for span in spans.iter_mut().flatten() {
                span.kept_reason = Some(reason);
            }
            let kept = spans.iter().flatten().count() as u64;
            sink.count_kept(reason, kept);
            // Spans of an unsampled request become spans of the trace only now.
            sink.started(kept);
        }
        for span in spans.into_iter().flatten() {
            sink.try_send(span);
        }
    }
}

impl Tail {
    /// Why an unsampled hop's spans are kept, if they are: a 5xx or a transport failure on
    /// any of them (`"error"`), else the whole hop slower than the threshold (`"slow"`).
    fn kept(&self, elapsed: Duration, spans: &[Option<SpanRecord>]) -> Option<&'static str> {
        let failed = spans
            .iter()
            .flatten()
            .any(|s| s.error_type.is_some() || s.status.is_some_and(|code| code >= 500));
        if self.errors && failed {
            return Some("error");
        }
        if self.slower_than.is_some_and(|limit| elapsed > limit) {
            return Some("slow");
        }
        None
    }
}
