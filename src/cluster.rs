//! Several instances on one PostgreSQL store (docs/scale-out.md): each
//! connection (a bridge, and the jobs that must run once: broadcasts,
//! calendars, files, retention) is held by one instance at a time, under a
//! lease in the store's `leases` table, on the database's clock.
//!
//! An instance renews what it holds every sixth of the lease (at most a
//! second) and tries to take what nobody holds as often. It counts a lease as its own only
//! until the lease less two renewals has passed since it *sent* the last
//! renewal that came through: by then it has stopped the connection's
//! deliveries, and no other instance can have taken the lease yet, because
//! the database gave it a longer time from a later moment. An instance
//! that dies, hangs or loses the database is replaced within about one
//! lease; nothing runs twice in between. Each change of hands raises the
//! lease's epoch.
//!
//! Alone (no `cluster:`), everything is this instance's, at once and for
//! good.
//!
//! How the instances wake each other (rows added, leases let go of): by
//! PostgreSQL notifications, or with `cluster.nats` by NATS ([`nats`]).
//! Either is a hint only; each also looks for itself every couple of seconds.

mod nats;

use std::collections::BTreeMap;
use std::future::Future;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::{PgPool, Row};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::config::ClusterConfig;
use crate::metrics::{ConnectionLabel, Metrics};

/// The lease of the jobs that run once among the instances.
pub const JOBS: &str = "jobs";

/// The lease of bridge `name`'s connection.
pub fn bridge_lease(name: &str) -> String {
    format!("bridge:{name}")
}

/// Who holds what, as this instance sees it: `Some(epoch)` while it holds
/// a connection.
#[derive(Clone)]
pub struct Ownership {
    leases: Option<Arc<Leases>>,
    /// Alone: every connection, held for good.
    alone: watch::Sender<Option<i64>>,
}

impl Ownership {
    /// One instance alone.
    pub fn alone() -> Self {
        Ownership { leases: None, alone: watch::Sender::new(Some(0)) }
    }

    /// Whether this instance shares the store with others.
    pub fn is_shared(&self) -> bool {
        self.leases.is_some()
    }

    /// Whether this instance holds `connection` now (and contends for it
    /// from now on, as [`Ownership::watch`]: every caller wants what it asks about).
    pub fn holds(&self, connection: &str) -> bool {
        self.watch(connection).borrow().is_some()
    }

    /// The holding of `connection`, as it changes; contended for from now on.
    pub fn watch(&self, connection: &str) -> watch::Receiver<Option<i64>> {
        match &self.leases {
            Some(l) => l.want(connection),
            None => self.alone.subscribe(),
        }
    }

    /// Told when another instance added rows (PostgreSQL notifications).
    pub fn foreign_rows(&self) -> Option<Arc<Notify>> {
        self.leases.as_ref().map(|l| l.rows.clone())
    }

    /// Let go of everything held (Causeway stops): the others take over
    /// without waiting for the leases to run out.
    pub async fn release(&self) {
        if let Some(l) = &self.leases {
            l.release_all().await;
        }
    }
}

/// Run `job` while this instance holds `connection`: started when it is
/// taken, told to stop (its own stop signal) when it is lost, until
/// `shutdown`.
pub fn while_held<F, Fut>(
    ownership: &Ownership,
    connection: &str,
    mut shutdown: watch::Receiver<bool>,
    job: F,
) -> tokio::task::JoinHandle<()>
where
    F: Fn(watch::Receiver<bool>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut held = ownership.watch(connection);
    let connection = connection.to_string();
    tokio::spawn(async move {
        while let Some(epoch) = next_holding(&mut held, &mut shutdown).await {
            let (stop, stopped) = watch::channel(false);
            let mut task = tokio::spawn(job(stopped));
            let ended = tokio::select! {
                _ = settled(&mut shutdown, |s| *s) => true,
                _ = lost(&mut held, epoch) => false,
                _ = &mut task => {
                    // The job ended by itself (nothing to do): it starts
                    // again with the next holding.
                    tokio::select! {
                        _ = settled(&mut shutdown, |s| *s) => return,
                        _ = lost(&mut held, epoch) => continue,
                    }
                }
            };
            let _ = stop.send(true);
            let _ = task.await;
            if ended {
                return;
            }
            tracing::info!(connection = %connection, "stopped: the lease is no longer this instance's");
        }
    })
}

/// Until this instance holds the connection `held` watches: its epoch then,
/// or `None` at shutdown.
pub async fn next_holding(held: &mut watch::Receiver<Option<i64>>, shutdown: &mut watch::Receiver<bool>) -> Option<i64> {
    tokio::select! {
        _ = settled(shutdown, |s| *s) => None,
        ok = settled(held, |e| e.is_some()) => if ok { *held.borrow() } else { None },
    }
}

/// Until the holding under `epoch` is over (lost, or taken again under
/// another epoch).
pub async fn lost(held: &mut watch::Receiver<Option<i64>>, epoch: i64) {
    settled(held, |e| *e != Some(epoch)).await;
}

