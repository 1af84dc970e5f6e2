//! The bridges that run: started at the start, added, replaced and
//! removed by a config reload. The router's map (which the outbox's lanes
//! read at each delivery) and the mounted HTTP routes follow.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use causeway_core::{Bridge, BridgeContext, Host};
use serde_json::Value;

use crate::cluster::{Ownership, bridge_lease};
use crate::http::Mounted;
use crate::metrics::{self, Metrics};
use crate::router::Router;

/// One running instance of a bridge.
struct Instance {
    /// Its config section as it was started (a reload compares it).
    section: Value,
    bridge: Arc<dyn Bridge>,
    ctx: BridgeContext,
}

/// The running bridges.
pub struct Running {
    router: Arc<Router>,
    host: Arc<dyn Host>,
    mounted: Mounted,
    metrics: Arc<Metrics>,
    instances: tokio::sync::Mutex<BTreeMap<String, Instance>>,
    /// Several instances: which bridges are this one's to run.
    ownership: Ownership,
    /// Bridges that wait for their lease (another instance runs them):
    /// their sections, started when the lease is taken.
    waiting: std::sync::Mutex<BTreeMap<String, Value>>,
    /// Bridges whose lease is followed.
    followed: std::sync::Mutex<std::collections::BTreeSet<String>>,
}

/// How long a bridge has to stop before it is left behind (closed: nothing
/// it still submits is taken).
const STOP_WITHIN: Duration = Duration::from_secs(5);

impl Running {
    pub fn new(router: Arc<Router>, mounted: Mounted, metrics: Arc<Metrics>, ownership: Ownership) -> Self {
        let host: Arc<dyn Host> = router.clone();
        Running {
            router,
            host,
            mounted,
            metrics,
            instances: Default::default(),
            ownership,
            waiting: Default::default(),
            followed: Default::default(),
        }
    }

    fn waiting(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Value>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `bridge` is what `name` delivers through from now on (before it
    /// starts: portals of it can be added, deliveries wait for it to connect).
    pub fn register(&self, name: &str, bridge: &Arc<dyn Bridge>) {
        self.metrics.register_bridge(name);
        self.router.set_bridge(name, Some(bridge.clone()));
    }

    /// Start a registered bridge: connect, and mount its routes. On failure
    /// it is not running.
    ///
    /// With several instances, a bridge that holds a connection of its own
    /// starts only while this instance holds its lease; until then it waits.
    pub async fn start(self: &Arc<Self>, name: &str, section: Value, bridge: Arc<dyn Bridge>) -> anyhow::Result<()> {
        self.register(name, &bridge);
        if self.ownership.is_shared() && !bridge.runs_everywhere() {
            self.follow(name);
            if !self.ownership.holds(&bridge_lease(name)) {
                tracing::info!(bridge = %name, "bridge waits for its lease: another instance runs it");
                self.waiting().insert(name.to_string(), section);
                return Ok(());
            }
        }
        self.waiting().remove(name);
        let ctx = BridgeContext::new(name, self.host.clone());
        match bridge.clone().start(ctx.clone()).await {
            Ok(routes) => {
                self.mounted.mount(name, routes);
                tracing::info!(bridge = %name, kind = bridge.kind(), "bridge started");
                self.instances.lock().await.insert(name.to_string(), Instance { section, bridge, ctx });
                Ok(())
            }
            Err(e) => {
                self.router.set_bridge(name, None);
                ctx.close();
                Err(anyhow::anyhow!("bridge {name} did not start: {e}"))
            }
        }
    }

    /// Start and stop `name` as its lease comes and goes (once per name).
    fn follow(self: &Arc<Self>, name: &str) {
        if !self.followed.lock().unwrap_or_else(|p| p.into_inner()).insert(name.to_string()) {
            return;
        }
        let (running, name) = (Arc::downgrade(self), name.to_string());
        let mut held = self.ownership.watch(&bridge_lease(&name));
        tokio::spawn(async move {
            while held.changed().await.is_ok() {
                let holds = held.borrow_and_update().is_some();
                let Some(running) = running.upgrade() else { return };
                if holds {
                    let Some(section) = running.waiting().remove(&name) else { continue };
                    let started = match crate::bridges::build_section(&name, &section) {
                        Ok(bridge) => running.start(&name, section.clone(), bridge).await,
                        Err(e) => Err(e),
                    };
                    if let Err(e) = started {
                        tracing::error!(bridge = %name, "{e:#}");
                        running.waiting().insert(name.clone(), section);
                    }
                } else {
                    let section = running.instances.lock().await.get(&name).map(|i| i.section.clone());
                    if let Some(section) = section {
                        // Stopped before another instance may take it; a
                        // fresh one waits for the lease to come back.
                        running.stop(&name).await;
                        running.waiting().insert(name.clone(), section);
                    }
                }
            }
        });
    }

    /// Take `name` away: nothing is queued for it any more, and it stops.
    pub async fn remove(&self, name: &str) {
        self.waiting().remove(name);
        self.router.set_bridge(name, None);
        self.stop(name).await;
    }

    /// Stop the running instance of `name`: its routes are gone, it ends
    /// its connections and writes what its next start needs. The router
    /// keeps what is registered under the name (the instance that replaces
    /// it, registered before: events go on being queued for its rooms).
    pub async fn stop(&self, name: &str) {
        let Some(i) = self.instances.lock().await.remove(name) else { return };
        self.mounted.mount(name, None);
        i.ctx.begin_stop();
        if tokio::time::timeout(STOP_WITHIN, i.bridge.stop()).await.is_err() {
            tracing::warn!(bridge = %name, "the bridge did not finish stopping within {STOP_WITHIN:?}");
        }
        i.ctx.close();
        self.metrics.bridge_up.get_or_create(&metrics::bridge(name)).set(0);
        tracing::info!(bridge = %name, "bridge stopped");
    }

    /// Stop every bridge (Causeway stops).
    pub async fn stop_all(&self) {
        let names: Vec<String> = self.instances.lock().await.keys().cloned().collect();
        for name in names {
            self.stop(&name).await;
        }
    }

    /// Each running bridge's config section, as it was started.
    pub async fn sections(&self) -> BTreeMap<String, Value> {
        let mut sections: BTreeMap<String, Value> =
            self.instances.lock().await.iter().map(|(n, i)| (n.clone(), i.section.clone())).collect();
        sections.extend(self.waiting().iter().map(|(n, s)| (n.clone(), s.clone())));
        sections
    }
}
