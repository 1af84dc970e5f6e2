//! Hints between the instances over NATS (`cluster.nats`,
//! docs/scale-out.md): rows were added, leases were let go of, who is up.
//!
//! Only hints. Who holds a connection is decided by the leases in
//! PostgreSQL alone; a hint that is lost, late or forged makes an instance
//! look (at the outbox, at the leases) sooner than it would have, never act
//! on something it did not check. Without NATS (down, cut off, paused) the
//! instances look for themselves every couple of seconds, as without
//! `cluster.nats`. Nothing here waits on NATS where a message or a lease
//! waits: sending is done by tasks of their own, each try bounded in time.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv;
use async_nats::{Client, ConnectOptions, Event, ServerAddr};
use futures_util::StreamExt;
use tokio::sync::{Notify, watch};

use super::{Leases, settled};
use crate::metrics::Metrics;

/// Rows were added (the payload: the owner that added them).
const ROWS: &str = "causeway.rows";
/// Leases were let go of (the payload: the owner that let go).
const RELEASED: &str = "causeway.released";
/// The heartbeats: the instance's name → its owner and what it holds.
const BUCKET: &str = "causeway_instances";
/// How long one try to tell or ask NATS may take.
const TRY: Duration = Duration::from_secs(2);

/// Connect to the servers `urls` (comma-separated). Returns at once: the
/// client connects, and connects again, by itself; `causeway_cluster_nats_up`
/// says whether it is.
pub(super) async fn connect(urls: &str, instance: &str, lease: Duration, metrics: Arc<Metrics>) -> anyhow::Result<Client> {
    let addrs = urls
        .split(',')
        .map(|u| u.trim().parse::<ServerAddr>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("cluster.nats: {e}"))?;
    let client = ConnectOptions::new()
        .name(format!("causeway {instance}"))
        .retry_on_initial_connect()
        // A server that stops answering is noticed within about a lease.
        .ping_interval(lease / 2)
        .connection_timeout(TRY)
        .event_callback(move |event| {
            let metrics = metrics.clone();
            async move {
                match event {
                    Event::Connected => {
                        metrics.cluster_nats_up.set(1);
                        tracing::info!("connected to NATS");
                    }
                    Event::Disconnected => {
                        metrics.cluster_nats_up.set(0);
                        tracing::warn!("NATS is away; the instances look for themselves until it is back");
                    }
                    other => tracing::info!(event = %other, "NATS"),
                }
            }
        })
        .connect(addrs)
        .await?;
    Ok(client)
}

/// Tell the others, until shutdown, each time this instance's rows were
/// added (`added`, notified after each commit); hear what they tell.
pub(super) fn start(client: Client, leases: Arc<Leases>, added: Arc<Notify>, instance: String, shutdown: watch::Receiver<bool>) {
    tokio::spawn(tell_rows(client.clone(), leases.owner.clone(), added, shutdown.clone()));
    tokio::spawn(hear(client.clone(), leases.clone(), shutdown.clone()));
    tokio::spawn(heartbeat(client, leases, instance, shutdown));
}

/// Each commit that added rows, told once (commits that come while a hint
/// is on its way are told by the next).
async fn tell_rows(client: Client, owner: String, added: Arc<Notify>, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = settled(&mut shutdown, |s| *s) => return,
            _ = added.notified() => {}
        }
        match tokio::time::timeout(TRY, client.publish(ROWS, owner.clone().into())).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!(error = %e, "cannot tell NATS of new rows"),
            Err(_) => tracing::debug!("NATS took too long to take a hint of new rows"),
        }
    }
}

/// The leases this instance let go of: the others try to take them at
/// once instead of at their next renewal.
pub(super) async fn tell_released(client: &Client, owner: &str) {
    let told = tokio::time::timeout(TRY, async {
        client.publish(RELEASED, owner.to_string().into()).await?;
        client.flush().await.map_err(|e| anyhow::anyhow!(e))
    })
    .await;
    if !matches!(told, Ok(Ok(()))) {
        tracing::info!("could not tell NATS that the leases are let go of; the others take them at their next renewal");
    }
}

