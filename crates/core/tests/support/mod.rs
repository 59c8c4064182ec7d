//! Reading a CustomResourceDefinition's `openAPIV3Schema` the way the API server applies it.
//!
//! The CRDs come from `shared/schemas/`, beside the repository. Each exported document is checked
//! against the served `v1` schema of its kind with a JSON Schema validator (Draft 4, the dialect
//! OpenAPI 3.0 schemas are based on), tightened the way the API server reads it with strict field
//! validation (the default of `kubectl apply`):
//!
//! - an unknown field is an error: every object schema with `properties` gets
//!   `additionalProperties: false`, except where `x-kubernetes-preserve-unknown-fields` keeps
//!   unknown fields and inside `oneOf`/`anyOf`/`not` branches, which only state `required`;
//! - `nullable: true` admits `null`;
//! - `apiVersion`, `kind` and `metadata`, which the API server checks itself and the CRD leaves
//!   open, are added: the exact group/version and kind, and a name that is an RFC 1123 subdomain;
//! - other `x-kubernetes-*` keywords are dropped: CEL rules and list-map keys cannot be checked by
//!   a JSON Schema validator, so each test checks the ones its output could break itself.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

/// The path of a file in `shared/schemas/`: `shared/` sits beside the repository (CI copies it
/// there), two folders above this crate.
pub fn shared_schema(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/schemas").join(file)
}

/// Every CRD in the YAML stream at `path` (one document or several).
pub fn read_crds(path: &Path) -> Vec<Value> {
    let p = path.display();
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {p}: {e}"));
    serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("{p} does not parse as YAML: {e}"))
}

/// The `openAPIV3Schema` of the served `v1` version of the CRD of `group` and `kind`.
pub fn served_v1_schema(crds: &[Value], group: &str, kind: &str) -> Value {
    let crd = crds
        .iter()
        .find(|c| c["spec"]["group"] == group && c["spec"]["names"]["kind"] == kind)
        .unwrap_or_else(|| panic!("no CRD for {group} {kind}"));
    let versions = crd["spec"]["versions"].as_array().expect("spec.versions");
    let v1 = versions.iter().find(|v| v["name"] == "v1").unwrap_or_else(|| panic!("{kind} has no v1"));
    assert_eq!(v1["served"], true, "{kind} v1 is served");
    v1["schema"]["openAPIV3Schema"].clone()
}

/// A Draft 4 validator of `schema` as the module comment describes, for objects of `api_version`
/// and `kind`.
pub fn strict_validator(schema: Value, api_version: &str, kind: &str) -> jsonschema::Validator {
    let schema = strict_schema(schema, api_version, kind);
    jsonschema::draft4::new(&schema).unwrap_or_else(|e| panic!("the {kind} schema compiles: {e}"))
}

fn strict_schema(mut schema: Value, api_version: &str, kind: &str) -> Value {
    tighten(&mut schema, true);
    let top = schema.as_object_mut().expect("the schema is an object");
    let properties = top.entry("properties").or_insert_with(|| json!({}));
    let properties = properties.as_object_mut().expect("properties");
    let subdomain = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
    properties.insert("apiVersion".into(), json!({"enum": [api_version]}));
    properties.insert("kind".into(), json!({"enum": [kind]}));
    properties.insert(
        "metadata".into(),
        json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "maxLength": 253, "pattern": subdomain},
                "namespace": {"type": "string", "maxLength": 63, "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
                "labels": {"type": "object", "additionalProperties": {"type": "string", "maxLength": 63}},
                "annotations": {"type": "object", "additionalProperties": {"type": "string"}}
            }
        }),
    );
    top.insert("required".into(), json!(["apiVersion", "kind", "metadata", "spec"]));
    schema
}

/// Applies the rules in the module comment to one schema node and everything under it.
/// `structural` is false inside `oneOf`/`anyOf`/`allOf`/`not`, whose branches must not close
/// an object (they repeat no `properties` of their own).
fn tighten(node: &mut Value, structural: bool) {
    let Some(map) = node.as_object_mut() else { return };
    let preserve = map.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    map.retain(|k, _| !k.starts_with("x-kubernetes-"));
    if map.remove("nullable") == Some(Value::Bool(true))
        && let Some(Value::String(t)) = map.get("type").cloned()
    {
        map.insert("type".into(), json!([t, "null"]));
    }
    if structural && !preserve && map.contains_key("properties") && !map.contains_key("additionalProperties") {
        map.insert("additionalProperties".into(), Value::Bool(false));
    }
    for (key, child) in map.iter_mut() {
        match key.as_str() {
            "properties" => child.as_object_mut().into_iter().flat_map(Map::values_mut).for_each(|c| tighten(c, true)),
            "items" | "additionalProperties" => tighten(child, structural),
            "oneOf" | "anyOf" | "allOf" => {
                child.as_array_mut().into_iter().flatten().for_each(|c| tighten(c, false));
            }
            "not" => tighten(child, false),
            _ => {}
        }
    }
}
