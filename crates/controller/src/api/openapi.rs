//! The OpenAPI 3.1 document of `/api/v1`, served at `GET /api/v1/openapi.json`.
//!
//! The router and the document come from one list, [`api_routes`]: each handler's
//! `#[utoipa::path]` states its method, path, parameters, body and answers, and `routes!`
//! registers the handler with axum and its operation with the document together, so no route
//! is served undocumented and no documented route is missing. The request and response types
//! derive `ToSchema` where they are defined (core's API types, the rollout views), so the
//! schemas follow the types. Every answer is described as the envelope around its `data`; a
//! refused call's envelope has `data: null` ([`ErrorEnvelope`]).

use std::sync::LazyLock;

use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use canary_core::api::Envelope;
use utoipa::openapi::path::PathItem;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{Content, OpenApi, Ref, RefOr, ResponseBuilder};
// The schema traits are written out in full below: utoipa's macros expand to `utoipa::ToSchema`
// paths here, which an import of the traits would turn into unnecessary qualifications.
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{AppState, alerts, rollouts, services, trains};

/// Tag of the routing endpoints.
pub const SERVICES: &str = "services";
/// Tag of the rollout endpoints.
pub const ROLLOUTS: &str = "rollouts";
/// Tag of the dashboard's feed.
pub const DASHBOARD: &str = "dashboard";
/// Tag of this document.
pub const META: &str = "meta";

/// Where the API is mounted.
pub const PREFIX: &str = "/api/v1";

/// The name of the bearer token's security scheme.
const BEARER: &str = "bearerToken";

/// The envelope of a refused call, for the document: `code` says why, `data` is null. It is
/// the schema of [`Envelope`] around [`NoData`], under a name of its own.
#[derive(Debug, Clone, Copy)]
pub struct ErrorEnvelope;

impl utoipa::PartialSchema for ErrorEnvelope {
    fn schema() -> RefOr<Schema> {
        <Envelope<NoData> as utoipa::PartialSchema>::schema()
    }
}

impl utoipa::ToSchema for ErrorEnvelope {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        <Envelope<NoData> as utoipa::ToSchema>::schemas(schemas);
        schemas.push((<NoData as utoipa::ToSchema>::name().into_owned(), <NoData as utoipa::PartialSchema>::schema()));
    }
}

/// The `data` of a refused call: always `null`.
#[derive(Debug, Clone, Copy)]
pub struct NoData;

impl utoipa::PartialSchema for NoData {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new().schema_type(Type::Null).description(Some("Always null: the call was refused.")).into()
    }
}
impl utoipa::ToSchema for NoData {}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Sticky Canary admin API",
        description = "Routing and rollouts of the services a Sticky Canary gateway serves. Every \
            answer, success or error, is one envelope `{code, clientMessage, systemMessage, data}` \
            with a fitting HTTP status; `data` is null on errors. A refused call changes nothing. \
            Every state change (`POST`, `PUT`, `PATCH`, `DELETE`) must say `Content-Type: \
            application/json`, even without a body, and is refused when a page of another site \
            sent it (its `Origin` or `Sec-Fetch-Site`); every request must name the admin \
            listener in `Host`. `docs/security.md` has the rules.",
    ),
    components(schemas(ErrorEnvelope)),
    tags(
        (name = SERVICES, description = "What each service routes where, and changing it by hand while no rollout owns it"),
        (name = ROLLOUTS, description = "Start, watch and steer rollouts"),
        (name = DASHBOARD, description = "The dashboard's live feed"),
        (name = META, description = "This document"),
    ),
)]
struct ApiDoc;

/// The routes of `/api/v1` (relative to it), each with its documentation: the list both
/// [`super::router`] and [`document`] are built from.
pub fn api_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(services::list))
        .routes(routes!(services::get))
        .routes(routes!(services::set_weight))
        .routes(routes!(services::set_canary, services::remove_canary))
        .routes(routes!(rollouts::history, rollouts::start))
        .routes(routes!(rollouts::current))
        .routes(routes!(rollouts::act))
        .routes(routes!(rollouts::events))
        .routes(routes!(trains::start))
        .routes(routes!(trains::get))
        .routes(routes!(alerts::receive))
        .routes(routes!(openapi_json))
}

