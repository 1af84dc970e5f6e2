//! Calendars announced into portals (docs/calendars.md): per portal, any
//! number of calendars (an ICS URL or a CalDAV collection), polled; their
//! events within the coming week kept in the [`Book`]; reminders before an
//! event starts, a daily agenda, changes and cancellations announced into
//! the portal's rooms; `!agenda` answered from the book.
//!
//! This file holds what the router needs (the book, the command, the
//! texts); `source` fetches, `expand` reads iCalendar into occurrences,
//! `poll` runs it all.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::Duration;

use chrono::{DateTime, NaiveTime, TimeZone};
use serde::{Deserialize, Serialize};

use causeway_core::time_zone::Tz;

pub mod expand;
pub mod poll;
pub mod source;

/// `portals[].calendars[]` in the config.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CalendarConfig {
    /// Shown with its events.
    pub name: String,
    /// A CalDAV collection (`https://dav.corp.example/cal/team/`).
    #[serde(default)]
    pub caldav: Option<String>,
    /// Or an iCalendar file by URL.
    #[serde(default)]
    pub ics: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
    /// Or `password_file`.
    #[serde(default)]
    pub password: Option<String>,
    /// How often it is looked at (one request when nothing changed).
    #[serde(default = "default_every", with = "humantime_serde")]
    pub every: Duration,
    /// How long before an event starts it is announced; `0s`: not.
    #[serde(default = "default_remind", with = "humantime_serde")]
    pub remind: Duration,
    /// Announce new, changed and cancelled events.
    #[serde(default = "yes")]
    pub changes: bool,
}

fn default_every() -> Duration {
    Duration::from_secs(300)
}

fn default_remind() -> Duration {
    Duration::from_secs(600)
}

fn yes() -> bool {
    true
}

impl CalendarConfig {
    /// Everything wrong, each at its path under `path`.
    pub fn check(&self, path: &str) -> Vec<(String, String)> {
        let mut errors = Vec::new();
        if self.name.trim().is_empty() {
            errors.push((format!("{path}.name"), "a calendar needs a name".into()));
        }
        match (&self.caldav, &self.ics) {
            (Some(_), Some(_)) | (None, None) => {
                errors.push((path.to_string(), "give one of `caldav` (a collection) or `ics` (a file)".into()))
            }
            (Some(u), None) | (None, Some(u)) => {
                if reqwest::Url::parse(u).map(|u| !matches!(u.scheme(), "http" | "https")).unwrap_or(true) {
                    let which = if self.caldav.is_some() { "caldav" } else { "ics" };
                    errors.push((format!("{path}.{which}"), format!("{u:?} is not an http(s) URL")));
                }
            }
        }
        if self.password.is_some() && self.username.is_none() {
            errors.push((format!("{path}.username"), "a password needs a username".into()));
        }
        if self.every < Duration::from_secs(1) {
            errors.push((format!("{path}.every"), "at least 1s".into()));
        }
        errors
    }
}

/// The fuzz target `calendar` (fuzz/): what a calendar server sends — a
/// WebDAV multistatus (its change tag and objects), or an iCalendar object
/// expanded into a week of occurrences — and the texts made of it.
pub fn fuzz(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if text.starts_with('<') {
        let _ = source::change_tag(text);
        let _ = source::calendar_data(text);
        return;
    }
    let start = 1_797_292_800;
    let found = expand::occurrences("fuzz", text, Tz::UTC, start, start + 8 * 86_400);
    assert!(found.len() <= expand::MAX_KEPT);
    let book = Book::new();
    book.set("p", "fuzz", found.clone());
    for o in &found {
        assert!(o.end >= o.start && o.summary.chars().count() <= 200 && !o.summary.chars().any(char::is_control));
        let _ = reminder(o, start, Tz::UTC, "UTC");
    }
    let _ = agenda(&book, "p", Span::Week, start);
    let next = next_of(&found, start);
    for c in changes(&HashMap::new(), &next, start) {
        let _ = change_text(&c, Tz::UTC, "UTC");
    }
}

