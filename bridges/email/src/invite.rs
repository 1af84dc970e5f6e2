//! Invitations in mail: the iCalendar parts of a mail (`text/calendar`
//! inline, `application/ics` or a `.ics` file attached, as Outlook,
//! Thunderbird and Google send them) read into one [`Invitation`], and the
//! card it is shown as in the list's portal. Everything here reads outside
//! data: sizes are bounded, text is cleaned, nothing panics.

use std::collections::BTreeMap;

use calcard::icalendar::{
    ICalendar, ICalendarComponent, ICalendarComponentType, ICalendarEntry, ICalendarFrequency, ICalendarMethod, ICalendarParameterName,
    ICalendarProperty, ICalendarStatus, ICalendarValue,
};
use causeway_core::Text;
use causeway_core::text::{escape_html, one_line};
use causeway_core::time_zone::Tz;
use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone};
use mail_parser::{Message, MessageParser, MimeHeaders};
use serde::{Deserialize, Serialize};

/// Calendar parts larger than this are not read.
const MAX_PART_BYTES: usize = 512 * 1024;
/// At most this many calendar parts of one mail are read.
const MAX_PARTS: usize = 8;
/// Attendees shown on a card; the rest are counted.
const MAX_ATTENDEES: usize = 30;

/// What the invitation asks (the VCALENDAR's METHOD).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Method {
    /// A new or changed event (REQUEST, PUBLISH, ADD).
    Request,
    /// The event is cancelled.
    Cancel,
    /// An attendee answers.
    Reply,
}

/// When an event starts or ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum When {
    /// A whole day.
    Date(NaiveDate),
    /// An instant (from a time zone, an offset or UTC).
    At(i64),
    /// A local time with no zone: shown as written.
    Floating(NaiveDateTime),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attendee {
    pub address: String,
    pub name: Option<String>,
    /// ACCEPTED, DECLINED, TENTATIVE, NEEDS-ACTION…, as sent.
    pub status: Option<String>,
}

/// One event of an invitation, as it is shown.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invitation {
    pub method: Method,
    pub uid: String,
    pub sequence: i64,
    /// DTSTAMP, seconds since the epoch: which of two with the same
    /// SEQUENCE is newer.
    pub stamp: i64,
    pub summary: String,
    pub start: Option<When>,
    pub end: Option<When>,
    pub location: Option<String>,
    pub organizer: Option<Attendee>,
    pub attendees: Vec<Attendee>,
    /// Attendees beyond those kept.
    pub more_attendees: usize,
    /// How it repeats ("every week"), when it does.
    pub repeats: Option<String>,
    pub cancelled: bool,
}

fn is_calendar(ctype: &str, subtype: &str, name: Option<&str>) -> bool {
    let (c, s) = (ctype.to_ascii_lowercase(), subtype.to_ascii_lowercase());
    (c == "text" && s == "calendar")
        || (c == "application" && s == "ics")
        || name.is_some_and(|n| n.to_ascii_lowercase().ends_with(".ics") && (c == "application" || c == "text"))
}

/// Whether this part of a mail is an iCalendar object (to be read as an
/// invitation, not shown as a body or kept as a file).
pub fn is_calendar_part(part: &mail_parser::MessagePart) -> bool {
    part.content_type().is_some_and(|c| is_calendar(c.ctype(), c.subtype().unwrap_or(""), part.attachment_name()))
}

/// The invitation a mail carries, if it carries one: every calendar part
/// read, the same event sent twice (inline and attached) taken once, the
/// newest (SEQUENCE, then DTSTAMP) kept. Only the first event (by UID) is
/// taken; a recurrence's overrides are not shown apart.
pub fn of_mail(m: &Message) -> Option<Invitation> {
    let mut found: Vec<Invitation> = Vec::new();
    for part in m.parts.iter().filter(|p| is_calendar_part(p)).take(MAX_PARTS) {
        let bytes = part.contents();
        if bytes.len() > MAX_PART_BYTES {
            continue;
        }
        let Ok(text) = std::str::from_utf8(bytes) else { continue };
        found.extend(parse(text));
    }
    let uid = found.first()?.uid.clone();
    found.into_iter().filter(|i| i.uid == uid).max_by_key(|i| (i.sequence, i.stamp))
}

