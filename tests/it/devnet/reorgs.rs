//! Devnet: automatic reorgs seen over the wire — the regrown branch over HTTP and to
//! subscribers, moved and vanished logs, `removed: true` copies, the finality clamp.

use std::collections::HashSet;

use super::*;

/// A devnet that reorganises `depth` blocks every `every` blocks past `initial`, one block
/// every 15 ms: the first reorg comes after `every` blocks, the next `every` blocks later,
/// which leaves the checks made in between that long before the chain changes again.
fn reorging(initial: u64, every: u64, depth: u64) -> DevnetConfig {
    DevnetConfig {
        logs_per_block: 12,
        reorg_every: Some(every),
        reorg_depth: depth,
        ..config(15, initial)
    }
}

/// What one connection subscribed to `newHeads` and `logs` saw around the first reorg.
struct Seen {
    /// Every notification in arrival order: a head, or a log.
    events: Vec<Event>,
}

#[derive(Debug, Clone)]
enum Event {
    // Boxed: the two differ in size fourfold, and there are hundreds of them.
    Head(Box<Header>),
    Log(Box<Log>),
}

impl Seen {
    fn heads(&self) -> impl Iterator<Item = &Header> {
        self.events.iter().filter_map(|e| match e {
            Event::Head(h) => Some(&**h),
            Event::Log(_) => None,
        })
    }

    fn logs(&self) -> impl Iterator<Item = &Log> {
        self.events.iter().filter_map(|e| match e {
            Event::Log(l) => Some(&**l),
            Event::Head(_) => None,
        })
    }

    /// Position of the first head at or below one already seen: where the new branch starts.
    fn fork_at(&self) -> usize {
        let mut highest = 0;
        for (i, event) in self.events.iter().enumerate() {
            if let Event::Head(h) = event {
                if h.number <= highest {
                    return i;
                }
                highest = h.number;
            }
        }
        panic!("no reorg seen");
    }
}

/// Subscribes on provider 0 and collects until the head `until` arrives.
async fn watch(net: &Net, until: u64) -> (Ws, Seen) {
    let mut ws = Ws::connect(&net.ws_url(0)).await;
    let heads = ws.subscribe(json!(["newHeads"])).await;
    let logs = ws.subscribe(json!(["logs"])).await;
    let mut events = Vec::new();
    for _ in 0..100_000 {
        let (sub, result) = ws.notification().await.expect("notifications keep coming");
        if sub == heads {
            let header: Header = serde_json::from_value(result).unwrap();
            let done = header.number == until;
            events.push(Event::Head(Box::new(header)));
            if done {
                return (ws, Seen { events });
            }
        } else {
            assert_eq!(sub, logs);
            events.push(Event::Log(Box::new(
                serde_json::from_value(result).unwrap(),
            )));
        }
    }
    panic!("head {until} never came");
}

async fn header(url: &str, n: u64) -> Header {
    let value = http_result(url, "eth_getBlockByNumber", json!([quantity(n), false])).await;
    serde_json::from_value(value).unwrap()
}

/// One batch of calls of `method`, one per parameter list; the results in order. A batch is
/// one round trip, so a check over many blocks takes one snapshot-like moment.
async fn batch(url: &str, method: &str, params: Vec<Value>) -> Vec<Value> {
    let calls: Vec<Value> = params
        .into_iter()
        .enumerate()
        .map(|(id, p)| json!({"jsonrpc": "2.0", "id": id, "method": method, "params": p}))
        .collect();
    let (status, body) = post_raw(url, Value::Array(calls).to_string()).await;
    assert_eq!(status, 200, "{body}");
    let mut answers: Vec<Value> = serde_json::from_str(&body).unwrap();
    answers.sort_by_key(|a| a["id"].as_u64().unwrap());
    answers.into_iter().map(|a| a["result"].clone()).collect()
}

async fn headers(url: &str, from: u64, to: u64) -> Vec<Header> {
    let params = (from..=to).map(|n| json!([quantity(n), false])).collect();
    let values = batch(url, "eth_getBlockByNumber", params).await;
    values
        .into_iter()
        .map(|v| serde_json::from_value(v).unwrap())
        .collect()
}

