//! Every metric Livechain records: one name, one description, one place.
//!
//! Modules record through these constants (`counter!(metrics::EVENTS_STORED, ...)`), so a
//! rename is one edit and `/metrics` documents itself through the descriptions.

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

/// Histogram buckets for durations in seconds: 100 µs to 30 s.
pub const LATENCY_BUCKETS_SECONDS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

/// Histogram buckets for batch sizes in events: 0 (checkpoints and late copies alone) to the
/// writer's largest batch (`ingest::writer::MAX_BATCH`).
pub const BATCH_SIZE_BUCKETS: &[f64] = &[
    0.0, 1.0, 10.0, 100.0, 250.0, 1000.0, 2500.0, 5000.0, 10_000.0, 16_384.0,
];

// RPC to providers.
pub const RPC_REQUESTS: &str = "livechain_rpc_requests_total";
pub const RPC_DURATION: &str = "livechain_rpc_request_duration_seconds";
pub const PROVIDER_MALFORMED: &str = "livechain_provider_malformed_total";
pub const PROVIDER_ERRORS: &str = "livechain_provider_errors_total";
// Ingest.
pub const EVENTS_RECEIVED: &str = "livechain_events_received_total";
pub const EVENTS_DEDUPLICATED: &str = "livechain_events_deduplicated_total";
pub const EVENTS_STORED: &str = "livechain_events_stored_total";
pub const EVENTS_REMOVED: &str = "livechain_events_removed_total";
pub const CACHE_SIZE: &str = "livechain_dedupe_cache_size";
pub const AGGREGATION_DURATION: &str = "livechain_aggregation_duration_seconds";
pub const CACHE_HITS: &str = "livechain_dedupe_cache_hits_total";
pub const CACHE_MISSES: &str = "livechain_dedupe_cache_misses_total";
pub const CACHE_EVICTIONS: &str = "livechain_dedupe_cache_evictions_total";
pub const WRITER_BATCH_SIZE: &str = "livechain_writer_batch_size";
pub const WRITER_BATCH_DURATION: &str = "livechain_writer_batch_duration_seconds";
pub const WRITER_ERRORS: &str = "livechain_writer_errors_total";
pub const WAL_CHECKPOINT_DURATION: &str = "livechain_wal_checkpoint_duration_seconds";
pub const WAL_PAGES: &str = "livechain_wal_pages";
pub const WAL_CEILING_CHECKPOINTS: &str = "livechain_wal_ceiling_checkpoints_total";
pub const WAL_CEILING_PAUSE: &str = "livechain_wal_ceiling_pause_seconds";
pub const CHAIN_HEAD: &str = "livechain_chain_head";
pub const CHAIN_CHECKPOINT: &str = "livechain_chain_checkpoint";
pub const CHAIN_LAG: &str = "livechain_chain_lag_blocks";
pub const BACKFILL_BLOCKS: &str = "livechain_backfill_blocks_total";
pub const REORGS: &str = "livechain_reorgs_total";
pub const REORGS_TOO_DEEP: &str = "livechain_reorgs_too_deep_total";
pub const REORGS_UNCONFIRMED: &str = "livechain_reorgs_unconfirmed_total";
pub const ORPHANS_DROPPED: &str = "livechain_orphans_dropped_total";
pub const PRUNED_EVENTS: &str = "livechain_pruned_events_total";
pub const EVENTS_BELOW_RETENTION: &str = "livechain_events_below_retention_total";
pub const RETAINED_EVENTS: &str = "livechain_retained_events";
pub const RETENTION_LIMIT_EVENTS: &str = "livechain_retention_limit_events";
pub const OLDEST_RETAINED_BLOCK: &str = "livechain_oldest_retained_block";
pub const PRUNE_DURATION: &str = "livechain_prune_duration_seconds";
pub const PRUNE_STEP: &str = "livechain_prune_step_seconds";
pub const DATABASE_SIZE: &str = "livechain_database_size_bytes";
pub const DATABASE_FREE_PAGES: &str = "livechain_database_free_pages";
// Providers and breakers.
pub const BREAKER_STATE: &str = "livechain_breaker_state";
pub const BREAKER_TRANSITIONS: &str = "livechain_breaker_transitions_total";
pub const PROVIDER_HEALTHY: &str = "livechain_provider_healthy";
pub const PROVIDER_LATENCY: &str = "livechain_provider_latency_seconds";
pub const PROVIDER_LAG: &str = "livechain_provider_lag_blocks";
pub const PROVIDER_CONNECTED: &str = "livechain_provider_connected";
pub const PROVIDER_HEALTH_TRANSITIONS: &str = "livechain_provider_health_transitions_total";
pub const BREAKER_CONSECUTIVE_FAILURES: &str = "livechain_breaker_consecutive_failures";
pub const FAILOVERS: &str = "livechain_failovers_total";
pub const HEDGES: &str = "livechain_hedged_requests_total";
pub const WS_RECONNECTS: &str = "livechain_ws_reconnects_total";
pub const PROVIDER_DELIVERED_FIRST: &str = "livechain_provider_delivered_first_total";
pub const PROVIDER_DELIVERED_LATE: &str = "livechain_provider_delivered_late_total";
pub const PROVIDER_MISSED: &str = "livechain_provider_missed_total";
// The JSON-RPC gateway.
pub const GATEWAY_REQUESTS: &str = "livechain_gateway_requests_total";
pub const GATEWAY_DURATION: &str = "livechain_gateway_request_duration_seconds";
pub const GATEWAY_RETRIES: &str = "livechain_gateway_retries_total";
pub const GATEWAY_FAILOVERS: &str = "livechain_gateway_failovers_total";
pub const GATEWAY_WS_CUT_OFF: &str = "livechain_gateway_ws_cut_off_total";
pub const GATEWAY_RATE_LIMITED: &str = "livechain_gateway_rate_limited_total";
pub const DYNAMIC_FILTERS: &str = "livechain_dynamic_log_filters";
pub const GATEWAY_CACHE_BYTES: &str = "livechain_gateway_cache_bytes";
// Registry.
pub const PROCESS_RESTARTS: &str = "livechain_process_restarts_total";
// API and live streams.
pub const HTTP_REQUESTS: &str = "livechain_http_requests_total";
pub const STREAM_CONNECTIONS: &str = "livechain_stream_connections";
pub const RUNTIME_TASKS: &str = "livechain_runtime_tasks";
pub const SQLITE_MEMORY: &str = "livechain_sqlite_memory_bytes";
pub const STREAM_LAGGED: &str = "livechain_stream_lagged_total";
pub const STREAM_CATCHUPS: &str = "livechain_stream_catchups_total";
pub const API_REFUSED: &str = "livechain_api_refused_total";
pub const API_TIMEOUTS: &str = "livechain_api_timeouts_total";
pub const STREAM_REFUSED: &str = "livechain_stream_refused_total";
pub const GATEWAY_WS_REFUSED: &str = "livechain_gateway_ws_refused_total";