/// A mail's invitation, read from the raw mail (for tests and fuzzing).
pub fn of_raw(raw: &[u8]) -> Option<Invitation> {
    of_mail(&MessageParser::default().parse(raw)?)
}

/// The events of one iCalendar object (masters only: overrides of one
/// occurrence, with a RECURRENCE-ID, are left out).
pub fn parse(text: &str) -> Vec<Invitation> {
    let Ok(ical) = ICalendar::parse(text) else { return Vec::new() };
    let method = ical
        .components
        .iter()
        .find(|c| c.component_type == ICalendarComponentType::VCalendar)
        .and_then(|c| c.property(&ICalendarProperty::Method))
        .and_then(|e| e.values.first())
        .map(|v| match v {
            ICalendarValue::Method(ICalendarMethod::Cancel) => Some(Method::Cancel),
            ICalendarValue::Method(ICalendarMethod::Reply) => Some(Method::Reply),
            ICalendarValue::Method(ICalendarMethod::Request | ICalendarMethod::Publish | ICalendarMethod::Add) => Some(Method::Request),
            _ => None,
        });
    // No METHOD: a plain calendar file, shown as an event.
    let Some(method) = method.unwrap_or(Some(Method::Request)) else { return Vec::new() };
    let tzs = ical.build_tz_resolver().with_default(Tz::Floating);
    let mut out = Vec::new();
    for ev in ical.components.iter().filter(|c| c.component_type == ICalendarComponentType::VEvent) {
        if ev.has_property(&ICalendarProperty::RecurrenceId) {
            continue;
        }
        let Some(uid) = ev.uid().map(|u| one_line(u, 255)).filter(|u| !u.is_empty()) else { continue };
        let text = |p: ICalendarProperty, most: usize| {
            ev.property(&p).and_then(|e| e.values.first()).and_then(|v| v.as_text()).map(|t| one_line(t, most)).filter(|t| !t.is_empty())
        };
        let when = |p: ICalendarProperty| ev.property(&p).and_then(|e| when_of(e, &tzs));
        let start = when(ICalendarProperty::Dtstart);
        let end = when(ICalendarProperty::Dtend).or_else(|| {
            let d = ev.property(&ICalendarProperty::Duration)?.values.first()?;
            let ICalendarValue::Duration(d) = d else { return None };
            let delta = d.to_time_delta()?;
            match start? {
                When::At(t) => Some(When::At(t.checked_add(delta.num_seconds())?)),
                When::Floating(n) => Some(When::Floating(n.checked_add_signed(delta)?)),
                When::Date(day) => Some(When::Date(day.checked_add_signed(delta)?)),
            }
        });
        let mut attendees: Vec<Attendee> = ev.properties(&ICalendarProperty::Attendee).filter_map(person).collect();
        let more_attendees = attendees.len().saturating_sub(MAX_ATTENDEES);
        attendees.truncate(MAX_ATTENDEES);
        out.push(Invitation {
            method,
            uid,
            sequence: ev
                .property(&ICalendarProperty::Sequence)
                .and_then(|e| e.values.first())
                .and_then(|v| v.as_integer())
                .unwrap_or(0)
                .clamp(0, i64::from(u32::MAX)),
            stamp: ev.property(&ICalendarProperty::Dtstamp).and_then(|e| when_of(e, &tzs)).map_or(0, |w| match w {
                When::At(t) => t,
                When::Floating(n) => n.and_utc().timestamp(),
                When::Date(d) => d.and_hms_opt(0, 0, 0).map_or(0, |n| n.and_utc().timestamp()),
            }),
            summary: text(ICalendarProperty::Summary, 200).unwrap_or_else(|| "(no title)".into()),
            start,
            end,
            location: text(ICalendarProperty::Location, 200),
            organizer: ev.property(&ICalendarProperty::Organizer).and_then(person),
            attendees,
            more_attendees,
            repeats: repeats(ev),
            cancelled: method == Method::Cancel || matches!(ev.status(), Some(ICalendarStatus::Cancelled)),
        });
    }
    out
}

