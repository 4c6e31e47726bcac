//! Integration tests: the real binary's commands (`support::livechain_bin()`), as an operator
//! runs them — exit codes, what they print, the files they create, the ports they serve, and a
//! graceful exit on SIGTERM.
//!
//! Long-running children are killed when their guard drops, so a failing test leaves nothing
//! behind; every wait is bounded ([`WAIT`]).

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support;

mod breaker_kill;
mod control;
mod pipes;
mod progress;
mod secrets;

/// Longest any single wait may take before the test fails.
const WAIT: Duration = Duration::from_secs(30);
/// How often waits poll.
const POLL: Duration = Duration::from_millis(25);
/// How long a child may take to stop after SIGTERM (the service's own grace period is 10 s).
const STOP_WAIT: Duration = Duration::from_secs(20);

fn repo_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// The binary with quiet logs and without the example config's API keys.
fn livechain() -> Command {
    let mut command = Command::new(support::livechain_bin());
    command
        .env("RUST_LOG", "warn")
        .env_remove("INFURA_API_KEY")
        .env_remove("ALCHEMY_API_KEY");
    command
}

/// Runs a short command to completion.
fn run(command: &mut Command) -> Output {
    command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {command:?}: {e}"))
}

fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn write_file(dir: &Path, name: &str, content: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    path
}

/// A port nothing listens on right now (the OS picks it; released before returning).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("an ephemeral port")
}

/// A port `p` such that `p` and `p + 1` are both free right now.
fn two_free_ports() -> u16 {
    for _ in 0..50 {
        let first = TcpListener::bind("127.0.0.1:0").expect("an ephemeral port");
        let port = first.local_addr().expect("local addr").port();
        if port < u16::MAX && TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
    panic!("no two consecutive free ports in 50 tries");
}

/// A config for the service over `devnet`, its database in `dir`, its API on `port`.
fn service_config(dir: &Path, devnet: &livechain::devnet::Devnet, port: u16) -> PathBuf {
    let yaml = support::service_yaml(devnet, &dir.join("livechain.db")).replace(
        "listen: \"127.0.0.1:0\"",
        &format!("listen: \"127.0.0.1:{port}\""),
    );
    assert!(yaml.contains(&format!("127.0.0.1:{port}")), "{yaml}");
    write_file(dir, "service.yaml", &yaml)
}

/// A long-running child: stdout collected line by line, stderr in a file; killed on drop.
struct Running {
    child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: PathBuf,
}

impl Running {
    fn spawn(command: &mut Command, stderr: PathBuf) -> Running {
        let log = File::create(&stderr).expect("stderr file");
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {command:?}: {e}"));
        Running::adopt(child, stderr)
    }

    /// Guards a child whose stdio the caller set up; its stdout is collected if piped, and
    /// `stderr` names the file it writes its logs to, if any (for failure messages).
    fn adopt(mut child: Child, stderr: PathBuf) -> Running {
        let stdout = Arc::new(Mutex::new(Vec::new()));
        if let Some(pipe) = child.stdout.take() {
            let lines = Arc::clone(&stdout);
            // Ends at EOF, when the child exits (or is killed).
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    lines.lock().expect("stdout lines").push(line);
                }
            });
        }
        Running {
            child,
            stdout,
            stderr,
        }
    }

    fn stdout(&self) -> String {
        self.stdout.lock().expect("stdout lines").join("\n")
    }

    /// What the child printed, for failure messages.
    fn output(&self) -> String {
        let stderr = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        format!("stdout:\n{}\nstderr:\n{stderr}", self.stdout())
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }

    /// Sends SIGTERM (through `kill`, no signal crate needed) and waits, bounded, for the exit.
    async fn terminate(&mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("running kill");
        assert!(sent.success(), "kill -TERM {pid} failed");
        let started = Instant::now();
        loop {
            if let Some(status) = self.exited() {
                return status;
            }
            assert!(
                started.elapsed() < STOP_WAIT,
                "still running {STOP_WAIT:?} after SIGTERM\n{}",
                self.output()
            );
            tokio::time::sleep(POLL).await;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Polls `url` until it answers 200, failing early if the child exits.
/// Starts the service on `config` and waits for its API.
async fn start(config: &Path, dir: &Path, base: &str, n: usize) -> Running {
    let mut child = Running::spawn(
        livechain().arg("run").arg("--config").arg(config),
        dir.join(format!("stderr-{n}.log")),
    );
    wait_ok(&mut child, &format!("{base}/health")).await;
    child
}

/// SIGKILL, then waits for the exit.
fn kill(child: &mut Running) {
    let _ = child.child.kill();
    let _ = child.child.wait();
}

async fn wait_ok(child: &mut Running, url: &str) -> Value {
    let started = Instant::now();
    loop {
        if let Some(status) = child.exited() {
            panic!(
                "exited with {status} before {url} answered\n{}",
                child.output()
            );
        }
        if let Ok(response) = reqwest::get(url).await
            && response.status().is_success()
        {
            return response.json().await.unwrap_or(Value::Null);
        }
        assert!(
            started.elapsed() < WAIT,
            "{url} did not answer within {WAIT:?}\n{}",
            child.output()
        );
        tokio::time::sleep(POLL).await;
    }
}

#[test]
fn help_lists_the_commands() {
    let output = run(livechain().arg("--help"));
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}{stderr}");
    for command in [
        "run",
        "check-config",
        "devnet",
        "reset-chain",
        "status",
        "migrate",
    ] {
        assert!(
            stdout
                .lines()
                .any(|l| l.trim_start().starts_with(&format!("{command} "))),
            "--help does not list {command}:\n{stdout}"
        );
    }
    // Unknown commands are refused by clap with a non-zero exit.
    let output = run(livechain().arg("frobnicate"));
    assert!(!output.status.success());
}

#[test]
fn status_names_the_url_it_cannot_reach() {
    let url = format!("http://127.0.0.1:{}", free_port());
    let output = run(livechain().args(["status", "--url", &url]));
    let (stdout, stderr) = text(&output);
    assert!(!output.status.success(), "{stdout}");
    assert!(
        stderr.contains(&url) && stderr.contains("is the service running"),
        "{stderr}"
    );
}

#[test]
fn check_config_accepts_the_default_config() {
    let output = run(livechain()
        .arg("check-config")
        .arg(repo_file("config/default.yaml")));
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}{stderr}");
    assert!(stdout.starts_with("ok:"), "{stdout}");
    assert!(stdout.contains("devnet"), "{stdout}");
}

