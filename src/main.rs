//! The `hoptrace` command: `run` serves a config, `check` validates one.
//! Exit codes: 0 success, 1 invalid config or startup failure, 2 bad command line;
//! after a second shutdown signal, 130 (SIGINT) or 143 (SIGTERM).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use hoptrace::config::Config;
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};

/// mimalloc instead of glibc malloc: the data path allocates and frees small objects on every
/// request (header maps, bodies, futures); see BENCHMARKS.md for the measured difference.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "hoptrace",
    version,
    about = "A tracing sidecar: an HTTP reverse proxy that times every hop",
    long_about = "hoptrace runs beside a service and proxies the HTTP traffic into it (inbound \
listeners) and out of it (outbound listeners), routing by host, path, method and headers to \
pooled upstream connections.\n\nLog levels come from RUST_LOG (default: info), e.g. \
RUST_LOG=hoptrace=debug.",
    after_help = "Examples:\n  hoptrace check --config /etc/hoptrace/config.toml\n  \
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
        /// Worker threads of the async runtime (default: one per CPU core).
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
}

#[derive(Copy, Clone, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::Check { config } => check(&config),
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

fn init_logging(format: LogFormat) {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = match format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt.json().flatten_event(true).boxed(),
    };
    // The partial-success counter sees the OTLP exporter's events whatever RUST_LOG says.
    let partial = hoptrace::export::PartialSuccessLayer.with_filter(
        tracing_subscriber::filter::filter_fn(|meta| meta.name().ends_with(".PartialSuccess")),
    );
    tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(partial)
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
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = threads {
        runtime.worker_threads(threads.max(1));
    }
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
