//! Prometheus metrics. Every name here is used by the Grafana dashboard and
//! the alert rules; rename with care.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BridgeLabel {
    pub bridge: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub bridge: String,
    pub reason: String,
}

/// A connection held under a lease (`bridge:NAME`, `jobs`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectionLabel {
    pub connection: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    pub source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FormatLabel {
    pub format: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CalendarLabel {
    pub calendar: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BroadcastLabel {
    pub broadcast: String,
    pub state: String,
}

type Hist = Family<BridgeLabel, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 1 ms … ~65 s
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 17))
}

fn batch_histogram() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(1.0, 2.0, 12))
}

pub struct Metrics {
    registry: Registry,
    /// Broadcasts planned (`result`: planned) or refused.
    pub broadcasts: Family<ResultLabel, Counter>,
    /// Calendar polls by calendar (`portal/name`) and result: unchanged,
    /// changed, failed.
    pub calendar_polls: Family<CalendarLabel, Counter>,
    /// What calendars announced: reminder, agenda, change, answer.
    pub calendar_announcements: Family<KindLabel, Counter>,
    /// Recipients of each recent broadcast by state (delivered, pending,
    /// failed, unreachable); a broadcast's series go once it is done and old.
    pub broadcast_recipients: Family<BroadcastLabel, Gauge>,
    /// Events accepted from a network and stored.
    pub received: Family<BridgeLabel, Counter>,
    /// Events from a network that were not stored: duplicate, loop, unknown target.
    pub dropped: Family<ReasonLabel, Counter>,
    /// Inbound requests refused before they became events (auth, size, format).
    pub rejected: Family<ReasonLabel, Counter>,
    /// Deliveries a target network accepted.
    pub delivered: Family<BridgeLabel, Counter>,
    /// Deliveries that needed nothing sent (degraded away for the target).
    pub skipped: Family<BridgeLabel, Counter>,
    /// Failed delivery attempts, by kind (transient, permanent).
    pub failed: Family<ReasonLabel, Counter>,
    /// Delivery attempts that were retries.
    pub retries: Family<BridgeLabel, Counter>,
    /// Deliveries given up on.
    pub dead_letters: Family<BridgeLabel, Counter>,
    /// Pending deliveries per target bridge.
    pub outbox_depth: Family<BridgeLabel, Gauge>,
    /// Dead letters waiting for an operator, per target bridge.
    pub dead_letter_depth: Family<BridgeLabel, Gauge>,
    /// From the event's acceptance to the target's acceptance.
    pub delivery_latency: Hist,
    /// Events per store transaction.
    pub commit_batch: Histogram,
    /// 1 while the bridge is connected to its network.
    pub bridge_up: Family<BridgeLabel, Gauge>,
    /// Direct conversations opened, by the bridge where they started.
    pub direct_opened: Family<BridgeLabel, Counter>,
    /// Ghosts a bridge keeps on its network.
    pub ghosts: Family<BridgeLabel, Gauge>,
    /// People's presence changes shown to the other networks, by the bridge it came from.
    pub presence_updates: Family<BridgeLabel, Counter>,
    /// People in the directory, by where they come from (config, ldap).
    pub directory_people: Family<SourceLabel, Gauge>,
    /// Directory entries the last import could not use.
    pub directory_skipped: Family<SourceLabel, Gauge>,
    /// Directory imports, by result (ok, failed).
    pub directory_imports: Family<ResultLabel, Counter>,
    /// Events a network never pushed that a bridge found itself (a room's
    /// timeline or archive) and that were new: the network's misses.
    pub reconciled: Family<BridgeLabel, Counter>,
    /// Links from another network not fetched, by why (where they led, or
    /// what came of them).
    pub fetch_refused: Family<ReasonLabel, Counter>,
    /// Deliveries held back to go out gathered later (a send limit,
    /// batched notices), by bridge and reason.
    pub held_back: Family<ReasonLabel, Counter>,
    /// Archive searches answered over HTTP, by result (ok, refused, failed).
    pub archive_searches: Family<ResultLabel, Counter>,
    /// Files of archived messages, by what became of them (kept,
    /// duplicate, link, refused, failed).
    pub archive_files: Family<ResultLabel, Counter>,
    /// Bytes of the files the archive keeps (each content once).
    pub archive_file_bytes: Gauge,
    /// Events in the archive, the database's bytes, holds in force.
    pub archive_events: Gauge,
    pub archive_bytes: Gauge,
    pub archive_holds: Gauge,
    /// Events retention deleted.
    pub archive_pruned: Counter,
    /// Exports made (from the export log), by format.
    pub archive_exports: Family<FormatLabel, Counter>,
    /// Console logins (and bearer tokens) by result: ok, failed, limited.
    pub admin_logins: Family<ResultLabel, Counter>,
    /// Every delivery's latency summed (ms) and counted, all bridges
    /// together: the console's overview (not exported; the histogram is).
    pub latency_ms_sum: std::sync::atomic::AtomicU64,
    pub latency_count: std::sync::atomic::AtomicU64,
    /// With several instances (docs/scale-out.md): 1 for each connection
    /// this instance holds now.
    pub cluster_owned: Family<ConnectionLabel, Gauge>,
    /// Leases this instance renewed (all connections).
    pub cluster_renewals: Counter,
    /// Connections this instance took, by connection (from another
    /// instance, or free at its start).
    pub cluster_takeovers: Family<ConnectionLabel, Counter>,
    /// Connections this instance let go of without meaning to (a renewal
    /// that did not come through in time).
    pub cluster_lost: Family<ConnectionLabel, Counter>,
    /// With `cluster.nats`: 1 while connected to NATS.
    pub cluster_nats_up: Gauge,
    /// With `cluster.nats`: hints from other instances taken (new rows,
    /// leases let go of).
    pub cluster_hints: Counter,
    /// With `cluster.nats`: the instances up, by their heartbeats (this
    /// one included).
    pub cluster_instances: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// One piece (over 80 lines): every metric registered once, in one list.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("causeway");
        let received = Family::<BridgeLabel, Counter>::default();
        let dropped = Family::<ReasonLabel, Counter>::default();
        let rejected = Family::<ReasonLabel, Counter>::default();
        let delivered = Family::<BridgeLabel, Counter>::default();
        let skipped = Family::<BridgeLabel, Counter>::default();
        let failed = Family::<ReasonLabel, Counter>::default();
        let retries = Family::<BridgeLabel, Counter>::default();
        let dead_letters = Family::<BridgeLabel, Counter>::default();
        let outbox_depth = Family::<BridgeLabel, Gauge>::default();
        let dead_letter_depth = Family::<BridgeLabel, Gauge>::default();
        let delivery_latency: Hist = Family::new_with_constructor(latency_histogram);
        let commit_batch = batch_histogram();
        let bridge_up = Family::<BridgeLabel, Gauge>::default();
        let direct_opened = Family::<BridgeLabel, Counter>::default();
        let ghosts = Family::<BridgeLabel, Gauge>::default();
        let presence_updates = Family::<BridgeLabel, Counter>::default();
        let directory_people = Family::<SourceLabel, Gauge>::default();
        let directory_skipped = Family::<SourceLabel, Gauge>::default();
        let directory_imports = Family::<ResultLabel, Counter>::default();
        let reconciled = Family::<BridgeLabel, Counter>::default();
        let fetch_refused = Family::<ReasonLabel, Counter>::default();
        let held_back = Family::<ReasonLabel, Counter>::default();
        let archive_searches = Family::<ResultLabel, Counter>::default();
        let archive_files = Family::<ResultLabel, Counter>::default();
        let archive_file_bytes = Gauge::default();
        let archive_events = Gauge::default();
        let archive_bytes = Gauge::default();
        let archive_holds = Gauge::default();
        let archive_pruned = Counter::default();
        let archive_exports = Family::<FormatLabel, Counter>::default();
        let admin_logins = Family::<ResultLabel, Counter>::default();
        let broadcasts = Family::<ResultLabel, Counter>::default();
        let broadcast_recipients = Family::<BroadcastLabel, Gauge>::default();
        let calendar_polls = Family::<CalendarLabel, Counter>::default();
        let calendar_announcements = Family::<KindLabel, Counter>::default();
        registry.register("calendar_polls", "Calendar polls by calendar and result (unchanged, changed, failed)", calendar_polls.clone());
        registry.register(
            "calendar_announcements",
            "Announcements calendars made (reminder, agenda, change, answer)",
            calendar_announcements.clone(),
        );
        registry.register("broadcasts", "Broadcasts by result (planned, refused)", broadcasts.clone());
        registry.register(
            "broadcast_recipients",
            "Recipients of recent broadcasts by state (delivered, pending, failed, unreachable)",
            broadcast_recipients.clone(),
        );
        registry.register("events_received", "Events accepted from a network and stored", received.clone());
        registry.register(
            "events_dropped",
            "Inbound events not stored (duplicate, loop, unknown_target, forged_reference, own_message)",
            dropped.clone(),
        );
        registry.register("inbound_rejected", "Inbound requests refused before they became events", rejected.clone());
        registry.register("events_delivered", "Deliveries the target network accepted", delivered.clone());
        registry.register("deliveries_skipped", "Deliveries degraded away for the target", skipped.clone());
        registry.register("delivery_failures", "Failed delivery attempts by kind", failed.clone());
        registry.register("delivery_retries", "Delivery attempts that were retries", retries.clone());
        registry.register("dead_letters", "Deliveries given up on", dead_letters.clone());
        registry.register("outbox_depth", "Pending deliveries per target bridge", outbox_depth.clone());
        registry.register("dead_letter_depth", "Dead letters waiting for an operator", dead_letter_depth.clone());
        registry.register(
            "delivery_latency_seconds",
            "Time from an event's acceptance to the target's acceptance",
            delivery_latency.clone(),
        );
        registry.register("store_commit_batch_events", "Events per store transaction", commit_batch.clone());
        registry.register("bridge_up", "1 while the bridge is connected to its network", bridge_up.clone());
        registry.register(
            "direct_conversations_opened",
            "Direct conversations opened, by the bridge where they started",
            direct_opened.clone(),
        );
        registry.register("ghosts", "Ghosts a bridge keeps on its network", ghosts.clone());
        registry.register("presence_updates", "Presence changes shown to other networks, by origin bridge", presence_updates.clone());
        registry.register("directory_people", "People in the directory, by source", directory_people.clone());
        registry.register("directory_skipped", "Directory entries the last import could not use, by source", directory_skipped.clone());
        registry.register("directory_imports", "Directory imports by result (ok, failed)", directory_imports.clone());
        registry.register("reconciled", "Events the network never pushed that the bridge found itself, by bridge", reconciled.clone());
        registry.register(
            "fetch_refused",
            "Links from another network not fetched (sent as links), by bridge and reason",
            fetch_refused.clone(),
        );
        registry.register(
            "held_back",
            "Deliveries held back to go out gathered later (send limit, batched notices), by bridge and reason",
            held_back.clone(),
        );
        registry.register(
            "archive_searches",
            "Archive searches answered over HTTP, by result (ok, refused: a query or time that says nothing, failed)",
            archive_searches.clone(),
        );
        registry.register(
            "archive_files",
            "Files of archived messages by result (kept, duplicate: kept already, link: the portal keeps links, refused, failed)",
            archive_files.clone(),
        );
        registry.register("archive_file_bytes", "Bytes of the files the archive keeps, each content once", archive_file_bytes.clone());
        registry.register("archive_events", "Events in the archive", archive_events.clone());
        registry.register("archive_bytes", "Bytes of the archive's database (events, search index, message map)", archive_bytes.clone());
        registry.register("archive_holds", "Legal holds in force", archive_holds.clone());
        registry.register("archive_retention_deleted_events", "Events retention deleted from the archive", archive_pruned.clone());
        registry.register("archive_exports", "Archive exports made, by format (from the export log)", archive_exports.clone());
        registry.register(
            "admin_logins",
            "Console logins and admin tokens presented, by result (ok, failed, limited)",
            admin_logins.clone(),
        );
        for r in ["kept", "duplicate", "link", "refused", "failed"] {
            let _ = archive_files.get_or_create(&ResultLabel { result: r.into() });
        }
        for r in ["ok", "failed"] {
            let _ = directory_imports.get_or_create(&ResultLabel { result: r.into() });
        }
        for r in ["ok", "refused", "failed"] {
            let _ = archive_searches.get_or_create(&ResultLabel { result: r.into() });
        }
        let cluster_owned = Family::<ConnectionLabel, Gauge>::default();
        let cluster_renewals = Counter::default();
        let cluster_takeovers = Family::<ConnectionLabel, Counter>::default();
        let cluster_lost = Family::<ConnectionLabel, Counter>::default();
        registry.register("cluster_owned", "1 for each connection this instance holds under its lease", cluster_owned.clone());
        registry.register("cluster_lease_renewals", "Leases this instance renewed", cluster_renewals.clone());
        registry.register("cluster_takeovers", "Connections this instance took under a lease", cluster_takeovers.clone());
        registry.register("cluster_leases_lost", "Leases this instance lost without letting go", cluster_lost.clone());
        let cluster_nats_up = Gauge::default();
        let cluster_hints = Counter::default();
        let cluster_instances = Gauge::default();
        registry.register("cluster_nats_up", "1 while connected to NATS (cluster.nats)", cluster_nats_up.clone());
        registry.register(
            "cluster_hints",
            "Hints from other instances taken over NATS (new rows, leases let go of)",
            cluster_hints.clone(),
        );
        registry.register("cluster_instances", "Instances up by their heartbeats in NATS, this one included", cluster_instances.clone());
        Metrics {
            cluster_nats_up,
            cluster_hints,
            cluster_instances,
            cluster_owned,
            cluster_renewals,
            cluster_takeovers,
            cluster_lost,
            registry,
            received,
            dropped,
            rejected,
            delivered,
            skipped,
            failed,
            retries,
            dead_letters,
            outbox_depth,
            dead_letter_depth,
            delivery_latency,
            commit_batch,
            bridge_up,
            direct_opened,
            ghosts,
            presence_updates,
            directory_people,
            directory_skipped,
            directory_imports,
            reconciled,
            fetch_refused,
            held_back,
            archive_searches,
            archive_files,
            archive_file_bytes,
            archive_events,
            archive_bytes,
            archive_holds,
            archive_pruned,
            archive_exports,
            admin_logins,
            broadcasts,
            calendar_polls,
            calendar_announcements,
            broadcast_recipients,
            latency_ms_sum: Default::default(),
            latency_count: Default::default(),
        }
    }

    /// Every per-bridge series at zero, so dashboards and alerts see a
    /// bridge from its start (not only after its first event).
    pub fn register_bridge(&self, name: &str) {
        let b = bridge(name);
        let _ = self.received.get_or_create(&b);
        let _ = self.delivered.get_or_create(&b);
        let _ = self.skipped.get_or_create(&b);
        let _ = self.retries.get_or_create(&b);
        let _ = self.dead_letters.get_or_create(&b);
        let _ = self.outbox_depth.get_or_create(&b);
        let _ = self.dead_letter_depth.get_or_create(&b);
        let _ = self.delivery_latency.get_or_create(&b);
        let _ = self.bridge_up.get_or_create(&b);
        let _ = self.direct_opened.get_or_create(&b);
        let _ = self.ghosts.get_or_create(&b);
        let _ = self.presence_updates.get_or_create(&b);
        let _ = self.reconciled.get_or_create(&b);
        for r in ["transient", "permanent"] {
            let _ = self.failed.get_or_create(&reason(name, r));
        }
        for r in ["duplicate", "loop", "unknown_target", "forged_reference", "own_message"] {
            let _ = self.dropped.get_or_create(&reason(name, r));
        }
    }

    /// A delivery took `ms` from its commit.
    pub fn delivered_after(&self, ms: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        self.latency_ms_sum.fetch_add(ms, Relaxed);
        self.latency_count.fetch_add(1, Relaxed);
    }

    /// The mean delivery latency since the start, in seconds.
    pub fn delivery_latency_summary(&self) -> Option<f64> {
        use std::sync::atomic::Ordering::Relaxed;
        let n = self.latency_count.load(Relaxed);
        (n > 0).then(|| self.latency_ms_sum.load(Relaxed) as f64 / n as f64 / 1000.0)
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

pub fn bridge(name: &str) -> BridgeLabel {
    BridgeLabel { bridge: name.to_string() }
}

pub fn reason(name: &str, reason: &str) -> ReasonLabel {
    ReasonLabel { bridge: name.to_string(), reason: reason.to_string() }
}

pub fn source(name: &str) -> SourceLabel {
    SourceLabel { source: name.to_string() }
}

pub fn result(name: &str) -> ResultLabel {
    ResultLabel { result: name.to_string() }
}
