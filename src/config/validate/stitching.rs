//! `[stitching]`: attributing outbound calls without trace context to inbound requests.

use super::{Check, value};
use crate::config::StitchingConfig;
use crate::config::raw::Document;

/// The header the evaluation harness tags requests with (ground truth). The inference must
/// never see it, so it cannot be configured as content evidence.
pub(in crate::config) const NONCE_HEADER: &str = "x-hoptrace-nonce";

/// `max_candidates`: the issue's bound on one scan per outbound call.
const MAX_CANDIDATES: i64 = 64;

impl Check<'_> {
    pub(super) fn stitching(&mut self, doc: &Document) -> Option<StitchingConfig> {
        let d = StitchingConfig::default();
        let Some(t) = &doc.stitching else {
            return Some(d);
        };
        let path = "stitching";
        let f = &t.fields;
        let enabled = f.enabled.as_ref().map_or(d.enabled, |b| *b.get_ref());
        let min_confidence = match &f.min_confidence {
            None => Some(d.min_confidence),
            Some(r) => {
                let v = *r.get_ref();
                if v > 0.0 && v <= 1.0 {
                    Some(v)
                } else {
                    let message = format!("must be greater than 0 and at most 1, got {v}");
                    self.error("stitching.min_confidence", &r.span(), message);
                    None
                }
            }
        };
        let max_candidates = self.int_or_default(
            path,
            "max_candidates",
            &f.max_candidates,
            d.max_candidates,
            (1, MAX_CANDIDATES),
        );
        let max_inflight = self.int_or_default(
            path,
            "max_inflight",
            &f.max_inflight,
            d.max_inflight,
            (1, 1 << 20),
        );
        let max_models = self.int_or_default(
            path,
            "max_models",
            &f.max_models,
            d.max_models,
            (1, 1 << 16),
        );
        let linger = self.or_default(path, "linger", &f.linger, d.linger, value::duration);
        let report_interval = self.or_default(
            path,
            "report_interval",
            &f.report_interval,
            d.report_interval,
            value::duration,
        );
        let content_headers = match &f.content_headers {
            None => Some(d.content_headers),
            Some(list) => {
                let parsed: Vec<_> = list
                    .get_ref()
                    .iter()
                    .enumerate()
                    .map(|(i, h)| {
                        let name = self.parse(format!("stitching.content_headers[{i}]"), h, |s| {
                            let name = value::header_name(s)?;
                            if name.as_str() == NONCE_HEADER {
                                return Err(format!(
                                    "{NONCE_HEADER:?} is the evaluation's ground truth and is \
                                     never shown to the inference"
                                ));
                            }
                            Ok(name)
                        });
                        (i, h, name)
                    })
                    .collect();
                self.no_duplicates(path, "content_headers", &parsed);
                let ok = self.no_repeats(&parsed);
                parsed
                    .into_iter()
                    .map(|(_, _, h)| h)
                    .collect::<Option<Vec<_>>>()
                    .filter(|_| ok)
            }
        };
        Some(StitchingConfig {
            enabled,
            min_confidence: min_confidence?,
            max_candidates: max_candidates?,
            max_inflight: max_inflight?,
            max_models: max_models?,
            linger: linger?,
            content_headers: content_headers?,
            report_interval: report_interval?,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    const BASE: &str = r#"
[service]
name = "s"
[[listeners]]
name = "in"
bind = "127.0.0.1:0"
role = "inbound"
"#;

    #[test]
    fn defaults_when_absent() {
        let config = Config::from_toml_str(BASE).unwrap();
        assert_eq!(config.stitching, crate::config::StitchingConfig::default());
    }

    #[test]
    fn every_bad_key_is_reported_with_its_line() {
        let text = format!(
            "{BASE}[stitching]\nmin_confidence = 1.5\nmax_candidates = 65\nlinger = \"soon\"\n\
             content_headers = [\"x-hoptrace-nonce\", \"x-a\", \"X-A\"]\ncolour = 1\n"
        );
        let errors = Config::from_toml_str(&text).unwrap_err().to_string();
        for expected in [
            "stitching.min_confidence: must be greater than 0 and at most 1, got 1.5 (line 9)",
            "stitching.max_candidates: ",
            "(line 10)",
            "stitching.linger: invalid duration \"soon\"",
            "stitching.content_headers[0]: \"x-hoptrace-nonce\" is the evaluation's",
            "stitching.content_headers[2]: duplicates content_headers[1] (x-a) (line 12)",
            "stitching.colour: unknown key",
            "(line 13)",
        ] {
            assert!(
                errors.contains(expected),
                "missing {expected:?} in:\n{errors}"
            );
        }
    }
}
