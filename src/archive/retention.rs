//! Retention and legal hold (docs/archive.md): how long the archive keeps
//! what was said, and what it keeps whatever the retention says.
//!
//! A background task ([`super::jobs::Pruner`]) deletes, a portal at a time
//! and a thousand events per transaction, the events older than the
//! portal's retention together with their search entries, message-map rows
//! and files; an event an outbox row still needs, and whatever a hold
//! covers, stays. State that bridges keep per message goes when no
//! retention keeps messages of its time. This module holds the words of it.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Events deleted in one transaction.
pub const BATCH: u32 = 1000;

/// How long the archive keeps a portal's events.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum Retention {
    /// Kept for this long after they were said.
    For(Duration),
    /// Never deleted.
    #[default]
    Forever,
}

impl std::str::FromStr for Retention {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s == "forever" {
            return Ok(Retention::Forever);
        }
        match humantime::parse_duration(s) {
            Ok(d) if d.is_zero() => Err("must be longer than zero (or `forever`)".into()),
            Ok(d) => Ok(Retention::For(d)),
            Err(e) => Err(format!("{s:?} is neither `forever` nor a duration such as `365d`: {e}")),
        }
    }
}

impl fmt::Display for Retention {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Retention::Forever => f.write_str("forever"),
            Retention::For(d) => write!(f, "{}", humantime::format_duration(*d)),
        }
    }
}

impl Serialize for Retention {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Retention {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A legal hold: retention deletes nothing it covers until it is released.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Hold {
    pub id: i64,
    /// A whole portal…
    #[serde(skip_serializing_if = "Option::is_none")]
    pub portal: Option<String>,
    /// …or what one person (a directory id, or an account `bridge:id`) said.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub person: Option<String>,
    pub reason: String,
    pub set_by: String,
    pub set_ms: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub released_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub released_by: Option<String>,
}

/// A hold asked for (CLI or API).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewHold {
    #[serde(default)]
    pub portal: Option<String>,
    #[serde(default)]
    pub person: Option<String>,
    pub reason: String,
    pub by: String,
}

/// Longest reason, name or target a hold takes (bytes).
const MAX_FIELD: usize = 1000;

/// Why `by` cannot name who set or released a hold, if it cannot.
pub fn check_by(by: &str) -> Result<(), String> {
    if by.trim().is_empty() {
        return Err("who set or released the hold is needed (`by`)".into());
    }
    if by.len() > MAX_FIELD {
        return Err(format!("`by` is at most {MAX_FIELD} bytes"));
    }
    Ok(())
}

impl NewHold {
    /// Why this hold cannot be set, if it cannot.
    pub fn check(&self) -> Result<(), String> {
        let portal = self.portal.as_deref().map(str::trim).filter(|p| !p.is_empty());
        let person = self.person.as_deref().map(str::trim).filter(|p| !p.is_empty());
        if portal.is_some() == person.is_some() {
            return Err("a hold covers either a portal or a person: give one of them".into());
        }
        if self.reason.trim().is_empty() {
            return Err("a hold needs a reason (a case number, who asked for it)".into());
        }
        check_by(&self.by)?;
        let long = [portal, person, Some(self.reason.as_str())].into_iter().flatten().any(|f| f.len() > MAX_FIELD);
        if long {
            return Err(format!("a hold's fields are at most {MAX_FIELD} bytes"));
        }
        Ok(())
    }
}

/// What one transaction of retention deleted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    pub events: u64,
    /// Contents no attachment is any longer: their files are to go.
    pub blobs: Vec<String>,
}

/// What a pass of retention did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Events deleted, by portal.
    pub portals: BTreeMap<String, u64>,
    pub files: u64,
    pub message_state: u64,
}

/// The archive's size.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub events: u64,
    /// The database file's pages.
    pub bytes: u64,
    pub holds: u64,
    pub file_bytes: u64,
    /// Exports made, by format (from the export log).
    pub exports: BTreeMap<String, u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_is_forever_or_a_duration() {
        assert_eq!("forever".parse::<Retention>(), Ok(Retention::Forever));
        assert_eq!("365d".parse::<Retention>(), Ok(Retention::For(Duration::from_secs(365 * 86_400))));
        assert_eq!("2s".parse::<Retention>(), Ok(Retention::For(Duration::from_secs(2))));
        for bad in ["0s", "never", "", "-1d", "365"] {
            assert!(bad.parse::<Retention>().is_err(), "{bad}");
        }
        assert!(Retention::For(Duration::from_secs(1)) < Retention::Forever, "forever is the longest");
    }

    #[test]
    fn a_hold_names_one_thing_with_a_reason_and_who() {
        let ok = NewHold { portal: Some("ops".into()), person: None, reason: "case 42".into(), by: "legal".into() };
        assert_eq!(ok.check(), Ok(()));
        let cases = [
            NewHold { person: Some("bob".into()), ..ok.clone() },
            NewHold { portal: None, ..ok.clone() },
            NewHold { portal: Some("  ".into()), ..ok.clone() },
            NewHold { reason: " ".into(), ..ok.clone() },
            NewHold { by: "".into(), ..ok.clone() },
            NewHold { reason: "x".repeat(MAX_FIELD + 1), ..ok.clone() },
            NewHold { by: "x".repeat(MAX_FIELD + 1), ..ok.clone() },
        ];
        for c in cases {
            assert!(c.check().is_err(), "{c:?}");
        }
    }
}
