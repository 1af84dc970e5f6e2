//! Waiting between tries, one way for everyone: reconnects, redeliveries
//! and what the store refused all back off exponentially up to a cap, with
//! "equal jitter" (half fixed, half random) so that many waiting at once do
//! not come back in step.
//!
//! [`until_taken`] holds what the store refused: an event read off a
//! stream is tried again until it is taken, and what came after it waits
//! behind it (the stream is not read meanwhile: the queue to the router
//! fills and the server is pushed back on, nothing is buffered without
//! bound).

use std::time::Duration;

/// First wait after the store refused something.
pub const INITIAL: Duration = Duration::from_millis(100);
/// Longest wait between two tries of something the store refused.
pub const MAX: Duration = Duration::from_secs(5);

/// Delay before try number `attempt` (1-based) after failures: `initial`
/// doubled per attempt, at most `max`, the upper half of it random.
pub fn backoff(attempt: u32, initial: Duration, max: Duration) -> Duration {
    let exp = initial.saturating_mul(1u32 << attempt.saturating_sub(1).min(20)).min(max);
    let half = exp / 2;
    half + half.mul_f64(fastrand::f64())
}

/// Waits doubling from `initial` up to `max`, jittered as [`backoff`].
#[derive(Debug)]
pub struct Backoff {
    attempt: u32,
    initial: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff { attempt: 0, initial: initial.min(max), max }
    }

    /// The wait before the next try.
    pub fn next_wait(&mut self) -> Duration {
        self.attempt = self.attempt.saturating_add(1);
        backoff(self.attempt, self.initial, self.max)
    }

    /// It worked: the next failure waits the shortest again.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// Run `attempt` until it gives anything but an error `transient` says is
/// worth another try, waiting with [`Backoff`] in between: forever, since
/// what it carries exists nowhere else. `what` names it in the log.
pub async fn until_taken<T, E: std::fmt::Display, Fut: Future<Output = Result<T, E>>>(
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
    fn backoff_grows_is_capped_and_jittered() {
        let (i, m) = (Duration::from_millis(100), Duration::from_secs(2));
        for attempt in 1..40 {
            let exp = (i * 2u32.pow((attempt - 1).min(20))).min(m);
            let d = backoff(attempt, i, m);
            assert!(d >= exp / 2 && d <= exp, "attempt {attempt}: {d:?} outside {:?}..={exp:?}", exp / 2);
        }
        let samples: std::collections::HashSet<_> = (0..20).map(|_| backoff(5, i, m)).collect();
        assert!(samples.len() > 1, "no jitter");
    }

    #[test]
    fn the_wait_doubles_up_to_the_longest_and_starts_again_after_a_success() {
        let mut b = Backoff::new(INITIAL, MAX);
        let ceilings = [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000];
        for ceiling in ceilings {
            let w = b.next_wait().as_millis() as u64;
            assert!(w >= ceiling / 2 && w <= ceiling, "{w} outside {}..={ceiling}", ceiling / 2);
        }
        b.reset();
        assert!(b.next_wait() <= INITIAL);
        let mut b = Backoff::new(Duration::from_secs(9), Duration::from_secs(2));
        assert!(b.next_wait() <= Duration::from_secs(2), "never longer than the longest");
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
