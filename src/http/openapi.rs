//! The OpenAPI document, generated from the handlers' annotations, then made
//! to state what the request handling every route shares does ([`WireRules`]):
//! the error answers of the extractors and of authentication, and the text
//! rules of [`TextRules::REQUEST`] as patterns.

use std::collections::{BTreeSet, HashMap};
use std::sync::OnceLock;

use actix_web::{HttpRequest, HttpResponse};
use utoipa::openapi::content::Content;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{Operation, ParameterIn, PathItem};
use utoipa::openapi::request_body::RequestBody;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{
    AdditionalProperties, AllOfBuilder, AnyOfBuilder, ArrayBuilder, ArrayItems, KnownFormat,
    Object, ObjectBuilder, OneOfBuilder, Schema, SchemaFormat, SchemaType, Type,
};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{Components, Ref, RefOr};
use utoipa::{Modify, OpenApi};

use super::api_error::ApiError;
use super::{
    admin, alert_rules, alerts, archives, gdpr, legal_holds, presets, reports, retention_policies,
    streams, tail,
};
use super::{api_error, api_keys, deliveries, destinations, events, health, integrity, roles};
use crate::events::{self as audit_events, STRING_FIELDS};
#[cfg(doc)]
use crate::validation::TextRules;
use crate::validation::MAX_STRING_CHARS;

#[derive(OpenApi)]
#[openapi(
    info(title = "audit-worker", description = "Tamper-evident, multi-tenant audit trail API.\n\n\
        Every error answer has the body `ErrorBody`. Besides those each operation lists, any \
        request may get 405 (a known path with another method; `Allow` lists the methods, \
        HEAD wherever GET), 414 (a URI over 16 KiB) or 431 (headers over 32 KiB). No string \
        anywhere in a request may hold NUL, and none may be longer than 65536 characters."),
    paths(
        health::healthz, health::readyz, health::metrics, openapi_json,
        api_keys::create, api_keys::list, api_keys::revoke, api_keys::rotate,
        roles::list, roles::get, roles::put, roles::delete,
        events::ingest, events::list, events::export, events::get, events::proof, tail::stream,
        presets::list, presets::get, presets::create, presets::put, presets::delete,
        integrity::verify, integrity::list_checkpoints, integrity::create_checkpoint, integrity::public_key,
        integrity::consistency,
        destinations::create, destinations::list, destinations::get, destinations::update, destinations::delete,
        destinations::test, destinations::health,
        deliveries::create, deliveries::list, deliveries::get, deliveries::retry,
        streams::create, streams::list, streams::get, streams::update, streams::delete, streams::pause,
        streams::resume,
        retention_policies::list, retention_policies::create, retention_policies::update,
        retention_policies::delete,
        legal_holds::create, legal_holds::list, legal_holds::get, legal_holds::release,
        archives::list, archives::get,
        alert_rules::list, alert_rules::create, alert_rules::get, alert_rules::replace, alert_rules::delete,
        alerts::list, alerts::statistics, alerts::get, alerts::acknowledge, alerts::resolve, alerts::dismiss,
        alerts::create, alerts::create_subscription, alerts::list_subscriptions, alerts::get_subscription,
        alerts::update_subscription, alerts::delete_subscription,
        gdpr::export, gdpr::pseudonymize, gdpr::erase, gdpr::reverse, gdpr::record_request, gdpr::get_request,
        reports::list_templates, reports::create_template, reports::get_template, reports::update_template,
        reports::delete_template, reports::list_reports, reports::create_report, reports::get_report,
        reports::update_report, reports::delete_report, reports::run_now, reports::list_executions,
        reports::get_execution, reports::download_output,
        admin::performance, admin::explain, admin::run_maintenance, admin::list_errors, admin::get_error,
    ),
    components(schemas(
        api_error::ErrorBody, api_error::ErrorDetail, api_error::FieldError,
        crate::error_tracking::Severity,
    )),
    modifiers(&BearerKeys, &WireRules),
    tags(
        (name = "operations", description = "Health, readiness, metrics and this document"),
        (name = "access", description = "API keys and roles of the caller's organization"),
        (name = "events", description = "Audit events: ingest and queries"),
        (name = "integrity", description = "Tamper evidence: verification, signed checkpoints, inclusion and consistency proofs"),
        (name = "delivery", description = "Destinations and the delivery queue"),
        (name = "streams", description = "Event streams: an organization's events sent to a destination as they commit"),
        (name = "retention", description = "Retention policies, legal holds and archives"),
        (name = "alerts", description = "Alerts, alert rules and alert subscriptions"),
        (name = "gdpr", description = "Data subject requests: export, pseudonymization, erasure"),
        (name = "reports", description = "Report templates, scheduled reports, their runs and outputs"),
        (name = "admin", description = "The platform operators' tools: database performance, maintenance, internal errors"),
    )
)]
pub struct ApiDoc;