fn when_of(e: &ICalendarEntry, tzs: &calcard::icalendar::timezone::TzResolver<&str>) -> Option<When> {
    let p = e.values.first()?.as_partial_date_time()?;
    let dt = p.to_date_time()?;
    if !p.has_time() {
        return Some(When::Date(dt.date_time.date()));
    }
    if dt.offset.is_some() {
        return dt.to_date_time_with_tz(Tz::UTC).map(|d| When::At(d.timestamp()));
    }
    match tzs.resolve_or_default(e.tz_id()) {
        Tz::Floating => Some(When::Floating(dt.date_time)),
        // A local time a change of clocks skips or repeats: its first
        // meaning (or, when skipped, as written).
        tz => Some(match tz.from_local_datetime(&dt.date_time).earliest() {
            Some(d) => When::At(d.timestamp()),
            None => When::Floating(dt.date_time),
        }),
    }
}

fn person(e: &ICalendarEntry) -> Option<Attendee> {
    let address = one_line(e.calendar_address()?, 254);
    if address.is_empty() {
        return None;
    }
    let param = |p: ICalendarParameterName, most: usize| {
        e.parameter(&p).and_then(|v| v.as_text()).map(|t| one_line(t, most)).filter(|t| !t.is_empty())
    };
    Some(Attendee { address, name: param(ICalendarParameterName::Cn, 100), status: param(ICalendarParameterName::Partstat, 20) })
}

fn repeats(ev: &ICalendarComponent) -> Option<String> {
    let ICalendarValue::RecurrenceRule(r) = ev.property(&ICalendarProperty::Rrule)?.values.first()? else { return None };
    let n = r.interval.unwrap_or(1).max(1);
    let unit = match r.freq {
        ICalendarFrequency::Yearly => "year",
        ICalendarFrequency::Monthly => "month",
        ICalendarFrequency::Weekly => "week",
        ICalendarFrequency::Daily => "day",
        ICalendarFrequency::Hourly => "hour",
        ICalendarFrequency::Minutely => "minute",
        ICalendarFrequency::Secondly => "second",
    };
    let mut s = if n == 1 { format!("every {unit}") } else { format!("every {n} {unit}s") };
    if let Some(c) = r.count {
        s.push_str(&format!(", {c} times"));
    } else if let Some(until) = r.until.as_ref().and_then(|u| u.to_date_time()) {
        s.push_str(&format!(", until {}", until.date_time.date().format("%-d %b %Y")));
    }
    Some(s)
}

fn day(d: NaiveDate) -> String {
    d.format("%a %-d %b %Y").to_string()
}

fn local<T: TimeZone>(t: i64, tz: &T) -> Option<DateTime<T>> {
    tz.timestamp_opt(t, 0).single()
}

/// "Tue 15 Dec 2026, 10:00–11:30" in `tz`.
fn span(start: Option<When>, end: Option<When>, tz: Tz) -> Option<String> {
    let at = |w: When| -> Option<NaiveDateTime> {
        match w {
            When::At(t) => local(t, &tz).map(|d| d.naive_local()),
            When::Floating(n) => Some(n),
            When::Date(_) => None,
        }
    };
    match (start?, end) {
        (When::Date(s), e) => {
            // DTEND of a whole-day event is the day after its last.
            let last = match e {
                Some(When::Date(e)) => e.pred_opt().filter(|l| *l > s),
                _ => None,
            };
            Some(match last {
                Some(l) => format!("{} – {} (all day)", day(s), day(l)),
                None => format!("{} (all day)", day(s)),
            })
        }
        (s, e) => {
            let s = at(s)?;
            let first = format!("{}, {}", day(s.date()), s.format("%H:%M"));
            Some(match e.and_then(at) {
                Some(e) if e.date() == s.date() => format!("{first}–{}", e.format("%H:%M")),
                Some(e) if e > s => format!("{first} – {}, {}", day(e.date()), e.format("%H:%M")),
                _ => first,
            })
        }
    }
}

