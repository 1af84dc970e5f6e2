//! Outbox workers: one lane per receiving link delivers that link's rows in
//! order (so order is kept per portal and target, while links run in
//! parallel), retries transient failures with exponential backoff and
//! jitter, and turns permanent failures into dead letters.
//!
//! A delivered row is confirmed to the store by a separate task in groups;
//! if Causeway dies before that, the row is delivered again with the same
//! delivery id, which the target network uses to drop the repeat.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use causeway_core::retry::backoff;
use causeway_core::{Body, Delivery, DeliveryError, Event, degrade, now_ms};
use tokio::sync::{mpsc, watch};

use crate::cluster::{Ownership, bridge_lease, lost, next_holding};
use crate::config::OutboxConfig;
use crate::metrics::{self, Metrics};
use crate::router::Router;
use crate::store::{Completion, OutboxItem, Store};
use crate::topology::{LANE_BATCH, LaneFeed, Link, Topology};

/// Deliveries whose ids a lane remembers before they are confirmed in the
/// store (a reply right after its original needs the original's id).
const RECENT: usize = 1024;
/// How often a delivery looks again for its bridge while it does not run.
const BRIDGE_AWAITED: Duration = Duration::from_millis(200);
/// Typing notifications older than this are not delivered.
const EPHEMERAL_MAX_AGE_MS: i64 = 60_000;

pub struct Outbox {
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    router: Arc<Router>,
    topology: Arc<Topology>,
    config: OutboxConfig,
    completions: mpsc::Sender<Completion>,
    /// The newest row when this process started: rows up to it may have
    /// been sent by the run before, which could not record it.
    earlier_run: tokio::sync::OnceCell<i64>,
    /// Which bridges' deliveries are this instance's (docs/scale-out.md).
    ownership: Ownership,
}

