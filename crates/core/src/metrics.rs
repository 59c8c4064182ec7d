//! The metric contract between the gateways and whoever reads their counters.
//!
//! Every gateway exports per-version counters in the Prometheus text format; the controller
//! reads them back, from the gateway in its own process or through Prometheus when there are
//! several. Both sides take the family names, the label names and the label values from this one
//! table, so a metric cannot be renamed, or a label value reordered, on one side only. Counters
//! never reset while a gateway runs, so readers take differences.
//!
//! | family | labels | what it counts |
//! |---|---|---|
//! | [`REQUESTS`] | service, version, code_class | responses sent; gateway-made 502/504 count against the version that failed |
//! | [`UPSTREAM_ERRORS`] | service, version, kind | failed upstream exchanges, `kind` one of [`UpstreamErrorKind`] |
//! | [`REQUEST_DURATION`] | service, version | time to the response head, with the bounds of [`crate::latency`] |
//! | [`ROUTING_DECISIONS`] | service, version, reason | why requests went where they went ([`crate::Reason::as_str`]) |
//! | [`JUDGE_ERRORS`] | service, version | 5xx responses plus requests re-sent elsewhere |
//! | [`NEW_SESSIONS`] | service, version | sessions that started on the version in the current rollout |
//! | [`RANGE_REQUESTS`], [`RANGE_ERRORS`], [`RANGE_SLOW`] | service, version, cohort, range | requests, judge errors and slow requests per cohort range ([`crate::cohort`]) under the salt `cohort` names |
//! | [`RETRIES`] | service, from_version, to_version | requests re-sent to stable |
//! | [`UPSTREAM_CONNECTIONS`] | service, version, connection | upstream exchanges by whether their connection was pooled or new |
//! | [`BREAKER_OPEN`], [`ROUTING_GENERATION`], [`WEIGHT_PERCENT`] | service | the gateway's routing state |

use crate::cohort::RANGES;
use crate::latency::LATENCY_BUCKETS;

/// Label names.
pub mod label {
    /// The service a series belongs to.
    pub const SERVICE: &str = "service";
    /// The version a series belongs to.
    pub const VERSION: &str = "version";
    /// A response's status class, one of [`super::CODE_CLASSES`].
    pub const CODE_CLASS: &str = "code_class";
    /// An upstream failure, one of [`super::UpstreamErrorKind::as_str`].
    pub const KIND: &str = "kind";
    /// What decided a request's version, one of [`crate::Reason::as_str`].
    pub const REASON: &str = "reason";
    /// The salt a cohort range was computed under ([`crate::cohort::cohort_id`]).
    pub const COHORT: &str = "cohort";
    /// A cohort range, `0` to `RANGES - 1` ([`crate::cohort::range_label`]).
    pub const RANGE: &str = "range";
    /// The version a retry left.
    pub const FROM_VERSION: &str = "from_version";
    /// The version a retry went to.
    pub const TO_VERSION: &str = "to_version";
    /// Whether an upstream exchange found a pooled connection, one of
    /// [`super::CONNECTION_USES`].
    pub const CONNECTION: &str = "connection";
    /// A histogram bucket's upper bound (written by the encoder).
    pub const LE: &str = "le";
}

/// How a family's samples are named and read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// A monotonic count; its sample is named `<name>_total`.
    Counter,
    /// A value that goes up and down; its sample is named `<name>`.
    Gauge,
    /// Bucketed observations: `<name>_bucket{le}`, `<name>_sum` and `<name>_count`.
    Histogram,
}

/// One metric family of the contract, with the names of its `N` labels in the order the
/// gateway writes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Family<const N: usize> {
    /// The family name, without the `_total`, `_bucket`, … suffix of its samples.
    pub name: &'static str,
    /// The `# HELP` line.
    pub help: &'static str,
    /// Counter, gauge or histogram.
    pub kind: MetricKind,
    /// Label names, in order.
    pub labels: [&'static str; N],
}

/// The suffix of a counter's sample.
pub const TOTAL: &str = "_total";
/// The suffix of a histogram's bucket samples.
pub const BUCKET: &str = "_bucket";
/// The suffix of a histogram's sum sample.
pub const SUM: &str = "_sum";
/// The suffix of a histogram's count sample.
pub const COUNT: &str = "_count";

impl<const N: usize> Family<N> {
    /// The names its samples carry in the text format and the Prometheus query API.
    pub fn sample_names(&self) -> Vec<String> {
        let suffixes: &[&str] = match self.kind {
            MetricKind::Counter => &[TOTAL],
            MetricKind::Gauge => &[""],
            MetricKind::Histogram => &[BUCKET, SUM, COUNT],
        };
        suffixes.iter().map(|suffix| format!("{}{suffix}", self.name)).collect()
    }

