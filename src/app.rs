//! Wiring: open the store, start router, outbox and bridges, serve HTTP,
//! and stop in order.

use std::future::{Future, IntoFuture};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;

use crate::config::{Loaded, Sync};
use crate::directory;
use crate::http::{self, Surface};
use crate::metrics::{self, Metrics};
use crate::outbox::Outbox;
use crate::router::Router;
use crate::store::Store;
use crate::store::postgres::{PostgresStore, Wakeups};
use crate::store::sqlite::SqliteStore;

/// Open the configured store.
pub async fn open_store(config: &crate::config::Config) -> anyhow::Result<Arc<dyn Store>> {
    open_store_with(config, None).await
}

/// [`open_store`]; `added` is notified after each commit that added rows,
/// for a running instance to tell the others over NATS. In a cluster
/// without NATS (or where nobody passes it on), a PostgreSQL notification
/// tells them.
async fn open_store_with(config: &crate::config::Config, added: Option<Arc<tokio::sync::Notify>>) -> anyhow::Result<Arc<dyn Store>> {
    let wakeups = match (&config.cluster, added) {
        (Some(c), Some(added)) if c.nats.is_some() => Wakeups::Told(added),
        (Some(c), _) if c.nats.is_none() => Wakeups::Postgres,
        _ => Wakeups::Quiet,
    };
    if let Some(url) = &config.store.url {
        let store = PostgresStore::open_with(url.expose(), wakeups)
            .await
            .with_context(|| format!("cannot open the store at {}", causeway_core::secret::url_for_log(url.expose())))?;
        return Ok(Arc::new(store));
    }
    let path = &config.store.path;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let store = SqliteStore::open(path, config.store.sync == Sync::Full)
        .await
        .with_context(|| format!("cannot open the store at {}", path.display()))?;
    Ok(Arc::new(store))
}

