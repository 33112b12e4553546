//! Retry and polling policy as data: pure functions of the attempt, with randomness and the
//! clock passed in, so the schedule is tested exactly on the host.

use crate::error::{Error, ErrorCode};
use crate::json::{Json, JsonValue as Value};
use crate::run::Run;
use crate::text::{hex, parse_unsigned};

/// How failed requests are retried: exponential backoff with full jitter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// The first backoff ceiling, in ms; it doubles each attempt.
    pub base_ms: u64,
    /// The largest backoff ceiling, in ms.
    pub cap_ms: u64,
    /// The longest Retry-After honoured, in ms; a longer one ends the retries.
    pub max_retry_after_ms: u64,
}

/// Runflow's documented policy: 1 s doubling to 32 s, five attempts in all.
pub const DEFAULT_RETRY: RetryPolicy = RetryPolicy {
    max_retries: 4,
    base_ms: 1_000,
    cap_ms: 32_000,
    max_retry_after_ms: 60_000,
};

impl RetryPolicy {
    /// The wait before retry number `attempt` (0-based): the server's Retry-After when it gave
    /// one, else a uniformly random delay up to `min(cap, base * 2^attempt)` (full jitter).
    /// `random` is in `[0, 1)`.
    ///
    /// ```
    /// use runflow_kontext::policy::DEFAULT_RETRY;
    /// assert_eq!(DEFAULT_RETRY.delay_ms(3, None, 0.5), 4_000);
    /// assert_eq!(DEFAULT_RETRY.delay_ms(0, Some(2_500), 0.9), 2_500);
    /// ```
    pub fn delay_ms(&self, attempt: u32, retry_after_ms: Option<u64>, random: f64) -> u64 {
        if let Some(ms) = retry_after_ms {
            return ms;
        }
        let ceiling = self
            .base_ms
            .saturating_mul(1u64 << attempt.min(32))
            .min(self.cap_ms);
        (ceiling as f64 * random.clamp(0.0, 1.0)) as u64
    }

    /// Whether `error`, met on attempt number `attempt`, should be retried at all.
    pub fn should_retry(&self, attempt: u32, error: &Error) -> bool {
        attempt < self.max_retries
            && error.retryable
            && error
                .retry_after_ms
                .is_none_or(|ms| ms <= self.max_retry_after_ms)
    }
}

/// How often a run is polled: often while a Kontext run is likely to finish, then backing off,
/// and four times slower in a hidden tab.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PollSchedule {
    /// The first interval, in ms; each next one is half as long again.
    pub initial_ms: u64,
    /// The longest interval during the first `fast_for_ms` of waiting.
    pub fast_cap_ms: u64,
    /// How long polling stays fast: Kontext runs mostly end within it.
    pub fast_for_ms: u64,
    /// The longest interval after that, while the page is visible, in ms.
    pub max_ms: u64,
    /// The multiplier while the page is hidden.
    pub hidden_factor: u64,
}

/// 0.5 s, then 0.75 s, then every 0.8 s for the first 30 s (a result shows up about 0.4 s after
/// it is ready, with a third of the requests of fixed 0.5 s polling), then up to every 5 s.
pub const DEFAULT_POLL: PollSchedule = PollSchedule {
    initial_ms: 500,
    fast_cap_ms: 800,
    fast_for_ms: 30_000,
    max_ms: 5_000,
    hidden_factor: 4,
};

impl PollSchedule {
    /// The default schedule starting at `initial_ms` (its caps never below it).
    pub fn starting_at(initial_ms: u64) -> PollSchedule {
        PollSchedule {
            initial_ms,
            fast_cap_ms: DEFAULT_POLL.fast_cap_ms.max(initial_ms),
            max_ms: DEFAULT_POLL.max_ms.max(initial_ms),
            ..DEFAULT_POLL
        }
    }