#[test]
fn check_config_names_the_providers_the_example_drops_without_keys() {
    let example = repo_file("config/example.yaml");
    let output = run(livechain().arg("check-config").arg(&example));
    let (stdout, stderr) = text(&output);
    let all = format!("{stdout}{stderr}");
    assert!(!output.status.success(), "{all}");
    for needle in [
        "chains.ethereum.providers",
        "infura",
        "INFURA_API_KEY",
        "alchemy",
        "ALCHEMY_API_KEY",
    ] {
        assert!(all.contains(needle), "no {needle:?} in:\n{all}");
    }

    // With one key the chain keeps one provider: valid, with a warning naming the other.
    let output = run(livechain()
        .arg("check-config")
        .arg(&example)
        .env("INFURA_API_KEY", "test-key"));
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}{stderr}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("warning:") && l.contains("ALCHEMY_API_KEY")),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("ok:") && l.contains("infura")),
        "{stdout}"
    );
    assert!(
        !all.contains("test-key") && !stdout.contains("test-key"),
        "the key leaked"
    );
}

#[test]
fn check_config_reports_every_error_with_its_path() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = write_file(
        dir.path(),
        "bad.yaml",
        "server: { listen: \"nowhere\" }\n\
         breaker: { failure_threshold: -1 }\n\
         chains:\n\
         \x20 eth:\n\
         \x20   chain_id: \"one\"\n\
         \x20   providers:\n\
         \x20     - id: a\n\
         \x20       url: \"ftp://example.com\"\n\
         \x20       ws_url: \"http://example.com\"\n",
    );
    let output = run(livechain().arg("check-config").arg(&path));
    let (stdout, stderr) = text(&output);
    assert!(!output.status.success(), "{stdout}{stderr}");
    let paths = [
        "server.listen",
        "breaker.failure_threshold",
        "chains.eth.chain_id",
        "chains.eth.providers[0].url",
        "chains.eth.providers[0].ws_url",
    ];
    for path in paths {
        assert!(
            stdout.lines().any(|l| l.starts_with(&format!("{path}: "))),
            "no line for {path} in:\n{stdout}"
        );
    }
    assert!(!stdout.contains("ok:"), "{stdout}");

    // A file that does not exist is an error too, naming the file.
    let missing = dir.path().join("missing.yaml");
    let output = run(livechain().arg("check-config").arg(&missing));
    let (stdout, stderr) = text(&output);
    assert!(!output.status.success());
    assert!(
        format!("{stdout}{stderr}").contains("missing.yaml"),
        "{stdout}{stderr}"
    );
}