/// Until `rx`'s value is as `f` wants (at once when it is); false when
/// its sender is gone. Holds no borrow of the value.
pub async fn settled<T>(rx: &mut watch::Receiver<T>, f: impl FnMut(&T) -> bool) -> bool {
    rx.wait_for(f).await.is_ok()
}

/// This instance's leases.
pub struct Leases {
    pool: PgPool,
    /// This process: the instance's name and a fresh id, so that an
    /// instance started again never takes its predecessor's lease as its own.
    owner: String,
    lease: Duration,
    metrics: Arc<Metrics>,
    held: Mutex<BTreeMap<String, Held>>,
    /// Notified when rows were added by any instance.
    rows: Arc<Notify>,
    /// Told to try at once (a connection is wanted for the first time,
    /// another instance let go of its leases).
    now: Notify,
    /// NATS, with `cluster.nats`.
    nats: Option<async_nats::Client>,
}

struct Held {
    tx: watch::Sender<Option<i64>>,
    /// Until when this instance may act as the holder.
    valid_until: Option<Instant>,
}

impl Leases {
    /// Connect with a pool of its own (renewals never wait behind the
    /// store's writes) and start contending.
    ///
    /// `added` is notified after each commit of this instance's that added
    /// rows; with `cluster.nats` they are told there (the store sends no
    /// PostgreSQL notification then).
    pub async fn start(
        url: &str,
        config: &ClusterConfig,
        added: Arc<Notify>,
        metrics: Arc<Metrics>,
        shutdown: watch::Receiver<bool>,
    ) -> anyhow::Result<Ownership> {
        let opts = PgConnectOptions::from_str(url)?;
        let pool = PgPoolOptions::new().max_connections(2).connect_with(opts).await?;
        let owner = format!("{}/{}", config.instance, uuid::Uuid::now_v7().simple());
        let nats = match &config.nats {
            Some(urls) => Some(nats::connect(urls.expose(), &config.instance, config.lease, metrics.clone()).await?),
            None => None,
        };
        let leases = Arc::new(Leases {
            pool: pool.clone(),
            owner,
            lease: config.lease,
            metrics,
            held: Default::default(),
            rows: Default::default(),
            now: Notify::new(),
            nats: nats.clone(),
        });
        tracing::info!(
            instance = %config.instance, lease_ms = config.lease.as_millis() as u64, nats = nats.is_some(),
            "sharing the store with other instances"
        );
        tokio::spawn(leases.clone().contend(shutdown.clone()));
        match nats {
            Some(client) => nats::start(client, leases.clone(), added, config.instance.clone(), shutdown),
            None => drop(tokio::spawn(listen(pool, leases.rows.clone(), shutdown))),
        }
        Ok(Ownership { leases: Some(leases), alone: watch::Sender::new(None) })
    }

    /// The connections this instance holds now.
    fn holding(&self) -> Vec<String> {
        self.held().iter().filter(|(_, h)| h.tx.borrow().is_some()).map(|(c, _)| c.clone()).collect()
    }

    fn held(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Held>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn want(&self, connection: &str) -> watch::Receiver<Option<i64>> {
        let mut held = self.held();
        if let Some(h) = held.get(connection) {
            return h.tx.subscribe();
        }
        let (tx, rx) = watch::channel(None);
        held.insert(connection.to_string(), Held { tx, valid_until: None });
        self.now.notify_one();
        rx
    }

    /// How often leases are renewed and taken: a sixth of the lease, at
    /// most a second (a lease let go of is taken within it).
    fn tick(&self) -> Duration {
        (self.lease / 6).min(Duration::from_secs(1))
    }

    /// Renew and take, every tick, until shutdown (then what is held stays
    /// held until [`Leases::release_all`]).
    async fn contend(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        loop {
            let wanted: Vec<String> = self.held().keys().cloned().collect();
            let sent = Instant::now();
            let got = tokio::time::timeout(self.tick(), self.take(&wanted)).await;
            match got {
                Ok(Ok(got)) => self.apply(&wanted, &got, sent),
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot renew the leases"),
                Err(_) => tracing::warn!("no answer from the store to the lease renewal within {:?}", self.tick()),
            }
            self.expire();
            tokio::select! {
                _ = settled(&mut shutdown, |s| *s) => return,
                _ = self.now.notified() => {}
                _ = tokio::time::sleep(self.tick()) => {}
            }
        }
    }

    /// Renew what this process holds and take what nobody holds: the
    /// connections it holds afterwards, with their epochs.
    async fn take(&self, wanted: &[String]) -> Result<BTreeMap<String, i64>, sqlx::Error> {
        let rows = sqlx::query(
            "INSERT INTO leases (connection, owner, epoch, expires_at) \
             SELECT c, $2, 1, clock_timestamp() + make_interval(secs => $3) FROM unnest($1::text[]) AS c \
             ON CONFLICT (connection) DO UPDATE SET \
               epoch = CASE WHEN leases.owner = EXCLUDED.owner AND leases.expires_at > clock_timestamp() \
                            THEN leases.epoch ELSE leases.epoch + 1 END, \
               owner = EXCLUDED.owner, expires_at = EXCLUDED.expires_at \
             WHERE leases.owner = EXCLUDED.owner OR leases.expires_at <= clock_timestamp() \
             RETURNING connection, epoch",
        )
        .bind(wanted)
        .bind(&self.owner)
        .bind(self.lease.as_secs_f64())
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(|r| (r.get::<String, _>(0), r.get::<i64, _>(1))).collect())
    }