/// Declares the `Authorization: Bearer <api key>` scheme the `/v1` routes use.
struct BearerKeys;

impl Modify for BearerKeys {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// Makes the document state what every route's request handling does, which
/// the handlers' annotations leave out so as to say it once, here:
///
/// - the error answers of authentication (`Caller`: 401, 403, 429 and 503 on
///   every secured route) and of the extractors (400 for a query, a path or a
///   body; 404 for a path segment of the wrong form; 413 and 415 for a body),
///   each with the [`api_error::ErrorBody`] shape;
/// - the text rules of [`TextRules::REQUEST`]: no control character in a
///   query or path parameter, nor in a body's top-level strings and keys
///   (NUL and length apply at any depth; see the document's description);
/// - an optional body (`OptionalJson`) is one the client may leave out, not
///   one it may send as JSON `null`, which is refused like any other non-object;
/// - the fields a create requires of a body it shares with a change ([`CREATE_REQUIRES`]).
struct WireRules;

/// The control characters [`TextRules::REQUEST`] refuses in text, as the body
/// of a regular expression's character class: C0 but tab, line feed and
/// carriage return, and DEL.
const CONTROL: &str = r"\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F";

/// A field annotated with this pattern must hold some character that is not
/// white space (the handlers' `trim().is_empty()` checks); [`WireRules`] folds
/// the control characters' rule into it, as a schema has one pattern.
const NOT_BLANK: &str = r"\S";

/// Text as [`TextRules::REQUEST`] reads it: no control character.
fn text_pattern() -> String {
    format!("^[^{CONTROL}]*$")
}

/// [`text_pattern`], holding a character that is not white space.
fn not_blank_text_pattern() -> String {
    format!("^[^{CONTROL}]*[^\\s{CONTROL}][^{CONTROL}]*$")
}

/// POST operations whose body schema is shared with a PUT or PATCH that may
/// leave out fields the create requires: (operation id, the shared schema,
/// the name of the create's copy, the fields it requires).
const CREATE_REQUIRES: &[(&str, &str, &str, &[&str])] = &[
    ("create_preset", "PresetBody", "NewPreset", &["name"]),
    (
        "create_report_template",
        "TemplateBody",
        "NewReportTemplate",
        &["name", "report_type"],
    ),
    (
        "create_report",
        "ReportBody",
        "NewReport",
        &["name", "schedule"],
    ),
];

/// The error answers shared by many operations: (status, the response's
/// name among the components, its description).
const SHARED_ERRORS: &[(&str, &str, &str)] = &[
    (
        "400",
        "BadRequest",
        "The request is invalid: `validation_failed`, with `details` naming each field \
         and its problem, or `bad_request` (a body that is not JSON, say)",
    ),
    (
        "401",
        "Unauthorized",
        "No valid API key: `unauthorized` when `Authorization: Bearer <key>` is missing, \
         malformed, unknown or revoked; `key_expired` when the key's `expires_at` has passed; \
         `key_rotated` for a secret a rotation replaced, once its grace period has ended \
         (the message says when)",
    ),
    (
        "403",
        "Forbidden",
        "The key's role does not grant this, or the request names another organization \
         (`organization_id`) than the key's",
    ),
    (
        "404",
        "NotFound",
        "The caller's organization has nothing of that id (nor has any, for an id of the wrong form)",
    ),
    (
        "409",
        "Conflict",
        "The request conflicts with what is stored",
    ),
    (
        "413",
        "PayloadTooLarge",
        "The body is larger than `http.max_body` (as sent or decompressed); \
         `details.limit_bytes` says how large it may be",
    ),
    (
        "415",
        "UnsupportedMediaType",
        "The body is not declared as JSON (`Content-Type`), or is encoded otherwise than \
         as is, gzip or zstd (`Content-Encoding`)",
    ),
    (
        "429",
        "RateLimited",
        "Too many requests with this key: retry after `Retry-After` seconds",
    ),
    (
        "503",
        "Unavailable",
        "A dependency (the database) is unavailable: retry after `Retry-After` seconds",
    ),
];

impl Modify for WireRules {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        for (status, name, description) in SHARED_ERRORS {
            components.responses.insert(
                (*name).to_owned(),
                RefOr::T(shared_error(status, description)),
            );
        }
        components
            .schemas
            .insert("EventInput".to_owned(), RefOr::T(event_input()));
        let mut body_schemas = BTreeSet::new();
        for item in openapi.paths.paths.values_mut() {
            for operation in operations_mut(item) {
                let id = operation.operation_id.clone().unwrap_or_default();
                if id == "ingest_events" {
                    ingest_body(operation);
                }
                if let Some(body) = &mut operation.request_body {
                    if let Some(name) = body_schema(body, components, &id) {
                        body_schemas.insert(name);
                    }
                }
                document_errors(operation);
                for parameter in operation.parameters.iter_mut().flatten() {
                    if let Some(RefOr::T(schema)) = &mut parameter.schema {
                        text_rules(schema, false);
                    }
                }
            }
        }
        for name in body_schemas {
            if let Some(RefOr::T(Schema::Object(object))) = components.schemas.get_mut(&name) {
                for property in object.properties.values_mut() {
                    if let RefOr::T(schema) = property {
                        text_rules(schema, true);
                    }
                }
            }
        }
    }
}