/// `portals[].agenda`: "08:00", the local time of the daily agenda.
pub fn agenda_time(s: &str) -> Option<NaiveTime> {
    NaiveTime::parse_from_str(s.trim(), "%H:%M").ok()
}

/// One occurrence of an event (a recurring event has many).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Occurrence {
    pub calendar: String,
    pub uid: String,
    /// Seconds since the epoch.
    pub start: i64,
    pub end: i64,
    pub all_day: bool,
    pub summary: String,
    pub location: Option<String>,
}

impl Occurrence {
    /// Names this occurrence (its event and its start) for announcements
    /// made once.
    pub fn key(&self) -> String {
        format!("{}|{}|{}", self.calendar, self.uid, self.start)
    }
}

/// What each portal's calendars hold now: the occurrences of the coming
/// days, kept by the poller, read by `!agenda`.
#[derive(Default)]
pub struct Book {
    /// (portal, calendar) → occurrences, by start.
    held: RwLock<HashMap<(String, String), Vec<Occurrence>>>,
    /// Portal → its time zone and the zone's name.
    zones: RwLock<HashMap<String, (Tz, String)>>,
}

impl Book {
    pub fn new() -> Self {
        Book::default()
    }

    pub fn set_zone(&self, portal: &str, name: Option<&str>) {
        let zone = name.and_then(|n| Some((causeway_core::time_zone::zone(n)?, n.to_string()))).unwrap_or((Tz::UTC, "UTC".into()));
        self.zones.write().unwrap().insert(portal.to_string(), zone);
    }

    pub fn zone(&self, portal: &str) -> (Tz, String) {
        self.zones.read().unwrap().get(portal).cloned().unwrap_or((Tz::UTC, "UTC".into()))
    }

    pub fn set(&self, portal: &str, calendar: &str, mut occurrences: Vec<Occurrence>) {
        occurrences.sort_by(|a, b| (a.start, &a.summary).cmp(&(b.start, &b.summary)));
        self.held.write().unwrap().insert((portal.to_string(), calendar.to_string()), occurrences);
    }

    /// How many of the portal's calendars have been read.
    pub fn count(&self, portal: &str) -> usize {
        self.held.read().unwrap().keys().filter(|(p, _)| p == portal).count()
    }

    /// Whether the portal has calendars at all.
    pub fn has(&self, portal: &str) -> bool {
        self.held.read().unwrap().keys().any(|(p, _)| p == portal)
    }

    /// The portal's occurrences that overlap `[from, to)`, by start.
    pub fn between(&self, portal: &str, from: i64, to: i64) -> Vec<Occurrence> {
        let held = self.held.read().unwrap();
        let mut all: Vec<Occurrence> = held
            .iter()
            .filter(|((p, _), _)| p == portal)
            .flat_map(|(_, o)| o.iter())
            .filter(|o| o.start < to && o.end.max(o.start + 1) > from)
            .cloned()
            .collect();
        all.sort_by(|a, b| (a.start, &a.summary).cmp(&(b.start, &b.summary)));
        all
    }
}

/// `!agenda` written in a room.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Span {
    Today,
    Tomorrow,
    Week,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Agenda(Span),
    Invalid(String),
}

const USAGE: &str = "Write `!agenda`, `!agenda tomorrow` or `!agenda week`.";

/// The agenda command a message is, if it is one: a message (not a notice)
/// whose text is `!agenda [today|tomorrow|week]`.
pub fn command(body: &causeway_core::Body) -> Option<Command> {
    let rest = body.command("!agenda")?;
    Some(match rest.trim().to_ascii_lowercase().as_str() {
        "" | "today" => Command::Agenda(Span::Today),
        "tomorrow" => Command::Agenda(Span::Tomorrow),
        "week" => Command::Agenda(Span::Week),
        _ => Command::Invalid(USAGE.into()),
    })
}

fn local(t: i64, tz: Tz) -> Option<DateTime<Tz>> {
    tz.timestamp_opt(t, 0).single()
}

