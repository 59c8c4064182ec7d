//! The team's own metrics read from Prometheus: each query of a [`TeamMetric`] rendered for
//! one version ([`canary_core::team::PromQuery::render`]) and sent as an instant query to
//! `/api/v1/query`, every query of a tick at the same evaluation time, so both versions (and a
//! ratio's events and trials) are read at one instant.
//!
//! An answer becomes one number, or the reason there is none: an empty vector, a value metric
//! answering several series, an answer that is not a number, Prometheus refusing the query or
//! not answering at all. The judge turns every one of those into "no data"
//! ([`Reading::NoData`]), which holds a step and never rolls back. A ratio's query may answer
//! several series (the counter of every pod): their values are summed, and a sum that goes down
//! (a pod restarted) is skipped by the judge like a gateway's counter reset.

use std::time::Duration;

use canary_core::rollout::Rollout;
use canary_core::team::{Answer, Placeholders, Plan, PromQuery, Reading, TeamMetric};
use serde::Deserialize;

/// How long one query may take: a Prometheus that does not answer must not hold the tick up
/// for long, since the built-in metrics are judged in the same tick.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);

/// How many series an answer may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Series {
    /// Any number of counters, summed.
    Sum,
    /// Exactly one value.
    One,
}

/// The body of a `/api/v1/query` answer.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct QueryAnswer {
    status: String,
    #[serde(default)]
    data: Option<QueryData>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct QueryData {
    result_type: String,
    result: serde_json::Value,
}

#[derive(Debug, Deserialize)]
struct VectorSample {
    value: (f64, String),
}

/// Sends team metrics' queries to Prometheus.
#[derive(Debug, Clone)]
pub struct TeamQueries {
    client: reqwest::Client,
    default_url: Option<String>,
}

impl TeamQueries {
    /// Queries asking each metric's own Prometheus, else `default_url` (`[metrics] url`).
    pub fn new(default_url: Option<&str>) -> TeamQueries {
        let client = reqwest::Client::builder().timeout(QUERY_TIMEOUT).build().expect("HTTP client");
        TeamQueries { client, default_url: default_url.map(|url| url.trim_end_matches('/').to_owned()) }
    }

    /// The Prometheus asked when a metric names none.
    pub fn default_url(&self) -> Option<&str> {
        self.default_url.as_deref()
    }

    /// `metric`'s reading for `rollout` this tick, evaluated at `time` (unix seconds).
    pub async fn read(&self, metric: &TeamMetric, rollout: &Rollout, time: f64) -> Reading {
        let Some(base) = metric.prometheus.as_deref().map(|url| url.trim_end_matches('/')).or(self.default_url())
        else {
            return Reading::NoData("no Prometheus to ask".into());
        };
        let (canary, stable) = (rollout.canary.version.as_str(), rollout.stable.version.as_str());
        let at = |version| Placeholders { service: &rollout.service, version, rollout: &rollout.id };
        let ask = |query: &PromQuery, version, series| self.number(base, query.render(&at(version)), series, time);
        match metric.plan() {
            Err(why) => Reading::NoData(why),
            Ok(Plan::Ratio { events, trials, .. }) => {
                let (canary_events, canary_trials, stable_events, stable_trials) = tokio::join!(
                    ask(events, canary, Series::Sum),
                    ask(trials, canary, Series::Sum),
                    ask(events, stable, Series::Sum),
                    ask(trials, stable, Series::Sum),
                );
                Reading::counts([canary_events, canary_trials], [stable_events, stable_trials])
            }
            Ok(Plan::Value { query, .. }) => {
                let (canary, stable) = tokio::join!(ask(query, canary, Series::One), ask(query, stable, Series::One));
                Reading::values(canary, stable)
            }
        }
    }

    /// One instant query's number, or why there is none.
    async fn number(&self, base: &str, query: String, series: Series, time: f64) -> Answer {
        let url = format!("{base}/api/v1/query");
        let response = self
            .client
            .get(&url)
            .query(&[("query", query), ("time", format!("{time:.3}"))])
            .send()
            .await
            .map_err(|e| format!("Prometheus at {base} is unreachable: {}", unreachable_words(e)))?;
        let status = response.status();
        let answer: QueryAnswer = response
            .json()
            .await
            .map_err(|e| format!("Prometheus at {base} answered something unreadable (HTTP {status}): {e}"))?;
        interpret(answer, series)
    }
}