    /// Whether a sample called `sample` belongs to this family, and with which suffix
    /// (`""` for a gauge).
    pub fn suffix_of<'a>(&self, sample: &'a str) -> Option<&'a str> {
        let suffix = sample.strip_prefix(self.name)?;
        let known = match self.kind {
            MetricKind::Counter => suffix == TOTAL,
            MetricKind::Gauge => suffix.is_empty(),
            MetricKind::Histogram => [BUCKET, SUM, COUNT].contains(&suffix),
        };
        known.then_some(suffix)
    }
}

use label::{CODE_CLASS, COHORT, CONNECTION, FROM_VERSION, KIND, RANGE, REASON, SERVICE, TO_VERSION, VERSION};

/// Responses sent to clients.
pub const REQUESTS: Family<3> = Family {
    name: "canary_requests",
    help: "Responses sent to clients, by service, version and status class",
    kind: MetricKind::Counter,
    labels: [SERVICE, VERSION, CODE_CLASS],
};

/// Failed upstream exchanges.
pub const UPSTREAM_ERRORS: Family<3> = Family {
    name: "canary_upstream_errors",
    help: "Failed upstream exchanges, by service, version and kind",
    kind: MetricKind::Counter,
    labels: [SERVICE, VERSION, KIND],
};

/// Why requests went where they went.
pub const ROUTING_DECISIONS: Family<3> = Family {
    name: "canary_routing_decisions",
    help: "Requests routed, by service, version and what decided (forced, pinned, bucket)",
    kind: MetricKind::Counter,
    labels: [SERVICE, VERSION, REASON],
};

/// Time to the response head.
pub const REQUEST_DURATION: Family<2> = Family {
    name: "canary_request_duration_seconds",
    help: "Time from receiving a request to sending its response head",
    kind: MetricKind::Histogram,
    labels: [SERVICE, VERSION],
};

/// What the judge counts as errors.
pub const JUDGE_ERRORS: Family<2> = Family {
    name: "canary_judge_errors",
    help: "5xx responses plus requests re-sent elsewhere because the version took no connection",
    kind: MetricKind::Counter,
    labels: [SERVICE, VERSION],
};

/// Sessions that started on a version in the current rollout (the judge's sample-ratio guard).
pub const NEW_SESSIONS: Family<2> = Family {
    name: "canary_new_sessions",
    help: "Sessions that started on the version in the current rollout",
    kind: MetricKind::Counter,
    labels: [SERVICE, VERSION],
};

/// Requests per cohort range: how the users who will be (or are) a rollout's canary behave.
pub const RANGE_REQUESTS: Family<4> = Family {
    name: "canary_range_requests",
    help: "Requests per cohort range (bucket / 100) under the salt the cohort label names",
    kind: MetricKind::Counter,
    labels: [SERVICE, VERSION, COHORT, RANGE],
};

/// Judge errors per cohort range.
pub const RANGE_ERRORS: Family<4> = Family {
    name: "canary_range_errors",
    help: "Judge errors per cohort range (bucket / 100) under the salt the cohort label names",
    kind: MetricKind::Counter,
    labels: [SERVICE, VERSION, COHORT, RANGE],
};

/// Slow requests per cohort range.
pub const RANGE_SLOW: Family<4> = Family {
    name: "canary_range_slow",
    help: "Requests slower than the rollout's tail threshold, per cohort range (bucket / 100)",
    kind: MetricKind::Counter,
    labels: [SERVICE, VERSION, COHORT, RANGE],
};

/// Requests re-sent from one version to another.
pub const RETRIES: Family<3> = Family {
    name: "canary_retries",
    help: "Requests re-sent to stable: no canary address took the connection, or the canary dropped a \
           bodiless GET/HEAD/OPTIONS before answering",
    kind: MetricKind::Counter,
    labels: [SERVICE, FROM_VERSION, TO_VERSION],
};

/// Upstream exchanges by the connection they went over.
pub const UPSTREAM_CONNECTIONS: Family<3> = Family {
    name: "canary_upstream_connections",
    help: "Upstream exchanges, by whether they found a pooled connection or opened a new one",
    kind: MetricKind::Counter,
    labels: [SERVICE, VERSION, CONNECTION],
};

/// Values of the `connection` label: index 0 for a pooled connection, 1 for a new one.
pub const CONNECTION_USES: [&str; 2] = ["pooled", "new"];

