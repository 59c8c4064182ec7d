//! A ratio metric's evidence: the count test the error rate uses ([`crate::judge::count`]), on
//! the team's events out of trials instead of errors out of requests.
//!
//! Each tick the canary's share of the tick's new trials is `ρ`; if the canary's rate of what
//! is worse is `r` times stable's, each new counted event is the canary's with probability
//! `ρr / (ρr + 1 − ρ)`, and the mixture e-process tests `r ≤ worse_above` (rolls back when it
//! crosses `1/α`) and `r ≥ safe_below` (shown safe). What is counted is the events for a
//! `lower-is-better` ratio, and the trials *without* an event for `higher-is-better`: a success
//! ratio of 98 % against 99 % is twice the failures, which is what a team means by worse, while
//! the ratio of the success rates (0.99) would need a tolerance no one can set.
//!
//! Clustering in time (bursts) is measured across burst windows as for the error rate; the
//! queries give no per-user-group counts, so clustering by user is not corrected (see
//! docs/judge.md).

use serde::{Deserialize, Serialize};

use super::definition::Direction;
use super::reading::Counts;
use crate::judge::count::{CountEProcess, RatioInterval, log_threshold};
use crate::judge::dispersion::GroupDispersion;
use crate::judge::{MIN_EVENT_WINDOWS, Samples, Tolerance};

/// Trials and counted events of one version since the rollout started.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Totals {
    pub trials: u64,
    pub counted: u64,
}

/// The evidence of one ratio metric. Serializes whole, so a restarted controller continues it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RatioEvidence {
    process: CountEProcess,
    by_time: GroupDispersion,
    /// The cumulative counts last read (canary, stable); `None` until the first reading.
    last: Option<(Counts, Counts)>,
    pub canary: Totals,
    pub stable: Totals,
    ticks: u64,
    /// Readings skipped because a count went down.
    pub resets: u64,
}

/// Settings of the count test.
#[derive(Debug, Clone, Copy)]
pub(super) struct CountTest {
    pub alpha: f64,
    pub tolerance: Tolerance,
}

impl RatioEvidence {
    pub fn new(prior_scale: f64, burst_windows: usize) -> RatioEvidence {
        RatioEvidence {
            process: CountEProcess::new(prior_scale),
            by_time: GroupDispersion::new(burst_windows),
            last: None,
            canary: Totals::default(),
            stable: Totals::default(),
            ticks: 0,
            resets: 0,
        }
    }

    /// Adds one tick of cumulative counts. The first reading only sets where counting starts:
    /// the counters are cumulative since the app started, not since the rollout did.
    pub fn observe(&mut self, canary: Counts, stable: Counts, direction: Direction) {
        let Some((last_canary, last_stable)) = self.last.replace((canary, stable)) else { return };
        let (Some(canary), Some(stable)) = (canary.since(last_canary), stable.since(last_stable)) else {
            self.resets += 1;
            return;
        };
        let counted = |c: Counts| match direction {
            Direction::LowerIsBetter => c.events,
            Direction::HigherIsBetter => c.trials.saturating_sub(c.events),
        };
        let (canary_counted, stable_counted) = (counted(canary), counted(stable));
        let trials = canary.trials + stable.trials;
        let share = if trials == 0 { 0.0 } else { canary.trials as f64 / trials as f64 };
        self.ticks += 1;
        self.process.observe(canary_counted, stable_counted, share);
        if !self.by_time.is_empty() {
            let window = (self.ticks % self.by_time.len() as u64) as usize;
            self.by_time.observe(window, canary_counted, stable_counted, share);
        }
        for (totals, new_trials, new_counted) in
            [(&mut self.canary, canary.trials, canary_counted), (&mut self.stable, stable.trials, stable_counted)]
        {
            totals.trials += new_trials;
            totals.counted += new_counted;
        }
    }

    fn dispersion(&self) -> f64 {
        self.by_time.factor()
    }

    /// Whether both versions have at least `minimum` trials.
    pub fn has_trials(&self, minimum: u64) -> bool {
        self.canary.trials >= minimum && self.stable.trials >= minimum
    }

    /// Whether the canary is shown worse than `worse_above` (the caller checks the minimum).
    pub fn shown_worse(&self, test: &CountTest) -> bool {
        let spread = self.by_time.is_empty() || self.by_time.groups_with_canary_events() >= MIN_EVENT_WINDOWS;
        spread && self.log_e_value(test) >= log_threshold(test.alpha)
    }

    /// Whether the canary is shown below `safe_below`.
    pub fn shown_safe(&self, test: &CountTest) -> bool {
        self.process.log_e_value_below(test.tolerance.safe_below, self.dispersion()) >= log_threshold(test.alpha)
    }

    fn log_e_value(&self, test: &CountTest) -> f64 {
        self.process.log_e_value_above(test.tolerance.worse_above, self.dispersion())
    }

