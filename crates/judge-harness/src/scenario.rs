//! The scenarios: what the canary's process does differently, and what runs beside it.

use clap::ValueEnum;

/// One kind of experiment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// Both versions are the same program with the same settings: every rollback is false.
    Aa,
    /// `aa` beside a process that burns CPU, so latency jitters as on a busy node.
    AaBusy,
    /// The canary fails twice as often for users that are not error-prone.
    X2,
    /// The canary fails five times as often for users that are not error-prone.
    X5,
    /// `aa`, but each rollout starts after its users made requests on stable, so hundreds of
    /// sessions carry a stable pin when it begins.
    Preexisting,
}

impl Scenario {
    /// The name as the command line and the results spell it.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Aa => "aa",
            Scenario::AaBusy => "aa-busy",
            Scenario::X2 => "x2",
            Scenario::X5 => "x5",
            Scenario::Preexisting => "preexisting",
        }
    }

    /// Factor on the canary's base error rate (1: the canary is as good as stable).
    pub fn canary_error_multiplier(self) -> f64 {
        match self {
            Scenario::X2 => 2.0,
            Scenario::X5 => 5.0,
            Scenario::Aa | Scenario::AaBusy | Scenario::Preexisting => 1.0,
        }
    }

    /// Whether the canary is worse, so a rollback is the right outcome.
    pub fn canary_is_worse(self) -> bool {
        self.canary_error_multiplier() > 1.0
    }

    /// Whether a CPU-hungry neighbour runs beside the system.
    pub fn busy_neighbour(self) -> bool {
        self == Scenario::AaBusy
    }

    /// Whether users make requests on stable before each rollout (a fresh set of users arrives
    /// before the rollout instead of with it).
    pub fn users_arrive_before_rollout(self) -> bool {
        self == Scenario::Preexisting
    }
}
