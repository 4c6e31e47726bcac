//! The real binary when the reader of its output is gone (`livechain run 2>&1 | cat` and the
//! `cat` dies, `livechain devnet | head -1`): it keeps serving and still stops on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;

use serde_json::{Value, json};

use super::{POLL, Running, WAIT, free_port, livechain, service_config, two_free_ports};
use crate::support;

/// `run 2>&1 | cat`, then the `cat` dies: every later log line meets a broken pipe, the
/// signal handler's own included, and SIGTERM must still stop the service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_stops_on_sigterm_after_the_reader_of_its_logs_is_gone() {
    let devnet = support::devnet(2, 50, 5, 10).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let config = service_config(dir.path(), &devnet, port);
    let (reader, writer) = std::io::pipe().expect("a pipe");
    let child = livechain()
        .env("RUST_LOG", "info")
        .arg("run")
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::from(writer.try_clone().expect("pipe clone")))
        .stderr(Stdio::from(writer))
        .spawn()
        .expect("spawning livechain run");
    let mut child = Running::adopt(child, dir.path().join("no-stderr-file"));

    // The reader (the `cat`) reads until the API's URL is printed, then goes away.
    let base = format!("http://127.0.0.1:{port}");
    let (seen, printed) = mpsc::channel();
    let wanted = format!("{base}/health");
    std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(reader).lines().map_while(Result::ok) {
            let done = line.contains(&wanted);
            lines.push(line);
            if done {
                break;
            }
        }
        let _ = seen.send(lines.join("\n"));
        // The reader drops here: the pipe is broken from now on.
    });
    let printed = printed
        .recv_timeout(WAIT)
        .unwrap_or_else(|_| panic!("the URLs were not printed within {WAIT:?}"));
    assert!(printed.contains(&base), "{printed}");

    // Logs keep coming (the devnet produces every 50 ms; the signal handler logs too).
    let health = super::wait_ok(&mut child, &format!("{base}/health")).await;
    assert_eq!(health, json!({"status": "ok"}));
    let moved = support::wait_for(WAIT, POLL, || async {
        support::checkpoint(&base, "devnet")
            .await
            .filter(|cp| *cp >= 12)
    })
    .await;
    assert!(moved.is_some(), "no progress after the log reader left");

    let status = child.terminate().await;
    assert!(status.success(), "exited with {status}");
}

/// stderr is a pipe nobody reads from the start: the service serves, prints its URLs on
/// stdout and stops on SIGTERM (it used to exit 101 before printing anything).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_serves_and_stops_with_a_broken_stderr_from_the_start() {
    let devnet = support::devnet(2, 50, 5, 10).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let config = service_config(dir.path(), &devnet, port);
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    let child = livechain()
        .env("RUST_LOG", "info")
        .arg("run")
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(writer))
        .spawn()
        .expect("spawning livechain run");
    let mut child = Running::adopt(child, dir.path().join("no-stderr-file"));
    let base = format!("http://127.0.0.1:{port}");
    super::wait_ok(&mut child, &format!("{base}/health")).await;
    let wanted = format!("{base}/v1/events");
    let printed = support::wait_for(WAIT, POLL, || {
        let out = child.stdout();
        let found = out.contains(&wanted);
        async move { found.then_some(out) }
    })
    .await;
    assert!(printed.is_some(), "the URLs were not printed");
    let status = child.terminate().await;
    assert!(status.success(), "exited with {status}");
}

/// `livechain devnet | head -1` with `head` already gone: the devnet keeps serving and stops
/// on SIGTERM (printing its endpoints used to panic, exit 101).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devnet_serves_with_a_broken_stdout() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = two_free_ports();
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    let stderr = dir.path().join("stderr.log");
    let child = livechain()
        .args([
            "devnet",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--providers",
            "2",
            "--block-time-ms",
            "100",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::from(writer))
        .stderr(Stdio::from(
            std::fs::File::create(&stderr).expect("stderr file"),
        ))
        .spawn()
        .expect("spawning livechain devnet");
    let mut child = Running::adopt(child, stderr);
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{}", port + 1);
    let answer = support::wait_for(WAIT, POLL, || {
        let request = client
            .post(&url)
            .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}))
            .send();
        async move { request.await.ok()?.json::<Value>().await.ok() }
    })
    .await;
    assert!(
        child.exited().is_none(),
        "the devnet exited\n{}",
        child.output()
    );
    let answer = answer.unwrap_or_else(|| panic!("{url} did not answer\n{}", child.output()));
    assert_eq!(answer["result"], "0x7a69", "{answer}");
    let status = child.terminate().await;
    assert!(status.success(), "exited with {status}\n{}", child.output());
}

/// Logs written to a file (or any pipe) carry no ANSI colour codes; colour is for terminals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_to_a_file_carry_no_colour_codes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = two_free_ports();
    let stderr = dir.path().join("stderr.log");
    let mut child = Running::spawn(
        livechain().env("RUST_LOG", "info").args([
            "devnet",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--providers",
            "1",
        ]),
        stderr.clone(),
    );
    let logged = support::wait_for(WAIT, POLL, || {
        let text = std::fs::read_to_string(&stderr).unwrap_or_default();
        async move { text.contains("devnet started").then_some(text) }
    })
    .await
    .unwrap_or_else(|| panic!("nothing logged\n{}", child.output()));
    assert!(
        !logged.contains('\u{1b}'),
        "colour codes in a file:\n{logged:?}"
    );
    let status = child.terminate().await;
    assert!(status.success(), "exited with {status}");
}