/// Whether a gateway's local breaker holds a service's canary off.
pub const BREAKER_OPEN: Family<1> = Family {
    name: "canary_breaker_open",
    help: "1 while this gateway's local breaker keeps traffic off the service's canary",
    kind: MetricKind::Gauge,
    labels: [SERVICE],
};

/// The generation of the routing a gateway serves.
pub const ROUTING_GENERATION: Family<1> = Family {
    name: "canary_routing_generation",
    help: "Generation of the routing this gateway serves (rises with every change)",
    kind: MetricKind::Gauge,
    labels: [SERVICE],
};

/// The canary weight a gateway serves.
pub const WEIGHT_PERCENT: Family<1> = Family {
    name: "canary_weight_percent",
    help: "Share of users this gateway sends to the canary",
    kind: MetricKind::Gauge,
    labels: [SERVICE],
};

/// Values of the `code_class` label; a status counts in `CODE_CLASSES[code_class(status)]`.
pub const CODE_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Index in [`CODE_CLASSES`] of a response status; out-of-range statuses count as the
/// nearest class.
#[inline]
pub fn code_class(status: u16) -> usize {
    usize::from(status / 100).clamp(1, 5) - 1
}

/// The index in [`CODE_CLASSES`] of `5xx`.
pub const SERVER_ERROR_CLASS: usize = 4;

/// Why an exchange with an upstream failed; the `kind` label of [`UPSTREAM_ERRORS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamErrorKind {
    /// The upstream refused the connection.
    ConnectRefused,
    /// Connecting took longer than `connect_timeout`.
    ConnectTimeout,
    /// Connecting failed otherwise (unreachable, DNS).
    ConnectOther,
    /// No response head within `request_timeout`.
    Timeout,
    /// The connection was reset or closed mid-exchange.
    Reset,
    /// Any other protocol failure.
    Protocol,
}

impl UpstreamErrorKind {
    /// Every kind, in the order of [`VersionCounts::upstream_errors`].
    pub const ALL: [UpstreamErrorKind; 6] = [
        UpstreamErrorKind::ConnectRefused,
        UpstreamErrorKind::ConnectTimeout,
        UpstreamErrorKind::ConnectOther,
        UpstreamErrorKind::Timeout,
        UpstreamErrorKind::Reset,
        UpstreamErrorKind::Protocol,
    ];

    /// Its index in [`UpstreamErrorKind::ALL`].
    #[inline]
    pub fn index(self) -> usize {
        self as usize
    }

    /// The `kind` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamErrorKind::ConnectRefused => "connect_refused",
            UpstreamErrorKind::ConnectTimeout => "connect_timeout",
            UpstreamErrorKind::ConnectOther => "connect_other",
            UpstreamErrorKind::Timeout => "timeout",
            UpstreamErrorKind::Reset => "reset",
            UpstreamErrorKind::Protocol => "protocol",
        }
    }

    /// The kind a `kind` label value names.
    pub fn from_label(label: &str) -> Option<UpstreamErrorKind> {
        UpstreamErrorKind::ALL.into_iter().find(|kind| kind.as_str() == label)
    }

    /// Whether the failure happened while connecting, before any byte of the request left.
    pub fn before_request_sent(self) -> bool {
        matches!(
            self,
            UpstreamErrorKind::ConnectRefused | UpstreamErrorKind::ConnectTimeout | UpstreamErrorKind::ConnectOther
        )
    }
}

/// One version's counters per cohort range under one salt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CohortCounts {
    /// The salt's [`crate::cohort::cohort_id`].
    pub cohort: String,
    /// Requests per range.
    pub requests: [u64; RANGES],
    /// Judge errors per range.
    pub errors: [u64; RANGES],
    /// Slow requests per range.
    pub slow: [u64; RANGES],
}

impl CohortCounts {
    /// Zero counters for `cohort`.
    pub fn new(cohort: &str) -> CohortCounts {
        CohortCounts { cohort: cohort.to_owned(), requests: [0; RANGES], errors: [0; RANGES], slow: [0; RANGES] }
    }
}

/// A point-in-time copy of one version's counters, as a gateway keeps them and as a metrics
/// source reads them back (summed over gateways).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionCounts {
    /// Responses by status class, in [`CODE_CLASSES`] order.
    pub responses: [u64; 5],
    /// Upstream failures, in [`UpstreamErrorKind::ALL`] order.
    pub upstream_errors: [u64; 6],
    /// Latency histogram counts (not cumulative), last is `+Inf`.
    pub latency_buckets: [u64; LATENCY_BUCKETS],
    /// Sum of latencies in microseconds.
    pub latency_sum_micros: u64,
    /// 5xx responses plus requests re-sent elsewhere.
    pub judge_errors: u64,
    /// Sessions that started on this version in the current rollout.
    pub new_sessions: u64,
    /// Counters per cohort range, one entry per salt seen (a gateway keeps only its current
    /// one; Prometheus may still hold the previous one for a while).
    pub cohorts: Vec<CohortCounts>,
}

