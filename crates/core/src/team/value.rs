//! A value metric's rule: after the step's hold, the latest canary value against the latest
//! stable value, with a relative margin.
//!
//! This is a threshold on two numbers, not a sequential test: it carries no error rate of its
//! own, and looking again every tick while a step waits gives a noisy value more chances to
//! cross. So it is read only once the hold has passed (the step's traffic is in the value), and
//! the query should smooth over its own noise (a `rate(…[5m])`, a quantile over a window) with a
//! margin above what stable's value wanders by.

use super::definition::Direction;

/// Whether `canary` is worse than `stable` by more than `margin` (relative to stable's value).
/// With stable at 0 any worse canary value is beyond a relative margin.
pub fn beyond_margin(canary: f64, stable: f64, direction: Direction, margin: f64) -> bool {
    let allowed = margin * stable.abs();
    match direction {
        Direction::LowerIsBetter => canary > stable + allowed,
        Direction::HigherIsBetter => canary < stable - allowed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_margin_is_relative_to_stable_and_follows_the_direction() {
        // A p99 of 0.23 s against 0.2 s with 20 % allowed: within; 0.25 s: beyond.
        assert!(!beyond_margin(0.23, 0.2, Direction::LowerIsBetter, 0.2));
        assert!(beyond_margin(0.25, 0.2, Direction::LowerIsBetter, 0.2));
        assert!(!beyond_margin(0.1, 0.2, Direction::LowerIsBetter, 0.2), "faster is never worse");
        // A conversion rate of 3.5 % against 4 % with 10 % allowed: beyond.
        assert!(beyond_margin(0.035, 0.04, Direction::HigherIsBetter, 0.1));
        assert!(!beyond_margin(0.037, 0.04, Direction::HigherIsBetter, 0.1));
        assert!(!beyond_margin(0.09, 0.04, Direction::HigherIsBetter, 0.1), "more is never worse");
    }

    #[test]
    fn against_a_stable_value_of_zero_any_worse_value_is_beyond() {
        assert!(beyond_margin(0.001, 0.0, Direction::LowerIsBetter, 0.5));
        assert!(!beyond_margin(0.0, 0.0, Direction::LowerIsBetter, 0.5));
        assert!(beyond_margin(-1.0, 0.0, Direction::HigherIsBetter, 0.5));
    }
}
