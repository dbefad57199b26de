//! The `demo`, `demo-app` and `health` commands: runtimes, signals and what they print.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use hoptrace::demo::app::{self, App, Dependencies, Role};
use hoptrace::demo::{Demo, MAX_KEPT_TRACES};
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::signal::unix::{SignalKind, signal};
use tracing::info;

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Resolves on the first SIGINT or SIGTERM.
async fn stop_signal() -> anyhow::Result<()> {
    let mut sigterm = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut sigint = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    tokio::select! {
        _ = sigterm.recv() => {}
        _ = sigint.recv() => {}
    }
    Ok(())
}

pub fn run(
    requests: u64,
    warmup: u64,
    concurrency: usize,
    exit_after_load: bool,
) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async move {
        let env = |k: &str| std::env::var(k).ok();
        // Three traces per request at most: a linked call starts a trace of its own.
        let demo = Demo::start(&env, 3 * requests as usize).await?;
        let export = hoptrace::demo::config::exports(&env);
        println!(
            "hoptrace demo: hub, fizzer and buzzer apps, each behind its own hoptrace sidecar"
        );
        let warmup = warmup.min(requests);
        println!(
            "sending {requests} requests (GET /fizzbuzz/1..{requests}) to http://{}: the first {warmup} one at a time, then {concurrency} at a time",
            demo.hub_addr()
        );
        let load = demo.drive(requests, warmup, concurrency).await;
        println!("answers: {} ok, {} failed", load.ok, load.failed);
        if let Some(failure) = &load.first_failure {
            println!("first failure: {failure}");
        }
        let report = demo.report(requests).await;
        println!();
        println!(
            "per-hop latency from the spans of {} traces (ms; overhead = span duration minus the called app's own time)",
            report.traces
        );
        print!("{report}");
        if 3 * requests as usize > MAX_KEPT_TRACES {
            println!("(only the last {MAX_KEPT_TRACES} traces are kept for the table)");
        }
        println!();
        println!("recent traces, as waterfalls:");
        for (name, url) in demo.trace_pages() {
            println!("  {name:<7} {url}");
        }
        if export {
            println!("spans are also exported to the OTLP collector in OTEL_EXPORTER_OTLP_ENDPOINT");
        } else {
            println!(
                "set OTEL_EXPORTER_OTLP_ENDPOINT (e.g. http://localhost:4317) to export the spans too"
            );
        }
        let failed = load.failed > 0;
        if !exit_after_load {
            println!();
            println!(
                "serving until Ctrl-C; try: curl -i http://{}/fizzbuzz/35",
                demo.hub_addr()
            );
            stop_signal().await?;
        }
        demo.shutdown().await;
        Ok(if failed {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        })
    })
}

pub fn app(
    role: Role,
    listen: SocketAddr,
    fizzer: http::Uri,
    buzzer: http::Uri,
    proxy: Option<String>,
) -> anyhow::Result<ExitCode> {
    let proxy = proxy
        .filter(|p| !p.is_empty())
        .map(|p| app::proxy_authority(&p))
        .transpose()
        .map_err(anyhow::Error::msg)?;
    runtime()?.block_on(async move {
        let socket = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("{} app {listen}: cannot bind", role.name()))?;
        let addr = socket.local_addr().unwrap_or(listen);
        let deps = Dependencies {
            fizzer,
            buzzer,
            proxy,
        };
        info!(proxy = ?deps.proxy, "{}", app::describe(role, addr));
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        let server = tokio::spawn(app::serve(socket, Arc::new(App::new(role, deps)), stop));
        stop_signal().await?;
        let _ = stop_tx.send(true);
        let _ = server.await;
        Ok(ExitCode::SUCCESS)
    })
}

pub fn health(url: &http::Uri, timeout: Duration) -> ExitCode {
    let result = runtime().and_then(|runtime| {
        runtime.block_on(async {
            let client: Client<_, Empty<Bytes>> =
                Client::builder(TokioExecutor::new()).build_http();
            let response = tokio::time::timeout(timeout, client.get(url.clone()))
                .await
                .map_err(|_| anyhow::anyhow!("{url}: no answer within {timeout:?}"))?
                .with_context(|| format!("{url}"))?;
            Ok(response.status())
        })
    });
    match result {
        Ok(status) if status.is_success() => {
            println!("{url}: {status}");
            ExitCode::SUCCESS
        }
        Ok(status) => {
            eprintln!("{url}: {status}");
            ExitCode::FAILURE
        }
        Err(err) => {
            eprintln!("{err:#}");
            ExitCode::FAILURE
        }
    }
}
