//! Who may `POST /reload`: the check on its own, so that a non-loopback client can be tested
//! without a second host.

use std::net::IpAddr;

use http::{HeaderValue, StatusCode};

use super::reload_allowed;
use crate::config::Secret;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn without_a_token_only_loopback_may_reload() {
    for client in ["127.0.0.1", "127.0.0.2", "::1", "::ffff:127.0.0.1"] {
        assert_eq!(reload_allowed(ip(client), None, None), Ok(()), "{client}");
    }
    for client in ["10.0.0.5", "192.168.1.1", "::ffff:10.0.0.5", "2001:db8::1"] {
        let refused = reload_allowed(ip(client), None, None).unwrap_err();
        assert_eq!(refused.0, StatusCode::FORBIDDEN, "{client}");
    }
    // A header does not help when no token is configured.
    let bearer = HeaderValue::from_static("Bearer anything-at-all-here");
    let refused = reload_allowed(ip("10.0.0.5"), None, Some(&bearer)).unwrap_err();
    assert_eq!(refused.0, StatusCode::FORBIDDEN);
}

#[test]
fn with_a_token_everyone_needs_it() {
    let token = Secret("s3cret-reload-token-0123".to_owned());
    let right = HeaderValue::from_static("Bearer s3cret-reload-token-0123");
    let wrong = HeaderValue::from_static("Bearer s3cret-reload-token-0124");
    let short = HeaderValue::from_static("Bearer s3cret");
    let basic = HeaderValue::from_static("Basic s3cret-reload-token-0123");
    for client in ["127.0.0.1", "10.0.0.5"] {
        let client = ip(client);
        assert_eq!(reload_allowed(client, Some(&token), Some(&right)), Ok(()));
        let status =
            |h: Option<&HeaderValue>| reload_allowed(client, Some(&token), h).unwrap_err().0;
        assert_eq!(status(None), StatusCode::UNAUTHORIZED);
        assert_eq!(status(Some(&basic)), StatusCode::UNAUTHORIZED);
        assert_eq!(status(Some(&wrong)), StatusCode::FORBIDDEN);
        assert_eq!(status(Some(&short)), StatusCode::FORBIDDEN);
    }
}