/// An event as `POST /v1/events` takes it ([`audit_events::prepare`]): its
/// string fields and their lengths from [`STRING_FIELDS`], each read as text;
/// `principal_id`, `action` and `status` unless a preset gives them.
fn event_input() -> Schema {
    let text = |max: usize, types: SchemaType| {
        ObjectBuilder::new()
            .schema_type(types)
            .max_length(Some(max))
            .pattern(Some(text_pattern()))
    };
    let mut event = ObjectBuilder::new()
        .schema_type(Type::Object)
        .description(Some(
            "One audit event. The identifiers are required unless the named preset gives them; \
             `timestamp` (default: now) lies between 1970 and now plus `ingest.max_clock_skew`.",
        ))
        .additional_properties(Some(AdditionalProperties::FreeForm(false)));
    for (field, max) in STRING_FIELDS {
        let nullable = SchemaType::from_iter([Type::String, Type::Null]);
        let schema = match *field {
            "timestamp" => ObjectBuilder::new()
                .schema_type(nullable)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime))),
            "principal_id" | "action" => {
                text(*max, nullable).pattern(Some(not_blank_text_pattern()))
            }
            "status" => enumeration(nullable, audit_events::STATUSES),
            "data_classification" => enumeration(nullable, audit_events::CLASSIFICATIONS)
                .description(Some("Default INTERNAL")),
            "preset" => text(*max, nullable).description(Some("One of the organization's presets")),
            "organization_id" => {
                text(*max, nullable).description(Some("The key's organization (403 for another)"))
            }
            _ => text(*max, nullable),
        };
        event = event.property(*field, schema);
    }
    event = event.property(
        "details",
        ObjectBuilder::new()
            .schema_type(SchemaType::from_iter([Type::Object, Type::Null]))
            .property_names(Some(text(MAX_STRING_CHARS, Type::String.into())))
            .description(Some(format!(
                "Free-form; at most {} bytes serialized",
                audit_events::MAX_DETAILS_BYTES
            ))),
    );
    let required = |fields: &[&str]| {
        fields.iter().fold(
            ObjectBuilder::new().schema_type(SchemaType::AnyValue),
            |object, field| object.required(*field),
        )
    };
    AllOfBuilder::new()
        .item(event)
        .item(
            AnyOfBuilder::new()
                .item(required(&["preset"]))
                .item(required(&["principal_id", "action", "status"])),
        )
        .into()
}