    /// The numbers of a verdict: estimate, interval, e-value, dispersion and the samples.
    pub fn numbers(&self, test: &CountTest) -> RatioNumbers {
        let dispersion = self.dispersion();
        let rate = |t: Totals| t.counted as f64 / t.trials as f64;
        RatioNumbers {
            estimate: (self.canary.trials > 0 && self.stable.counted > 0)
                .then(|| rate(self.canary) / rate(self.stable)),
            interval: RatioInterval {
                lower: self.process.lower_bound(test.alpha, dispersion),
                upper: self.process.upper_bound(test.alpha, dispersion),
            },
            e_value: self.log_e_value(test).exp().min(f64::MAX),
            dispersion,
            canary: Samples { requests: self.canary.trials, events: Some(self.canary.counted) },
            stable: Samples { requests: self.stable.trials, events: Some(self.stable.counted) },
        }
    }
}

/// What a ratio metric's verdict reports.
pub(super) struct RatioNumbers {
    pub estimate: Option<f64>,
    pub interval: RatioInterval,
    pub e_value: f64,
    pub dispersion: f64,
    pub canary: Samples,
    pub stable: Samples,
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEST: CountTest = CountTest {
        alpha: 0.01,
        tolerance: Tolerance { worse_above: 1.25, safe_below: 2.0, absolute: 0.0, observe: false },
    };

    /// `ticks` ticks of 100 canary and 900 stable trials, with the given events per tick.
    fn run(evidence: &mut RatioEvidence, ticks: u64, canary_events: u64, stable_events: u64, direction: Direction) {
        let (mut canary, mut stable) = evidence.last.unwrap_or_default();
        for _ in 0..ticks {
            canary = Counts { events: canary.events + canary_events, trials: canary.trials + 100 };
            stable = Counts { events: stable.events + stable_events, trials: stable.trials + 900 };
            evidence.observe(canary, stable, direction);
        }
    }

    #[test]
    fn the_first_reading_only_sets_the_start() {
        let mut evidence = RatioEvidence::new(1.5, 32);
        evidence.observe(
            Counts { events: 500, trials: 10_000 },
            Counts { events: 900, trials: 90_000 },
            Direction::LowerIsBetter,
        );
        assert_eq!((evidence.canary.trials, evidence.canary.counted), (0, 0));
        run(&mut evidence, 1, 2, 9, Direction::LowerIsBetter);
        assert_eq!((evidence.canary.trials, evidence.canary.counted, evidence.stable.counted), (100, 2, 9));
    }

    #[test]
    fn a_canary_failing_five_times_as_often_is_shown_worse() {
        let mut evidence = RatioEvidence::new(1.5, 32);
        run(&mut evidence, 40, 5, 9, Direction::LowerIsBetter);
        assert!(evidence.shown_worse(&TEST));
        assert!(!evidence.shown_safe(&TEST));
        let numbers = evidence.numbers(&TEST);
        assert!((numbers.estimate.unwrap() - 5.0).abs() < 1e-9);
        assert!(numbers.interval.lower.unwrap() > 1.25);
    }

    #[test]
    fn a_canary_failing_as_often_as_stable_is_shown_safe_and_never_worse() {
        let mut evidence = RatioEvidence::new(1.5, 32);
        run(&mut evidence, 300, 1, 9, Direction::LowerIsBetter);
        assert!(evidence.shown_safe(&TEST));
        assert!(!evidence.shown_worse(&TEST));
    }

    #[test]
    fn higher_is_better_counts_the_trials_without_an_event() {
        // 95 % of the canary's checkouts succeed against 99 % of stable's: five times the failures.
        let mut evidence = RatioEvidence::new(1.5, 32);
        run(&mut evidence, 40, 95, 891, Direction::HigherIsBetter);
        assert!(evidence.shown_worse(&TEST));
        assert_eq!((evidence.canary.counted, evidence.stable.counted), (39 * 5, 39 * 9));
    }

    #[test]
    fn a_count_that_went_down_is_skipped_and_counting_goes_on() {
        let mut evidence = RatioEvidence::new(1.5, 32);
        run(&mut evidence, 3, 1, 9, Direction::LowerIsBetter);
        evidence.observe(Counts { events: 0, trials: 10 }, Counts { events: 0, trials: 90 }, Direction::LowerIsBetter);
        assert_eq!((evidence.resets, evidence.canary.trials), (1, 200));
        run(&mut evidence, 1, 1, 9, Direction::LowerIsBetter);
        assert_eq!(evidence.canary.trials, 300, "counting continues from the value after the reset");
    }

    #[test]
    fn events_in_one_burst_cannot_roll_back_where_the_same_events_spread_out_do() {
        let mut burst = RatioEvidence::new(1.5, 32);
        run(&mut burst, 1, 0, 9, Direction::LowerIsBetter);
        run(&mut burst, 1, 100, 9, Direction::LowerIsBetter);
        run(&mut burst, 9, 0, 9, Direction::LowerIsBetter);
        assert!(!burst.shown_worse(&TEST), "a stall's worth of events in one tick");
        let mut spread = RatioEvidence::new(1.5, 32);
        run(&mut spread, 1, 0, 9, Direction::LowerIsBetter);
        run(&mut spread, 10, 10, 9, Direction::LowerIsBetter);
        assert!(spread.shown_worse(&TEST));
    }
}
