//! The block producer: advances the head (an automatic reorg is one step) and hands each new
//! head to every open connection of every provider.
//!
//! Timed mode ticks at the block time and never waits on a client: a connection whose queue is
//! full is disconnected. Throughput mode produces the next block as soon as every connection
//! has room for it — the bounded queues are the back-pressure — and idles while nobody is
//! subscribed, so it neither spins a core nor races the head away.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::error::TrySendError;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::state::{Mode, Notice, ProviderState, Shared, THROUGHPUT_STALL_TIMEOUT};

/// How often an idle throughput producer re-checks for subscribers, should a wake-up be missed.
const IDLE_POLL: Duration = Duration::from_millis(100);

pub(crate) async fn run(shared: Arc<Shared>, shutdown: CancellationToken) {
    match shared.mode {
        Mode::Timed(period) => timed(&shared, period, &shutdown).await,
        Mode::Throughput => throughput(&shared, &shutdown).await,
    }
    tracing::debug!(head = shared.chain.head(), "devnet: producer stopped");
}

async fn timed(shared: &Shared, period: Duration, shutdown: &CancellationToken) {
    let mut ticks = tokio::time::interval_at(Instant::now() + period, period);
    // After a stall (a suspended laptop, a starved runtime) resume at the normal pace rather
    // than bursting the missed blocks out at once.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let notice = step(shared);
        for provider in &shared.providers {
            for (id, conn) in provider.connections() {
                match conn.notices.try_send(notice.clone()) {
                    Ok(()) => {}
                    Err(TrySendError::Full(_)) => {
                        tracing::warn!(
                            provider = provider.index,
                            connection = id,
                            queued_blocks = shared.mode.queue_blocks(),
                            "devnet: websocket client too slow; disconnecting"
                        );
                        disconnect(provider, id, &conn.kick);
                    }
                    Err(TrySendError::Closed(_)) => provider.unregister(id),
                }
            }
        }
    }
}

async fn throughput(shared: &Shared, shutdown: &CancellationToken) {
    loop {
        // Idle while nobody listens. The `Notified` is created before the check, so an add
        // between the check and the wait still wakes us; the poll is a second safety net.
        while shared.total_subscriptions() == 0 {
            let added = shared.subscriber_arrived.notified();
            if shared.total_subscriptions() > 0 {
                break;
            }
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                () = added => {}
                () = tokio::time::sleep(IDLE_POLL) => {}
            }
        }
        let notice = step(shared);
        for provider in &shared.providers {
            for (id, conn) in provider.connections() {
                let send = tokio::time::timeout(
                    THROUGHPUT_STALL_TIMEOUT,
                    conn.notices.send(notice.clone()),
                );
                let sent = tokio::select! {
                    biased;
                    () = shutdown.cancelled() => return,
                    sent = send => sent,
                };
                match sent {
                    Ok(Ok(())) => {}
                    Ok(Err(_closed)) => provider.unregister(id),
                    Err(_elapsed) => {
                        tracing::warn!(
                            provider = provider.index,
                            connection = id,
                            stalled_for = ?THROUGHPUT_STALL_TIMEOUT,
                            "devnet: websocket client stopped reading; disconnecting"
                        );
                        disconnect(provider, id, &conn.kick);
                    }
                }
            }
        }
        // Sends into queues with room complete at once; yield so connections get to run even
        // on a single-threaded runtime.
        tokio::task::yield_now().await;
    }
}

/// Advances the chain by one step.
fn step(shared: &Shared) -> Notice {
    let advanced = shared.chain.advance();
    if let Some(depth) = advanced.reorg_depth {
        tracing::info!(
            depth,
            head = advanced.tip.number(),
            "devnet: automatic reorg"
        );
    }
    let produced_at = Instant::now();
    shared.record_emission(advanced.tip.number(), produced_at.into_std());
    Notice {
        block: advanced.tip,
        produced_at,
    }
}

fn disconnect(provider: &ProviderState, id: u64, kick: &CancellationToken) {
    kick.cancel();
    provider.unregister(id);
}
