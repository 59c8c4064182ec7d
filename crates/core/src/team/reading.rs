//! What a team metric's queries answered in one tick, checked: counts that are whole and not
//! negative, values that are numbers. Anything else is "no data" with the reason — never a
//! verdict against the canary.

use serde::{Deserialize, Serialize};

/// One query's answer as the controller read it: a number, or why there is none (an empty
/// answer, `NaN`, several series where one was expected, Prometheus unreachable or refusing the
/// query).
pub type Answer = Result<f64, String>;

/// Cumulative counts of one version.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Counts {
    /// Events (failed checkouts; successful ones for a `higher-is-better` ratio).
    pub events: u64,
    /// Trials the events are out of (checkouts).
    pub trials: u64,
}

impl Counts {
    /// `self − earlier`, or `None` when a count went down (a counter reset, or a series gone).
    pub(super) fn since(self, earlier: Counts) -> Option<Counts> {
        Some(Counts {
            events: self.events.checked_sub(earlier.events)?,
            trials: self.trials.checked_sub(earlier.trials)?,
        })
    }
}

/// One tick of a team metric.
#[derive(Debug, Clone, PartialEq)]
pub enum Reading {
    /// A ratio metric's cumulative counts.
    Counts {
        /// The canary's.
        canary: Counts,
        /// Stable's.
        stable: Counts,
    },
    /// A value metric's current values.
    Values {
        /// The canary's.
        canary: f64,
        /// Stable's.
        stable: f64,
    },
    /// No data this tick, and why.
    NoData(String),
}

impl Reading {
    /// A ratio metric's reading from its four answers (`[events, trials]` per version).
    pub fn counts(canary: [Answer; 2], stable: [Answer; 2]) -> Reading {
        let [canary_events, canary_trials] = canary;
        let [stable_events, stable_trials] = stable;
        let read = || -> Result<Reading, String> {
            Ok(Reading::Counts {
                canary: Counts {
                    events: count(canary_events, "the canary's events")?,
                    trials: count(canary_trials, "the canary's trials")?,
                },
                stable: Counts {
                    events: count(stable_events, "stable's events")?,
                    trials: count(stable_trials, "stable's trials")?,
                },
            })
        };
        read().unwrap_or_else(Reading::NoData)
    }

    /// A value metric's reading from its two answers.
    pub fn values(canary: Answer, stable: Answer) -> Reading {
        let read = || -> Result<Reading, String> {
            Ok(Reading::Values {
                canary: value(canary, "the canary's value")?,
                stable: value(stable, "stable's value")?,
            })
        };
        read().unwrap_or_else(Reading::NoData)
    }
}

fn value(answer: Answer, what: &str) -> Result<f64, String> {
    match answer {
        Ok(x) if x.is_finite() => Ok(x),
        Ok(x) => Err(format!("{what}: the query answered {x}")),
        Err(why) => Err(format!("{what}: {why}")),
    }
}

fn count(answer: Answer, what: &str) -> Result<u64, String> {
    let x = value(answer, what)?;
    if x < 0.0 {
        return Err(format!("{what}: the query answered {x}, and a count cannot be negative"));
    }
    Ok(x.round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_read_when_all_four_answered() {
        let reading = Reading::counts([Ok(3.0), Ok(400.2)], [Ok(30.0), Ok(4000.0)]);
        assert_eq!(
            reading,
            Reading::Counts { canary: Counts { events: 3, trials: 400 }, stable: Counts { events: 30, trials: 4000 } }
        );
    }

    #[test]
    fn a_missing_or_odd_answer_is_no_data_naming_which() {
        let empty = Reading::counts([Ok(3.0), Ok(400.0)], [Err("the query returned nothing".into()), Ok(4000.0)]);
        assert_eq!(empty, Reading::NoData("stable's events: the query returned nothing".into()));
        let nan = Reading::values(Ok(f64::NAN), Ok(1.0));
        assert_eq!(nan, Reading::NoData("the canary's value: the query answered NaN".into()));
        let negative = Reading::counts([Ok(-1.0), Ok(4.0)], [Ok(0.0), Ok(4.0)]);
        assert!(matches!(negative, Reading::NoData(why) if why.contains("cannot be negative")));
        assert_eq!(Reading::values(Ok(0.25), Ok(0.2)), Reading::Values { canary: 0.25, stable: 0.2 });
    }

    #[test]
    fn a_count_that_went_down_has_no_difference() {
        let now = Counts { events: 5, trials: 100 };
        assert_eq!(now.since(Counts { events: 2, trials: 60 }), Some(Counts { events: 3, trials: 40 }));
        assert_eq!(now.since(Counts { events: 6, trials: 60 }), None);
    }
}