/// One of `values`, or null (which an event's fields take for absent).
fn enumeration(types: SchemaType, values: &[&str]) -> ObjectBuilder {
    let values = values.iter().map(|value| serde_json::Value::from(*value));
    ObjectBuilder::new()
        .schema_type(types)
        .enum_values(Some(values.chain([serde_json::Value::Null])))
}

/// The ingest handler reads its body itself (one event, an array of them, or
/// NDJSON, one per line), so its annotation leaves the schema to this.
fn ingest_body(operation: &mut Operation) {
    let Some(body) = &mut operation.request_body else {
        return;
    };
    let event = Ref::from_schema_name("EventInput");
    let schema = OneOfBuilder::new()
        .item(event.clone())
        .item(
            ArrayBuilder::new()
                .items(event)
                .min_items(Some(1))
                .description(Some("At most `ingest.max_batch` events")),
        )
        .build();
    body.content.insert(
        "application/json".to_owned(),
        Content::new(Some(Schema::OneOf(schema))),
    );
}

fn operations_mut(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.patch,
        &mut item.head,
        &mut item.options,
        &mut item.trace,
    ]
    .into_iter()
    .flatten()
}

fn shared_error(status: &str, description: &str) -> Response {
    let mut response = ResponseBuilder::new()
        .description(description)
        .content("application/json", error_content())
        .build();
    let header = |name: &str, description: &str, schema: Type| {
        (
            name.to_owned(),
            HeaderBuilder::new()
                .schema(ObjectBuilder::new().schema_type(schema))
                .description(Some(description))
                .build(),
        )
    };
    response.headers.extend(match status {
        "401" => Some(header("WWW-Authenticate", "`Bearer`", Type::String)),
        "429" | "503" => Some(header(
            "Retry-After",
            "Seconds to wait before retrying",
            Type::Integer,
        )),
        _ => None,
    });
    response
}

fn error_content() -> Content {
    Content::new(Some(Ref::from_schema_name("ErrorBody")))
}

/// Adds the errors the operation's inputs and authentication can answer
/// with, and gives every error answer the shared body.
fn document_errors(operation: &mut Operation) {
    let secured = operation
        .security
        .as_ref()
        .is_some_and(|requirements| !requirements.is_empty());
    let parameters = operation.parameters.iter().flatten();
    let in_path = parameters
        .clone()
        .any(|parameter| parameter.parameter_in == ParameterIn::Path);
    let in_query = parameters
        .clone()
        .any(|parameter| parameter.parameter_in == ParameterIn::Query);
    let body = operation.request_body.is_some();
    let mut statuses = Vec::new();
    if secured {
        statuses.extend(["401", "403", "429", "503"]);
    }
    if in_path {
        statuses.extend(["400", "404"]);
    }
    if in_query {
        statuses.push("400");
    }
    if body {
        statuses.extend(["400", "413", "415"]);
    }
    let responses = &mut operation.responses.responses;
    for status in statuses {
        responses
            .entry(status.to_owned())
            .or_insert_with(|| RefOr::T(Response::new("")));
    }
    for (status, response) in responses.iter_mut() {
        let RefOr::T(answer) = response else {
            continue;
        };
        if !status.starts_with('4') && !status.starts_with('5') {
            continue;
        }
        let shared = SHARED_ERRORS.iter().find(|(code, ..)| code == status);
        match shared {
            Some((_, name, _)) if answer.description.is_empty() && answer.content.is_empty() => {
                *response = RefOr::Ref(Ref::from_response_name(*name));
            }
            _ => {
                if answer.content.is_empty() {
                    answer
                        .content
                        .insert("application/json".to_owned(), error_content());
                }
            }
        }
    }
}

