//! What a list holds back from its subscribers, to send gathered: notices
//! of changes (edits, retractions, topics, reactions with `batch`) and
//! messages beyond the send limit. Nobody on another network can make the
//! bridge send more than `send_limit` mails per window, plus one gathered
//! mail per `batch_every`; nothing held back is lost (it waits in the store).

use std::collections::HashMap;
use std::time::Instant;

use crate::config::SendLimit;

/// Mails sent in the current window, per list and per (list, sender). Kept
/// in memory: a restart starts a new window. Holds only lists and senders
/// that had mail sent in this window (at most `per_list` senders a list).
pub struct SendCounts {
    limit: SendLimit,
    window_start: Instant,
    lists: HashMap<String, u32>,
    senders: HashMap<(String, String), u32>,
}

impl SendCounts {
    pub fn new(limit: SendLimit, now: Instant) -> Self {
        SendCounts { limit, window_start: now, lists: HashMap::new(), senders: HashMap::new() }
    }

    /// Whether one more mail to `list` caused by `sender` is within the
    /// limit; counted if it is.
    pub fn admit(&mut self, list: &str, sender: &str, now: Instant) -> bool {
        if now.duration_since(self.window_start) >= self.limit.per {
            self.window_start = now;
            self.lists.clear();
            self.senders.clear();
        }
        let key = (list.to_string(), sender.to_string());
        let by_list = self.lists.get(list).copied().unwrap_or(0);
        let by_sender = self.senders.get(&key).copied().unwrap_or(0);
        if by_list >= self.limit.per_list || by_sender >= self.limit.per_sender {
            return false;
        }
        *self.lists.entry(key.0.clone()).or_default() += 1;
        *self.senders.entry(key).or_default() += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn limit(per_list: u32, per_sender: u32) -> SendLimit {
        SendLimit { per_list, per_sender, per: Duration::from_secs(60) }
    }

    #[test]
    fn a_sender_and_a_list_get_their_share_per_window_and_no_more() {
        let t0 = Instant::now();
        let mut c = SendCounts::new(limit(5, 2), t0);
        assert!(c.admit("ops", "matrix:@a", t0));
        assert!(c.admit("ops", "matrix:@a", t0));
        assert!(!c.admit("ops", "matrix:@a", t0), "the sender's share is used up");
        assert!(c.admit("dev", "matrix:@a", t0), "per list: another list has its own");
        assert!(c.admit("ops", "xmpp:b", t0));
        assert!(c.admit("ops", "xmpp:b", t0));
        assert!(c.admit("ops", "xmpp:c", t0));
        assert!(!c.admit("ops", "xmpp:d", t0), "the list's share is used up, whoever asks");
        // A refusal is not counted: the next window starts afresh.
        let t1 = t0 + Duration::from_secs(60);
        assert!(c.admit("ops", "matrix:@a", t1));
        assert_eq!(c.senders.len(), 1, "old senders are forgotten with their window");
    }

    #[test]
    fn ever_new_senders_do_not_grow_the_counts_past_the_list_limit() {
        let t0 = Instant::now();
        let mut c = SendCounts::new(limit(100, 1), t0);
        for i in 0..10_000 {
            c.admit("ops", &format!("stranger{i}"), t0);
        }
        assert_eq!(c.senders.len(), 100);
    }
}
