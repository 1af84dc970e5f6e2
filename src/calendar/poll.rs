//! The daemon's calendars at work: each calendar polled every `every`, its
//! coming week expanded into the book, its reminders and changes announced;
//! each portal's daily agenda. Every announcement has a key of its own
//! (the calendar, the event, the occurrence…), so it is made once, however
//! often it is tried and across restarts.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::source::{Fetched, Seen, Source};
use super::{CalendarConfig, Change, Occurrence, Span};
use crate::config::PortalConfig;
use crate::metrics::{CalendarLabel, KindLabel};
use crate::router::Router;

/// How far back and ahead occurrences are kept.
const BEHIND: i64 = 86_400;
const AHEAD: i64 = 8 * 86_400;
/// How often reminders and the agenda are looked at.
const TICK: Duration = Duration::from_secs(1);
/// Where what each calendar last knew is kept (the store's state).
const STATE: &str = "causeway-calendars";
/// The daily agenda is not made up for later than this after its time.
const AGENDA_LATE: i64 = 3600;

fn now_s() -> i64 {
    causeway_core::now_ms() / 1000
}

/// Run every portal's calendars until shutdown.
pub async fn run(router: Arc<Router>, portals: Vec<PortalConfig>, shutdown: watch::Receiver<bool>) {
    let mut tasks = Vec::new();
    for p in portals {
        for c in &p.calendars {
            tasks.push(tokio::spawn(calendar(router.clone(), p.id.clone(), c.clone(), shutdown.clone())));
        }
        if let Some(at) = p.agenda.as_deref().and_then(super::agenda_time)
            && !p.calendars.is_empty()
        {
            tasks.push(tokio::spawn(agenda(router.clone(), p.id.clone(), at, p.calendars.len(), shutdown.clone())));
        }
    }
    for t in tasks {
        let _ = t.await;
    }
}

/// Announce into the portal once per key; counted by kind. False when the
/// store did not take it (tried again later).
async fn announce(router: &Router, portal: &str, key: &str, kind: &str, text: String) -> bool {
    match router.announce(portal, key, text).await {
        Ok(made) => {
            if made {
                router.metrics().calendar_announcements.get_or_create(&KindLabel { kind: kind.into() }).inc();
            }
            true
        }
        Err(e) => {
            tracing::warn!(portal, key, "calendar announcement not made yet: {e}");
            false
        }
    }
}

async fn calendar(router: Arc<Router>, portal: String, config: CalendarConfig, mut shutdown: watch::Receiver<bool>) {
    let source = Source::new(config.clone());
    let label = |result: &str| CalendarLabel { calendar: format!("{portal}/{}", config.name), result: result.into() };
    let state_key = format!("next:{portal}:{}", config.name);
    // Each event's next occurrence as last seen: what changes are told by
    // (none yet: the first look tells nothing).
    let mut next: Option<HashMap<String, Occurrence>> = match router.store().load_state(STATE, &state_key).await {
        Ok(v) => v.and_then(|v| serde_json::from_str(&v).ok()),
        Err(e) => {
            tracing::warn!(portal, calendar = %config.name, "what the calendar knew is not readable: {e}");
            None
        }
    };
    let mut seen = Seen::default();
    let mut objects: Vec<String> = Vec::new();
    let mut polled_at: Option<tokio::time::Instant> = None;
    let mut done: HashSet<String> = HashSet::new();
    loop {
        if polled_at.is_none_or(|t| t.elapsed() >= config.every) {
            polled_at = Some(tokio::time::Instant::now());
            match source.fetch(&seen).await {
                Ok(Fetched::Unchanged) => {
                    router.metrics().calendar_polls.get_or_create(&label("unchanged")).inc();
                }
                Ok(Fetched::Changed { objects: o, seen: s }) => {
                    router.metrics().calendar_polls.get_or_create(&label("changed")).inc();
                    objects = o;
                    seen = s;
                }
                Err(e) => {
                    router.metrics().calendar_polls.get_or_create(&label("failed")).inc();
                    tracing::warn!(portal, calendar = %config.name, "calendar not read: {e}");
                }
            }
            if seen != Seen::default() || !objects.is_empty() {
                let now = now_s();
                let (tz, tz_name) = router.calendars().zone(&portal);
                let mut all: Vec<Occurrence> =
                    objects.iter().flat_map(|o| super::expand::occurrences(&config.name, o, tz, now - BEHIND, now + AHEAD)).collect();
                all.truncate(super::expand::MAX_KEPT);
                let after = super::next_of(&all, now);
                router.calendars().set(&portal, &config.name, all);
                if let Some(before) = &next
                    && config.changes
                {
                    for c in super::changes(before, &after, now) {
                        let key = match &c {
                            Change::New(o) => format!("new|{}", o.key()),
                            Change::Cancelled(o) => format!("cancelled|{}", o.key()),
                            Change::Moved { was, now } => format!("moved|{}|{}|{}|{}", was.key(), now.start, now.end, now.summary),
                        };
                        announce(&router, &portal, &key, "change", super::change_text(&c, tz, &tz_name)).await;
                    }
                }
                if next.as_ref() != Some(&after) {
                    let value = serde_json::to_string(&after).expect("occurrences serialize");
                    if let Err(e) = router.store().save_state(STATE, &state_key, &value).await {
                        tracing::warn!(portal, calendar = %config.name, "what the calendar knows is not kept: {e}");
                    }
                }
                next = Some(after);
            }
        }
        if !config.remind.is_zero() {
            let now = now_s();
            let lead = config.remind.as_secs() as i64;
            let (tz, tz_name) = router.calendars().zone(&portal);
            let due: Vec<Occurrence> = router
                .calendars()
                .between(&portal, now, now + lead + 1)
                .into_iter()
                .filter(|o| o.calendar == config.name && !o.all_day && o.start - lead <= now && now < o.start)
                .collect();
            for o in due {
                let key = format!("remind|{}", o.key());
                if !done.contains(&key) && announce(&router, &portal, &key, "reminder", super::reminder(&o, now, tz, &tz_name)).await {
                    done.insert(key);
                }
            }
            if done.len() > 10_000 {
                done.clear();
            }
        }
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(TICK) => {}
        }
    }
}

async fn agenda(router: Arc<Router>, portal: String, at: chrono::NaiveTime, calendars: usize, mut shutdown: watch::Receiver<bool>) {
    use chrono::TimeZone;
    let mut made: Option<chrono::NaiveDate> = None;
    loop {
        let now = now_s();
        let (tz, _) = router.calendars().zone(&portal);
        if router.calendars().count(&portal) >= calendars
            && let Some(local) = tz.timestamp_opt(now, 0).single()
        {
            let due = tz.from_local_datetime(&local.date_naive().and_time(at)).earliest().map(|d| d.timestamp());
            if let Some(due) = due
                && due <= now
                && now < due + AGENDA_LATE
                && made != Some(local.date_naive())
            {
                let key = format!("agenda|{}", local.date_naive());
                if announce(&router, &portal, &key, "agenda", super::agenda(router.calendars(), &portal, Span::Today, now)).await {
                    made = Some(local.date_naive());
                }
            }
        }
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(TICK * 10) => {}
        }
    }
}
