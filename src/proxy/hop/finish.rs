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
    /// Ends the spans at `now` and sends them to the sink. The recording stays in its box:
    /// each span (624 bytes) is moved once, into the sink's queue.
    pub fn finish(self, outcome: Outcome, now: Instant) {
        let mut recording = self.recording;
        let rec = &mut *recording;
        let error = match outcome {
            Outcome::Complete => None,
            Outcome::UpstreamFailed => Some("upstream_reset"),
            Outcome::UpstreamStalled => Some("timeout"),
            Outcome::ClientGone => Some("client_closed"),
        };
        if let Some(client) = rec.client.as_mut() {
            client.duration = now.duration_since(rec.client_started.unwrap_or(rec.started));
            if client.error_type.is_none() {
                client.error_type = error;
            }
            if let Some(inferred) = &rec.inferred {
                inferred.check_contained(client);
            }
        }
        if rec.has_server {
            rec.base.duration = now.duration_since(rec.started);
            if rec.base.error_type.is_none() {
                rec.base.error_type = error;
            }
        }
        if let Some(tail) = rec.tail {
            let server = rec.has_server.then_some(&rec.base);
            let spans = [rec.client.as_ref(), server];
            let Some(reason) = tail.kept(now.duration_since(rec.started), &spans) else {
                return;
            };
            let kept = spans.iter().flatten().count() as u64;
            if let Some(client) = rec.client.as_mut() {
                client.kept_reason = Some(reason);
            }
            rec.base.kept_reason = Some(reason);
            rec.sink.count_kept(reason, kept);
            // Spans of an unsampled request become spans of the trace only now.
            rec.sink.started(kept);
        }
        if let Some(client) = rec.client.take() {
            rec.sink.try_send(client);
        }
        if recording.has_server {
            let Recording { sink, base, .. } = *recording;
            sink.try_send(base);
        }
    }
}

impl Tail {
    /// Why an unsampled hop's spans are kept, if they are: a 5xx or a transport failure on
    /// any of them (`"error"`), else the whole hop slower than the threshold (`"slow"`).
    fn kept(&self, elapsed: Duration, spans: &[Option<&SpanRecord>]) -> Option<&'static str> {
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
