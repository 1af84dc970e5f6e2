//! The daemon's broadcast planner: it plans what was asked for, here or by
//! `causeway broadcast` through the store, and keeps the metrics of recent
//! broadcasts current.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

/// How often the planner looks for broadcasts asked for by another process.
const POLL: Duration = Duration::from_secs(1);
/// How many recent broadcasts keep their series in the metrics.
const METRIC_RECENT: u32 = 20;

/// Plan the broadcasts asked for (by this process or another: the command
/// line writes its requests into the store) until shutdown, and keep the
/// metrics of recent ones current.
pub async fn run(router: Arc<crate::router::Router>, mut shutdown: watch::Receiver<bool>) {
    let mut shown: HashSet<String> = HashSet::new();
    loop {
        router.plan_broadcasts().await;
        update_metrics(&router, &mut shown).await;
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = router.broadcast_requested() => {}
            _ = tokio::time::sleep(POLL) => {}
        }
    }
}

async fn update_metrics(router: &crate::router::Router, shown: &mut HashSet<String>) {
    let Ok(recent) = router.store().broadcasts(None, METRIC_RECENT).await else { return };
    let metrics = router.metrics();
    let now: HashSet<String> = recent.iter().filter(|s| s.event_id.is_some()).map(|s| s.requested.id.clone()).collect();
    for gone in shown.difference(&now) {
        for state in ["delivered", "pending", "failed", "unreachable"] {
            metrics.broadcast_recipients.remove(&crate::metrics::BroadcastLabel { broadcast: gone.clone(), state: state.to_string() });
        }
    }
    for s in recent.iter().filter(|s| s.event_id.is_some()) {
        let c = s.counts;
        for (state, n) in [("delivered", c.delivered), ("pending", c.pending), ("failed", c.failed), ("unreachable", c.unreachable)] {
            let label = crate::metrics::BroadcastLabel { broadcast: s.requested.id.clone(), state: state.to_string() };
            metrics.broadcast_recipients.get_or_create(&label).set(n as i64);
        }
    }
    *shown = now;
}