impl Default for VersionCounts {
    fn default() -> VersionCounts {
        VersionCounts {
            responses: [0; 5],
            upstream_errors: [0; 6],
            latency_buckets: [0; LATENCY_BUCKETS],
            latency_sum_micros: 0,
            judge_errors: 0,
            new_sessions: 0,
            cohorts: Vec::new(),
        }
    }
}

impl VersionCounts {
    /// All responses sent.
    pub fn requests(&self) -> u64 {
        self.responses.iter().sum()
    }

    /// 5xx responses (gateway-made ones included).
    pub fn server_errors(&self) -> u64 {
        self.responses[SERVER_ERROR_CLASS]
    }

    /// The counters per range under the salt `cohort` names, if there are any.
    pub fn cohort(&self, cohort: &str) -> Option<&CohortCounts> {
        self.cohorts.iter().find(|c| c.cohort == cohort)
    }

    /// The counters under `cohort`, created empty if missing (for summing over gateways).
    pub fn cohort_mut(&mut self, cohort: &str) -> &mut CohortCounts {
        match self.cohorts.iter().position(|c| c.cohort == cohort) {
            Some(index) => &mut self.cohorts[index],
            None => {
                self.cohorts.push(CohortCounts::new(cohort));
                self.cohorts.last_mut().expect("just pushed")
            }
        }
    }

    /// Failed connection attempts: refused, timed out or otherwise failed to connect.
    pub fn connect_failures(&self) -> u64 {
        UpstreamErrorKind::ALL.iter().filter(|k| k.before_request_sent()).map(|k| self.upstream_errors[k.index()]).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_fall_in_their_class() {
        let class = |status| CODE_CLASSES[code_class(status)];
        assert_eq!(class(101), "1xx");
        assert_eq!(class(204), "2xx");
        assert_eq!(class(404), "4xx");
        assert_eq!(class(503), "5xx");
        assert_eq!(class(99), "1xx", "below the range counts as the first class");
        assert_eq!(class(999), "5xx", "above the range counts as the last class");
        assert_eq!(code_class(500), SERVER_ERROR_CLASS);
    }

    #[test]
    fn error_kinds_round_trip_through_their_labels() {
        for (i, kind) in UpstreamErrorKind::ALL.into_iter().enumerate() {
            assert_eq!(kind.index(), i);
            assert_eq!(UpstreamErrorKind::from_label(kind.as_str()), Some(kind));
        }
        assert_eq!(UpstreamErrorKind::from_label("teapot"), None);
    }

    #[test]
    fn cohort_counters_are_found_by_their_salt() {
        let mut counts = VersionCounts::default();
        counts.cohort_mut("a").errors[3] += 2;
        counts.cohort_mut("a").errors[3] += 1;
        counts.cohort_mut("b").requests[0] = 7;
        assert_eq!(counts.cohort("a").unwrap().errors[3], 3);
        assert_eq!(counts.cohort("b").unwrap().requests[0], 7);
        assert_eq!(counts.cohorts.len(), 2);
        assert!(counts.cohort("c").is_none());
    }

    #[test]
    fn samples_are_named_by_kind() {
        assert_eq!(REQUESTS.sample_names(), ["canary_requests_total"]);
        assert_eq!(BREAKER_OPEN.sample_names(), ["canary_breaker_open"]);
        assert_eq!(
            REQUEST_DURATION.sample_names(),
            [
                "canary_request_duration_seconds_bucket",
                "canary_request_duration_seconds_sum",
                "canary_request_duration_seconds_count"
            ]
        );
        assert_eq!(REQUESTS.suffix_of("canary_requests_total"), Some(TOTAL));
        assert_eq!(REQUESTS.suffix_of("canary_requests"), None);
        assert_eq!(REQUEST_DURATION.suffix_of("canary_request_duration_seconds_sum"), Some(SUM));
        assert_eq!(RANGE_ERRORS.suffix_of("canary_range_slow_total"), None);
    }

    #[test]
    fn connect_failures_are_the_kinds_before_sending() {
        let counts = VersionCounts { upstream_errors: [1, 2, 4, 8, 16, 32], ..VersionCounts::default() };
        assert_eq!(counts.connect_failures(), 7);
    }
}