/// Reads an optional body as one the client may leave out, gives a create
/// its copy of a shared schema with the fields it requires, and returns the
/// name of the body's schema.
fn body_schema(body: &mut RequestBody, components: &mut Components, id: &str) -> Option<String> {
    let content = body.content.get_mut("application/json")?;
    let schema = content.schema.as_mut()?;
    if let Some(only) = without_null(schema) {
        *schema = only;
        body.required = None;
    }
    let RefOr::Ref(reference) = schema else {
        return None;
    };
    let name = reference.ref_location.rsplit('/').next()?.to_owned();
    let Some((_, _, create_name, required)) = CREATE_REQUIRES
        .iter()
        .find(|(operation, shared, ..)| *operation == id && *shared == name)
    else {
        return Some(name);
    };
    let mut copy = components.schemas.get(&name)?.clone();
    if let RefOr::T(Schema::Object(object)) = &mut copy {
        for field in *required {
            if !object.required.iter().any(|present| present == field) {
                object.required.push((*field).to_owned());
            }
            // A required field may not be null either.
            match object.properties.get_mut(*field) {
                Some(RefOr::T(Schema::Object(property))) => {
                    if let SchemaType::Array(types) = &property.schema_type {
                        let types: Vec<Type> = types
                            .iter()
                            .filter(|t| **t != Type::Null)
                            .cloned()
                            .collect();
                        if let [only] = &types[..] {
                            property.schema_type = SchemaType::Type(only.clone());
                        }
                    }
                }
                Some(property @ RefOr::T(Schema::OneOf(_))) => {
                    if let Some(only) = without_null(property) {
                        *property = only;
                    }
                }
                _ => {}
            }
        }
    }
    components.schemas.insert((*create_name).to_owned(), copy);
    *schema = RefOr::Ref(Ref::from_schema_name(*create_name));
    Some((*create_name).to_owned())
}

/// The one schema besides null of a `oneOf` (how utoipa writes an `Option`), if that is what `schema` is.
fn without_null(schema: &RefOr<Schema>) -> Option<RefOr<Schema>> {
    let RefOr::T(Schema::OneOf(one_of)) = schema else {
        return None;
    };
    let not_null: Vec<_> = one_of.items.iter().filter(|item| !is_null(item)).collect();
    match not_null[..] {
        [only] => Some(only.clone()),
        _ => None,
    }
}

fn is_null(schema: &RefOr<Schema>) -> bool {
    matches!(schema, RefOr::T(Schema::Object(object))
        if object.schema_type == SchemaType::Type(Type::Null))
}

/// Gives a string (or strings, for an array) of a query, a path or a body's
/// top level the text rules of [`TextRules::REQUEST`]; `body`: also the
/// bound on length and, for a free-form object, the rule on its keys.
fn text_rules(schema: &mut Schema, body: bool) {
    match schema {
        Schema::Object(object) if is(object, Type::String) => {
            if object.enum_values.is_some() || object.format.is_some() {
                return;
            }
            object.pattern = Some(match object.pattern.as_deref() {
                None => text_pattern(),
                Some(NOT_BLANK) => not_blank_text_pattern(),
                Some(other) => other.to_owned(),
            });
            if body {
                object.max_length = Some(
                    object
                        .max_length
                        .unwrap_or(MAX_STRING_CHARS)
                        .min(MAX_STRING_CHARS),
                );
            }
        }
        Schema::Object(object)
            if body && is(object, Type::Object) && object.properties.is_empty() =>
        {
            object.property_names = Some(Box::new(Schema::Object(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some(text_pattern()))
                    .build(),
            )));
        }
        Schema::Array(array) => {
            if let ArrayItems::RefOrSchema(items) = &mut array.items {
                if let RefOr::T(items) = items.as_mut() {
                    text_rules(items, body);
                }
            }
        }
        _ => {}
    }
}

