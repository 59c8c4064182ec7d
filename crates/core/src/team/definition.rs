//! How a team metric is written: in the configuration file as `[[service.metric]]` (keys in
//! snake case) and in the admin API as an entry of `analysis.teamMetrics` (camel case), the same
//! type for both. Single values are checked as they are read, so a configuration error names the
//! key and its line; what depends on the kind (which queries, which tolerance) is checked by
//! [`TeamMetric::plan`], which names the metric and the key.

use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

use super::query::PromQuery;
use crate::judge::{Metric, Tolerance};
use crate::names;

/// A team metric's name: letters, digits, `_` and `-`, and none of the built-in metrics'.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TeamMetricName(String);

impl TryFrom<String> for TeamMetricName {
    type Error = String;
    fn try_from(name: String) -> Result<TeamMetricName, String> {
        names::check_id(&name, "metric")?;
        let builtin =
            [Metric::Errors, Metric::LatencyTail, Metric::LatencyP50, Metric::LatencyP90, Metric::SampleRatio];
        if let Some(taken) = builtin.iter().find(|m| m.name().eq_ignore_ascii_case(&name)) {
            return Err(format!("metric name {name:?} is the built-in metric {:?}'s; choose another", taken.name()));
        }
        Ok(TeamMetricName(name))
    }
}

impl From<TeamMetricName> for String {
    fn from(name: TeamMetricName) -> String {
        name.0
    }
}

impl TeamMetricName {
    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// How a team metric is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TeamMetricKind {
    /// Two counts per version, `events` out of `trials` (failed checkouts out of checkouts),
    /// judged by the count test the error rate uses.
    Ratio,
    /// One number per version (a p99 from the app's own histogram, a conversion rate), judged
    /// after each step's hold on the latest value.
    Value,
}

/// Which way is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    /// Fewer events, or a smaller value, is better (failed checkouts, latency).
    LowerIsBetter,
    /// More events, or a larger value, is better (successful checkouts, conversions).
    HigherIsBetter,
}

/// A team's own metric, judged beside the built-in ones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TeamMetric {
    /// Its name, shown beside the built-in metrics and used as the `metric` label on `/metrics`.
    pub name: TeamMetricName,
    /// `ratio` or `value`.
    pub kind: TeamMetricKind,
    /// Which way is better. Required: a success ratio judged the wrong way round would roll
    /// back every canary that is better.
    pub direction: Direction,
    /// `ratio`: PromQL for the version's cumulative count of events (a counter or a sum of
    /// counters, never `rate()`): e.g. failed checkouts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<PromQuery>,
    /// `ratio`: PromQL for the version's cumulative count of trials the events are out of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trials: Option<PromQuery>,
    /// `value`: PromQL for the version's current value, one number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<PromQuery>,
    /// `ratio`: rolled back once the canary's rate of what is worse (events, or for
    /// `higher-is-better` the trials without one) is shown above this many times stable's
    /// (default 1.25).
    #[serde(default, alias = "worse_above", deserialize_with = "worse_above", skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 20)]
    pub worse_above: Option<f64>,
    /// `ratio`: safe once that rate is shown below this many times stable's (default 2).
    #[serde(default, alias = "safe_below", deserialize_with = "safe_below", skip_serializing_if = "Option::is_none")]
    #[schema(exclusive_minimum = 1, maximum = 20)]
    pub safe_below: Option<f64>,
    /// `value`: how much worse than stable's the canary's value may be, relative (0.2 = 20 %).
    #[serde(default, deserialize_with = "margin", skip_serializing_if = "Option::is_none")]
    #[schema(exclusive_minimum = 0, maximum = 10)]
    pub margin: Option<f64>,
    /// The Prometheus to ask (`http://host:9090`); default: `[metrics] url`.
    #[serde(default, deserialize_with = "http_url", skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<String>,
    /// Dry run for this metric: its verdict is shown but never rolls back and never holds a step.
    #[serde(default)]
    pub observe: bool,
}

/// A ratio metric's default tolerance: the error rate's.
pub const DEFAULT_TOLERANCE: Tolerance =
    Tolerance { worse_above: 1.25, safe_below: 2.0, absolute: 0.0, observe: false };

/// What a checked team metric asks and how it is judged.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Plan<'a> {
    /// Events out of trials, with the ratio's tolerance.
    Ratio {
        /// Events.
        events: &'a PromQuery,
        /// Trials.
        trials: &'a PromQuery,
        /// Worse and safe, as multiples of stable's rate.
        tolerance: Tolerance,
    },
    /// One value, with its relative margin.
    Value {
        /// The value.
        query: &'a PromQuery,
        /// Relative margin.
        margin: f64,
    },
}

impl TeamMetric {
    /// The metric's name.
    pub fn name(&self) -> &str {
        self.name.as_str()
    }

