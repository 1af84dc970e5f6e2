//! iCalendar objects into the occurrences of a window of time: recurrences
//! (RRULE, RDATE, EXDATE, overrides by RECURRENCE-ID) expanded by
//! `calcard` in each event's own zone, so an event at 09:00 in Berlin stays
//! at 09:00 there across a change of clocks. What a server sends is
//! outside data: sizes and counts are bounded, text is cleaned.

use calcard::icalendar::{ICalendar, ICalendarComponentType, ICalendarProperty, ICalendarStatus, ICalendarValue};

use super::Occurrence;
use causeway_core::text::one_line;
use causeway_core::time_zone::Tz;

/// Objects larger than this are not read (a whole ICS file is one object).
pub const MAX_OBJECT_BYTES: usize = 16 * 1024 * 1024;
/// Occurrences expanded per object, from the first (an event repeated
/// every minute for years stops here; so does a file of more events than
/// this since its first).
const MAX_EXPANDED: usize = 200_000;
/// Occurrences kept per calendar.
pub const MAX_KEPT: usize = 5_000;

/// The occurrences of `text`'s events that overlap `[from, to)`, in time
/// zone `default` where the object names none. Cancelled events and
/// occurrences are left out.
pub fn occurrences(calendar: &str, text: &str, default: Tz, from: i64, to: i64) -> Vec<Occurrence> {
    if text.len() > MAX_OBJECT_BYTES {
        return Vec::new();
    }
    let Ok(mut ical) = ICalendar::parse(text) else { return Vec::new() };
    // calcard matches an override to its master by SEQUENCE as well as by
    // RECURRENCE-ID; an override with a later SEQUENCE (as Google sends
    // them) would then show beside the occurrence it moves.
    for c in &mut ical.components {
        c.entries.retain(|e| e.name != ICalendarProperty::Sequence);
    }
    let expanded = ical.expand_dates(default, MAX_EXPANDED);
    let mut out = Vec::new();
    for ev in expanded.events {
        let Some(comp) = ical.components.get(ev.comp_id as usize) else { continue };
        if comp.component_type != ICalendarComponentType::VEvent || matches!(comp.status(), Some(ICalendarStatus::Cancelled)) {
            continue;
        }
        let (start, end) = ev.timestamps();
        if !(start < to && end.max(start + 1) > from) {
            continue;
        }
        let Some(uid) = comp.uid().map(|u| one_line(u, 255)).filter(|u| !u.is_empty()) else { continue };
        let text_of = |p: ICalendarProperty, most: usize| {
            comp.property(&p)
                .and_then(|e| e.values.first())
                .and_then(ICalendarValue::as_text)
                .map(|t| one_line(t, most))
                .filter(|t| !t.is_empty())
        };
        let all_day = comp
            .property(&ICalendarProperty::Dtstart)
            .and_then(|e| e.values.first())
            .and_then(ICalendarValue::as_partial_date_time)
            .is_some_and(|p| !p.has_time());
        out.push(Occurrence {
            calendar: calendar.to_string(),
            uid,
            start,
            end: end.max(start),
            all_day,
            summary: text_of(ICalendarProperty::Summary, 200).unwrap_or_else(|| "(no title)".into()),
            location: text_of(ICalendarProperty::Location, 200),
        });
        if out.len() >= MAX_KEPT {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn utc(y: i32, m: u32, d: u32, h: u32, min: u32) -> i64 {
        chrono::Utc.with_ymd_and_hms(y, m, d, h, min, 0).unwrap().timestamp()
    }

    const WEEKLY: &str = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:test\r\nBEGIN:VEVENT\r\nUID:standup\r\n\
DTSTAMP:20260101T000000Z\r\nDTSTART;TZID=Europe/Berlin:20270318T090000\r\nDTEND;TZID=Europe/Berlin:20270318T093000\r\n\
RRULE:FREQ=WEEKLY;COUNT=4\r\nEXDATE;TZID=Europe/Berlin:20270401T090000\r\nSUMMARY:Stand-up\r\nLOCATION:Room 1\r\nEND:VEVENT\r\n\
BEGIN:VEVENT\r\nUID:standup\r\nSEQUENCE:2\r\nDTSTAMP:20260101T000000Z\r\nRECURRENCE-ID;TZID=Europe/Berlin:20270325T090000\r\n\
DTSTART;TZID=Europe/Berlin:20270326T100000\r\nDTEND;TZID=Europe/Berlin:20270326T103000\r\nSUMMARY:Stand-up (moved)\r\nEND:VEVENT\r\n\
END:VCALENDAR\r\n";

    /// Weekly at 09:00 in Berlin across the change to summer time (28 March
    /// 2027): 08:00 UTC before, 07:00 after; an excluded date is left out,
    /// a moved one is where it was moved to, once (its later SEQUENCE does
    /// not double it).
    #[test]
    fn recurrences_keep_their_local_time_across_dst_with_exceptions() {
        let got = occurrences("Team", WEEKLY, Tz::UTC, utc(2027, 1, 1, 0, 0), utc(2027, 5, 1, 0, 0));
        let starts: Vec<(i64, &str)> = got.iter().map(|o| (o.start, o.summary.as_str())).collect();
        assert_eq!(
            starts,
            [(utc(2027, 3, 18, 8, 0), "Stand-up"), (utc(2027, 3, 26, 9, 0), "Stand-up (moved)"), (utc(2027, 4, 8, 7, 0), "Stand-up")],
            "{got:?}"
        );
        assert!(got.iter().all(|o| o.end - o.start == 1800 && o.calendar == "Team" && o.uid == "standup"));
        // A window sees only what overlaps it.
        let april = occurrences("Team", WEEKLY, Tz::UTC, utc(2027, 4, 2, 0, 0), utc(2027, 5, 1, 0, 0));
        assert_eq!(april.len(), 1);
    }

    #[test]
    fn floating_times_take_the_portals_zone_and_whole_days_are_days() {
        let floating = "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:f\r\nDTSTART:20270110T120000\r\nDURATION:PT1H\r\nSUMMARY:Lunch\r\nEND:VEVENT\r\n\
BEGIN:VEVENT\r\nUID:d\r\nDTSTART;VALUE=DATE:20270111\r\nSUMMARY:Holiday\r\nEND:VEVENT\r\n\
BEGIN:VEVENT\r\nUID:c\r\nSTATUS:CANCELLED\r\nDTSTART:20270110T130000Z\r\nSUMMARY:Gone\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";
        let berlin = causeway_core::time_zone::zone("Europe/Berlin").unwrap();
        let got = occurrences("Team", floating, berlin, utc(2027, 1, 1, 0, 0), utc(2027, 2, 1, 0, 0));
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!((got[0].summary.as_str(), got[0].start, got[0].end), ("Lunch", utc(2027, 1, 10, 11, 0), utc(2027, 1, 10, 12, 0)));
        assert!(got[1].all_day && got[1].summary == "Holiday");
    }

    #[test]
    fn hostile_objects_give_nothing_or_bounded_clean_text() {
        for bad in [
            "",
            "BEGIN:VCALENDAR",
            "BEGIN:VEVENT\r\nUID:x\r\nEND:VEVENT",
            "\u{0}\u{1}\u{2}",
            "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nEND:VEVENT\r\nEND:VCALENDAR",
        ] {
            assert!(occurrences("T", bad, Tz::UTC, 0, i64::MAX / 2).is_empty(), "{bad:?}");
        }
        // Every second for ever: bounded.
        let flood = "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:f\r\nDTSTART:20270101T000000Z\r\nRRULE:FREQ=SECONDLY\r\nSUMMARY:x\u{7}y\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";
        let got = occurrences("T", flood, Tz::UTC, 0, i64::MAX / 2);
        assert!(!got.is_empty() && got.len() <= MAX_KEPT);
        assert_eq!(got[0].summary, "x y");
        assert!(occurrences("T", &"x".repeat(MAX_OBJECT_BYTES + 1), Tz::UTC, 0, i64::MAX / 2).is_empty());
    }
}
