//! `/openapi.json` against the live service: `schemathesis` (PyPI) generates requests from the
//! description for every HTTP operation and checks that no answer is a 5xx and that every
//! status, content type, header and body is the one described (and that what the description
//! forbids is refused). The WebSocket routes are left out (it speaks HTTP only), and so are the
//! pause/resume routes (they change what the others answer). Bounded: a few dozen examples per
//! operation, one worker.
//!
//! Skipped with a printed reason when schemathesis is not installed, unless
//! `LIVECHAIN_REQUIRE_SCHEMATHESIS=1` (the README's test command installs it and sets that).

use std::process::Command;

use crate::support::{self, parse_config, start_app};

/// The `st` command: `$SCHEMATHESIS`, else `st` on the path.
fn schemathesis() -> Option<String> {
    let command = std::env::var("SCHEMATHESIS").unwrap_or_else(|_| "st".to_owned());
    match Command::new(&command).arg("--version").output() {
        Ok(out) if out.status.success() => Some(command),
        _ => {
            assert!(
                std::env::var("LIVECHAIN_REQUIRE_SCHEMATHESIS").as_deref() != Ok("1"),
                "schemathesis is required (LIVECHAIN_REQUIRE_SCHEMATHESIS=1) but {command} cannot be run"
            );
            eprintln!("skipped: {command} not found (pip install schemathesis)");
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_matches_the_description() {
    let Some(st) = schemathesis() else { return };
    let devnet = support::devnet(2, 200, 3, 30).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let app = start_app(parse_config(&support::service_yaml(
        &devnet,
        &dir.path().join("schema.db"),
    )))
    .await;
    // Something stored, so the pages and coverage have bodies to check.
    let stored = support::wait_for(super::WAIT, super::POLL, || async {
        support::checkpoint(&app.base, "devnet")
            .await
            .filter(|&c| c >= 20)
    })
    .await;
    assert!(stored.is_some(), "the chain was read");
    let url = app.url("/openapi.json");
    let output = tokio::task::spawn_blocking(move || {
        Command::new(st)
            .args(["run", &url, "--max-examples", "30", "--workers", "1"])
            .args([
                "--exclude-path",
                "/v1/stream",
                "--exclude-operation-id",
                "rpc_ws",
            ])
            // Pausing providers at random would change what the other operations answer
            // mid-run; `tests/it/cli/control.rs` covers those routes.
            .args(["--exclude-tag", "control"])
            .args([
                "--checks",
                "not_a_server_error,status_code_conformance,content_type_conformance,\
                 response_headers_conformance,response_schema_conformance,negative_data_rejection",
            ])
            .args(["--seed", "17"])
            .output()
    })
    .await
    .expect("joined")
    .expect("schemathesis runs");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "schemathesis found answers that do not match /openapi.json:\n{text}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(text.contains("passed"), "{text}");
    app.stop().await;
}