fn named(a: &Attendee) -> String {
    match &a.name {
        Some(n) => format!("{n} <{}>", a.address),
        None => a.address.clone(),
    }
}

fn status_word(s: Option<&str>) -> &'static str {
    match s.map(str::to_ascii_uppercase).as_deref() {
        Some("ACCEPTED") => "accepted",
        Some("DECLINED") => "declined",
        Some("TENTATIVE") => "maybe",
        Some("DELEGATED") => "delegated",
        _ => "invited",
    }
}

/// The card an invitation is shown as, with times in `tz` (the portal's).
pub fn card(inv: &Invitation, tz: Tz, tz_name: &str) -> Text {
    let head = if inv.cancelled { "❌ Cancelled" } else { "📅 Invitation" };
    let mut lines: Vec<(String, String)> = Vec::new();
    if let Some(w) = span(inv.start, inv.end, tz) {
        let zoned = matches!(inv.start, Some(When::At(_)));
        lines.push(("When".into(), if zoned { format!("{w} ({tz_name})") } else { w }));
    }
    if let Some(r) = &inv.repeats {
        lines.push(("Repeats".into(), r.clone()));
    }
    if let Some(l) = &inv.location {
        lines.push(("Where".into(), l.clone()));
    }
    if let Some(o) = &inv.organizer {
        lines.push(("Organiser".into(), named(o)));
    }
    if !inv.attendees.is_empty() {
        let mut by: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for a in &inv.attendees {
            by.entry(status_word(a.status.as_deref())).or_default().push(a.name.clone().unwrap_or_else(|| a.address.clone()));
        }
        let mut all: Vec<String> = by.iter().map(|(word, who)| format!("{} ({word})", who.join(", "))).collect();
        if inv.more_attendees > 0 {
            all.push(format!("and {} more", inv.more_attendees));
        }
        lines.push(("Attendees".into(), all.join("; ")));
    }
    let mut plain = format!("{head}: {}", inv.summary);
    for (k, v) in &lines {
        plain.push_str(&format!("\n{k}: {v}"));
    }
    let title = if inv.cancelled { format!("<del>{}</del>", escape_html(&inv.summary)) } else { escape_html(&inv.summary) };
    let mut html = format!("<p><strong>{head}: {title}</strong>");
    for (k, v) in &lines {
        html.push_str(&format!("<br>{k}: {}", escape_html(v)));
    }
    html.push_str("</p>");
    Text { plain, html: Some(html) }
}

/// What a reply says, from the attendee who sent it: "accepted" etc.
pub fn answer_of(inv: &Invitation, from: &str) -> Option<&'static str> {
    let a = inv.attendees.iter().find(|a| a.address.eq_ignore_ascii_case(from))?;
    Some(status_word(a.status.as_deref()))
}

/// What to do with an invitation, given the one shown for its UID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Show it as a new card.
    New,
    /// Edit the card shown into this.
    Update,
    /// Say in the room what the attendee answered.
    Answer(&'static str),
    /// Older than, or the same as, what is shown; or a reply to nothing
    /// shown, or from someone it does not invite.
    Stale,
}

