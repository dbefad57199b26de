//! The `hoptrace` command: `run` serves a config, `check` validates one, `demo` shows
//! per-hop latency on loopback, `demo-app` runs one of the demo's apps (for the Compose and
//! Kubernetes examples), `health` probes an admin endpoint (for container health checks).
//! Exit codes: 0 success, 1 invalid config or startup failure, 2 bad command line;
//! after a second shutdown signal, 130 (SIGINT) or 143 (SIGTERM).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use hoptrace::config::Config;
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};

mod demo_cmd;

#[derive(Parser, Debug)]
#[command(
    name = "hoptrace",
    version,
    about = "A tracing sidecar: an HTTP reverse proxy that records a span for every hop \
(W3C trace context, OTLP export)",
    long_about = "hoptrace is a tracing sidecar. It runs beside a service as an HTTP reverse \
proxy for the traffic into it (inbound listeners) and out of it (outbound listeners), routing by \
host, path, method and headers to pooled upstream connections, and records a span for every hop: \
it continues or starts W3C trace context (traceparent, tracestate; B3, Jaeger and X-Ray too), \
links the app's outbound calls to the inbound request they serve, and exports the spans over \
OTLP (or Zipkin, or stdout).\n\nLog levels come from RUST_LOG (default: info; warn for `demo`), e.g. \
RUST_LOG=hoptrace=debug.",
    after_help = "Examples:\n  hoptrace demo\n  hoptrace check --config /etc/hoptrace/config.toml\n  \
hoptrace run --config config.example.toml"
)]
struct Cli {
    /// Log line format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "HOPTRACE_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve the listeners a config file defines until SIGTERM or SIGINT.
    ///
    /// The config is reloaded, all or nothing, when its file changes, on SIGHUP, and on
    /// `POST /reload` to the admin listener. The first SIGTERM/SIGINT stops accepting
    /// connections and lets in-flight requests finish for up to `[shutdown] grace`
    /// (default 30s); a second signal exits at once.
    Run {
        /// Path of the TOML config file.
        #[arg(long, short, env = "HOPTRACE_CONFIG")]
        config: PathBuf,
        /// Worker threads of the async runtime (default: one per CPU core). 1 runs
        /// everything on the main thread (tokio's current-thread scheduler).
        #[arg(long, env = "HOPTRACE_THREADS")]
        threads: Option<usize>,
        /// Do not reload when the config file changes (SIGHUP and `POST /reload` on the
        /// admin listener still reload).
        #[arg(long)]
        no_watch: bool,
    },
    /// Validate a config file and exit: 0 when valid, 1 with every error listed when not.
    Check {
        /// Path of the TOML config file.
        #[arg(long, short, env = "HOPTRACE_CONFIG")]
        config: PathBuf,
    },
    /// FizzBuzz as a service on loopback: three apps, each behind its own hoptrace, a
    /// bounded load, then a per-hop latency table from the recorded spans.
    ///
    /// A hub app answers GET /fizzbuzz/{n} by calling a fizzer and a buzzer app (slow for
    /// multiples of 7) through its sidecar's outbound listener, used as HTTP_PROXY. The apps
    /// forward no trace header: the hub sidecar joins each call to the request that caused
    /// it (stitching), learning from the warm-up requests sent one at a time. After the
    /// load it prints p50/p99 per hop and hoptrace's overhead per hop (the span's duration
    /// minus the called app's own time from its Server-Timing header), then the sidecars'
    /// recent-traces pages, and keeps serving until Ctrl-C. With OTEL_EXPORTER_OTLP_ENDPOINT
    /// set (e.g. http://localhost:4317 for Jaeger), the spans are also exported there.
    Demo {
        /// Requests to send (n = 1..=N).
        #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
        requests: u64,
        /// Requests in flight at once, after the warm-up.
        #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=1024))]
        concurrency: u64,
        /// The first requests, sent one at a time: the apps forward no trace header, and the
        /// hub sidecar learns to attribute their calls from requests that are alone in flight.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
        warmup: u64,
        /// Exit after printing the table instead of serving until Ctrl-C.
        #[arg(long)]
        exit_after_load: bool,
    },
    /// Run one FizzBuzz app of the demo on its own (the Compose and Kubernetes examples use
    /// it behind a hoptrace sidecar).
    ///
    /// hub answers GET /fizzbuzz/{n}, fizzer GET /fizz/{n}, buzzer GET /buzz/{n}. The hub
    /// sends its calls through the HTTP proxy in HTTP_PROXY when set (the sidecar's outbound
    /// listener). No app copies any trace header: the sidecar's stitching joins the calls.
    DemoApp {
        /// Which app.
        #[arg(long, value_enum)]
        role: hoptrace::demo::app::Role,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// hub: base URL of the fizzer.
        #[arg(long, default_value = "http://fizzer/")]
        fizzer_url: http::Uri,
        /// hub: base URL of the buzzer.
        #[arg(long, default_value = "http://buzzer/")]
        buzzer_url: http::Uri,
        /// hub: HTTP proxy for its calls (http://host:port).
        #[arg(long, env = "HTTP_PROXY")]
        proxy: Option<String>,
    },
    /// GET a URL and exit 0 on a 2xx answer, 1 otherwise (a container health check that
    /// needs no curl: `hoptrace health --url http://127.0.0.1:9901/live`).
    Health {
        /// http:// URL to probe.
        #[arg(long, default_value = "http://127.0.0.1:9901/live")]
        url: http::Uri,
        /// Give up after this long, e.g. "2s".
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
}

#[derive(Copy, Clone, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo prints a table on stdout: only warnings and errors on stderr by default.
    let default_level = match cli.command {
        Command::Demo { .. } => "warn",
        _ => "info",
    };
    init_logging(cli.log_format, default_level);
    match cli.command {
        Command::Check { config } => check(&config),
        Command::Demo {
            requests,
            concurrency,
            warmup,
            exit_after_load,
        } => exit_code(demo_cmd::run(
            requests,
            warmup,
            concurrency as usize,
            exit_after_load,
        )),
        Command::DemoApp {
            role,
            listen,
            fizzer_url,
            buzzer_url,
            proxy,
        } => exit_code(demo_cmd::app(role, listen, fizzer_url, buzzer_url, proxy)),
        Command::Health { url, timeout } => demo_cmd::health(&url, timeout),
        Command::Run {
            config,
            threads,
            no_watch,
        } => match run(&config, threads, !no_watch) {
            Ok(code) => code,
            Err(err) => {
                error!("{err:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn exit_code(result: anyhow::Result<ExitCode>) -> ExitCode {
    result.unwrap_or_else(|err| {
        error!("{err:#}");
        ExitCode::FAILURE
    })
}

fn init_logging(format: LogFormat, default_level: &str) {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    // Colours only on a terminal (and not with NO_COLOR): a log file or a collector gets
    // plain `key=value` text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let fmt = match format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt.json().flatten_event(true).boxed(),
    };
    tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .init();
}

fn check(path: &std::path::Path) -> ExitCode {
    match Config::load(path) {
        Ok(config) => {
            println!(
                "{}: ok ({} listeners, {} routes, {} upstreams)",
                path.display(),
                config.listeners.len(),
                config.routes.len(),
                config.upstreams.len()
            );
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("{err}");
            ExitCode::FAILURE
        }
    }
}

fn run(path: &std::path::Path, threads: Option<usize>, watch: bool) -> anyhow::Result<ExitCode> {
    // Validate before starting anything, so a bad file prints its errors and nothing else.
    if let Err(err) = Config::load(path) {
        eprintln!("{err}");
        return Ok(ExitCode::FAILURE);
    }
    // One thread (asked for, or all the process may use: `available_parallelism` reads the
    // cgroup CPU quota): tokio's current-thread scheduler, everything on the main thread, as
    // linkerd2-proxy does on one core. The multi-thread scheduler with one worker would run
    // the tasks on that worker and park the main thread, paying for cross-thread wake-ups and
    // run-queue atomics that one thread never needs.
    let threads = threads.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    let mut runtime = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut runtime = tokio::runtime::Builder::new_multi_thread();
        runtime.worker_threads(threads);
        runtime
    };
    let runtime = runtime
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(path, watch))
}

async fn serve(path: &std::path::Path, watch: bool) -> anyhow::Result<ExitCode> {
    let mut sigterm = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut sigint = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    let mut sighup = signal(SignalKind::hangup()).context("cannot listen for SIGHUP")?;
    let running = hoptrace::app::start_from_file(path, watch).await?;
    let grace = running.snapshot().config.shutdown.grace;
    if let Some(reloader) = running.reloader().cloned() {
        tokio::spawn(async move {
            while sighup.recv().await.is_some() {
                reloader.reload(hoptrace::reload::Trigger::Signal).await;
            }
        });
    }
    info!(version = env!("CARGO_PKG_VERSION"), "hoptrace started");

    let first = tokio::select! {
        _ = sigterm.recv() => "SIGTERM",
        _ = sigint.recv() => "SIGINT",
    };
    info!(
        signal = first,
        ?grace,
        "shutting down: draining in-flight requests"
    );
    tokio::select! {
        _ = running.shutdown() => {
            info!("stopped");
            Ok(ExitCode::SUCCESS)
        }
        _ = sigterm.recv() => {
            warn!("second signal (SIGTERM): exiting now");
            Ok(ExitCode::from(143))
        }
        _ = sigint.recv() => {
            warn!("second signal (SIGINT): exiting now");
            Ok(ExitCode::from(130))
        }
    }
}
