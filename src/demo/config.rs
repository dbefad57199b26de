//! The demo sidecars' config files: generated TOML, loaded by the production parser and
//! validator, then the `OTEL_*` environment applied, as `hoptrace run` does.

use std::net::SocketAddr;

use crate::config::{Config, LoadError};

/// One dependency the sidecar's outbound listener routes to: requests for `host` (what the
/// app asks its `HTTP_PROXY` for) go to `endpoint` (the dependency's sidecar inbound).
pub struct Dependency {
    pub host: &'static str,
    pub endpoint: SocketAddr,
}

/// The TOML of one sidecar: an inbound listener in front of the app at `app`, an outbound
/// listener for the app's calls to `deps`, an admin listener, all on loopback port 0.
/// `export` chooses between OTLP (endpoint and the rest from `OTEL_*`) and no exporter.
pub fn sidecar_toml(service: &str, app: SocketAddr, deps: &[Dependency], export: bool) -> String {
    let exporter = if export { "otlp" } else { "none" };
    let mut toml = format!(
        r#"# hoptrace demo: the sidecar of the "{service}" app.
[service]
name = "{service}"

[admin]
bind = "127.0.0.1:0"

[shutdown]
grace = "2s"

# One line per request from five sidecars would drown the table.
[access_log]
enabled = false

[[listeners]]
name = "inbound"
bind = "127.0.0.1:0"
role = "inbound"

[[listeners]]
name = "outbound"
bind = "127.0.0.1:0"
role = "outbound"

[[routes]]
name = "{service}"
listener = "inbound"
upstream = "app"

[upstreams.app]
endpoints = ["{app}"]
"#
    );
    for dep in deps {
        toml.push_str(&format!(
            r#"
[[routes]]
name = "{host}"
listener = "outbound"
host = "{host}"
upstream = "{host}"

[upstreams.{host}]
endpoints = ["{endpoint}"]
"#,
            host = dep.host,
            endpoint = dep.endpoint,
        ));
    }
    toml.push_str(&format!(
        r#"
[tracing]
exporter = "{exporter}"
sampling_ratio = 1.0
# The apps report their own handling time; the demo subtracts it to get hoptrace's share.
capture_response_headers = ["server-timing"]
# Short batches, so the recent-traces view (and the table) fill soon after the load.
batch_delay = "100ms"
"#
    ));
    toml
}

/// Loads `toml` as a config file would be, then applies the `OTEL_*` environment from `env`
/// except `OTEL_SERVICE_NAME` and `OTEL_TRACES_EXPORTER` (three sidecars of one process
/// must keep their own names, and the demo decides the exporter from the endpoint).
pub fn load(toml: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, LoadError> {
    let mut config = Config::from_toml_str(toml).map_err(|errors| LoadError::Invalid {
        path: "<demo>".into(),
        errors,
    })?;
    config
        .apply_otel_env(|k| match k {
            "OTEL_SERVICE_NAME" | "OTEL_TRACES_EXPORTER" => None,
            _ => env(k),
        })
        .map_err(|errors| LoadError::Env { errors })?;
    Ok(config)
}

/// Whether the environment names an OTLP collector.
pub fn exports(env: &dyn Fn(&str) -> Option<String>) -> bool {
    [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|k| env(k).is_some_and(|v| !v.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_configs_validate() {
        let app: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let deps = [
            Dependency {
                host: "fizzer",
                endpoint: "127.0.0.1:1".parse().unwrap(),
            },
            Dependency {
                host: "buzzer",
                endpoint: "127.0.0.1:2".parse().unwrap(),
            },
        ];
        let none = |_: &str| None;
        let hub = load(&sidecar_toml("hub", app, &deps, false), &none).unwrap();
        assert_eq!(hub.routes.len(), 3);
        assert_eq!(hub.service.name, "hub");
        let env = |k: &str| match k {
            "OTEL_EXPORTER_OTLP_ENDPOINT" => Some("http://127.0.0.1:4317".to_string()),
            "OTEL_SERVICE_NAME" => Some("ignored".to_string()),
            _ => None,
        };
        assert!(exports(&env));
        let fizzer = load(&sidecar_toml("fizzer", app, &[], true), &env).unwrap();
        assert_eq!(fizzer.service.name, "fizzer");
        assert_eq!(fizzer.tracing.exporter, crate::config::ExporterKind::Otlp);
    }
}