/// The checks every automatic reorg must pass; `point` is the height whose production
/// replaced the `depth` blocks below it.
async fn check_reorg(net: &Net, seen: &Seen, point: u64, depth: u64) {
    let url = net.http(0);
    let fork = seen.fork_at();
    let first = seen.heads().next().unwrap().number;
    assert!(first < point - depth, "subscribed before the reorg window");
    let old: Vec<&Header> = seen.events[..fork]
        .iter()
        .filter_map(|e| match e {
            Event::Head(h) if h.number >= point - depth => Some(&**h),
            _ => None,
        })
        .collect();
    assert_eq!(
        old.len() as u64,
        depth,
        "the orphaned blocks had been delivered"
    );
    let new: Vec<&Header> = seen.events[fork..]
        .iter()
        .filter_map(|e| match e {
            Event::Head(h) => Some(&**h),
            Event::Log(_) => None,
        })
        .collect();
    let new_numbers: Vec<u64> = new.iter().map(|h| h.number).collect();
    let expected: Vec<u64> = (point - depth..=point + 2).collect();
    assert_eq!(
        new_numbers, expected,
        "heads of the whole new branch, in order"
    );

    // Over HTTP: the new branch, different hashes, linked from the common ancestor.
    let served_heads = headers(&url, point - depth - 1, point + 1).await;
    let ancestor_seen = seen
        .heads()
        .find(|h| h.number == point - depth - 1)
        .unwrap();
    assert_eq!(
        &served_heads[0], ancestor_seen,
        "the common ancestor is untouched"
    );
    for (i, pair) in served_heads.windows(2).enumerate() {
        let (parent, block) = (&pair[0], &pair[1]);
        let n = block.number;
        assert_eq!(block.parent_hash, parent.hash, "height {n} links");
        assert_eq!(block, new[i], "the subscriber saw the served block {n}");
        if n < point {
            assert_ne!(block.hash, old[i].hash, "height {n} was replaced");
        }
    }
    let by_hash = old.iter().map(|h| json!([h.hash, false])).collect();
    let orphans = batch(&url, "eth_getBlockByHash", by_hash).await;
    assert!(
        orphans.iter().all(Value::is_null),
        "orphaned hashes are not served"
    );

    // The stream's final view is what eth_getLogs serves for the final chain.
    let orphaned: HashSet<B256> = old.iter().map(|h| h.hash).collect();
    let final_view: Vec<Log> = seen
        .logs()
        .filter(|l| !l.removed && !orphaned.contains(&l.block_hash.unwrap()))
        .cloned()
        .collect();
    // The logs subscription may have started a block after the heads one: its first log
    // (every block has some) says where.
    let logs_from = seen.logs().next().unwrap().block_number.unwrap();
    assert!(logs_from <= first + 1);
    let range = json!([{"fromBlock": quantity(logs_from), "toBlock": quantity(point + 1)}]);
    let served = as_logs(http_result(&url, "eth_getLogs", range).await);
    assert_eq!(final_view, served, "the stream and eth_getLogs agree");

    // Logs moved to another block of the new branch, or vanished.
    let orphan_logs: Vec<&Log> = seen
        .logs()
        .filter(|l| !l.removed && orphaned.contains(&l.block_hash.unwrap()))
        .collect();
    assert!(!orphan_logs.is_empty());
    let mut changed = 0;
    for log in &orphan_logs {
        let now = served
            .iter()
            .find(|l| l.transaction_hash == log.transaction_hash);
        match now {
            None => changed += 1,
            Some(now) if now.block_number != log.block_number => changed += 1,
            Some(now) => assert_ne!(now.block_hash, log.block_hash),
        }
    }
    assert!(changed > 0, "some orphaned transaction moved or vanished");
    let before: HashSet<B256> = seen.events[..fork]
        .iter()
        .filter_map(|e| match e {
            Event::Log(l) => l.transaction_hash,
            Event::Head(_) => None,
        })
        .collect();
    assert!(
        served
            .iter()
            .any(|l| l.block_number.unwrap() >= point - depth
                && !before.contains(&l.transaction_hash.unwrap())),
        "the new branch brings new transactions too"
    );
    assert!(
        !seen.logs().any(|l| l.removed),
        "no removed logs by default, as Anvil"
    );
    assert_eq!(net.reorgs(), 1, "checked before the next reorg");
}

#[tokio::test]
async fn automatic_reorg_of_depth_1() {
    let net = start(reorging(40, 30, 1)).await;
    let (_ws, seen) = watch(&net, 72).await;
    check_reorg(&net, &seen, 70, 1).await;
}

#[tokio::test]
async fn automatic_reorg_of_depth_3() {
    let net = start(reorging(40, 30, 3)).await;
    let (_ws, seen) = watch(&net, 72).await;
    check_reorg(&net, &seen, 70, 3).await;
}

#[tokio::test]
async fn automatic_reorg_of_depth_12() {
    let net = start(reorging(40, 30, 12)).await;
    let (_ws, seen) = watch(&net, 72).await;
    check_reorg(&net, &seen, 70, 12).await;
}