/// Why a request got no answer, without the URL: its query and time change every tick, and
/// the reason is logged each time it changes.
fn unreachable_words(error: reqwest::Error) -> String {
    if error.is_timeout() {
        format!("no answer within {}s", QUERY_TIMEOUT.as_secs())
    } else if error.is_connect() {
        "cannot connect".to_owned()
    } else {
        error.without_url().to_string()
    }
}

/// An answer's number: a scalar, or the one (or summed) sample of an instant vector.
fn interpret(answer: QueryAnswer, series: Series) -> Answer {
    if answer.status != "success" {
        return Err(format!("Prometheus refused the query: {}", answer.error.unwrap_or(answer.status)));
    }
    let Some(data) = answer.data else { return Err("Prometheus answered without data".into()) };
    let parse = |text: &str| text.parse::<f64>().map_err(|_| format!("the query answered {text:?}, not a number"));
    match data.result_type.as_str() {
        "scalar" => {
            let (_, value): (f64, String) = serde_json::from_value(data.result)
                .map_err(|e| format!("Prometheus answered an unreadable scalar: {e}"))?;
            parse(&value)
        }
        "vector" => {
            let samples: Vec<VectorSample> = serde_json::from_value(data.result)
                .map_err(|e| format!("Prometheus answered an unreadable vector: {e}"))?;
            match (samples.len(), series) {
                (0, _) => Err("the query returned nothing".into()),
                (1, _) | (_, Series::Sum) => samples.iter().map(|s| parse(&s.value.1)).sum(),
                (n, Series::One) => Err(format!("the query returned {n} series; aggregate them to one number")),
            }
        }
        other => Err(format!("the query returned a {other}, not one number per version")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(json: &str) -> QueryAnswer {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn a_vector_of_counters_is_summed_and_a_value_must_be_one_series() {
        let two = answer(
            r#"{"status":"success","data":{"resultType":"vector","result":[
                {"metric":{"pod":"a"},"value":[1700000000.5,"12"]},{"metric":{"pod":"b"},"value":[1700000000.5,"30"]}]}}"#,
        );
        assert_eq!(interpret(two, Series::Sum), Ok(42.0));
        let two = answer(
            r#"{"status":"success","data":{"resultType":"vector","result":[
                {"metric":{},"value":[1,"0.2"]},{"metric":{},"value":[1,"0.3"]}]}}"#,
        );
        assert_eq!(
            interpret(two, Series::One),
            Err("the query returned 2 series; aggregate them to one number".into())
        );
        let one = answer(
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"0.25"]}]}}"#,
        );
        assert_eq!(interpret(one, Series::One), Ok(0.25));
    }

    #[test]
    fn nothing_and_odd_answers_are_reasons_not_numbers() {
        let empty = answer(r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#);
        assert_eq!(interpret(empty, Series::Sum), Err("the query returned nothing".into()));
        let refused = answer(r#"{"status":"error","errorType":"bad_data","error":"parse error at char 5"}"#);
        assert_eq!(interpret(refused, Series::One), Err("Prometheus refused the query: parse error at char 5".into()));
        let matrix = answer(r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#);
        assert!(interpret(matrix, Series::One).unwrap_err().contains("a matrix"));
        let nan =
            answer(r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"NaN"]}]}}"#);
        assert!(interpret(nan, Series::One).unwrap().is_nan(), "the judge reads NaN as no data");
        let scalar = answer(r#"{"status":"success","data":{"resultType":"scalar","result":[1,"+Inf"]}}"#);
        assert_eq!(interpret(scalar, Series::One), Ok(f64::INFINITY));
    }

    #[tokio::test]
    async fn an_unreachable_prometheus_is_a_reason() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let queries = TeamQueries::new(None);
        let base = format!("http://127.0.0.1:{port}");
        let why = queries.number(&base, "up".into(), Series::One, 0.0).await.unwrap_err();
        assert_eq!(why, format!("Prometheus at {base} is unreachable: cannot connect"));
    }
}