/// Whether `object` is of type `wanted`, or of it or null.
fn is(object: &Object, wanted: Type) -> bool {
    match &object.schema_type {
        SchemaType::Type(single) => *single == wanted,
        SchemaType::Array(types) => types.contains(&wanted),
        SchemaType::AnyValue => false,
    }
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", operation_id = "openapi_json", tag = "operations",
    responses((status = 200, description = "OpenAPI 3 document")))]
pub async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}

/// The methods the route `pattern` (as actix and the document spell it,
/// `/v1/events/{id}`) answers, HEAD included wherever GET is; `None` for a
/// pattern the document does not know.
pub fn methods_of(pattern: &str) -> Option<Vec<&'static str>> {
    static METHODS: OnceLock<HashMap<String, Vec<&'static str>>> = OnceLock::new();
    METHODS
        .get_or_init(|| {
            ApiDoc::openapi()
                .paths
                .paths
                .into_iter()
                .map(|(path, item)| {
                    let methods = [
                        ("GET", item.get.is_some()),
                        ("HEAD", item.get.is_some() || item.head.is_some()),
                        ("POST", item.post.is_some()),
                        ("PUT", item.put.is_some()),
                        ("PATCH", item.patch.is_some()),
                        ("DELETE", item.delete.is_some()),
                    ];
                    let allowed = methods
                        .into_iter()
                        .filter_map(|(method, present)| present.then_some(method))
                        .collect();
                    (path, allowed)
                })
                .collect()
        })
        .get(pattern)
        .cloned()
}

/// The fallback service: a path no route serves is a 404; a path some route
/// serves, asked with another method, a 405 naming the methods it takes (as
/// the OpenAPI document lists them).
pub async fn route_not_found(request: HttpRequest) -> Result<HttpResponse, ApiError> {
    let method = request.method().to_string();
    let path = request.path().to_owned();
    match request
        .match_pattern()
        .and_then(|pattern| methods_of(&pattern))
    {
        Some(allow) => Err(ApiError::MethodNotAllowed {
            method,
            path,
            allow,
        }),
        None => Err(ApiError::RouteNotFound { method, path }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validation::{Strictness, TextRules};

    /// The document's pattern for text refuses exactly what the request
    /// handling refuses: a client that follows it is never surprised.
    #[test]
    fn the_text_pattern_refuses_what_the_text_rules_refuse() {
        let pattern = regex::Regex::new(&text_pattern()).unwrap();
        for c in (0..=0x3000).filter_map(char::from_u32) {
            let text = format!("a{c}b");
            let refused = TextRules::REQUEST
                .problem(&text, Strictness::Text)
                .is_some();
            assert_eq!(pattern.is_match(&text), !refused, "U+{:04X}", u32::from(c));
        }
    }

    /// Not blank is what the handlers' `trim().is_empty()` says, control
    /// characters still refused.
    #[test]
    fn a_not_blank_text_holds_a_character_that_is_not_white_space() {
        let pattern = regex::Regex::new(&not_blank_text_pattern()).unwrap();
        for blank in ["", " ", "\t\r\n", "\u{3000}\u{2028}"] {
            assert_eq!(
                pattern.is_match(blank),
                !blank.trim().is_empty(),
                "{blank:?}"
            );
        }
        assert!(pattern.is_match(" x\t"));
        assert!(!pattern.is_match("x\u{1}"));
    }
}