/// The document: [`api_routes`] under [`PREFIX`], behind the bearer token, and the dashboard's
/// feed, which checks the token in its first message instead.
pub fn document() -> OpenApi {
    let mut doc = OpenApiRouter::with_openapi(ApiDoc::openapi()).nest(PREFIX, api_routes()).into_openapi();
    behind_the_token(&mut doc);
    doc.merge(crate::dashboard::feed_routes().into_openapi());
    behind_the_guard(&mut doc);
    doc
}

/// An answer of the envelope with `data: null`, described.
fn refusal(description: &str) -> RefOr<utoipa::openapi::Response> {
    let schema = Ref::from_schema_name(<ErrorEnvelope as utoipa::ToSchema>::name());
    RefOr::T(
        ResponseBuilder::new().description(description).content("application/json", Content::new(Some(schema))).build(),
    )
}

/// Adds the answers of the router's guard (`super::guard`): `421` to every operation, and
/// `403` and `415` to every state change.
fn behind_the_guard(doc: &mut OpenApi) {
    let misdirected = refusal("`MISDIRECTED_REQUEST`: `Host` names none of the admin listener's allowed hosts");
    let denied = refusal(
        "`PERMISSION_DENIED`: the read token was sent, or a page of another site sent the request \
         (`Origin` not the admin listener's own, or `Sec-Fetch-Site: cross-site`/`same-site`)",
    );
    let not_json = refusal(
        "`UNSUPPORTED_MEDIA_TYPE`: the request does not say `Content-Type: application/json` (needed even without a body)",
    );
    for item in doc.paths.paths.values_mut() {
        let PathItem { get, put, post, delete, options, head, patch, trace, query, .. } = item;
        let reads = [get, options, head, trace, query].into_iter().flatten().map(|op| (op, false));
        let changes = [put, post, delete, patch].into_iter().flatten().map(|op| (op, true));
        for (operation, changes_state) in reads.chain(changes) {
            let responses = &mut operation.responses.responses;
            responses.insert("421".into(), misdirected.clone());
            if changes_state {
                responses.insert("403".into(), denied.clone());
                responses.entry("415".into()).or_insert_with(|| not_json.clone());
            }
        }
    }
}

/// Marks every operation of `doc` as taking the bearer token (needed when one is configured),
/// and as answering `401` without it.
fn behind_the_token(doc: &mut OpenApi) {
    let scheme = SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer));
    doc.components.get_or_insert_with(Default::default).security_schemes.insert(BEARER.into(), RefOr::T(scheme));
    let unauthenticated = ResponseBuilder::new()
        .description(
            "`UNAUTHENTICATED`: a token is configured and the request's bearer token is missing or wrong \
             (the admin token allows everything, the read token `GET` only)",
        )
        .content(
            "application/json",
            Content::new(Some(Ref::from_schema_name(<ErrorEnvelope as utoipa::ToSchema>::name()))),
        )
        .build();
    for item in doc.paths.paths.values_mut() {
        let PathItem { get, put, post, delete, options, head, patch, trace, query, .. } = item;
        for operation in [get, put, post, delete, options, head, patch, trace, query].into_iter().flatten() {
            // `{}` first: without a configured token the API needs none.
            operation.security = Some(vec![SecurityRequirement::default(), SecurityRequirement::new(BEARER, [""; 0])]);
            operation.responses.responses.insert("401".into(), RefOr::T(unauthenticated.clone()));
        }
    }
}

/// `GET /api/v1/openapi.json`.
#[utoipa::path(get, path = "/openapi.json", tag = META, operation_id = "openApiDocument",
    summary = "This document",
    responses((status = 200, description = "The OpenAPI 3.1 document of `/api/v1`, as it is (no envelope)", body = Object)),
)]
pub async fn openapi_json() -> Response {
    static JSON: LazyLock<String> =
        LazyLock::new(|| document().to_pretty_json().expect("the OpenAPI document serializes to JSON"));
    ([(CONTENT_TYPE, "application/json")], JSON.as_str()).into_response()
}