/// The `depth` label of [`REORGS`]: reorganisation depths in blocks, bucketed.
pub const REORG_DEPTH_BUCKETS: [&str; 5] = ["1", "2-4", "5-16", "17-64", "65+"];

/// The `kind` label of [`PROCESS_RESTARTS`]: every kind of supervised process.
pub const PROCESS_KINDS: [&str; 6] = [
    "listener",
    "pipeline",
    "monitor",
    "race",
    "publisher",
    "retention",
];

/// The breaker transitions a provider can make, as `(from, to)` labels.
const BREAKER_MOVES: [(&str, &str); 4] = [
    ("closed", "open"),
    ("open", "half_open"),
    ("half_open", "closed"),
    ("half_open", "open"),
];

/// Creates, at 0, every counter series whose labels are known at start, so a query or an
/// alert on one finds 0 instead of nothing until its first increment. Series labelled by
/// something only traffic reveals (a JSON-RPC method, an API route and status) are left out.
pub fn zero_global_series() {
    use metrics::counter;
    for kind in ["full", "locked", "io", "read_only", "other"] {
        counter!(WRITER_ERRORS, "kind" => kind).increment(0);
    }
    counter!(STREAM_LAGGED).increment(0);
    counter!(STREAM_CATCHUPS).increment(0);
    for kind in ["header", "idle", "body", "query"] {
        counter!(API_TIMEOUTS, "kind" => kind).increment(0);
    }
    for reason in ["full", "per_client"] {
        counter!(STREAM_REFUSED, "reason" => reason).increment(0);
        counter!(GATEWAY_WS_REFUSED, "reason" => reason).increment(0);
    }
    for kind in PROCESS_KINDS {
        counter!(PROCESS_RESTARTS, "kind" => kind).increment(0);
    }
}