#[tokio::test]
async fn removed_logs_precede_the_new_branch_when_enabled() {
    let net = start(reorging(40, 30, 3)).await;
    net.set_send_removed_logs(true);
    assert!(net.sends_removed_logs());
    let (_ws, seen) = watch(&net, 72).await;
    let fork = seen.fork_at();
    let orphaned: HashSet<B256> = seen.events[..fork]
        .iter()
        .filter_map(|e| match e {
            Event::Head(h) if h.number >= 67 => Some(h.hash),
            _ => None,
        })
        .collect();
    let received: Vec<Log> = seen.events[..fork]
        .iter()
        .filter_map(|e| match e {
            Event::Log(l) if !l.removed && orphaned.contains(&l.block_hash.unwrap()) => {
                Some((**l).clone())
            }
            _ => None,
        })
        .collect();
    let removed: Vec<Log> = seen.logs().filter(|l| l.removed).cloned().collect();
    assert!(!received.is_empty());
    let mut undone: Vec<Log> = removed
        .iter()
        .map(|l| Log {
            removed: false,
            ..l.clone()
        })
        .collect();
    undone.reverse();
    assert_eq!(undone, received, "each received orphaned log, newest first");
    let first_removed = seen
        .events
        .iter()
        .position(|e| matches!(e, Event::Log(l) if l.removed))
        .unwrap();
    let first_new_head = seen.events[fork..]
        .iter()
        .position(|e| matches!(e, Event::Head(_)))
        .unwrap()
        + fork;
    assert!(
        first_removed < first_new_head,
        "removals come before the new branch"
    );
    assert!(
        seen.events[first_removed..first_new_head]
            .iter()
            .all(|e| matches!(e, Event::Log(l) if l.removed))
    );
}

#[tokio::test]
async fn depth_64_reorgs_keep_finalized_blocks() {
    let net = start(DevnetConfig {
        logs_per_block: 2,
        reorg_every: Some(100),
        reorg_depth: 64,
        ..config(10, 200)
    })
    .await;
    assert_eq!((net.safe_depth(), net.finalized_depth()), (64, 80));
    let url = net.http(0);
    let finalized = |v: Value| serde_json::from_value::<Header>(v).unwrap();
    let before =
        finalized(http_result(&url, "eth_getBlockByNumber", json!(["finalized", false])).await);
    assert_eq!(before.number, 200 - 80);
    let (_ws, seen) = watch(&net, 302).await;
    check_reorg(&net, &seen, 300, 64).await;
    let after = header(&url, before.number).await;
    assert_eq!(after, before, "the finalized block never changes");
    let safe_before = seen.heads().find(|h| h.number == 299 - 64).unwrap();
    assert_eq!(
        header(&url, 299 - 64).await.hash,
        safe_before.hash,
        "nor the last safe one"
    );
}

#[tokio::test]
async fn reorgs_are_clamped_by_genesis_and_by_safe_blocks() {
    // Depth 64 on a chain of 20 blocks: only heights 1..=19 can go.
    let net = start(DevnetConfig {
        reorg_every: Some(20),
        reorg_depth: 64,
        ..config(15, 0)
    })
    .await;
    let genesis = header(&net.http(0), 0).await;
    // Block 1 lives 19 block times (285 ms) before the reorg at 20 replaces it.
    let block_one = async {
        assert!(net.wait_for_head(1, WAIT).await);
        net.block(1).unwrap().header.hash
    };
    let ((_ws, seen), old_one) = tokio::join!(watch(&net, 22), block_one);
    let first = seen.heads().next().unwrap().number;
    let new_heads: Vec<u64> = seen.events[seen.fork_at()..]
        .iter()
        .filter_map(|e| match e {
            Event::Head(h) => Some(h.number),
            Event::Log(_) => None,
        })
        .collect();
    assert_eq!(
        new_heads,
        (first..=22).collect::<Vec<_>>(),
        "all it saw, regrown"
    );
    assert_ne!(
        header(&net.http(0), 1).await.hash,
        old_one,
        "down to height 1"
    );
    assert_eq!(header(&net.http(0), 0).await, genesis, "genesis stays");
    assert_eq!(net.reorgs(), 1);

    // A manual reorg deeper than the safe depth stops just above the safe block.
    let frozen = start(config(FROZEN, 100)).await;
    let safe = http_result(
        &frozen.http(1),
        "eth_getBlockByNumber",
        json!(["safe", false]),
    )
    .await;
    let safe: Header = serde_json::from_value(safe).unwrap();
    assert_eq!(frozen.reorg(1_000), safe.number, "clamped");
    assert_eq!(frozen.reorg(1), safe.number, "and nothing more can go");
    assert_eq!(frozen.reorgs(), 1);
    assert_eq!(header(&frozen.http(0), safe.number).await, safe);
}