    /// The wait before poll number `poll` (0-based), `elapsed_ms` into the wait.
    ///
    /// ```
    /// use runflow_kontext::policy::DEFAULT_POLL;
    /// assert_eq!(DEFAULT_POLL.delay_ms(0, 0, false), 500);
    /// assert_eq!(DEFAULT_POLL.delay_ms(1, 500, false), 750);
    /// assert_eq!(DEFAULT_POLL.delay_ms(9, 7_000, false), 800);
    /// assert_eq!(DEFAULT_POLL.delay_ms(40, 31_000, false), 5_000);
    /// assert_eq!(DEFAULT_POLL.delay_ms(40, 31_000, true), 20_000);
    /// ```
    pub fn delay_ms(&self, poll: u32, elapsed_ms: u64, hidden: bool) -> u64 {
        let grown = self.initial_ms as f64 * 1.5f64.powi(poll.min(64) as i32);
        let cap = if elapsed_ms < self.fast_for_ms {
            self.fast_cap_ms
        } else {
            self.max_ms
        };
        let visible = (grown as u64).min(cap);
        if hidden {
            visible.saturating_mul(self.hidden_factor)
        } else {
            visible
        }
    }
}

/// Reads a Retry-After value: delta seconds (an integer, per RFC 9110) or an HTTP date, read by
/// `parse_date` into Unix ms (the wasm build uses the host's `Date.parse` rather than carry a
/// date parser). Relative to `now_ms`; unparseable or past values give `None`.
///
/// ```
/// use runflow_kontext::policy::parse_retry_after;
/// let no_dates = |_: &str| None;
/// assert_eq!(parse_retry_after("2", 0, no_dates), Some(2_000));
/// assert_eq!(parse_retry_after("soon", 0, no_dates), None);
/// ```
pub fn parse_retry_after(
    value: &str,
    now_ms: u64,
    parse_date: impl Fn(&str) -> Option<u64>,
) -> Option<u64> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Past u64 seconds it is only more absurd: the longest wait, which ends the retries.
        return Some(parse_unsigned(value, 10).map_or(u64::MAX, |s| s.saturating_mul(1000)));
    }
    parse_date(value)?.checked_sub(now_ms)
}

/// What a failed create attempt tells about the run it tried to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateOutcome {
    /// The server certainly made no run (it refused before creating): POSTing again is safe.
    NotCreated,
    /// The run may exist (lost connection, timeout, a 5xx mid-way, a broken 2xx body): look it up
    /// by `client_ref` before any second POST.
    Unknown,
}

/// Classifies a create failure.
pub fn create_outcome(error: &Error) -> CreateOutcome {
    match (error.code, error.status) {
        (ErrorCode::ConnectionError | ErrorCode::Timeout | ErrorCode::InvalidResponse, _) => {
            CreateOutcome::Unknown
        }
        // 503 means the model could not take the run; the other 5xx may have failed after creating it.
        (ErrorCode::ServerError, Some(status)) if status != 503 => CreateOutcome::Unknown,
        _ => CreateOutcome::NotCreated,
    }
}

/// How far the server's clock may be behind this machine's and a run still count as created by
/// a call that began at a given time: device clocks are often minutes off.
pub const CLOCK_SKEW_MS: f64 = 10.0 * 60_000.0;

/// Whether `run`, found by `client_ref` after a create whose outcome was unknown, is provably
/// that create's run, rather than an older one that reused the ref: it records every field of
/// the input that was sent (`sent`; the server may add defaults), and was created after the call
/// began at `began_ms` (Unix ms), allowing `CLOCK_SKEW_MS`. `parse_date` reads `created_at`
/// into Unix ms. A run that says neither cannot prove it, so it does not count.
///
/// ```
/// # #[cfg(not(target_arch = "wasm32"))] {
/// use runflow_kontext::{policy::is_own_create, run::run_from_json};
/// let run = run_from_json(200, &serde_json::json!({"id": "r1", "status_code": "queued",
///     "client_ref": "order-7", "input": {"prompt": "snow", "guidance_scale": 3.5},
///     "created_at": "2026-12-01T10:00:00+00:00"})).unwrap();
/// let sent = serde_json::json!({"prompt": "snow"});
/// let date = |_: &str| Some(1_764_583_200_000.0);
/// assert!(is_own_create(&run, "order-7", &sent, 1_764_583_200_000.0, date));
/// assert!(!is_own_create(&run, "order-7", &serde_json::json!({"prompt": "rain"}), 1_764_583_200_000.0, date));
/// assert!(!is_own_create(&run, "order-7", &sent, 1_764_583_200_000.0 + 86_400_000.0, date));
/// # }
/// ```
pub fn is_own_create(
    run: &Run,
    client_ref: &str,
    sent: &Value,
    began_ms: f64,
    parse_date: impl Fn(&str) -> Option<f64>,
) -> bool {
    let created_after_start = run
        .created_at
        .as_deref()
        .and_then(parse_date)
        .is_some_and(|created| created >= began_ms - CLOCK_SKEW_MS);
    let records_input = match (sent.entries(), run.input.entries()) {
        (Some(fields), Some(recorded)) if run.input.is_plain_object() => {
            fields.iter().all(|(name, value)| {
                recorded
                    .iter()
                    .any(|(key, kept)| key == name && kept.stringify() == value.stringify())
            })
        }
        _ => false,
    };
    run.client_ref.as_deref() == Some(client_ref) && created_after_start && records_input
}

