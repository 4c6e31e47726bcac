//! Safe exposure. A bind beyond loopback without protection is refused at start. Secrets stay
//! secret: a run of the real binary whose provider URLs carry keys — in the path,
//! the query and the userinfo; for a provider that answers, one that fails for a while, and one
//! that never answers — and whose API has a token. Every log line (at debug), every metric,
//! every API answer and every command's output is searched: no key appears.

use super::*;

/// The keys, each unlikely to appear by chance.
const KEYS: [&str; 7] = [
    "KEYPATHa1b2c3",
    "KEYWSPATHd4e5f6",
    "KEYPASSg7h8i9",
    "KEYQUERYj1k2l3",
    "KEYWSTOKENm4n5o6",
    "KEYDEADp7q8r9",
    "KEYAPITOKENs1t2u3v4w5",
];

fn config(dir: &Path, devnet: &livechain::devnet::Devnet, port: u16, dead: u16) -> PathBuf {
    let endpoints = devnet.endpoints();
    let (a, b) = (&endpoints[0], &endpoints[1]);
    // `http://127.0.0.1:<port>/`: the host and port alone.
    let host = |url: &str| {
        url.trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned()
    };
    let yaml = format!(
        "server: {{ listen: \"127.0.0.1:{port}\", auth_token: \"${{API_TOKEN}}\" }}\n\
         database: {{ path: \"{db}\" }}\n\
         chains:\n  devnet:\n    chain_id: {chain_id}\n    providers:\n\
         \x20     - id: keyed-path\n        url: \"http://{a}/v3/{k0}\"\n        ws_url: \"ws://{a}/ws/v3/{k1}\"\n\
         \x20     - id: keyed-query\n        url: \"http://user:{k2}@{b}/?apikey={k3}\"\n        ws_url: \"ws://{b}/?token={k4}\"\n\
         \x20     - id: keyed-dead\n        url: \"http://127.0.0.1:{dead}/v3/{k5}\"\n        ws_url: \"ws://127.0.0.1:{dead}/{k5}\"\n\
         \x20   subscriptions:\n      - blocks: true\n      - logs: {{ from_block: 0 }}\n",
        db = dir.join("secrets.db").display(),
        chain_id = devnet.config().chain_id,
        a = host(&a.http_url),
        b = host(&b.http_url),
        k0 = KEYS[0],
        k1 = KEYS[1],
        k2 = KEYS[2],
        k3 = KEYS[3],
        k4 = KEYS[4],
        k5 = KEYS[5],
    );
    write_file(dir, "secrets.yaml", &yaml)
}

/// Every key found in `text`, for the failure message.
fn leaks(text: &str) -> Vec<&'static str> {
    KEYS.iter().copied().filter(|k| text.contains(k)).collect()
}

/// A GET with the API token; the answer's text, whatever its status.
async fn fetch(url: &str) -> String {
    let response = reqwest::Client::new()
        .get(url)
        .bearer_auth(KEYS[6])
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    format!(
        "{} {}",
        response.status(),
        response.text().await.unwrap_or_default()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_key_appears_in_logs_metrics_or_answers() {
    let devnet = support::devnet(2, 100, 3, 10).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let (port, dead) = (free_port(), free_port());
    let path = config(dir.path(), &devnet, port, dead);
    let base = format!("http://127.0.0.1:{port}");
    let mut child = Running::spawn(
        livechain()
            .env("RUST_LOG", "debug")
            .env("API_TOKEN", KEYS[6])
            .args(["run", "--config"])
            .arg(&path),
        dir.path().join("stderr.log"),
    );
    wait_ok(&mut child, &format!("{base}/health")).await;
    let moved = support::wait_for(WAIT, POLL, || async {
        support::checkpoint(&base, "devnet")
            .await
            .filter(|c| *c >= 12)
    })
    .await;
    assert!(moved.is_some(), "the chain is indexed\n{}", child.output());

    // Faults that make providers' errors travel: dropped sockets, 503s for a while.
    let faults = |i| devnet.faults(i).expect("the provider exists");
    faults(0).drop_sockets();
    faults(1).set_server_error(Some(503));
    tokio::time::sleep(Duration::from_secs(2)).await;
    faults(1).clear();

    let mut seen = String::new();
    let paths = [
        "/v1/providers",
        "/v1/chains",
        "/v1/processes",
        "/v1/coverage",
        "/v1/events?limit=20",
        "/metrics",
        "/openapi.json",
        "/ready",
        "/",
    ];
    for path in paths {
        seen.push_str(&fetch(&format!("{base}{path}")).await);
    }
    let rpc = reqwest::Client::new()
        .post(format!("{base}/rpc/devnet"))
        .bearer_auth(KEYS[6])
        .json(&json!([
            {"jsonrpc":"2.0","id":1,"method":"eth_blockNumber","params":[]},
            {"jsonrpc":"2.0","id":2,"method":"eth_getBlockByNumber","params":["0x999999", false]},
            {"jsonrpc":"2.0","id":3,"method":"no_such_method","params":[]}
        ]))
        .send()
        .await
        .expect("gateway answers");
    seen.push_str(&format!("{:?}", rpc.headers()));
    seen.push_str(&rpc.text().await.unwrap_or_default());
    let status = run(livechain()
        .args(["status", "--url", &base])
        .env("LIVECHAIN_TOKEN", KEYS[6]));
    assert!(status.status.success(), "{status:?}");
    seen.push_str(&String::from_utf8_lossy(&status.stdout));
    seen.push_str(&String::from_utf8_lossy(&status.stderr));
    let check = run(livechain()
        .env("API_TOKEN", KEYS[6])
        .arg("check-config")
        .arg(&path));
    seen.push_str(&String::from_utf8_lossy(&check.stdout));
    seen.push_str(&String::from_utf8_lossy(&check.stderr));

    child.terminate().await;
    let logs = child.output();
    assert!(
        logs.lines().count() > 50,
        "debug logs were written:\n{logs}"
    );
    assert!(
        logs.contains("keyed-dead"),
        "the dead provider was talked about"
    );
    assert_eq!(
        leaks(&seen),
        Vec::<&str>::new(),
        "a key in an answer:\n{seen}"
    );
    assert_eq!(
        leaks(&logs),
        Vec::<&str>::new(),
        "a key in the logs:\n{logs}"
    );
}

/// Bound beyond loopback with nothing to protect it, the service refuses to start (before it
/// binds anything), saying what to set.
#[test]
fn run_refuses_a_wide_bind_without_a_token() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = write_file(
        dir.path(),
        "open.yaml",
        &format!(
            "server: {{ listen: \"0.0.0.0:{}\" }}\ndatabase: {{ path: \"{}\" }}\n",
            free_port(),
            dir.path().join("db.sqlite").display()
        ),
    );
    let mut child = Running::spawn(
        livechain().arg("run").arg("--config").arg(&path),
        dir.path().join("stderr.log"),
    );
    // Bounded: a service that started after all is killed when `child` drops.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.exited() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "it started: {}",
            child.output()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success());
    let said = child.output();
    assert!(
        said.contains("server.listen") && said.contains("server.auth_token"),
        "{said}"
    );
    assert!(
        !dir.path().join("db.sqlite").exists(),
        "nothing was started"
    );
}