/// The start of the local day `days` after the one `now` is in.
pub fn day_start(now: i64, tz: Tz, days: i64) -> i64 {
    let Some(today) = local(now, tz).map(|d| d.date_naive()) else { return now };
    let day = today + chrono::Days::new(days.max(0) as u64);
    let midnight = day.and_hms_opt(0, 0, 0).expect("midnight exists");
    tz.from_local_datetime(&midnight).earliest().map_or(now, |d| d.timestamp())
}

/// "09:00–09:30", "all day", or with the day when it is another one.
fn times(o: &Occurrence, tz: Tz) -> String {
    if o.all_day {
        return "all day".into();
    }
    match (local(o.start, tz), local(o.end, tz)) {
        (Some(s), Some(e)) if e.date_naive() == s.date_naive() && e > s => format!("{}–{}", s.format("%H:%M"), e.format("%H:%M")),
        (Some(s), Some(e)) if e > s => format!("{} – {}", s.format("%H:%M"), e.format("%a %-d %b %H:%M")),
        (Some(s), _) => s.format("%H:%M").to_string(),
        _ => "?".into(),
    }
}

fn line(o: &Occurrence, tz: Tz) -> String {
    let place = o.location.as_ref().map(|l| format!(" — {l}")).unwrap_or_default();
    format!("{} {}{place} ({})", times(o, tz), o.summary, o.calendar)
}

/// The answer to `!agenda`, and the daily agenda.
pub fn agenda(book: &Book, portal: &str, span: Span, now: i64) -> String {
    let (tz, tz_name) = book.zone(portal);
    let (from, days, title) = match span {
        Span::Today => (day_start(now, tz, 0), 1, "Today"),
        Span::Tomorrow => (day_start(now, tz, 1), 1, "Tomorrow"),
        Span::Week => (day_start(now, tz, 0), 7, "This week"),
    };
    let mut out = String::new();
    for d in 0..days {
        let (a, b) = (day_start(from, tz, d), day_start(from, tz, d + 1));
        let events = book.between(portal, a, b);
        if days > 1 && events.is_empty() {
            continue;
        }
        let date = local(a, tz).map(|d| d.format("%a %-d %b").to_string()).unwrap_or_default();
        if days == 1 {
            out.push_str(&format!("📅 {title}, {date} ({tz_name}):"));
        } else {
            out.push_str(&format!("\n{date}:"));
        }
        if events.is_empty() {
            out.push_str("\nnothing in the calendars");
        }
        for o in events {
            out.push_str(&format!("\n{}", line(&o, tz)));
        }
    }
    if days > 1 {
        out = if out.is_empty() {
            format!("📅 {title} ({tz_name}): nothing in the calendars")
        } else {
            format!("📅 {title} ({tz_name}):{out}")
        };
    }
    if !book.has(portal) {
        out = "This room's portal has no calendars.".into();
    }
    out
}

/// "⏰ In 10 minutes: Stand-up, 09:00–09:30 (Europe/Berlin) — Room 4.12".
pub fn reminder(o: &Occurrence, now: i64, tz: Tz, tz_name: &str) -> String {
    let minutes = ((o.start - now) as f64 / 60.0).round().max(0.0) as i64;
    let when = match minutes {
        0 => "Now".to_string(),
        1 => "In 1 minute".to_string(),
        m => format!("In {m} minutes"),
    };
    let place = o.location.as_ref().map(|l| format!(" — {l}")).unwrap_or_default();
    format!("⏰ {when}: {}, {} ({tz_name}){place} [{}]", o.summary, times(o, tz), o.calendar)
}

/// What changed about an event, as announced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    New(Occurrence),
    Moved { was: Occurrence, now: Occurrence },
    Cancelled(Occurrence),
}