    /// What the store answered, sent at `sent`.
    fn apply(&self, wanted: &[String], got: &BTreeMap<String, i64>, sent: Instant) {
        // Two ticks short: one for the renewal's own way, one for a check
        // that comes late.
        let until = sent + self.lease.saturating_sub(self.tick() * 2);
        let mut held = self.held();
        for connection in wanted {
            let Some(h) = held.get_mut(connection) else { continue };
            let label = ConnectionLabel { connection: connection.clone() };
            let had = *h.tx.borrow();
            match (had, got.get(connection)) {
                (Some(was), Some(&epoch)) if was == epoch => {
                    h.valid_until = Some(until);
                    self.metrics.cluster_renewals.inc();
                }
                (had, Some(&epoch)) => {
                    if had.is_some() {
                        // Lost in between, and taken again under a new epoch.
                        h.tx.send_replace(None);
                    }
                    tracing::info!(connection = %connection, epoch, "this instance holds the connection now");
                    h.valid_until = Some(until);
                    h.tx.send_replace(Some(epoch));
                    self.metrics.cluster_takeovers.get_or_create(&label).inc();
                    self.metrics.cluster_owned.get_or_create(&label).set(1);
                }
                (Some(_), None) => {
                    tracing::warn!(connection = %connection, "another instance holds the connection now");
                    h.valid_until = None;
                    h.tx.send_replace(None);
                    self.metrics.cluster_lost.get_or_create(&label).inc();
                    self.metrics.cluster_owned.get_or_create(&label).set(0);
                }
                (None, None) => {}
            }
        }
    }

    /// Let go of what was not renewed in time.
    fn expire(&self) {
        let now = Instant::now();
        for (connection, h) in self.held().iter_mut() {
            if h.valid_until.is_some_and(|u| u <= now) {
                tracing::warn!(connection = %connection, "the lease was not renewed in time; this instance stops the connection");
                h.valid_until = None;
                h.tx.send_replace(None);
                let label = ConnectionLabel { connection: connection.clone() };
                self.metrics.cluster_lost.get_or_create(&label).inc();
                self.metrics.cluster_owned.get_or_create(&label).set(0);
            }
        }
    }

    async fn release_all(&self) {
        let mine: Vec<(String, i64)> = self.held().iter().filter_map(|(c, h)| h.tx.borrow().map(|e| (c.clone(), e))).collect();
        if mine.is_empty() {
            return;
        }
        let (connections, epochs): (Vec<String>, Vec<i64>) = mine.into_iter().unzip();
        let released = sqlx::query(
            "UPDATE leases SET expires_at = clock_timestamp() FROM unnest($1::text[], $2::bigint[]) AS m(c, e) \
             WHERE leases.connection = m.c AND leases.epoch = m.e AND leases.owner = $3",
        )
        .bind(&connections)
        .bind(&epochs)
        .bind(&self.owner)
        .execute(&self.pool)
        .await;
        match released {
            Ok(r) => {
                tracing::info!(released = r.rows_affected(), "let go of the leases");
                if let Some(client) = &self.nats {
                    nats::tell_released(client, &self.owner).await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot let go of the leases; the others wait for them to run out"),
        }
        for h in self.held().values_mut() {
            h.valid_until = None;
            h.tx.send_replace(None);
        }
    }
}

/// Wake `rows` at each notification that rows were added, until shutdown;
/// reconnects when the connection drops (the outbox also looks by itself).
async fn listen(pool: PgPool, rows: Arc<Notify>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for new rows; looking every few seconds instead");
                tokio::select! {
                    _ = settled(&mut shutdown, |s| *s) => return,
                    _ = tokio::time::sleep(Duration::from_secs(2)) => continue,
                }
            }
        };
        if let Err(e) = listener.listen(crate::store::postgres::OUTBOX_CHANNEL).await {
            tracing::warn!(error = %e, "cannot listen for new rows");
            continue;
        }
        loop {
            tokio::select! {
                _ = settled(&mut shutdown, |s| *s) => return,
                n = listener.recv() => match n {
                    Ok(_) => rows.notify_one(),
                    Err(e) => {
                        tracing::warn!(error = %e, "the notification connection dropped");
                        break;
                    }
                },
            }
        }
    }
}
