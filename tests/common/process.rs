//! The real `hoptrace` binary as a child process: `run` on a temporary config, its bound
//! addresses and JSON log events read from stderr, signals, exit code.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_hoptrace");
pub const DEADLINE: Duration = Duration::from_secs(30);

/// A `hoptrace run` process on a temporary config, with its bound addresses read from its
/// JSON log lines.
pub struct Proxy {
    pub child: Child,
    pub listeners: HashMap<String, SocketAddr>,
    pub admin: SocketAddr,
    /// Lines the process wrote to stdout (the stdout exporter's spans).
    pub stdout: mpsc::Receiver<String>,
    /// Its JSON log events (stderr) after startup.
    pub events: mpsc::Receiver<serde_json::Value>,
    _dir: tempfile::TempDir,
}

impl Proxy {
    pub fn spawn(config: &str) -> Proxy {
        Proxy::spawn_with_env(config, &[])
    }

    pub fn spawn_with_env(config: &str, env: &[(&str, String)]) -> Proxy {
        Proxy::spawn_full(config, env, &[])
    }

    pub fn spawn_full(config: &str, env: &[(&str, String)], args: &[&str]) -> Proxy {
        Proxy::spawn_until(config, env, args, "hoptrace started")
    }

    /// Starts the process and reads its log until the event `ready` (for a `RUST_LOG` that
    /// hides `hoptrace started`); `admin listening` must come before it.
    pub fn spawn_until(config: &str, env: &[(&str, String)], args: &[&str], ready: &str) -> Proxy {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, config).unwrap();
        let mut child = Command::new(BIN)
            .args(["--log-format", "json", "run", "--config"])
            .arg(&path)
            .args(args)
            .env("RUST_LOG", "info")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel::<serde_json::Value>();
        // Keeps draining stderr for the process's life so it never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) {
                    let _ = tx.send(event);
                }
            }
        });
        let stdout = child.stdout.take().unwrap();
        let (out_tx, out_rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = out_tx.send(line);
            }
        });
        let mut listeners = HashMap::new();
        let mut admin = None;
        loop {
            let event = rx
                .recv_timeout(DEADLINE)
                .expect("hoptrace did not report its listeners");
            let addr = || {
                event["addr"]
                    .as_str()
                    .unwrap()
                    .parse::<SocketAddr>()
                    .unwrap()
            };
            match event["message"].as_str() {
                Some("listening") => {
                    listeners.insert(event["listener"].as_str().unwrap().to_string(), addr());
                }
                Some("admin listening") => admin = Some(addr()),
                _ => {}
            }
            if event["message"] == ready {
                break;
            }
        }
        Proxy {
            child,
            listeners,
            admin: admin.unwrap(),
            stdout: out_rx,
            events: rx,
            _dir: dir,
        }
    }

    /// The next log event whose message is `message`, skipping others.
    pub fn next_event(&self, message: &str) -> serde_json::Value {
        loop {
            let event = self
                .events
                .recv_timeout(DEADLINE)
                .unwrap_or_else(|_| panic!("no {message:?} log event"));
            if event["message"] == message {
                return event;
            }
        }
    }

    /// Every log event still to come, once the process has exited (its stderr closed).
    pub fn remaining_events(&self) -> Vec<serde_json::Value> {
        let mut events = Vec::new();
        loop {
            match self.events.recv_timeout(DEADLINE) {
                Ok(event) => events.push(event),
                Err(mpsc::RecvTimeoutError::Disconnected) => return events,
                Err(mpsc::RecvTimeoutError::Timeout) => panic!("stderr still open"),
            }
        }
    }

    pub fn config_path(&self) -> std::path::PathBuf {
        self._dir.path().join("config.toml")
    }

    pub fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).unwrap();
        // SAFETY: kill(2) on the pid of a child this test started and has not reaped.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    }

    /// Waits for the process to exit, returning its exit code (or 128+signal).
    pub async fn exit_code(&mut self) -> i32 {
        let start = std::time::Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                use std::os::unix::process::ExitStatusExt;
                return status
                    .code()
                    .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
            }
            assert!(start.elapsed() < DEADLINE, "hoptrace did not exit");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Peak resident memory of the process, from /proc (VmHWM), in bytes.
    pub fn peak_rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
        let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        kb * 1024
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