/// A fresh correlation id, from 128 random bits given as four 32-bit words.
pub fn new_ref(prefix: &str, words: [u32; 4]) -> String {
    let mut out = String::with_capacity(prefix.len() + 32);
    out.push_str(prefix);
    for word in words {
        out.push_str(&hex(word.into(), 8));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_with_full_jitter() {
        let policy = DEFAULT_RETRY;
        let ceilings: Vec<u64> = (0..8)
            .map(|attempt| policy.delay_ms(attempt, None, 0.999_999))
            .collect();
        assert_eq!(
            ceilings,
            [999, 1999, 3999, 7999, 15999, 31999, 31999, 31999]
        );
        assert!((0..8).all(|attempt| policy.delay_ms(attempt, None, 0.0) == 0));
        assert_eq!(policy.delay_ms(40, None, 0.5), 16_000);
    }

    #[test]
    fn retry_after_wins_but_not_when_absurd() {
        let policy = DEFAULT_RETRY;
        assert_eq!(policy.delay_ms(2, Some(1_500), 0.1), 1_500);
        let mut rate_limited = Error::new(ErrorCode::RateLimited, "slow down");
        assert!(policy.should_retry(0, &rate_limited));
        assert!(!policy.should_retry(4, &rate_limited));
        rate_limited.retry_after_ms = Some(3_600_000);
        assert!(!policy.should_retry(0, &rate_limited));
        assert!(!policy.should_retry(0, &Error::new(ErrorCode::InsufficientCredit, "pay")));
    }

    fn http_date(value: &str) -> Option<u64> {
        let at = httpdate::parse_http_date(value).ok()?;
        u64::try_from(at.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis()).ok()
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("0", 0, http_date), Some(0));
        assert_eq!(parse_retry_after(" 7 ", 0, http_date), Some(7_000));
        assert_eq!(parse_retry_after("1.5", 0, http_date), None);
        assert_eq!(parse_retry_after("-3", 0, http_date), None);
        assert_eq!(parse_retry_after("soon", 0, http_date), None);
        assert_eq!(
            parse_retry_after("18446744073709551616", 0, http_date),
            Some(u64::MAX),
            "absurd, not unreadable"
        );
        assert_eq!(parse_retry_after("+7", 0, http_date), None);
        let date = "Wed, 21 Oct 2015 07:28:00 GMT";
        let at = 1_445_412_480_000;
        assert_eq!(parse_retry_after(date, at - 5_000, http_date), Some(5_000));
        assert_eq!(parse_retry_after(date, at + 5_000, http_date), None);
    }

    #[test]
    fn polling_backs_off_and_slows_when_hidden() {
        let schedule = PollSchedule::starting_at(100);
        let delays: Vec<u64> = (0..7).map(|n| schedule.delay_ms(n, 0, false)).collect();
        assert_eq!(delays, [100, 150, 225, 337, 506, 759, 800]);
        assert_eq!(schedule.delay_ms(1000, 29_999, false), 800);
        assert_eq!(schedule.delay_ms(1000, 30_000, false), 5_000);
        assert_eq!(schedule.delay_ms(0, 0, true), 400);
        assert_eq!(
            PollSchedule::starting_at(9_000).delay_ms(3, 0, false),
            9_000
        );
    }

    #[test]
    fn a_ten_second_run_costs_far_fewer_polls_than_fixed_half_seconds() {
        // Walk the default schedule to a run that is ready at 10 s.
        let (mut at, mut polls) = (0, 0);
        while at < 10_000 {
            at += DEFAULT_POLL.delay_ms(polls, at, false);
            polls += 1;
        }
        assert_eq!(polls, 13, "fixed 0.5 s polling takes 20");
        assert!(
            at - 10_000 < 800,
            "seen {} ms after it was ready",
            at - 10_000
        );
    }

    #[test]
    fn create_outcomes() {
        let with_status = |code, status| Error {
            status,
            ..Error::new(code, "")
        };
        assert_eq!(
            create_outcome(&with_status(ErrorCode::ConnectionError, None)),
            CreateOutcome::Unknown
        );
        assert_eq!(
            create_outcome(&with_status(ErrorCode::Timeout, None)),
            CreateOutcome::Unknown
        );
        assert_eq!(
            create_outcome(&with_status(ErrorCode::InvalidResponse, Some(201))),
            CreateOutcome::Unknown
        );
        assert_eq!(
            create_outcome(&with_status(ErrorCode::ServerError, Some(500))),
            CreateOutcome::Unknown
        );
        assert_eq!(
            create_outcome(&with_status(ErrorCode::ServerError, Some(502))),
            CreateOutcome::Unknown
        );
        assert_eq!(
            create_outcome(&with_status(ErrorCode::ServerError, Some(503))),
            CreateOutcome::NotCreated
        );
        assert_eq!(
            create_outcome(&with_status(ErrorCode::RateLimited, Some(429))),
            CreateOutcome::NotCreated
        );
        assert_eq!(
            create_outcome(&with_status(ErrorCode::ValidationError, Some(422))),
            CreateOutcome::NotCreated
        );
    }

    #[test]
    fn refs_are_hex() {
        assert_eq!(
            new_ref("rk_", [1, 0xffff_ffff, 0, 16]),
            "rk_00000001ffffffff0000000000000010"
        );
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod own_create_tests {
    use super::*;

    #[test]
    fn only_this_calls_run_counts_as_found() {
        use crate::run::run_from_json;
        use serde_json::json;
        let began = 1_764_583_200_000.0;
        let run = |input: serde_json::Value, created_at: Option<&str>| {
            let mut wire = json!({"id": "r1", "status_code": "queued", "client_ref": "order-7",
                "input": input});
            if let Some(at) = created_at {
                wire["created_at"] = json!(at);
            }
            run_from_json(200, &wire).unwrap()
        };
        let date = |text: &str| text.parse::<f64>().ok();
        let sent = json!({"prompt": "snow", "image_url": "https://x/a.png", "seed": 7});
        let mut recorded = sent.clone();
        recorded["guidance_scale"] = json!(3.5);
        let now = began.to_string();
        assert!(is_own_create(
            &run(recorded.clone(), Some(&now)),
            "order-7",
            &sent,
            began,
            date
        ));
        // Yesterday's run with the same ref and the same input is not this call's.
        let yesterday = (began - 86_400_000.0).to_string();
        assert!(!is_own_create(
            &run(recorded.clone(), Some(&yesterday)),
            "order-7",
            &sent,
            began,
            date
        ));
        // A clock a few minutes off still counts.
        let skewed = (began - CLOCK_SKEW_MS + 1.0).to_string();
        assert!(is_own_create(
            &run(recorded.clone(), Some(&skewed)),
            "order-7",
            &sent,
            began,
            date
        ));
        // Another input, no input, no date, another ref: not provably ours.
        let other = json!({"prompt": "rain", "image_url": "https://x/a.png", "seed": 7});
        assert!(!is_own_create(
            &run(other, Some(&now)),
            "order-7",
            &sent,
            began,
            date
        ));
        assert!(!is_own_create(
            &run(serde_json::Value::Null, Some(&now)),
            "order-7",
            &sent,
            began,
            date
        ));
        assert!(!is_own_create(
            &run(recorded.clone(), None),
            "order-7",
            &sent,
            began,
            date
        ));
        assert!(!is_own_create(
            &run(recorded, Some(&now)),
            "order-8",
            &sent,
            began,
            date
        ));
    }
}