/// Newer means a higher SEQUENCE, or the same with a later DTSTAMP; a
/// cancellation of the same SEQUENCE is newer. Replies change no card.
pub fn decide(shown: Option<&Invitation>, inv: &Invitation, from: &str) -> Decision {
    match (shown, inv.method) {
        (_, Method::Reply) => match (shown, answer_of(inv, from)) {
            (Some(_), Some(word)) => Decision::Answer(word),
            _ => Decision::Stale,
        },
        (None, _) => Decision::New,
        (Some(s), _) => {
            let newer = (inv.sequence, inv.stamp) > (s.sequence, s.stamp) || (inv.cancelled && !s.cancelled && inv.sequence >= s.sequence);
            if newer { Decision::Update } else { Decision::Stale }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use causeway_core::time_zone::zone;

    const REQUEST: &str = "BEGIN:VCALENDAR\r\nPRODID:-//Microsoft Corporation//Outlook 16.0 MIMEDIR//EN\r\nVERSION:2.0\r\nMETHOD:REQUEST\r\n\
BEGIN:VTIMEZONE\r\nTZID:W. Europe Standard Time\r\nBEGIN:STANDARD\r\nDTSTART:16011028T030000\r\nRRULE:FREQ=YEARLY;BYDAY=-1SU;BYMONTH=10\r\n\
TZOFFSETFROM:+0200\r\nTZOFFSETTO:+0100\r\nEND:STANDARD\r\nBEGIN:DAYLIGHT\r\nDTSTART:16010325T020000\r\nRRULE:FREQ=YEARLY;BYDAY=-1SU;BYMONTH=3\r\n\
TZOFFSETFROM:+0100\r\nTZOFFSETTO:+0200\r\nEND:DAYLIGHT\r\nEND:VTIMEZONE\r\n\
BEGIN:VEVENT\r\nUID:040000008200E00074C5B7101A82E008\r\nSEQUENCE:0\r\nDTSTAMP:20261201T090000Z\r\n\
SUMMARY:Quarterly review\r\nDTSTART;TZID=W. Europe Standard Time:20261215T100000\r\nDTEND;TZID=W. Europe Standard Time:20261215T113000\r\n\
LOCATION:Room 4.12\r\nORGANIZER;CN=Alice Liddell:mailto:alice@mail.test\r\n\
ATTENDEE;CN=Bob Ross;PARTSTAT=NEEDS-ACTION;RSVP=TRUE:mailto:bob@mail.test\r\nATTENDEE;PARTSTAT=ACCEPTED:mailto:carol@mail.test\r\n\
RRULE:FREQ=WEEKLY;COUNT=4\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";

    fn with(from: &str, to: &str) -> String {
        REQUEST.replace(from, to)
    }

    #[test]
    fn an_outlook_request_reads_with_its_windows_zone_mapped() {
        let all = parse(REQUEST);
        assert_eq!(all.len(), 1);
        let inv = &all[0];
        assert_eq!((inv.method, inv.uid.as_str(), inv.sequence), (Method::Request, "040000008200E00074C5B7101A82E008", 0));
        // 10:00 in Berlin in December is 09:00 UTC.
        assert_eq!(inv.start, Some(When::At(chrono::Utc.with_ymd_and_hms(2026, 12, 15, 9, 0, 0).unwrap().timestamp())));
        assert_eq!(inv.organizer.as_ref().map(named).as_deref(), Some("Alice Liddell <alice@mail.test>"));
        assert_eq!(inv.attendees.len(), 2);
        assert_eq!(inv.repeats.as_deref(), Some("every week, 4 times"));
        let berlin = zone("Europe/Berlin").unwrap();
        let c = card(inv, berlin, "Europe/Berlin");
        assert_eq!(
            c.plain,
            "📅 Invitation: Quarterly review\nWhen: Tue 15 Dec 2026, 10:00–11:30 (Europe/Berlin)\nRepeats: every week, 4 times\n\
             Where: Room 4.12\nOrganiser: Alice Liddell <alice@mail.test>\nAttendees: carol@mail.test (accepted); Bob Ross (invited)"
        );
        // The same in New York: six hours earlier.
        let ny = zone("Eastern Standard Time").unwrap();
        assert!(card(inv, ny, "America/New_York").plain.contains("Tue 15 Dec 2026, 04:00–05:30 (America/New_York)"));
    }

    #[test]
    fn dst_whole_days_floating_times_and_durations() {
        // Summer time: 10:00 in Berlin in July is 08:00 UTC.
        let summer = parse(
            &with("20261215T100000", "20260715T100000").replace("DTEND;TZID=W. Europe Standard Time:20261215T113000", "DURATION:PT45M"),
        );
        assert_eq!(summer[0].start, Some(When::At(chrono::Utc.with_ymd_and_hms(2026, 7, 15, 8, 0, 0).unwrap().timestamp())));
        assert!(card(&summer[0], Tz::UTC, "UTC").plain.contains("Wed 15 Jul 2026, 08:00–08:45 (UTC)"));
        let day = with("DTSTART;TZID=W. Europe Standard Time:20261215T100000", "DTSTART;VALUE=DATE:20261224")
            .replace("DTEND;TZID=W. Europe Standard Time:20261215T113000", "DTEND;VALUE=DATE:20261227");
        assert!(card(&parse(&day)[0], Tz::UTC, "UTC").plain.contains("When: Thu 24 Dec 2026 – Sat 26 Dec 2026 (all day)\n"));
        let floating = REQUEST.replace(";TZID=W. Europe Standard Time", "");
        assert!(card(&parse(&floating)[0], Tz::UTC, "UTC").plain.contains("When: Tue 15 Dec 2026, 10:00–11:30\n"));
    }

    #[test]
    fn updates_cancellations_and_replies_are_decided_by_sequence_and_sender() {
        let first = parse(REQUEST).remove(0);
        let again = parse(REQUEST).remove(0);
        let moved = parse(&with("SEQUENCE:0", "SEQUENCE:1")).remove(0);
        let cancel = parse(&with("METHOD:REQUEST", "METHOD:CANCEL").replace("SEQUENCE:0", "SEQUENCE:1")).remove(0);
        assert!(cancel.cancelled && card(&cancel, Tz::UTC, "UTC").plain.starts_with("❌ Cancelled: Quarterly review"));
        assert!(card(&cancel, Tz::UTC, "UTC").html.unwrap().contains("<del>Quarterly review</del>"));
        assert_eq!(decide(None, &first, "alice@mail.test"), Decision::New);
        assert_eq!(decide(Some(&first), &again, "alice@mail.test"), Decision::Stale);
        assert_eq!(decide(Some(&first), &moved, "alice@mail.test"), Decision::Update);
        assert_eq!(decide(Some(&moved), &first, "alice@mail.test"), Decision::Stale);
        assert_eq!(decide(Some(&moved), &cancel, "alice@mail.test"), Decision::Update);
        assert_eq!(decide(Some(&cancel), &cancel, "alice@mail.test"), Decision::Stale);
        let reply = parse(&with("METHOD:REQUEST", "METHOD:REPLY").replace("PARTSTAT=NEEDS-ACTION", "PARTSTAT=ACCEPTED")).remove(0);
        assert_eq!(decide(Some(&first), &reply, "bob@mail.test"), Decision::Answer("accepted"));
        // A reply from someone it does not invite, or to nothing shown.
        assert_eq!(decide(Some(&first), &reply, "mallory@evil.example"), Decision::Stale);
        assert_eq!(decide(None, &reply, "bob@mail.test"), Decision::Stale);
    }

    fn mail(parts: &str) -> Vec<u8> {
        format!(
            "From: Alice Liddell <alice@mail.test>\r\nTo: bridge+ops@mail.test\r\nSubject: Invitation: Quarterly review\r\n\
             Message-ID: <inv1@mail.test>\r\nMIME-Version: 1.0\r\n{parts}"
        )
        .into_bytes()
    }

    #[test]
    fn inline_and_attached_copies_show_once_and_the_newest_wins() {
        // Google and Thunderbird: the same event inline and as invite.ics;
        // here the attached one is newer.
        let newer = with("SEQUENCE:0", "SEQUENCE:2").replace("Room 4.12", "Room 5.01");
        let raw = mail(&format!(
            "Content-Type: multipart/mixed; boundary=m\r\n\r\n--m\r\nContent-Type: multipart/alternative; boundary=a\r\n\r\n\
             --a\r\nContent-Type: text/plain\r\n\r\nYou have been invited\r\n--a\r\nContent-Type: text/calendar; method=REQUEST; charset=UTF-8\r\n\r\n{REQUEST}\r\n--a--\r\n\
             --m\r\nContent-Type: application/ics; name=invite.ics\r\nContent-Disposition: attachment; filename=invite.ics\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n--m--\r\n",
            base64(&newer)
        ));
        let inv = of_raw(&raw).unwrap();
        assert_eq!((inv.sequence, inv.location.as_deref()), (2, Some("Room 5.01")));
        // Outlook: inline only, in an alternative.
        let raw = mail(&format!(
            "Content-Type: multipart/alternative; boundary=a\r\n\r\n--a\r\nContent-Type: text/html\r\n\r\n<p>hi</p>\r\n\
             --a\r\nContent-Type: text/calendar; method=REQUEST\r\nContent-Transfer-Encoding: 8bit\r\n\r\n{REQUEST}\r\n--a--\r\n"
        ));
        assert_eq!(of_raw(&raw).unwrap().summary, "Quarterly review");
        assert_eq!(of_raw(&mail("Content-Type: text/plain\r\n\r\nno calendar here\r\n")), None);
    }

    fn base64(s: &str) -> String {
        const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let b = s.as_bytes();
        let mut out = String::new();
        for (i, c) in b.chunks(3).enumerate() {
            let n = (u32::from(c[0]) << 16) | (u32::from(*c.get(1).unwrap_or(&0)) << 8) | u32::from(*c.get(2).unwrap_or(&0));
            for k in 0..4 {
                out.push(if k <= c.len() { T[(n >> (18 - 6 * k)) as usize & 63] as char } else { '=' });
            }
            if i % 19 == 18 {
                out.push_str("\r\n");
            }
        }
        out
    }

    #[test]
    fn hostile_calendars_give_nothing_or_clean_bounded_text() {
        for bad in [
            "",
            "BEGIN:VCALENDAR",
            "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nEND:VEVENT\r\nEND:VCALENDAR",
            "BEGIN:VCALENDAR\r\nMETHOD:COUNTER\r\nBEGIN:VEVENT\r\nUID:x\r\nEND:VEVENT\r\nEND:VCALENDAR",
            "\u{0}\u{1}BEGIN:VEVENT",
        ] {
            assert!(parse(bad).is_empty(), "{bad:?}");
        }
        let long = "x".repeat(10_000);
        let hostile = with("SUMMARY:Quarterly review", &format!("SUMMARY:a\\nb\u{7}c{long}"))
            .replace("DTSTART;TZID=W. Europe Standard Time:20261215T100000", "DTSTART;TZID=Nowhere/Atlantis:99991315T256100");
        let inv = parse(&hostile).remove(0);
        assert!(inv.summary.chars().count() <= 200 && !inv.summary.chars().any(char::is_control), "{:?}", inv.summary);
        assert_eq!(inv.start, None);
        let many: String = (0..500).map(|i| format!("ATTENDEE:mailto:p{i}@mail.test\r\n")).collect();
        let crowd = parse(&with("RRULE:FREQ=WEEKLY;COUNT=4\r\n", &many)).remove(0);
        assert_eq!((crowd.attendees.len(), crowd.more_attendees), (MAX_ATTENDEES, 472));
        assert!(card(&crowd, Tz::UTC, "UTC").plain.contains("and 472 more"));
    }
}