/// An announcement of a change.
pub fn change_text(c: &Change, tz: Tz, tz_name: &str) -> String {
    let when = |o: &Occurrence| {
        let day = local(o.start, tz).map(|d| d.format("%a %-d %b").to_string()).unwrap_or_default();
        format!("{day}, {} ({tz_name})", times(o, tz))
    };
    match c {
        Change::New(o) => format!("📅 New in {}: {}, {}", o.calendar, o.summary, when(o)),
        Change::Moved { was, now } if was.summary != now.summary && was.start == now.start => {
            format!("📅 Changed in {}: {} is now {}, {}", now.calendar, was.summary, now.summary, when(now))
        }
        Change::Moved { was, now } => format!("📅 Changed in {}: {}, now {} (was {})", now.calendar, now.summary, when(now), when(was)),
        Change::Cancelled(o) => format!("❌ Cancelled in {}: {}, {}", o.calendar, o.summary, when(o)),
    }
}

/// Each event's next occurrence, by UID: what changes are told by.
pub fn next_of(occurrences: &[Occurrence], now: i64) -> HashMap<String, Occurrence> {
    let mut next: HashMap<String, Occurrence> = HashMap::new();
    for o in occurrences.iter().filter(|o| o.end.max(o.start) >= now) {
        match next.get(&o.uid) {
            Some(n) if n.start <= o.start => {}
            _ => {
                next.insert(o.uid.clone(), o.clone());
            }
        }
    }
    next
}

