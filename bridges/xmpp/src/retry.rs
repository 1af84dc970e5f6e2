//! Holding what the store refused: an event read off the stream is tried
//! again until it is taken, and what came after it waits behind it (the
//! stream is not read meanwhile: the queue to the router fills and the
//! server is pushed back on, nothing is buffered without bound).

use std::time::Duration;

/// First wait after a refusal.
pub(crate) const INITIAL: Duration = Duration::from_millis(100);
/// Longest wait between two tries.
pub(crate) const MAX: Duration = Duration::from_secs(5);

/// Waits doubling from `initial` up to `max`.
#[derive(Debug)]
pub(crate) struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    pub(crate) fn new(initial: Duration, max: Duration) -> Self {
        Backoff { next: initial.min(max), max }
    }

    /// The wait before the next try.
    pub(crate) fn next_wait(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(self.max);
        wait
    }
}

/// Run `attempt` until it gives anything but an error `transient` says is
/// worth another try, waiting with [`Backoff`] in between: forever, since
/// what it carries exists nowhere else. `what` names it in the log.
pub(crate) async fn until_taken<T, E: std::fmt::Display, Fut: Future<Output = Result<T, E>>>(
    bridge: &str,
    what: &str,
    initial: Duration,
    max: Duration,
    transient: impl Fn(&E) -> bool,
    mut attempt: impl FnMut() -> Fut,
) -> Result<T, E> {
    let mut backoff = Backoff::new(initial, max);
    let mut refused = 0u64;
    loop {
        match attempt().await {
            Err(e) if transient(&e) => {
                refused += 1;
                let wait = backoff.next_wait();
                // The first refusal and then about once a minute at the longest wait.
                if refused == 1 || refused.is_multiple_of(12) {
                    tracing::warn!(bridge, what, refused, retry_in = ?wait, "not taken yet, held with everything after it: {e}");
                }
                tokio::time::sleep(wait).await;
            }
            other => {
                if refused > 0 {
                    tracing::info!(bridge, what, refused, "taken after all");
                }
                return other;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_doubles_up_to_the_longest() {
        let mut b = Backoff::new(INITIAL, MAX);
        let waits: Vec<u64> = (0..9).map(|_| b.next_wait().as_millis() as u64).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
        let mut b = Backoff::new(Duration::from_secs(9), Duration::from_secs(2));
        assert_eq!(b.next_wait(), Duration::from_secs(2), "never longer than the longest");
    }

    #[tokio::test]
    async fn refusals_are_tried_again_until_taken_and_other_errors_end_it() {
        let ms = Duration::from_millis(1);
        let mut tries = 0;
        let got: Result<u32, String> = until_taken(
            "b",
            "x",
            ms,
            ms * 4,
            |e: &String| e == "busy",
            || {
                tries += 1;
                let t = tries;
                async move { if t < 5 { Err("busy".to_string()) } else { Ok(t) } }
            },
        )
        .await;
        assert_eq!(got, Ok(5));
        let mut tries = 0;
        let got: Result<(), String> = until_taken(
            "b",
            "x",
            ms,
            ms,
            |e: &String| e == "busy",
            || {
                tries += 1;
                let t = tries;
                async move { if t < 3 { Err("busy".to_string()) } else { Err("not linked".to_string()) } }
            },
        )
        .await;
        assert_eq!((got, tries), (Err("not linked".to_string()), 3), "a lasting error is not tried again");
    }
}