#[test]
fn migrate_creates_the_database_then_finds_it_current() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("nested/dir/livechain.db");
    let config = write_file(
        dir.path(),
        "migrate.yaml",
        &format!(
            "database: {{ path: \"{}\" }}\n\
             chains:\n  devnet:\n    chain_id: 31337\n    devnet: {{ providers: 1 }}\n    \
             subscriptions: [ {{ blocks: true }} ]\n",
            db.display()
        ),
    );
    let output = run(livechain().arg("migrate").arg("--config").arg(&config));
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}{stderr}");
    assert!(db.exists(), "{} was not created", db.display());
    assert!(
        stdout.contains("applied V1"),
        "the first run applies V1:\n{stdout}"
    );

    let output = run(livechain().arg("migrate").arg("--config").arg(&config));
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}{stderr}");
    let newest = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
        .expect("migrations folder")
        .count();
    assert!(
        stdout.contains(&format!("already at version {newest}")),
        "the second run has nothing to do (newest migration: V{newest}):\n{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devnet_serves_eth_chain_id_on_every_provider_port() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = two_free_ports();
    let mut child = Running::spawn(
        livechain().args([
            "devnet",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--providers",
            "2",
            "--block-time-ms",
            "100",
        ]),
        dir.path().join("stderr.log"),
    );
    let client = reqwest::Client::new();
    for p in [port, port + 1] {
        let url = format!("http://127.0.0.1:{p}");
        let answer = support::wait_for(WAIT, POLL, || {
            let request = client
                .post(&url)
                .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}))
                .send();
            async move { request.await.ok()?.json::<Value>().await.ok() }
        })
        .await
        .unwrap_or_else(|| panic!("{url} did not answer eth_chainId\n{}", child.output()));
        assert_eq!(answer["result"], "0x7a69", "{url}: {answer}");
        assert_eq!(answer["id"], 1, "{answer}");
    }
    let printed = child.stdout();
    for p in [port, port + 1] {
        assert!(
            printed.contains(&format!("127.0.0.1:{p}")),
            "the endpoints are printed:\n{printed}"
        );
    }
    let status = child.terminate().await;
    assert!(
        status.success(),
        "devnet exited with {status}\n{}",
        child.output()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_with_a_config_serves_then_stops_gracefully_on_sigterm() {
    let devnet = support::devnet(2, 50, 5, 10).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("livechain.db");
    let port = free_port();
    let config = service_config(dir.path(), &devnet, port);
    let mut child = Running::spawn(
        livechain().arg("run").arg("--config").arg(&config),
        dir.path().join("stderr.log"),
    );
    let base = format!("http://127.0.0.1:{port}");
    let health = wait_ok(&mut child, &format!("{base}/health")).await;
    assert_eq!(health, json!({"status": "ok"}));
    // It indexes the devnet: the checkpoint passes the history.
    let checkpoint = support::wait_for(WAIT, POLL, || async {
        support::checkpoint(&base, "devnet")
            .await
            .filter(|cp| *cp >= 10)
    })
    .await;
    assert!(checkpoint.is_some(), "no progress\n{}", child.output());
    assert!(
        child.stdout().contains(&base),
        "the API URL is printed:\n{}",
        child.output()
    );
    // `livechain status` prints the chain, its providers and the tasks from the API.
    let output = run(livechain().args(["status", "--url", &base]));
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}{stderr}");
    for expected in [
        "devnet",
        "p0",
        "p1",
        "healthy",
        "closed",
        "pipeline ingest",
        "running",
    ] {
        assert!(stdout.contains(expected), "{expected} missing:\n{stdout}");
    }

    let status = child.terminate().await;
    assert!(status.success(), "exited with {status}\n{}", child.output());
    assert!(db.exists());
    // The port is released on exit.
    assert!(
        TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).is_ok(),
        "port {port} still bound after exit"
    );
}

