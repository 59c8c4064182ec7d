//! The OpenAPI schemas of the types whose JSON form is not their Rust shape: a weight is a
//! percentage but held in basis points, a duration is text, names and address lists are checked
//! text. The admin API's document (`GET /api/v1/openapi.json`) takes them from here, so it says
//! what the parsers accept.

use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Schema, Type};
use utoipa::openapi::{RefOr, SchemaFormat};
use utoipa::{PartialSchema, ToSchema};

use crate::config::{HumanDuration, Upstreams, VersionName};
use crate::names::MAX_NAME;
use crate::team::{MAX_QUERY, PromQuery, TeamMetricName};
use crate::weight::Weight;

impl PartialSchema for Weight {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Number)
            // No `multipleOf: 0.01`: validators that divide floats would refuse weights like 0.07.
            .description(Some("Percent of users on the canary, 0 to 100 in steps of 0.01."))
            .minimum(Some(0))
            .maximum(Some(100))
            .examples([12.5])
            .into()
    }
}
impl ToSchema for Weight {}

impl PartialSchema for HumanDuration {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some("A duration written the human way: \"250ms\", \"30s\", \"5m\", \"1h 30m\"."))
            .examples(["30s", "1h 30m"])
            .into()
    }
}
impl ToSchema for HumanDuration {}

impl PartialSchema for VersionName {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some("A version name: letters, digits, '.', '_' and '-'."))
            .pattern(Some(format!("^[A-Za-z0-9._-]{{1,{MAX_NAME}}}$")))
            .examples(["v2"])
            .into()
    }
}
impl ToSchema for VersionName {}

impl PartialSchema for Upstreams {
    fn schema() -> RefOr<Schema> {
        let address = ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::Custom("host:port".into())))
            .examples(["10.0.0.5:8080"]);
        ArrayBuilder::new()
            .items(address)
            .min_items(Some(1))
            .description(Some("The version's \"host:port\" addresses, balanced round robin."))
            .into()
    }
}
impl ToSchema for Upstreams {}

impl PartialSchema for TeamMetricName {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some("A team metric's name: letters, digits, '_' and '-', none of the built-in metrics'."))
            .pattern(Some(format!("^[A-Za-z0-9_-]{{1,{MAX_NAME}}}$")))
            .examples(["checkout_failures"])
            .into()
    }
}
impl ToSchema for TeamMetricName {}

impl PartialSchema for PromQuery {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(
                "A PromQL query; {service}, {version} and {rollout} stand for the service, the version read and \
                 the rollout id, escaped as a label value. It must use {version}.",
            ))
            .max_length(Some(MAX_QUERY))
            .examples([r#"sum(shop_checkouts_total{version="{version}",outcome="failed"})"#])
            .into()
    }
}
impl ToSchema for PromQuery {}

#[cfg(test)]
mod tests {
    use serde::de::DeserializeOwned;
    use serde_json::{Value, json};

    use super::*;

    /// Whether the type's own parser takes `value`.
    fn parses<T: DeserializeOwned>(value: Value) -> bool {
        serde_json::from_value::<T>(value).is_ok()
    }

    fn examples<T: PartialSchema>() -> Vec<Value> {
        let schema = serde_json::to_value(T::schema()).unwrap();
        let examples = schema["examples"].as_array().or(schema["items"]["examples"].as_array());
        examples.expect("the schema has examples").clone()
    }

    #[test]
    fn the_examples_are_accepted_by_the_parsers() {
        assert!(examples::<Weight>().into_iter().all(parses::<Weight>));
        assert!(examples::<HumanDuration>().into_iter().all(parses::<HumanDuration>));
        assert!(examples::<VersionName>().into_iter().all(parses::<VersionName>));
        assert!(examples::<Upstreams>().into_iter().all(|address| parses::<Upstreams>(json!([address]))));
        assert!(examples::<TeamMetricName>().into_iter().all(parses::<TeamMetricName>));
        assert!(examples::<PromQuery>().into_iter().all(parses::<PromQuery>));
    }

    #[test]
    fn the_limits_stated_are_the_parsers_limits() {
        let weight = serde_json::to_value(Weight::schema()).unwrap();
        let (min, max) = (weight["minimum"].as_f64().unwrap(), weight["maximum"].as_f64().unwrap());
        assert!(parses::<Weight>(json!(min)) && parses::<Weight>(json!(max)));
        assert!(!parses::<Weight>(json!(min - 0.01)) && !parses::<Weight>(json!(max + 0.01)));

        let upstreams = serde_json::to_value(Upstreams::schema()).unwrap();
        assert_eq!(upstreams["minItems"], 1);
        assert!(!parses::<Upstreams>(json!([])));

        let version = serde_json::to_value(VersionName::schema()).unwrap();
        assert_eq!(version["pattern"], format!("^[A-Za-z0-9._-]{{1,{MAX_NAME}}}$"));
        assert!(parses::<VersionName>(json!("v".repeat(MAX_NAME))));
        assert!(!parses::<VersionName>(json!("v".repeat(MAX_NAME + 1))));
        assert!(!parses::<VersionName>(json!("v 2")));
    }
}