/// Run until `shutdown` resolves; `path` is read again on `SIGHUP`.
///
/// One piece (over 80 lines): the order in which everything starts and stops,
/// read top to bottom in one place.
pub async fn run(loaded: Loaded, path: std::path::PathBuf, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    let Loaded { config, bridges } = loaded;
    let bridges = crate::bridges::build(&bridges)?;
    let sections = config.bridges.clone();
    if !config.http.listen.ip().is_loopback() {
        tracing::warn!(
            listen = %config.http.listen,
            "http.listen is not a loopback address: /metrics is open to that network; \
             put a reverse proxy with TLS and access control in front"
        );
    }
    let listener = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("cannot listen on {} (http.listen)", config.http.listen))?;
    let admin_listener = match &config.admin {
        Some(admin) => {
            if !admin.listen.ip().is_loopback() {
                tracing::warn!(listen = %admin.listen, "admin.listen is not a loopback address: put a reverse proxy with TLS in front");
            }
            let l = tokio::net::TcpListener::bind(admin.listen)
                .await
                .with_context(|| format!("cannot listen on {} (admin.listen)", admin.listen))?;
            Some((l, admin.clone()))
        }
        None => None,
    };
    // With NATS, the rows this instance adds are told there once committed.
    let added = Arc::new(tokio::sync::Notify::new());
    let store = open_store_with(&config, Some(added.clone())).await?;
    let metrics = Arc::new(Metrics::new());
    for (bridge, depth) in store.outbox_depths().await? {
        let b = metrics::bridge(&bridge);
        metrics.outbox_depth.get_or_create(&b).set(depth.pending as i64);
        metrics.dead_letter_depth.get_or_create(&b).set(depth.dead as i64);
    }
    let stored = store.load_portals().await.context("cannot read the stored direct conversations")?;
    let router = Router::start(&config, bridges.clone(), store.clone(), metrics.clone(), stored);
    let (stop_tx, stop_rx) = watch::channel(false);
    // Alone, or one of several instances on the store (docs/scale-out.md).
    let ownership = match (&config.cluster, &config.store.url) {
        (Some(cluster), Some(url)) => crate::cluster::Leases::start(url.expose(), cluster, added, metrics.clone(), stop_rx.clone())
            .await
            .context("cannot take part in the cluster (cluster:)")?,
        _ => crate::cluster::Ownership::alone(),
    };
    // Every connection's series from the start: alone, this instance holds
    // them all for good; in a cluster, none until a lease is taken.
    for connection in config.bridges.keys().map(|n| crate::cluster::bridge_lease(n)).chain([crate::cluster::JOBS.to_string()]) {
        let label = metrics::ConnectionLabel { connection };
        let _ = metrics.cluster_takeovers.get_or_create(&label);
        let _ = metrics.cluster_lost.get_or_create(&label);
        metrics.cluster_owned.get_or_create(&label).set(i64::from(!ownership.is_shared()));
    }
    let mounted = http::Mounted::default();
    let running = Arc::new(crate::running::Running::new(router.clone(), mounted.clone(), metrics.clone(), ownership.clone()));
    for (name, bridge) in &bridges {
        running.register(name, bridge);
    }
    let outbox = Outbox::start(store.clone(), metrics.clone(), router.clone(), config.outbox.clone(), ownership.clone(), stop_rx.clone());

    // People from the directory server are known before any bridge starts.
    let people = {
        let router = router.clone();
        Arc::new(directory::People::new(&config.people, move |d| router.set_directory(d), metrics.clone()))
    };
    people.configured(&config.people);
    let directory_task = match config.directory.ldap.clone() {
        Some(ldap) => {
            if let Some(imported) = directory::ldap_people(&ldap, store.as_ref(), &metrics).await {
                people.imported(imported);
            }
            let apply = {
                let people = people.clone();
                move |imported: Vec<crate::config::PersonConfig>| people.imported(imported)
            };
            Some(tokio::spawn(directory::refresh_ldap(ldap, store.clone(), metrics.clone(), apply, stop_rx.clone())))
        }
        None => None,
    };

    for (name, bridge) in bridges {
        let section = sections.get(&name).cloned().unwrap_or_default();
        running.start(&name, section, bridge).await?;
    }
    // Broadcasts asked for here or by `causeway broadcast` (docs/broadcast.md).
    // These, and the jobs below, run on one instance at a time.
    use crate::cluster::{JOBS, while_held};
    let planner = {
        let router = router.clone();
        while_held(&ownership, JOBS, stop_rx.clone(), move |stop| crate::broadcast::planner::run(router.clone(), stop))
    };
    // The portals' calendars (docs/calendars.md).
    let calendars = {
        let (router, portals) = (router.clone(), config.portals.clone());
        while_held(&ownership, JOBS, stop_rx.clone(), move |stop| crate::calendar::poll::run(router.clone(), portals.clone(), stop))
    };
    let up = {
        let (router, metrics, mut stop) = (router.clone(), metrics.clone(), stop_rx.clone());
        tokio::spawn(async move {
            loop {
                for (name, b) in &router.bridges() {
                    metrics.bridge_up.get_or_create(&metrics::bridge(name)).set(i64::from(b.is_up()));
                    metrics.ghosts.get_or_create(&metrics::bridge(name)).set(b.ghosts() as i64);
                }
                tokio::select! {
                    _ = stop.changed() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        })
    };

    // Files of archived messages, kept (docs/archive.md); Causeway's own
    // links (Matrix media) are served by the listener below.
    let keeper =
        crate::archive::jobs::Keeper::new(&config, store.clone(), metrics.clone()).map_err(|e| anyhow::anyhow!("archive.fetch: {e}"))?;
    let keeper = {
        let keeper = Arc::new(keeper);
        while_held(&ownership, JOBS, stop_rx.clone(), move |stop| keeper.clone().run(stop))
    };
    // Retention, and the archive's size as metrics.
    let pruner = {
        let pruner = Arc::new(crate::archive::jobs::Pruner::new(&config, store.clone(), Some(metrics.clone())));
        while_held(&ownership, JOBS, stop_rx.clone(), move |stop| pruner.clone().run(stop))
    };

    // SIGHUP (and the console) read the config again.
    let edits: Arc<tokio::sync::Mutex<()>> = Default::default();
    let reloader =
        Arc::new(crate::reload::Reloader::new(path, config.clone(), router.clone(), running.clone(), people.clone(), edits.clone()));
    let hangups = tokio::spawn(on_hangup(reloader.clone(), stop_rx.clone()));

    let ready = Arc::new(AtomicBool::new(false));
    let console = admin_listener.map(|(listener, admin)| {
        let console = crate::admin::Console {
            router: router.clone(),
            store: store.clone(),
            metrics: metrics.clone(),
            auth: Arc::new(crate::admin::auth::Auth::new(&admin)),
            edits,
            reloader: reloader.clone(),
            people: people.clone(),
            ldap: config.directory.ldap.clone(),
            exports: Arc::new(crate::admin::exports::Exports::new(config.store.path.with_file_name("console-exports"), config.files_dir())),
        };
        let app = crate::admin::routes(console).into_make_service_with_connect_info::<std::net::SocketAddr>();
        let mut stop = stop_rx.clone();
        let graceful = async move {
            let _ = stop.wait_for(|stopping| *stopping).await;
        };
        tracing::info!(listen = %admin.listen, "the console listens");
        tokio::spawn(axum::serve(listener, app).with_graceful_shutdown(graceful).into_future())
    });
    let app = http::router(
        Surface { metrics, ready: ready.clone(), router: router.clone(), store: store.clone(), api_token: config.http.api_token.clone() },
        mounted,
    );
    let graceful = {
        let mut stop = stop_rx.clone();
        async move {
            let _ = stop.wait_for(|stopping| *stopping).await;
        }
    };
    let mut server = tokio::spawn(axum::serve(listener, app).with_graceful_shutdown(graceful).into_future());
    ready.store(true, Ordering::Release);
    tracing::info!(listen = %config.http.listen, portals = config.portals.len(), "causeway is running");
    tokio::select! {
        _ = shutdown => {}
        ended = &mut server => {
            let _ = stop_tx.send(true);
            ended.context("HTTP server task failed")?.context("HTTP server failed")?;
            anyhow::bail!("HTTP server stopped unexpectedly");
        }
    }

    tracing::info!("stopping: finishing requests and deliveries in flight");
    ready.store(false, Ordering::Release);
    let _ = stop_tx.send(true);
    // Requests in flight get a moment; long-lived ones (event streams) are cut.
    if tokio::time::timeout(Duration::from_secs(5), &mut server).await.is_err() {
        server.abort();
    }
    if let Some(mut console) = console
        && tokio::time::timeout(Duration::from_secs(5), &mut console).await.is_err()
    {
        console.abort();
    }
    // Connections end; what each bridge's next start needs is written
    // while the store is open.
    running.stop_all().await;
    drop(running);
    drop(router);
    drop(reloader);
    drop(people);
    let _ = up.await;
    let _ = planner.await;
    let _ = calendars.await;
    hangups.abort();
    let _ = keeper.await;
    let _ = pruner.await;
    if let Some(t) = directory_task {
        t.abort();
    }
    if tokio::time::timeout(Duration::from_secs(10), outbox).await.is_err() {
        tracing::warn!("outbox did not stop within 10 s; unconfirmed deliveries will be retried at next start");
    }
    // Nothing of this instance runs any more: the others may take over now.
    ownership.release().await;
    tracing::info!("stopped");
    Ok(())
}

/// Reload the config on every `SIGHUP`.
async fn on_hangup(reloader: Arc<crate::reload::Reloader>, mut stop: watch::Receiver<bool>) {
    #[cfg(unix)]
    {
        let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("cannot listen for SIGHUP: {e}; the config is not reloaded on it");
                return;
            }
        };
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                got = hup.recv() => {
                    if got.is_none() {
                        return;
                    }
                    tracing::info!("SIGHUP: reading the config again");
                    if let Err(crate::reload::ReloadError::Invalid(errors)) = reloader.reload().await {
                        tracing::error!(problems = errors.len(), "the new config does not check; the running one stays");
                        for e in &errors {
                            tracing::error!("  {e}");
                        }
                    }
                }
            }
        }
    }
    #[cfg(not(unix))]
    let _ = (reloader, stop.changed().await);
}