/// What others tell: new rows wake the outbox, leases let go of wake the
/// contention. Hints of this instance's own are passed over.
async fn hear(client: Client, leases: Arc<Leases>, mut shutdown: watch::Receiver<bool>) {
    let (mut rows, mut released) = match (client.subscribe(ROWS).await, client.subscribe(RELEASED).await) {
        (Ok(r), Ok(l)) => (r, l),
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!(error = %e, "cannot hear other instances over NATS; looking every few seconds instead");
            return;
        }
    };
    let own = |m: &async_nats::Message| m.payload.as_ref() == leases.owner.as_bytes();
    loop {
        tokio::select! {
            _ = settled(&mut shutdown, |s| *s) => return,
            Some(m) = rows.next() => if !own(&m) {
                leases.metrics.cluster_hints.inc();
                leases.rows.notify_one();
            },
            Some(m) = released.next() => if !own(&m) {
                leases.metrics.cluster_hints.inc();
                leases.now.notify_one();
            },
            else => return,
        }
    }
}

/// Every third of the lease: this instance's heartbeat in a JetStream
/// key-value bucket (its entries live three leases), and how many instances
/// have one (`causeway_cluster_instances`). Its entry is deleted when it stops.
async fn heartbeat(client: Client, leases: Arc<Leases>, instance: String, mut shutdown: watch::Receiver<bool>) {
    let js = async_nats::jetstream::new(client);
    let mut bucket: Option<kv::Store> = None;
    let mut warned = false;
    let mut every = tokio::time::interval(leases.lease / 3);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = settled(&mut shutdown, |s| *s) => break,
            _ = every.tick() => {}
        }
        if bucket.is_none() {
            let why = match tokio::time::timeout(TRY, open_bucket(&js, leases.lease)).await {
                Ok(Ok(b)) => {
                    bucket = Some(b);
                    None
                }
                Ok(Err(e)) => Some(e.to_string()),
                Err(_) => Some("no answer".to_string()),
            };
            if let Some(why) = why {
                // Said once: it is tried again at each heartbeat.
                if !std::mem::replace(&mut warned, true) {
                    tracing::warn!(error = %why, "cannot open the NATS bucket of heartbeats (JetStream, NATS 2.10 or newer); trying again");
                } else {
                    tracing::debug!(error = %why, "cannot open the NATS bucket of heartbeats");
                }
            }
        }
        let Some(b) = &bucket else { continue };
        let beat = serde_json::json!({"owner": leases.owner, "holds": leases.holding()});
        let put = tokio::time::timeout(TRY, b.put(&instance, beat.to_string().into())).await;
        if !matches!(put, Ok(Ok(_))) {
            tracing::debug!("the heartbeat did not reach NATS");
            continue;
        }
        if let Ok(Ok(n)) = tokio::time::timeout(TRY, count(b)).await {
            leases.metrics.cluster_instances.set(n as i64);
        }
    }
    if let Some(b) = &bucket {
        let _ = tokio::time::timeout(TRY, b.delete(&instance)).await;
    }
}

/// The bucket, made by the first instance that needs it.
async fn open_bucket(js: &async_nats::jetstream::Context, lease: Duration) -> anyhow::Result<kv::Store> {
    if let Ok(b) = js.get_key_value(BUCKET).await {
        return Ok(b);
    }
    let config = kv::Config { bucket: BUCKET.into(), history: 1, max_age: lease * 3, ..Default::default() };
    Ok(js.create_key_value(config).await?)
}

/// The instances with a heartbeat in the bucket.
async fn count(b: &kv::Store) -> anyhow::Result<usize> {
    let mut keys = b.keys().await?;
    let mut n = 0;
    while let Some(k) = keys.next().await {
        k?;
        n += 1;
    }
    Ok(n)
}