    /// Its queries and tolerance, or what is missing or does not belong to its kind.
    pub fn plan(&self) -> Result<Plan<'_>, String> {
        let name = self.name();
        let misplaced = |key: &str, kind: &str| Err(format!("metric {name:?}: `{key}` belongs to kind = \"{kind}\""));
        let missing = |key: &str, kind: &str| Err(format!("metric {name:?}: kind = \"{kind}\" needs `{key}`"));
        match self.kind {
            TeamMetricKind::Ratio => {
                if self.query.is_some() {
                    return misplaced("query", "value");
                }
                if self.margin.is_some() {
                    return misplaced("margin", "value");
                }
                let Some(events) = &self.events else { return missing("events", "ratio") };
                let Some(trials) = &self.trials else { return missing("trials", "ratio") };
                let tolerance = Tolerance {
                    worse_above: self.worse_above.unwrap_or(DEFAULT_TOLERANCE.worse_above),
                    safe_below: self.safe_below.unwrap_or(DEFAULT_TOLERANCE.safe_below),
                    absolute: 0.0,
                    observe: self.observe,
                };
                Ok(Plan::Ratio { events, trials, tolerance })
            }
            TeamMetricKind::Value => {
                for (key, given) in [("events", self.events.is_some()), ("trials", self.trials.is_some())] {
                    if given {
                        return misplaced(key, "ratio");
                    }
                }
                for (key, given) in
                    [("worse_above", self.worse_above.is_some()), ("safe_below", self.safe_below.is_some())]
                {
                    if given {
                        return misplaced(key, "ratio");
                    }
                }
                let Some(query) = &self.query else { return missing("query", "value") };
                let Some(margin) = self.margin else { return missing("margin", "value") };
                if self.direction == Direction::HigherIsBetter && margin >= 1.0 {
                    return Err(format!(
                        "metric {name:?}: a higher-is-better margin must be below 1 (a canary value below 0 is never reached)"
                    ));
                }
                Ok(Plan::Value { query, margin })
            }
        }
    }
}

/// Checks a list of team metrics: each one's plan, unique names, and a Prometheus to ask for
/// each (its own `prometheus`, or the default when `has_default_prometheus`).
pub fn check_team_metrics(metrics: &[TeamMetric], has_default_prometheus: bool) -> Result<(), String> {
    let mut seen = std::collections::HashSet::new();
    for metric in metrics {
        let name = metric.name();
        if !seen.insert(name) {
            return Err(format!("metric {name:?} is defined twice"));
        }
        metric.plan()?;
        if metric.prometheus.is_none() && !has_default_prometheus {
            return Err(format!(
                "metric {name:?}: no Prometheus to ask: set `prometheus = \"http://…\"` on the metric, or [metrics] source = \"prometheus\""
            ));
        }
    }
    Ok(())
}

/// A file of team metrics for one rollout (`canary rollout start --team-metrics FILE`): the
/// `[[metric]]` tables of a `[[service.metric]]` list, with the same keys. Errors name the key
/// and the line; the list is checked as [`check_team_metrics`] does, except for the Prometheus
/// the server would ask by default.
pub fn team_metrics_from_toml(text: &str) -> Result<Vec<TeamMetric>, String> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        #[serde(default)]
        metric: Vec<TeamMetric>,
    }
    let file: File = toml::from_str(text).map_err(|e| e.to_string())?;
    check_team_metrics(&file.metric, true)?;
    Ok(file.metric)
}

fn bounded<'de, D: Deserializer<'de>>(
    deserializer: D,
    ok: impl Fn(f64) -> bool,
    rule: &str,
) -> Result<Option<f64>, D::Error> {
    let value = f64::deserialize(deserializer)?;
    if ok(value) { Ok(Some(value)) } else { Err(serde::de::Error::custom(format!("{value} {rule}"))) }
}

fn worse_above<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<f64>, D::Error> {
    bounded(deserializer, |x| (1.0..=20.0).contains(&x), "is out of range: worse_above must be between 1 and 20")
}

fn safe_below<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<f64>, D::Error> {
    bounded(deserializer, |x| x > 1.0 && x <= 20.0, "is out of range: safe_below must be above 1 and at most 20")
}

fn margin<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<f64>, D::Error> {
    bounded(deserializer, |x| x > 0.0 && x <= 10.0, "is out of range: margin must be above 0 and at most 10 (1000 %)")
}