impl Outbox {
    /// Start the completion writer and one lane per receiving link. The
    /// returned handle finishes once every lane has stopped and every
    /// confirmation is written.
    pub fn start(
        store: Arc<dyn Store>,
        metrics: Arc<Metrics>,
        router: Arc<Router>,
        config: OutboxConfig,
        ownership: Ownership,
        shutdown: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let (tx, rx) = mpsc::channel(4096);
        let completer = tokio::spawn(complete(store.clone(), metrics.clone(), rx));
        let topology = router.topology().clone();
        let (now, mut added) = topology.take_lanes();
        let outbox =
            Arc::new(Outbox { store, metrics, router, topology, config, completions: tx, earlier_run: Default::default(), ownership });
        let mut lanes = Vec::new();
        for (link, feed) in now {
            lanes.push(tokio::spawn(outbox.clone().held_lane(link, feed, shutdown.clone())));
        }
        tokio::spawn(outbox.clone().watch_foreign(shutdown.clone()));
        let mut stop = shutdown.clone();
        tokio::spawn(async move {
            // Lanes of direct conversations opened from now on.
            loop {
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => break,
                    Some((link, feed)) = added.recv() => {
                        lanes.push(tokio::spawn(outbox.clone().held_lane(link, feed, shutdown.clone())));
                    }
                }
            }
            drop(outbox);
            for l in lanes {
                let _ = l.await;
            }
            let _ = completer.await;
        })
    }

    /// Rows queued by another process (`causeway outbox retry`) wake their lanes.
    async fn watch_foreign(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut seen = self.store.max_outbox_seq().await.unwrap_or(0);
        // Other instances' rows: told at once by the store when it can tell.
        let told = self.ownership.foreign_rows().unwrap_or_default();
        let mut look = tokio::time::interval(Duration::from_secs(2));
        look.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        look.tick().await;
        loop {
            // A hint wakes the lanes only; the gauges are counted at the looks.
            let looked = tokio::select! {
                _ = shutdown.changed() => return,
                _ = told.notified() => false,
                _ = look.tick() => true,
            };
            match self.store.lanes_after(seen).await {
                Ok(lanes) => {
                    for (bridge, room, max) in lanes {
                        self.topology.wake(&Link { bridge, room });
                        seen = seen.max(max);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot check the outbox for new rows"),
            }
            // The gauges count in memory; rows changed by another process
            // (a retried dead letter) are only seen here.
            if !looked {
                continue;
            }
            if let Ok(depths) = self.store.outbox_depths().await {
                for bridge in self.router.bridges().keys() {
                    let d = depths.get(bridge).cloned().unwrap_or_default();
                    let b = metrics::bridge(bridge);
                    self.metrics.outbox_depth.get_or_create(&b).set(d.pending as i64);
                    self.metrics.dead_letter_depth.get_or_create(&b).set(d.dead as i64);
                }
            }
        }
    }

    /// Run `link`'s lane while this instance holds its bridge's lease: it
    /// stops the moment the lease is lost (a delivery under way is
    /// abandoned, to be made again, with its id, by the next holder) and
    /// starts again, from the store, when it is taken again.
    async fn held_lane(self: Arc<Self>, link: Link, feed: Arc<LaneFeed>, mut shutdown: watch::Receiver<bool>) {
        let mut held = self.ownership.watch(&bridge_lease(&link.bridge));
        while let Some(epoch) = next_holding(&mut held, &mut shutdown).await {
            // Rows up to here may have been sent by the one before (the run
            // before, or the instance that held the lease); unknown counts
            // as "maybe sent": a look too many, never a double.
            let earlier = if self.ownership.is_shared() {
                self.store.max_outbox_seq().await.unwrap_or(i64::MAX)
            } else {
                *self.earlier_run.get_or_init(|| async { self.store.max_outbox_seq().await.unwrap_or(i64::MAX) }).await
            };
            tokio::select! {
                _ = self.clone().lane(link.clone(), feed.clone(), earlier, shutdown.clone()) => return,
                _ = lost(&mut held, epoch) => {
                    tracing::info!(bridge = %link.bridge, room = %link.room, "lane paused: another instance holds the bridge");
                }
            }
        }
    }

    async fn lane(self: Arc<Self>, link: Link, feed: Arc<LaneFeed>, earlier: i64, mut shutdown: watch::Receiver<bool>) {
        let mut pace = (link.room == causeway_core::PEOPLE_ROOM).then(|| Pace::new(&self.router, &link.bridge));
        let mut last_seq = 0;
        let mut recent = Recent::default();
        // Start from the store: rows left from before, or committed before
        // the lane ran.
        let mut read = true;
        loop {
            if *shutdown.borrow() {
                return;
            }
            if feed.is_closed() {
                self.retire(&link).await;
                return;
            }
            let (handed, wake) = feed.take();
            let items: Vec<OutboxItem> = if read || wake {
                // What was handed over is in the store too.
                match self.store.pending(&link.bridge, &link.room, last_seq, LANE_BATCH).await {
                    Ok(items) => {
                        // A full batch may have more behind it.
                        read = items.len() as u64 >= u64::from(LANE_BATCH);
                        items
                    }
                    Err(e) => {
                        tracing::error!(bridge = %link.bridge, room = %link.room, error = %e, "cannot read the outbox");
                        read = true;
                        tokio::select! {
                            _ = shutdown.changed() => return,
                            _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        }
                    }
                }
            } else {
                handed.into()
            };
            if items.is_empty() {
                // Anything committed from now on notifies the lane (the
                // permit waits if the lane is not waiting yet).
                tokio::select! {
                    _ = shutdown.changed() => return,
                    _ = feed.woken() => {}
                }
                continue;
            }
            for item in items {
                // Rows read from the store may come again in the hand-over.
                if item.seq <= last_seq || feed.is_closed() {
                    continue;
                }
                let seq = item.seq;
                if let Some(pace) = &mut pace
                    && !pace.wait(&mut shutdown).await
                {
                    return;
                }
                if !self.deliver(&link, &feed, item, earlier, &mut recent, &mut shutdown).await {
                    return;
                }
                last_seq = seq;
            }
        }
    }

    /// A link left its portal: what is still pending for it becomes dead
    /// letters (retried from the outbox once the room is linked again, or
    /// dropped), so nothing waits unseen.
    async fn retire(&self, link: &Link) {
        let why = "the room was taken out of its portal before this was delivered";
        loop {
            let rows = match self.store.pending(&link.bridge, &link.room, 0, LANE_BATCH).await {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::error!(bridge = %link.bridge, room = %link.room, error = %e, "cannot read the outbox of a removed link");
                    return;
                }
            };
            if rows.is_empty() {
                break;
            }
            for row in rows {
                self.dead_letter(row.seq, row.attempts, why, link, &row.event).await;
            }
        }
        tracing::info!(bridge = %link.bridge, room = %link.room, "lane stopped: the room left its portal");
    }

    /// The event's references, as ids of the target room.
    async fn translate(&self, body: Body, link: &Link, recent: &Recent) -> Result<Body<Option<String>>, String> {
        let mut ids = HashMap::new();
        for r in body.refs() {
            let id = match recent.get(r) {
                Some(id) => Some(id.to_string()),
                None => self.store.remote_for(r, &link.bridge, &link.room).await.map_err(|e| e.to_string())?,
            };
            ids.insert(r.clone(), id);
        }
        // `Some(…)` everywhere: an unknown reference is for `degrade` to judge.
        Ok(body.map_refs(|r| Some(ids.remove(&r).flatten())).expect("every reference is Some"))
    }

    /// Deliver one row, retrying until it is delivered, skipped or dead.
    /// Returns false when shutting down.
    ///
    /// One piece (over 80 lines): the retry loop, its outcomes (delivered,
    /// skipped, retried, dead) and their metrics read together; each outcome is
    /// one arm.
    async fn deliver(
        &self,
        link: &Link,
        feed: &LaneFeed,
        item: OutboxItem,
        earlier: i64,
        recent: &mut Recent,
        shutdown: &mut watch::Receiver<bool>,
    ) -> bool {
        let label = metrics::bridge(&link.bridge);
        let OutboxItem { seq, delivery_id, mut attempts, enqueued_ms, mut first_failed_ms, recipient, event } = item;
        let done = |remote_id: Option<String>| Completion {
            seq,
            delivery_id: delivery_id.clone(),
            event_id: event.id.clone(),
            bridge: link.bridge.clone(),
            room: link.room.clone(),
            remote_id,
        };
        // Standing by for another bridge on the same rooms: its copy, if it
        // comes within the wait, is this delivery.
        if let (Some(wait), Some(origin)) = (self.router.standby, event.origin.remote_id.as_deref())
            && event.body.is_said()
            && !(event.origin.bridge == link.bridge && event.origin.room == link.room)
        {
            let left = (enqueued_ms + wait.as_millis() as i64 - now_ms()).max(0);
            if left > 0 && !pause(Duration::from_millis(left as u64), shutdown).await {
                return false;
            }
            if let Some(copy) = self.router.copy_elsewhere(link, origin) {
                tracing::debug!(bridge = %link.bridge, room = %link.room, delivery = %delivery_id, "relayed there by another bridge; not again");
                recent.insert(event.id.clone(), copy.clone().unwrap_or_else(|| delivery_id.clone()));
                self.metrics.skipped.get_or_create(&label).inc();
                let _ = self.completions.send(done(copy)).await;
                return true;
            }
        }
        loop {
            // Taken at each attempt: a reload may have replaced the bridge
            // (the delivery waits while it restarts) or removed it (a
            // direct conversation's room: the row waits for its return).
            let Some(bridge) = self.router.bridge(&link.bridge) else {
                feed.failed(now_ms(), "the bridge is not running");
                if !pause(BRIDGE_AWAITED, shutdown).await {
                    return false;
                }
                if feed.is_closed() {
                    // Left pending: the lane's retirement makes it a dead letter.
                    return true;
                }
                continue;
            };
            let age_ms = now_ms() - enqueued_ms;
            let translated = match self.translate(event.body.clone(), link, recent).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(error = %e, "cannot translate references; retrying");
                    if !pause(Duration::from_secs(1), shutdown).await {
                        return false;
                    }
                    continue;
                }
            };
            let caps = crate::router::people_or_room(bridge.as_ref(), &link.room);
            let policy = bridge.degrade_for(&link.room, event.body.kind(), self.topology.degrade_of(link));
            let body = degrade(translated, &caps, policy).filter(|b| !(b.is_ephemeral() && age_ms > EPHEMERAL_MAX_AGE_MS));
            let Some(body) = body else {
                self.metrics.skipped.get_or_create(&label).inc();
                let _ = self.completions.send(done(None)).await;
                return true;
            };
            let stands_for =
                (!matches!(event.body, Body::Message { .. }) && matches!(body, Body::Message { .. })).then(|| event.body.kind());
            let delivery = Delivery {
                id: delivery_id.clone(),
                room: link.room.clone(),
                attempt: attempts + 1,
                recipient: recipient.clone(),
                maybe_sent: attempts > 0 || seq <= earlier,
                stands_for,
                event: Event {
                    id: event.id.clone(),
                    portal: event.portal.clone(),
                    origin: event.origin.clone(),
                    sender: event.sender.clone(),
                    at_ms: event.at_ms,
                    body,
                },
            };
            if attempts > 0 {
                self.metrics.retries.get_or_create(&label).inc();
            }
            let attempt = tokio::time::timeout(self.config.delivery_timeout, bridge.deliver(&delivery)).await.unwrap_or_else(|_| {
                Err(DeliveryError::transient(format!("no answer within {:?} (outbox.delivery_timeout)", self.config.delivery_timeout)))
            });
            match attempt {
                Ok(d) => {
                    let remote = d.remote_id.clone().unwrap_or_else(|| delivery_id.clone());
                    recent.insert(event.id.clone(), remote);
                    self.metrics.delivered.get_or_create(&label).inc();
                    let latency_ms = (now_ms() - enqueued_ms).max(0);
                    self.metrics.delivered_after(latency_ms as u64);
                    let latency = latency_ms as f64 / 1000.0;
                    self.metrics.delivery_latency.get_or_create(&label).observe(latency);
                    feed.delivered(now_ms());
                    let _ = self.completions.send(done(d.remote_id)).await;
                    return true;
                }
                Err(DeliveryError::Transient { reason, retry_after }) => {
                    attempts += 1;
                    feed.failed(now_ms(), &reason);
                    if feed.is_closed() {
                        // Left pending: the lane's retirement makes it a dead letter.
                        let _ = self.store.record_failure(seq, attempts, now_ms(), &reason).await;
                        return true;
                    }
                    self.metrics.failed.get_or_create(&metrics::reason(&link.bridge, "transient")).inc();
                    // Counted from the first failure: a row that waited
                    // behind an outage still gets its full time.
                    let failing_since = *first_failed_ms.get_or_insert_with(now_ms);
                    if now_ms() - failing_since > self.config.give_up_after.as_millis() as i64 {
                        let why = format!("gave up after {attempts} attempts: {reason}");
                        self.dead_letter(seq, attempts, &why, link, &event).await;
                        return true;
                    }
                    let delay = backoff(attempts, self.config.retry_initial, self.config.retry_max)
                        .max(retry_after.unwrap_or_default().min(self.config.retry_max));
                    tracing::warn!(
                        bridge = %link.bridge, room = %link.room, delivery = %delivery_id, attempts,
                        retry_in_ms = delay.as_millis() as u64, "delivery failed: {reason}"
                    );
                    let next = now_ms() + delay.as_millis() as i64;
                    if let Err(e) = self.store.record_failure(seq, attempts, next, &reason).await {
                        tracing::warn!(error = %e, "cannot record the failed attempt");
                    }
                    if !pause(delay, shutdown).await {
                        return false;
                    }
                }
                Err(DeliveryError::Permanent { reason }) => {
                    attempts += 1;
                    feed.failed(now_ms(), &reason);
                    self.metrics.failed.get_or_create(&metrics::reason(&link.bridge, "permanent")).inc();
                    self.dead_letter(seq, attempts, &reason, link, &event).await;
                    return true;
                }
            }
        }
    }

    async fn dead_letter(&self, seq: i64, attempts: u32, reason: &str, link: &Link, event: &Event) {
        tracing::error!(bridge = %link.bridge, room = %link.room, seq, attempts, "dead letter: {reason}");
        let label = metrics::bridge(&link.bridge);
        self.metrics.dead_letters.get_or_create(&label).inc();
        self.metrics.dead_letter_depth.get_or_create(&label).inc();
        self.metrics.outbox_depth.get_or_create(&label).dec();
        // Until it is recorded the row is still pending, and would be tried
        // again after a restart: better than losing it.
        while let Err(e) = self.store.dead_letter(seq, attempts, reason).await {
            tracing::error!(error = %e, "cannot record the dead letter; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        if let Some((origin, text)) = self.router.dead_letter_notice(link, event, reason) {
            // Not waited for: the lane goes on; the notice is an event of its own.
            let router = self.router.clone();
            tokio::spawn(async move {
                if let Err(e) = router.notify(&origin, text).await {
                    tracing::warn!(bridge = %origin.bridge, room = %origin.room, "dead letter notice not sent: {e}");
                }
            });
        }
    }
}