/// [`zero_global_series`] for one chain and its providers' ids.
pub fn zero_chain_series(chain: &str, providers: &[String]) {
    use metrics::counter;
    let c = || ("chain", chain.to_owned());
    for name in [
        EVENTS_DEDUPLICATED,
        EVENTS_REMOVED,
        CACHE_HITS,
        CACHE_MISSES,
        CACHE_EVICTIONS,
        BACKFILL_BLOCKS,
        REORGS_TOO_DEEP,
        REORGS_UNCONFIRMED,
        ORPHANS_DROPPED,
        PRUNED_EVENTS,
        EVENTS_BELOW_RETENTION,
    ] {
        counter!(name, &[c()]).increment(0);
    }
    for kind in ["block", "log"] {
        counter!(EVENTS_STORED, &[c(), ("kind", kind.to_owned())]).increment(0);
    }
    for depth in REORG_DEPTH_BUCKETS {
        counter!(REORGS, &[c(), ("depth", depth.to_owned())]).increment(0);
    }
    for provider in providers {
        let p = ("provider", provider.clone());
        for name in [
            EVENTS_RECEIVED,
            PROVIDER_MALFORMED,
            WS_RECONNECTS,
            HEDGES,
            PROVIDER_DELIVERED_FIRST,
            PROVIDER_DELIVERED_LATE,
            PROVIDER_MISSED,
        ] {
            counter!(name, &[c(), p.clone()]).increment(0);
        }
        for (from, to) in BREAKER_MOVES {
            let labels = [
                c(),
                p.clone(),
                ("from", from.to_owned()),
                ("to", to.to_owned()),
            ];
            counter!(BREAKER_TRANSITIONS, &labels).increment(0);
        }
        for other in providers.iter().filter(|o| *o != provider) {
            counter!(FAILOVERS, &[c(), ("from", other.clone()), p.clone()]).increment(0);
        }
    }
}