fn http_url<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    let url = String::deserialize(deserializer)?;
    let rest = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://"));
    match rest {
        Some(host) if !host.is_empty() && !host.contains(char::is_whitespace) => Ok(Some(url)),
        _ => Err(serde::de::Error::custom(format!("prometheus {url:?} must be a URL like \"http://127.0.0.1:9090\""))),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn metric(value: serde_json::Value) -> Result<TeamMetric, String> {
        serde_json::from_value(value).map_err(|e| e.to_string())
    }

    fn ratio() -> serde_json::Value {
        json!({
            "name": "checkout_failures", "kind": "ratio", "direction": "lower-is-better",
            "events": "sum(checkouts_total{version=\"{version}\",outcome=\"failed\"})",
            "trials": "sum(checkouts_total{version=\"{version}\"})",
        })
    }

    #[test]
    fn a_ratio_gets_the_error_rates_tolerance_unless_it_sets_its_own() {
        let m = metric(ratio()).unwrap();
        let Ok(Plan::Ratio { tolerance, events, .. }) = m.plan() else { panic!("a ratio") };
        assert_eq!((tolerance.worse_above, tolerance.safe_below), (1.25, 2.0));
        assert!(events.as_str().contains("failed"));
        let mut tight = ratio();
        tight["worseAbove"] = json!(1.1);
        tight["safe_below"] = json!(1.5);
        let Ok(Plan::Ratio { tolerance, .. }) = metric(tight).unwrap().plan() else { panic!("a ratio") };
        assert_eq!((tolerance.worse_above, tolerance.safe_below), (1.1, 1.5), "either spelling of the keys");
    }

    #[test]
    fn each_kind_needs_its_own_keys_and_no_others() {
        let mut m = metric(ratio()).unwrap();
        m.trials = None;
        assert_eq!(m.plan().unwrap_err(), "metric \"checkout_failures\": kind = \"ratio\" needs `trials`");
        m.kind = TeamMetricKind::Value;
        assert!(m.plan().unwrap_err().contains("`events` belongs to kind = \"ratio\""));
        m.events = None;
        m.query =
            m.trials.clone().or_else(|| Some(PromQuery::try_from("x{version=\"{version}\"}".to_owned()).unwrap()));
        assert!(m.plan().unwrap_err().contains("needs `margin`"));
        m.margin = Some(0.2);
        assert!(matches!(m.plan(), Ok(Plan::Value { margin, .. }) if margin == 0.2));
        m.direction = Direction::HigherIsBetter;
        m.margin = Some(1.0);
        assert!(m.plan().unwrap_err().contains("below 1"));
    }

    #[test]
    fn values_are_checked_as_they_are_read() {
        let with = |key: &str, value: serde_json::Value| {
            let mut m = ratio();
            m[key] = value;
            metric(m).unwrap_err()
        };
        assert!(with("worseAbove", json!(0.9)).contains("worse_above must be between 1 and 20"));
        assert!(with("safeBelow", json!(1.0)).contains("safe_below must be above 1"));
        assert!(with("prometheus", json!("localhost:9090")).contains("must be a URL"));
        assert!(with("name", json!("errors")).contains("built-in"));
        assert!(with("name", json!("checkout/failures")).contains("may only contain"));
        assert!(with("direction", json!("up")).contains("lower-is-better"));
        assert!(with("kind", json!("rate")).contains("ratio"));
        assert!(with("threshold", json!(1)).contains("unknown field"));
        let mut no_direction = ratio();
        no_direction.as_object_mut().unwrap().remove("direction");
        assert!(metric(no_direction).unwrap_err().contains("direction"));
    }

    #[test]
    fn a_list_needs_unique_names_and_a_prometheus_for_each() {
        let m = metric(ratio()).unwrap();
        assert_eq!(check_team_metrics(std::slice::from_ref(&m), true), Ok(()));
        assert!(check_team_metrics(std::slice::from_ref(&m), false).unwrap_err().contains("no Prometheus to ask"));
        let own = TeamMetric { prometheus: Some("http://127.0.0.1:9090".into()), ..m.clone() };
        assert_eq!(check_team_metrics(std::slice::from_ref(&own), false), Ok(()));
        assert!(check_team_metrics(&[m.clone(), m], true).unwrap_err().contains("defined twice"));
    }

    #[test]
    fn a_file_of_metrics_reads_like_the_config() {
        let text = r#"
[[metric]]
name = "checkout_success"
kind = "ratio"
direction = "higher-is-better"
events = 'sum(checkouts_total{version="{version}",outcome="ok"})'
trials = 'sum(checkouts_total{version="{version}"})'
safe_below = 1.5
"#;
        let metrics = team_metrics_from_toml(text).unwrap();
        assert_eq!((metrics[0].name(), metrics[0].safe_below), ("checkout_success", Some(1.5)));
        let e = team_metrics_from_toml(&text.replace("safe_below = 1.5", "safe_below = 0.5")).unwrap_err();
        assert!(e.contains("line 8") && e.contains("safe_below must be above 1"), "{e}");
        let e = team_metrics_from_toml(&text.replace("events", "evnts")).unwrap_err();
        assert!(e.contains("evnts"), "{e}");
        assert_eq!(team_metrics_from_toml(""), Ok(Vec::new()), "an empty file means no team metrics");
    }

    #[test]
    fn a_metric_writes_what_it_reads() {
        let m = metric(ratio()).unwrap();
        let written = serde_json::to_value(&m).unwrap();
        assert_eq!(written["name"], "checkout_failures");
        assert!(written.get("margin").is_none(), "unset keys stay unset: {written}");
        assert_eq!(metric(written).unwrap(), m);
    }
}
