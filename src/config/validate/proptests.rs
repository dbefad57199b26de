//! Property tests of config parsing (the fuzz target `config` explores the same space longer):
//! no input panics, every error names a line inside the file, and the limit and retry keys
//! are accepted exactly within their documented ranges.

use proptest::prelude::*;

use super::tests::MINIMAL;
use crate::config::Config;

/// Every error of `text` has a line within the file (or none, for whole-file errors).
fn lines_are_inside(text: &str) -> Result<(), TestCaseError> {
    if let Err(errors) = Config::from_toml_str(text) {
        prop_assert!(!errors.is_empty());
        let lines = text.lines().count().max(1);
        for e in errors.iter() {
            prop_assert!(e.line.is_none_or(|l| (1..=lines).contains(&l)), "{e}");
        }
    }
    Ok(())
}

proptest! {
    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,300}") {
        lines_are_inside(&text)?;
    }

    #[test]
    fn a_mutated_valid_config_never_panics(at in 0usize..400, c in any::<char>(), cut in 0usize..420) {
        let mut text: Vec<char> = MINIMAL.chars().collect();
        if let Some(slot) = text.get_mut(at) {
            *slot = c;
        }
        text.truncate(cut);
        let text: String = text.into_iter().collect();
        lines_are_inside(&text)?;
    }

    #[test]
    fn limit_and_retry_keys_are_checked_against_their_ranges(
        retries in -3i64..14,
        max_headers in -1i64..10_003,
        budget in -0.5f64..1.5,
        status in 100i64..700,
        kib in 0u64..5000,
    ) {
        let text = format!(
            "{MINIMAL}retries = {retries}\nretry_on = [{status}]\nretry_budget = {budget}\n\
             [[listeners]]\nname = \"b\"\nbind = \"127.0.0.1:0\"\nrole = \"inbound\"\n\
             max_headers = {max_headers}\n\
             [[routes]]\nlistener = \"b\"\nupstream = \"app\"\nmax_request_body = \"{kib}KiB\"\n"
        );
        let ok = (0..=10).contains(&retries)
            && (1..=10_000).contains(&max_headers)
            && (0.0..=1.0).contains(&budget)
            && (status == 429 || (500..=599).contains(&status))
            && kib > 0;
        match Config::from_toml_str(&text) {
            Ok(config) => {
                prop_assert!(ok, "accepted: {text}");
                let app = &config.upstreams["app"];
                prop_assert_eq!(i64::from(app.retry.retries), retries);
                prop_assert_eq!(config.listeners[1].max_headers as i64, max_headers);
                prop_assert_eq!(config.routes[1].max_request_body, Some(kib << 10));
            }
            Err(errors) => {
                prop_assert!(!ok, "rejected: {errors}");
                lines_are_inside(&text)?;
            }
        }
    }
}
