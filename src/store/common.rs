//! What the stores share: how an event and an id's kind are stored, what
//! the search index keeps of a message, how many matches search ranks.

use causeway_core::{Event, IdKind};

use super::StoreError;

pub(super) fn parse_event(id: &str, json: &str) -> Result<Event, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt(id.to_string(), e))
}

/// How `message_map.kind` stores each [`IdKind`]: the one place that says it
/// (the schema is in docs/architecture.md).
pub(super) const fn kind_code(kind: IdKind) -> i64 {
    match kind {
        IdKind::Origin => 0,
        IdKind::DeliveryKey => 1,
        IdKind::Reported => 2,
        IdKind::Alias => 3,
    }
}

/// The [`IdKind`] a stored `message_map.kind` stands for.
pub(super) fn kind_of(code: i64) -> Option<IdKind> {
    [IdKind::Origin, IdKind::DeliveryKey, IdKind::Reported, IdKind::Alias].into_iter().find(|k| kind_code(*k) == code)
}

/// A message's row of the search index.
pub(super) struct Indexed {
    pub(super) text: String,
    pub(super) folded: String,
    pub(super) files: String,
}

impl Indexed {
    pub(super) fn of(text: &str, attachments: &[causeway_core::Attachment]) -> Indexed {
        let files: Vec<&str> = attachments.iter().filter_map(|a| a.name.as_deref()).collect();
        let names = files.join(" ");
        let folded = [crate::archive::folded(text), crate::archive::folded(&names)];
        Indexed { text: text.to_string(), folded: folded.into_iter().flatten().collect::<Vec<_>>().join(" "), files: names }
    }
}

/// Matches a search ranks, newest first: beyond them, a word in every
/// tenth message would cost a ranking of the whole archive (BENCHMARKS.md).
pub const RANKED_AMONG: u32 = 10_000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_id_kind_has_its_own_stored_code_as_the_schema_says() {
        let all = [IdKind::Origin, IdKind::DeliveryKey, IdKind::Reported, IdKind::Alias];
        let codes: Vec<i64> = all.iter().map(|k| kind_code(*k)).collect();
        assert_eq!(codes, [0, 1, 2, 3], "stored in databases: never renumber");
        for k in all {
            assert_eq!(kind_of(kind_code(k)), Some(k));
        }
        assert_eq!(kind_of(4), None);
    }
}
