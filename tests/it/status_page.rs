//! The status page (`GET /`) in headless Chromium, driven by `tests/js/status-page.mjs`
//! (playwright-core) against the real binary on a devnet: it loads with no console error and
//! no request leaving 127.0.0.1, shows what `/v1/chains` and `/v1/providers` say, its live tail
//! pauses and resumes from its cursor with nothing missed, a provider stalled through the
//! devnet's fault control turns unhealthy on it and healthy again, a dropped socket shows in
//! its errors by class, and it recovers by itself when the service restarts under it.
//! Screenshots go to `target/status-page/`.
//!
//! Skipped with a printed reason without Chromium or playwright-core, unless
//! `LIVECHAIN_REQUIRE_BROWSER=1` (the README's test command installs both and sets that).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::support;

/// Longest the browser may take over one step.
const STEP: Duration = Duration::from_secs(60);

/// Chromium and the npm prefix holding playwright-core, if both are there.
fn browser() -> Option<(PathBuf, PathBuf)> {
    let chromium = std::env::var_os("LIVECHAIN_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    let prefix = std::env::var_os("LIVECHAIN_NPM_PREFIX")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".tools/npm"));
    let playwright = prefix.join("node_modules/playwright-core/package.json");
    if chromium.exists() && playwright.exists() {
        return Some((chromium, prefix));
    }
    assert!(
        std::env::var("LIVECHAIN_REQUIRE_BROWSER").as_deref() != Ok("1"),
        "Chromium ({}) and playwright-core (under {}) are required (scripts/test installs them)",
        chromium.display(),
        prefix.display()
    );
    eprintln!("skipping: Chromium or playwright-core is not installed (run scripts/test)");
    None
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("an ephemeral port")
}

/// The service as a child process, killed when dropped.
struct Service(Child);

impl Service {
    fn start(config: &Path, log: &Path) -> Service {
        let log = std::fs::File::create(log).expect("log file");
        let child = Command::new(support::livechain_bin())
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("the service starts");
        Service(child)
    }

    /// SIGTERM, then waits (bounded) for the exit.
    fn stop(mut self) {
        let pid = self.0.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        for _ in 0..200 {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The browser script: its answers line by line, its stdin for the test's words.
struct Script {
    node: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
}

impl Script {
    fn expect(&mut self, wanted: &str) {
        match self.lines.recv_timeout(STEP) {
            Ok(line) if line == format!("ok {wanted}") => {}
            Ok(line) => panic!("the page did not show {wanted}: {line}"),
            Err(_) => panic!("no answer from the browser about {wanted} within {STEP:?}"),
        }
    }

    fn say(&mut self, word: &str) {
        writeln!(self.stdin, "{word}").expect("the script reads");
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        let _ = self.node.kill();
        let _ = self.node.wait();
    }
}

async fn ready(base: &str) -> bool {
    support::wait_for(
        Duration::from_secs(30),
        Duration::from_millis(50),
        || async {
            let answer = reqwest::get(format!("{base}/ready")).await;
            answer.ok().filter(|r| r.status() == 200).map(|_| ())
        },
    )
    .await
    .is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_the_service_live_in_a_browser() {
    let Some((chromium, prefix)) = browser() else {
        return;
    };
    let devnet = support::devnet(2, 200, 4, 20).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let yaml = support::service_yaml(&devnet, &dir.path().join("page.db"))
        .replace("127.0.0.1:0", &format!("127.0.0.1:{port}"))
        + "health: { stall_timeout: 1500 }\n";
    let config = dir.path().join("livechain.yaml");
    std::fs::write(&config, yaml).expect("config written");
    let mut service = Service::start(&config, &dir.path().join("service.log"));
    assert!(ready(&base).await, "the service is ready");

    let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/status-page");
    std::fs::create_dir_all(&shots).expect("screenshot dir");
    // Beside playwright-core, so that node resolves the import.
    let script = prefix.join("livechain-status-page.mjs");
    let source = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/js/status-page.mjs");
    std::fs::copy(source, &script).expect("script copied");
    let mut node = Command::new("node")
        .arg(&script)
        .arg(&base)
        .arg(&shots)
        .arg(&chromium)
        .arg("p1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node runs");
    let (stdin, stdout) = (node.stdin.take(), node.stdout.take());
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout.expect("stdout"))
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut page = Script {
        node,
        stdin: stdin.expect("stdin"),
        lines,
    };

    page.expect("loaded");
    page.expect("resumed");
    devnet.faults(1).expect("p1").set_stalled(true);
    page.say("stalled");
    page.expect("unhealthy");
    devnet.faults(1).expect("p1").set_stalled(false);
    page.say("unstalled");
    page.expect("healthy");
    // Its stream back up (the stall recycled it), then dropped by the devnet.
    let connected = support::wait_for(
        Duration::from_secs(30),
        Duration::from_millis(50),
        || async {
            let (_, body) = support::get_json(&format!("{base}/v1/providers")).await;
            let list = body["providers"].as_array().cloned().unwrap_or_default();
            list.iter()
                .any(|p| p["id"] == "p1" && p["connected"] == true)
                .then_some(())
        },
    )
    .await;
    assert!(
        connected.is_some(),
        "p1's stream reconnected after the stall"
    );
    devnet.faults(1).expect("p1").drop_sockets();
    page.say("dropped");
    page.expect("errors");
    page.expect("paused and resumed");

    service.stop();
    page.say("stopped");
    page.expect("offline");
    service = Service::start(&config, &dir.path().join("service-2.log"));
    assert!(ready(&base).await, "the service is ready again");
    page.say("restarted");
    page.expect("recovered");
    page.expect("done");
    drop(page);
    service.stop();
}

/// A service that wants its token (loopback not trusted, as behind a proxy): the page asks for
/// the token, and once given shows the service live, its tail's WebSocket included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_asks_for_the_token_and_then_works() {
    let Some((chromium, prefix)) = browser() else {
        return;
    };
    const TOKEN: &str = "page-token-0123456789abcdef";
    let devnet = support::devnet(1, 200, 2, 5).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let yaml = support::service_yaml(&devnet, &dir.path().join("token.db")).replace(
        "server: { listen: \"127.0.0.1:0\" }",
        &format!(
            "server: {{ listen: \"127.0.0.1:{port}\", trust_loopback: false, auth_token: \"{TOKEN}\" }}"
        ),
    );
    let config = dir.path().join("livechain.yaml");
    std::fs::write(&config, yaml).expect("config written");
    let _service = Service::start(&config, &dir.path().join("service.log"));
    assert!(ready(&base).await, "the service is ready");
    let script = prefix.join("livechain-status-token.mjs");
    let source = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/js/status-token.mjs");
    std::fs::copy(source, &script).expect("script copied");
    let mut node = Command::new("node")
        .arg(&script)
        .args([&base, &chromium.display().to_string(), TOKEN])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node runs");
    let stdout = node.stdout.take().expect("stdout");
    let (tx, said) = mpsc::channel();
    std::thread::spawn(move || {
        let lines: Vec<String> = BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .collect();
        let _ = tx.send(lines.join("\n"));
    });
    let said = said.recv_timeout(STEP * 2).unwrap_or_else(|_| {
        let _ = node.kill();
        panic!("the browser script did not finish within {:?}", STEP * 2)
    });
    let _ = node.wait();
    assert!(said.lines().any(|l| l == "ok token"), "{said}");
}