/// Registers every description with the installed recorder.
// One declarative list, kept whole past the usual function length: every metric is described in
// one place, read top to bottom.
pub fn describe_all() {
    describe_counter!(
        RPC_REQUESTS,
        "JSON-RPC requests sent to providers, by chain, provider, method and outcome"
    );
    describe_histogram!(
        RPC_DURATION,
        Unit::Seconds,
        "JSON-RPC request duration, by chain, provider and method"
    );
    describe_counter!(
        PROVIDER_ERRORS,
        "Errors met talking to a provider (HTTP calls and its WebSocket), by chain, provider and class (connect, transport, closed, timeout, http_status, malformed, rate_limited, range, fault, missing, caller)"
    );
    describe_counter!(
        PROVIDER_MALFORMED,
        "Provider messages that did not parse and were dropped, by chain and provider"
    );
    describe_counter!(
        EVENTS_RECEIVED,
        "Events received from providers (every copy), by chain and provider"
    );
    describe_counter!(
        EVENTS_DEDUPLICATED,
        "Event copies recognised as already seen, by chain"
    );
    describe_counter!(EVENTS_STORED, "Unique events committed, by chain and kind");
    describe_counter!(EVENTS_REMOVED, "Events retracted by reorgs, by chain");
    describe_counter!(
        PROVIDER_DELIVERED_FIRST,
        "Live events a provider delivered before any other, by chain and provider"
    );
    describe_counter!(
        PROVIDER_DELIVERED_LATE,
        "Live events a provider delivered after another had, by chain and provider"
    );
    describe_counter!(
        PROVIDER_MISSED,
        "Live events a provider never delivered within the dedupe window, by chain and provider"
    );
    describe_gauge!(CACHE_SIZE, "Keys in the dedupe hot set, by chain");
    describe_histogram!(
        AGGREGATION_DURATION,
        Unit::Seconds,
        "Time the aggregator takes over one input (`input=live`: a provider's notifications of one block; `range`: a range the range sync read), waits for room in the writer's queue included, by chain"
    );
    describe_counter!(CACHE_HITS, "Dedupe hot-set hits, by chain");
    describe_counter!(CACHE_MISSES, "Dedupe hot-set misses, by chain");
    describe_counter!(CACHE_EVICTIONS, "Dedupe hot-set evictions, by chain");
    describe_histogram!(WRITER_BATCH_SIZE, "Events per writer transaction");
    describe_histogram!(
        WRITER_BATCH_DURATION,
        Unit::Seconds,
        "Writer transaction duration"
    );
    describe_counter!(
        WRITER_ERRORS,
        "Writer transactions that failed and were retried, by kind of fault"
    );
    describe_histogram!(
        WAL_CHECKPOINT_DURATION,
        Unit::Seconds,
        "WAL checkpoint duration (run beside the writer, not in its commits)"
    );
    describe_gauge!(
        WAL_PAGES,
        "Pages in the SQLite write-ahead log at the last checkpoint"
    );
    describe_counter!(
        WAL_CEILING_CHECKPOINTS,
        "Checkpoints the writer ran itself because the WAL had passed database.max_wal_mb"
    );
    describe_histogram!(
        WAL_CEILING_PAUSE,
        Unit::Seconds,
        "How long each of those checkpoints held the writer"
    );
    describe_gauge!(CHAIN_HEAD, "Best head block number seen, by chain");
    describe_gauge!(CHAIN_CHECKPOINT, "Last fully processed block, by chain");
    describe_gauge!(CHAIN_LAG, "Head minus checkpoint, by chain");
    describe_counter!(BACKFILL_BLOCKS, "Blocks filled over HTTP, by chain");
    describe_counter!(
        REORGS,
        "Reorganisations detected, by chain and depth bucket"
    );
    describe_counter!(
        REORGS_TOO_DEEP,
        "Reorganisations deeper than the kept window, recovered by re-backfilling, by chain"
    );
    describe_counter!(
        REORGS_UNCONFIRMED,
        "Chains a provider reported that the other providers contradicted (lagging, not a reorg), by chain"
    );
    describe_counter!(
        ORPHANS_DROPPED,
        "Live copies of orphaned blocks and logs at checkpointed heights dropped, by chain"
    );
    describe_counter!(PRUNED_EVENTS, "Events deleted by retention, by chain");
    describe_counter!(
        EVENTS_BELOW_RETENTION,
        "Events delivered below a chain's retention mark and dropped, by chain"
    );
    describe_gauge!(
        RETAINED_EVENTS,
        "Events held for a chain with a retention limit"
    );
    describe_gauge!(
        RETENTION_LIMIT_EVENTS,
        "A chain's retention.max_events (compare with livechain_retained_events)"
    );
    describe_gauge!(
        OLDEST_RETAINED_BLOCK,
        "Lowest block still held for a chain with a retention limit"
    );
    describe_histogram!(
        PRUNE_DURATION,
        Unit::Seconds,
        "Duration of one retention pass of a chain (all its prune steps)"
    );
    describe_histogram!(
        PRUNE_STEP,
        Unit::Seconds,
        "How long one retention prune step held the writer, by chain"
    );
    describe_gauge!(
        DATABASE_SIZE,
        Unit::Bytes,
        "Size of the SQLite database on disk: main file and WAL"
    );
    describe_gauge!(
        DATABASE_FREE_PAGES,
        "Pages of the database file that are free (pruned, not yet reused or returned)"
    );
    describe_gauge!(
        BREAKER_STATE,
        "Breaker state by chain and provider: 0 closed, 1 half-open, 2 open"
    );
    describe_counter!(
        BREAKER_TRANSITIONS,
        "Breaker transitions, by chain, provider, from and to"
    );
    describe_gauge!(PROVIDER_HEALTHY, "1 when the provider is healthy, else 0");
    describe_histogram!(
        PROVIDER_LATENCY,
        Unit::Seconds,
        "Provider latency, by chain and provider"
    );
    describe_gauge!(PROVIDER_LAG, "Blocks the provider is behind the best head");
    describe_gauge!(
        PROVIDER_CONNECTED,
        "1 while the provider's WebSocket stream is connected, 0 when not"
    );
    describe_counter!(
        PROVIDER_HEALTH_TRANSITIONS,
        "Providers turning unhealthy (`to=unhealthy`, `reason` why) or healthy again (`to=healthy`, `reason` why it was not), by chain and provider"
    );
    describe_gauge!(
        BREAKER_CONSECUTIVE_FAILURES,
        "Failures in a row the provider's breaker counts now"
    );
    describe_counter!(
        FAILOVERS,
        "HTTP requests answered by another provider than the one preferred (`from`), by chain and answering provider"
    );
    describe_counter!(
        HEDGES,
        "Range batches sent to a second provider because the first was slow to answer, by chain and slow provider"
    );
    describe_counter!(
        WS_RECONNECTS,
        "WebSocket reconnects to providers, by chain and provider"
    );
    describe_counter!(
        GATEWAY_REQUESTS,
        "Calls through /rpc/{chain}, by chain, method (`other` outside the standard set), answering provider and outcome (ok, caller_error, provider_error, unavailable, maybe_sent, refused, invalid)"
    );
    describe_histogram!(
        GATEWAY_DURATION,
        Unit::Seconds,
        "Time to answer one /rpc/{chain} body, by chain and method (`batch` for batches)"
    );
    describe_counter!(
        GATEWAY_RETRIES,
        "Gateway calls passed on from a provider to the next, by chain, provider and reason"
    );
    describe_counter!(
        GATEWAY_FAILOVERS,
        "Gateway calls answered by another provider than the first asked (`from`), by chain and answering provider"
    );
    describe_counter!(
        GATEWAY_RATE_LIMITED,
        "Gateway WebSocket calls answered -32005 for going over gateway.ws_calls_per_second on their connection, by chain"
    );
    describe_counter!(
        GATEWAY_WS_CUT_OFF,
        "Gateway WebSocket callers cut off for not keeping up, by chain and reason (queue_full, write_timeout, lagged)"
    );
    describe_gauge!(
        GATEWAY_CACHE_BYTES,
        Unit::Bytes,
        "Bytes of final answers the gateway keeps, by chain (their hits: livechain_gateway_requests_total{provider=\"cache\"})"
    );
    describe_gauge!(
        DYNAMIC_FILTERS,
        "Log filters the chain follows for gateway subscribers beyond its configured subscriptions, by chain"
    );
    describe_counter!(PROCESS_RESTARTS, "Supervised task restarts, by kind");
    describe_counter!(HTTP_REQUESTS, "API requests, by route and status");
    describe_gauge!(STREAM_CONNECTIONS, "Open /v1/stream WebSocket connections");
    describe_gauge!(
        RUNTIME_TASKS,
        "Tasks alive in the service's tokio runtime, read at each scrape"
    );
    describe_gauge!(
        SQLITE_MEMORY,
        Unit::Bytes,
        "Heap memory SQLite holds across every connection (page caches, schemas, prepared statements), read at each scrape"
    );
    describe_counter!(
        API_REFUSED,
        "API requests refused by the access rules (server.auth_token, server.public), by reason (unauthorized, forbidden)"
    );
    describe_counter!(
        API_TIMEOUTS,
        "API connections closed for sending no complete request headers within server.header_timeout (kind header: slow or silent clients), HTTP/2 connections with no request in flight for server.header_timeout (kind idle), requests whose body took longer than server.body_timeout (kind body), /v1/events pages stopped at server.query_timeout (kind query)"
    );
    describe_counter!(
        STREAM_CATCHUPS,
        "Stream subscribers that fell behind the live feed and caught up from the database"
    );
    describe_counter!(
        STREAM_LAGGED,
        "Stream subscribers told they lagged and closed"
    );
    describe_counter!(
        STREAM_REFUSED,
        "Stream connections refused, by reason: full (server.max_stream_sessions open) or per_client (the client's server.max_stream_sessions_per_client open)"
    );
    describe_counter!(
        GATEWAY_WS_REFUSED,
        "Gateway WebSocket connections refused, by reason: full (gateway.max_ws_sessions open) or per_client (the client's gateway.max_ws_sessions_per_client open)"
    );
}