/// The pace of a lane to people (`broadcast.rate`): deliveries start at
/// most `rate` a second, so that a broadcast to thousands stays within
/// the network's limits. A delivery's retries count as the delivery.
struct Pace {
    every: Duration,
    next: tokio::time::Instant,
}

impl Pace {
    fn new(router: &Router, bridge: &str) -> Self {
        let kind = router.bridge(bridge).map_or("", |b| b.kind());
        let rate = router.broadcast.rate_of(bridge, kind);
        Pace { every: Duration::from_secs_f64(1.0 / rate), next: tokio::time::Instant::now() }
    }

    /// Wait for the next delivery's turn; false when shutting down.
    async fn wait(&mut self, shutdown: &mut watch::Receiver<bool>) -> bool {
        let now = tokio::time::Instant::now();
        if self.next > now {
            tokio::select! {
                _ = shutdown.changed() => return false,
                _ = tokio::time::sleep_until(self.next) => {}
            }
        }
        self.next = self.next.max(now) + self.every;
        true
    }
}

/// Sleep unless shutting down; false when shutting down.
async fn pause(d: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = shutdown.changed() => false,
        _ = tokio::time::sleep(d) => true,
    }
}

/// Write confirmations in groups, until every lane has dropped its sender.
async fn complete(store: Arc<dyn Store>, metrics: Arc<Metrics>, mut rx: mpsc::Receiver<Completion>) {
    let mut buf = Vec::with_capacity(1024);
    while rx.recv_many(&mut buf, 1024).await > 0 {
        while let Err(e) = store.complete(&buf).await {
            tracing::error!(error = %e, "cannot confirm {} deliveries; retrying", buf.len());
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        for c in buf.drain(..) {
            metrics.outbox_depth.get_or_create(&metrics::bridge(&c.bridge)).dec();
        }
    }
}

/// A lane's recently delivered (event id → target id), newest last.
#[derive(Default)]
struct Recent {
    ids: HashMap<String, String>,
    order: VecDeque<String>,
}

impl Recent {
    fn get(&self, event_id: &str) -> Option<&str> {
        self.ids.get(event_id).map(String::as_str)
    }
    fn insert(&mut self, event_id: String, remote: String) {
        if self.ids.insert(event_id.clone(), remote).is_none() {
            self.order.push_back(event_id);
        }
        if self.order.len() > RECENT
            && let Some(old) = self.order.pop_front()
        {
            self.ids.remove(&old);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_forgets_the_oldest() {
        let mut r = Recent::default();
        for i in 0..=RECENT {
            r.insert(format!("e{i}"), format!("r{i}"));
        }
        assert_eq!(r.get("e0"), None);
        assert_eq!(r.get(&format!("e{RECENT}")), Some(format!("r{RECENT}").as_str()));
    }
}
