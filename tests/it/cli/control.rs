//! Pausing and resuming providers and chains through the admin routes, with the real binary:
//! a pause is saved before its answer, so it survives SIGKILL the moment after, and SIGTERM;
//! a paused provider is asked nothing; a resume survives restarts too.

use super::*;

async fn post(url: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn provider(base: &str, id: &str) -> Value {
    let (_, body) = support::get_json(&format!("{base}/v1/providers")).await;
    body["providers"]
        .as_array()
        .and_then(|l| l.iter().find(|p| p["id"] == id).cloned())
        .unwrap_or(Value::Null)
}

async fn listener_status(base: &str, id: &str) -> Value {
    let (_, body) = support::get_json(&format!("{base}/v1/processes")).await;
    body["processes"]
        .as_array()
        .and_then(|l| {
            l.iter()
                .find(|p| p["kind"] == "listener" && p["id"] == format!("devnet/{id}"))
                .map(|p| p["status"].clone())
        })
        .unwrap_or(Value::Null)
}

async fn checkpoint_moves(base: &str) -> bool {
    let first = support::checkpoint(base, "devnet").await.unwrap_or(0);
    support::wait_for(Duration::from_secs(15), POLL, || async {
        support::checkpoint(base, "devnet")
            .await
            .filter(|c| *c > first + 3)
    })
    .await
    .is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pauses_survive_sigkill_and_sigterm_and_so_do_resumes() {
    let devnet = support::devnet(2, 50, 2, 5).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let config = service_config(dir.path(), &devnet, port);
    let base = format!("http://127.0.0.1:{port}");
    let mut child = start(&config, dir.path(), &base, 0).await;
    assert!(checkpoint_moves(&base).await, "{}", child.output());

    // Pause p1 and kill at once: the pause was saved before the answer.
    let (status, body) = post(&format!("{base}/v1/providers/devnet/p1/pause")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["providers"][0],
        json!({"id": "p1", "paused": true, "changed": true})
    );
    kill(&mut child);
    let mut child = start(&config, dir.path(), &base, 1).await;
    let p1 = provider(&base, "p1").await;
    assert_eq!(p1["unhealthy_reason"], "paused", "{p1}");
    assert_eq!(listener_status(&base, "p1").await, "paused");
    assert!(checkpoint_moves(&base).await, "p0 carries the chain");
    let asked = provider(&base, "p1").await["requests"].clone();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        provider(&base, "p1").await["requests"],
        asked,
        "nothing asked of p1"
    );

    // Resume, then SIGTERM: it stays resumed.
    let (status, body) = post(&format!("{base}/v1/providers/devnet/p1/resume")).await;
    assert_eq!(
        (status, &body["providers"][0]["changed"]),
        (200, &json!(true)),
        "{body}"
    );
    let status = child.terminate().await;
    assert!(status.success());
    let mut child = start(&config, dir.path(), &base, 2).await;
    let healthy = support::wait_for(WAIT, POLL, || async {
        let p1 = provider(&base, "p1").await;
        (p1["healthy"] == true).then_some(())
    })
    .await;
    assert!(
        healthy.is_some(),
        "p1 healthy after the restart\n{}",
        child.output()
    );
    assert_eq!(listener_status(&base, "p1").await, "running");

    // A whole chain: paused, still paused after SIGTERM, /ready stays 200, then resumed.
    let (status, body) = post(&format!("{base}/v1/chains/devnet/pause")).await;
    assert_eq!(status, 200, "{body}");
    let status = child.terminate().await;
    assert!(status.success());
    let mut child = start(&config, dir.path(), &base, 3).await;
    let (_, chains) = support::get_json(&format!("{base}/v1/chains")).await;
    let problem = chains["chains"][0]["problem"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(problem.contains("paused"), "{chains}");
    assert!(
        !checkpoint_moves(&base).await,
        "a paused chain stands still"
    );
    let (ready, _) = support::get_json(&format!("{base}/ready")).await;
    assert_eq!(
        ready, 200,
        "a paused chain is an operator's choice, not a failure"
    );
    let (status, _) = post(&format!("{base}/v1/chains/devnet/resume")).await;
    assert_eq!(status, 200);
    assert!(checkpoint_moves(&base).await, "resumed");

    let (status, body) = post(&format!("{base}/v1/providers/devnet/nope/pause")).await;
    assert_eq!(status, 404, "{body}");
    let status = child.terminate().await;
    assert!(status.success());
}
