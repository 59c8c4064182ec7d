//! Canary weight: the share of users sent to the canary, in basis points (0.01 % steps).

use serde::{Deserialize, Serialize};

/// A canary weight in basis points, `0..=10_000` (0 % to 100 % in 0.01 % steps).
///
/// Parsed from a percentage (`12.5` means 12.5 %); anything outside `0..=100` or finer than
/// 0.01 % is refused rather than rounded, so what an operator typed is what runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(try_from = "f64", into = "f64")]
pub struct Weight(u16);

/// Why a percentage is not a weight.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WeightError {
    /// Outside 0..=100.
    #[error("weight {0} is out of range: it must be a percentage between 0 and 100")]
    OutOfRange(f64),
    /// Has more than two decimals.
    #[error("weight {0} is finer than the 0.01 % resolution")]
    TooFine(f64),
}

impl Weight {
    /// No traffic to the canary.
    pub const ZERO: Weight = Weight(0);
    /// All new traffic to the canary.
    pub const FULL: Weight = Weight(10_000);

    /// A weight from basis points; `None` above 10,000.
    pub const fn from_basis_points(bp: u16) -> Option<Weight> {
        if bp <= 10_000 { Some(Weight(bp)) } else { None }
    }

    /// The weight in basis points (`bucket < basis_points` goes to the canary).
    pub const fn basis_points(self) -> u16 {
        self.0
    }

    /// The weight as a percentage.
    pub fn percent(self) -> f64 {
        f64::from(self.0) / 100.0
    }

    /// A weight from a percentage, refusing values out of range or finer than 0.01 %.
    pub fn from_percent(percent: f64) -> Result<Weight, WeightError> {
        if !percent.is_finite() || !(0.0..=100.0).contains(&percent) {
            return Err(WeightError::OutOfRange(percent));
        }
        let bp = percent * 100.0;
        let rounded = bp.round();
        if (bp - rounded).abs() > 1e-6 {
            return Err(WeightError::TooFine(percent));
        }
        Ok(Weight(rounded as u16))
    }
}

impl TryFrom<f64> for Weight {
    type Error = WeightError;
    fn try_from(percent: f64) -> Result<Self, Self::Error> {
        Weight::from_percent(percent)
    }
}

impl From<Weight> for f64 {
    fn from(w: Weight) -> f64 {
        w.percent()
    }
}

impl std::fmt::Display for Weight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}%", self.percent())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_percentages_at_basis_point_resolution() {
        assert_eq!(Weight::from_percent(12.5).unwrap().basis_points(), 1250);
        assert_eq!(Weight::from_percent(0.01).unwrap().basis_points(), 1);
        assert_eq!(Weight::from_percent(100.0).unwrap(), Weight::FULL);
        assert_eq!(Weight::from_percent(33.33).unwrap().basis_points(), 3333);
    }

    #[test]
    fn refuses_out_of_range_and_too_fine() {
        assert!(matches!(Weight::from_percent(150.0), Err(WeightError::OutOfRange(_))));
        assert!(matches!(Weight::from_percent(-1.0), Err(WeightError::OutOfRange(_))));
        assert!(matches!(Weight::from_percent(f64::NAN), Err(WeightError::OutOfRange(_))));
        assert!(matches!(Weight::from_percent(0.001), Err(WeightError::TooFine(_))));
    }
}