/// The changes from `before` to `after` (each event's next occurrence): new
/// events, moved or renamed ones, and those gone (cancelled or deleted)
/// whose next occurrence had not begun.
pub fn changes(before: &HashMap<String, Occurrence>, after: &HashMap<String, Occurrence>, now: i64) -> Vec<Change> {
    let mut out = Vec::new();
    for (uid, now_o) in after {
        match before.get(uid) {
            None => out.push(Change::New(now_o.clone())),
            Some(was) if (was.start, was.end, &was.summary, &was.location) != (now_o.start, now_o.end, &now_o.summary, &now_o.location) => {
                // A recurring event's next occurrence moving on because the
                // last one is over is no change.
                if !(was.end <= now && now_o.start > was.start && was.summary == now_o.summary) {
                    out.push(Change::Moved { was: was.clone(), now: now_o.clone() });
                }
            }
            Some(_) => {}
        }
    }
    for (uid, was) in before {
        if !after.contains_key(uid) && was.start > now {
            out.push(Change::Cancelled(was.clone()));
        }
    }
    out.sort_by_key(|c| match c {
        Change::New(o) | Change::Cancelled(o) | Change::Moved { now: o, .. } => o.start,
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn occ(uid: &str, start: i64, minutes: i64, summary: &str) -> Occurrence {
        Occurrence {
            calendar: "Team".into(),
            uid: uid.into(),
            start,
            end: start + minutes * 60,
            all_day: false,
            summary: summary.into(),
            location: None,
        }
    }

    // Tue 15 Dec 2026 08:00 UTC = 09:00 in Berlin.
    const T0: i64 = 1_797_292_800 + 8 * 3600;

    #[test]
    fn commands_are_messages_that_start_with_the_word() {
        use causeway_core::{Body, MessageKind, Text};
        let msg = |t: &str, kind| Body::message(Text::plain(t), kind);
        let c = |t: &str| command(&msg(t, MessageKind::Text));
        assert_eq!(c("!agenda"), Some(Command::Agenda(Span::Today)));
        assert_eq!(c(" !agenda  Tomorrow "), Some(Command::Agenda(Span::Tomorrow)));
        assert_eq!(c("!agenda week"), Some(Command::Agenda(Span::Week)));
        assert!(matches!(c("!agenda next year"), Some(Command::Invalid(_))));
        assert_eq!(c("!agendas"), None);
        assert_eq!(c("see !agenda"), None);
        assert_eq!(command(&msg("!agenda", MessageKind::Notice)), None);
    }

    #[test]
    fn the_agenda_is_the_portals_day_in_its_zone() {
        let book = Book::new();
        book.set_zone("ops", Some("Europe/Berlin"));
        assert_eq!(agenda(&book, "ops", Span::Today, T0), "This room's portal has no calendars.");
        let mut review = occ("r", T0 + 5 * 3600, 60, "Quarterly review");
        review.location = Some("Room 4.12".into());
        book.set("ops", "Team", vec![review, occ("s", T0, 30, "Stand-up"), occ("s", T0 + 86_400, 30, "Stand-up")]);
        assert_eq!(
            agenda(&book, "ops", Span::Today, T0),
            "📅 Today, Tue 15 Dec (Europe/Berlin):\n09:00–09:30 Stand-up (Team)\n14:00–15:00 Quarterly review — Room 4.12 (Team)"
        );
        assert_eq!(agenda(&book, "ops", Span::Tomorrow, T0), "📅 Tomorrow, Wed 16 Dec (Europe/Berlin):\n09:00–09:30 Stand-up (Team)");
        let week = agenda(&book, "ops", Span::Week, T0);
        assert!(week.starts_with("📅 This week (Europe/Berlin):\nTue 15 Dec:\n09:00–09:30 Stand-up"), "{week}");
        assert!(week.contains("\nWed 16 Dec:\n09:00–09:30 Stand-up (Team)"), "{week}");
        // Late in the evening in Berlin is already the next day there.
        let late = T0 + 15 * 3600;
        assert!(agenda(&book, "ops", Span::Today, late).starts_with("📅 Today, Wed 16 Dec"));
    }

    #[test]
    fn reminders_and_changes_say_what_and_when() {
        let (tz, name) = (causeway_core::time_zone::zone("Europe/Berlin").unwrap(), "Europe/Berlin");
        let s = occ("s", T0, 30, "Stand-up");
        assert_eq!(reminder(&s, T0 - 600, tz, name), "⏰ In 10 minutes: Stand-up, 09:00–09:30 (Europe/Berlin) [Team]");
        let before = next_of(&[s.clone(), occ("x", T0 + 3600, 60, "Lunch")], T0 - 600);
        let moved = occ("s", T0 + 1800, 30, "Stand-up");
        let after = next_of(&[moved.clone(), occ("n", T0 + 7200, 60, "Retro")], T0 - 600);
        let c = changes(&before, &after, T0 - 600);
        assert_eq!(c.len(), 3, "{c:?}");
        let texts: Vec<String> = c.iter().map(|c| change_text(c, tz, name)).collect();
        assert_eq!(
            texts[0],
            "📅 Changed in Team: Stand-up, now Tue 15 Dec, 09:30–10:00 (Europe/Berlin) (was Tue 15 Dec, 09:00–09:30 (Europe/Berlin))"
        );
        assert_eq!(texts[1], "❌ Cancelled in Team: Lunch, Tue 15 Dec, 10:00–11:00 (Europe/Berlin)");
        assert_eq!(texts[2], "📅 New in Team: Retro, Tue 15 Dec, 11:00–12:00 (Europe/Berlin)");
        // A daily event whose occurrence is over moves on to tomorrow's:
        // no change.
        let today = next_of(&[s.clone(), occ("s", T0 + 86_400, 30, "Stand-up")], T0 - 60);
        let later = next_of(&[s.clone(), occ("s", T0 + 86_400, 30, "Stand-up")], T0 + 3600);
        assert!(changes(&today, &later, T0 + 3600).is_empty());
    }

    #[test]
    fn calendars_are_checked() {
        let c = |v: serde_json::Value| serde_json::from_value::<CalendarConfig>(v).unwrap().check("portals[0].calendars[0]");
        assert!(c(serde_json::json!({"name": "Team", "caldav": "https://dav.example/cal/team/"})).is_empty());
        assert!(c(serde_json::json!({"name": "Team"}))[0].1.contains("one of"));
        assert!(c(serde_json::json!({"name": "Team", "ics": "file:///etc/passwd"}))[0].1.contains("http(s)"));
        assert!(c(serde_json::json!({"name": "Team", "ics": "https://x/y.ics", "password": "p"}))[0].0.ends_with("username"));
        assert_eq!(agenda_time("08:30"), NaiveTime::from_hms_opt(8, 30, 0));
        assert_eq!(agenda_time("8h"), None);
    }
}