/// `livechain run` with no `--config` on a fresh machine: the embedded default, a database under
/// `data/` in the working directory, the API on 127.0.0.1:4000. Run a second time in the same
/// directory (the README's command, twice), it carries on storing where the first run stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_without_config_twice_in_the_same_directory_keeps_indexing() {
    const DEFAULT_PORT: u16 = 4000;
    /// The first run's checkpoint before it is stopped (the default devnet makes a block a
    /// second, so this is some 15 s of running).
    const FIRST_RUN: u64 = 15;
    /// How long the second run may take to store two blocks more. A devnet starting again from
    /// block 0 would need more than `FIRST_RUN` seconds to get there.
    const RESUME_WAIT: Duration = Duration::from_secs(10);
    if let Err(err) = TcpListener::bind(("127.0.0.1", DEFAULT_PORT)) {
        eprintln!(
            "skipping: port {DEFAULT_PORT} (the default config's API) is busy on this machine: \
             {err}"
        );
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let base = format!("http://127.0.0.1:{DEFAULT_PORT}");
    let mut child = Running::spawn(
        livechain().arg("run").current_dir(dir.path()),
        dir.path().join("stderr.log"),
    );
    wait_ok(&mut child, &format!("{base}/health")).await;
    // Our child answers, not some other process that took the port meanwhile.
    let chains = wait_ok(&mut child, &format!("{base}/v1/chains")).await;
    let chain = &chains["chains"][0];
    assert_eq!(chain["name"], "devnet", "{chains}");
    assert_eq!(chain["chain_id"], 31337, "{chains}");
    assert_eq!(
        chain["providers"].as_array().map(Vec::len),
        Some(3),
        "{chains}"
    );
    assert!(
        dir.path().join("data/livechain.db").exists(),
        "data/livechain.db is created under the working directory"
    );
    // The newcomer's URLs are printed.
    let printed = child.stdout();
    for needle in [base.as_str(), "/health", "/v1/events"] {
        assert!(
            printed.contains(needle),
            "no {needle:?} in:\n{}",
            child.output()
        );
    }
    let first = support::wait_for(WAIT, POLL, || async {
        support::checkpoint(&base, "devnet")
            .await
            .filter(|cp| *cp >= FIRST_RUN)
    })
    .await
    .unwrap_or_else(|| panic!("the first run made no progress\n{}", child.output()));
    let status = child.terminate().await;
    assert!(status.success(), "exited with {status}\n{}", child.output());
    let stored = stored_events(&dir.path().join("data/livechain.db")).await;

    let mut child = Running::spawn(
        livechain().arg("run").current_dir(dir.path()),
        dir.path().join("stderr-2.log"),
    );
    wait_ok(&mut child, &format!("{base}/health")).await;
    let second = support::wait_for(RESUME_WAIT, POLL, || async {
        support::checkpoint(&base, "devnet")
            .await
            .filter(|cp| *cp >= first + 2)
    })
    .await;
    assert!(
        second.is_some(),
        "the second run stored nothing past checkpoint {first} within {RESUME_WAIT:?}\n{}",
        child.output()
    );
    let ready = wait_ok(&mut child, &format!("{base}/ready")).await;
    assert_eq!(ready["status"], "ready", "{ready}");
    let status = child.terminate().await;
    assert!(status.success(), "exited with {status}\n{}", child.output());
    let now = stored_events(&dir.path().join("data/livechain.db")).await;
    assert!(
        now > stored,
        "events stored: {stored} after the first run, {now} after the second"
    );
}

/// Events stored in the database at `path` (read with the service stopped).
async fn stored_events(path: &Path) -> u64 {
    let store = livechain::store::Store::open(path)
        .await
        .expect("opening the database");
    let n = store.count_events("devnet").await.expect("counting events");
    store.close().await;
    n
}
