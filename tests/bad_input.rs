//! Every route of the served OpenAPI document, walked with bad input: NUL,
//! control characters, oversized strings and values of the wrong type, in
//! every path parameter, query parameter and top-level body field the
//! document names. Each gets a JSON 4xx (naming the field where the problem is
//! its characters), never a 5xx. The cases come from the document, so a route
//! added later is covered without anyone remembering to.

mod common;

use common::spawn_app;
use reqwest::Method;
use serde_json::{json, Value};

/// A bad value every string slot gets.
struct BadText {
    label: &'static str,
    value: fn() -> String,
    /// The answer must be a 400 naming the field (an oversized URI is refused
    /// whole, before any parameter is read).
    names_field: bool,
}

const BAD_TEXT: [BadText; 3] = [
    BadText {
        label: "NUL",
        value: || "a\u{0}b".to_owned(),
        names_field: true,
    },
    BadText {
        label: "control character",
        value: || "a\u{1b}[2Jb".to_owned(),
        names_field: true,
    },
    BadText {
        label: "oversized",
        value: || "x".repeat(70_000),
        names_field: false,
    },
];

/// One operation of the document.
struct Operation {
    method: Method,
    path: String,
    parameters: Vec<Parameter>,
    /// The top-level properties of its JSON body, with their schemas.
    body: Option<Vec<(String, Value)>>,
}

struct Parameter {
    name: String,
    in_path: bool,
    schema: Value,
}

/// Follows a `$ref` to the schema it names.
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(reference) => {
            let name = reference.rsplit('/').next().unwrap();
            resolve(doc, &doc["components"]["schemas"][name])
        }
        None => schema,
    }
}

/// The schema's type, reading OpenAPI 3.1's `["string", "null"]` as `string`.
fn type_of(schema: &Value) -> &str {
    match &schema["type"] {
        Value::String(kind) => kind,
        Value::Array(kinds) => kinds
            .iter()
            .filter_map(Value::as_str)
            .find(|kind| *kind != "null")
            .unwrap_or(""),
        _ => match schema["oneOf"].as_array().or(schema["anyOf"].as_array()) {
            Some(options) => options
                .iter()
                .map(type_of)
                .find(|kind| *kind != "null")
                .unwrap_or(""),
            None => "",
        },
    }
}

fn operations(doc: &Value) -> Vec<Operation> {
    let mut found = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let Ok(method) = Method::from_bytes(method.to_uppercase().as_bytes()) else {
                continue;
            };
            let parameters = operation["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|parameter| Parameter {
                    name: parameter["name"].as_str().unwrap().to_owned(),
                    in_path: parameter["in"] == "path",
                    schema: resolve(doc, &parameter["schema"]).clone(),
                })
                .collect();
            let body = operation["requestBody"]["content"]
                .as_object()
                .and_then(|content| content.values().next())
                .map(|media| {
                    let schema = resolve(doc, &media["schema"]);
                    schema["properties"]
                        .as_object()
                        .into_iter()
                        .flatten()
                        .map(|(name, property)| (name.clone(), resolve(doc, property).clone()))
                        .collect()
                });
            found.push(Operation {
                method,
                path: path.clone(),
                parameters,
                body,
            });
        }
    }
    found
}

/// A value of the parameter's type that the route may well accept.
fn plausible(schema: &Value) -> String {
    match (type_of(schema), schema["format"].as_str()) {
        ("integer" | "number", _) => "1".to_owned(),
        ("boolean", _) => "true".to_owned(),
        (_, Some("uuid")) => "0e1c5a3a-4f59-4a8e-9a53-8b3c2a1d0f00".to_owned(),
        _ => "x".to_owned(),
    }
}

/// A JSON value of another type than the schema's.
fn wrong_type(schema: &Value) -> Value {
    match type_of(schema) {
        "string" => json!(12345),
        "integer" | "number" => json!("not a number"),
        "boolean" => json!("not a boolean"),
        "array" => json!("not an array"),
        _ => json!(["not", "an", "object"]),
    }
}

/// Percent-encodes every byte but letters and digits, for a path segment.
fn segment(value: &str) -> String {
    value
        .bytes()
        .map(|byte| {
            if byte.is_ascii_alphanumeric() {
                (byte as char).to_string()
            } else {
                format!("%{byte:02X}")
            }
        })
        .collect()
}

/// The path with every parameter plausible, but `bad` for the one named.
fn path_with(operation: &Operation, bad: Option<(&str, &str)>) -> String {
    let mut path = operation.path.clone();
    for parameter in operation.parameters.iter().filter(|p| p.in_path) {
        let value = match bad {
            Some((name, value)) if name == parameter.name => segment(value),
            _ => plausible(&parameter.schema),
        };
        path = path.replace(&format!("{{{}}}", parameter.name), &value);
    }
    path
}

/// A case's answer: a 4xx with the JSON error shape (naming `field` when
/// given); returns a line describing the failure, if any.
async fn check(
    key: &str,
    what: &str,
    request: reqwest::RequestBuilder,
    field: Option<&str>,
) -> Option<String> {
    let response = request
        .bearer_auth(key)
        .send()
        .await
        .expect("the worker answers");
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    if !(400..500).contains(&status) || !body["error"]["code"].is_string() {
        return Some(format!("{what}: {status} {}", &text[..text.len().min(300)]));
    }
    if let Some(field) = field {
        let named = body["error"]["details"]
            .as_array()
            .is_some_and(|details| details.iter().any(|detail| detail["field"] == field));
        if status != 400 || !named {
            return Some(format!(
                "{what}: {status}, `{field}` not named: {text:.300}"
            ));
        }
    }
    None
}

#[actix_web::test]
async fn every_route_answers_bad_input_with_a_json_4xx() {
    let app = spawn_app().await;
    // The operators' organization: the admin routes answer it too.
    let key = app
        .create_key(&app.config.operations.organization, "org:admin")
        .await;
    let (_, doc) = app.get_json("/openapi.json").await;
    let url = |path: &str| format!("{}{path}", app.address);
    let mut failures = Vec::new();
    let mut cases = 0;
    for operation in operations(&doc) {
        let method = &operation.method;
        for parameter in &operation.parameters {
            let name = parameter.name.as_str();
            for BadText {
                label,
                value,
                names_field,
            } in BAD_TEXT
            {
                // Past the URI limit (16 KiB), within what an HTTP client sends.
                let value: String = value().chars().take(20_000).collect();
                let what = format!("{method} {} {label} in `{name}`", operation.path);
                let request = if parameter.in_path {
                    app.client.request(
                        method.clone(),
                        url(&path_with(&operation, Some((name, &value)))),
                    )
                } else {
                    app.client
                        .request(method.clone(), url(&path_with(&operation, None)))
                        .query(&[(name, value.as_str())])
                };
                // A long URI is refused as a whole, before any parameter is read.
                let field = names_field.then_some(name);
                failures.extend(check(&key, &what, request, field).await);
                cases += 1;
            }
            if !parameter.in_path
                && matches!(type_of(&parameter.schema), "integer" | "number" | "boolean")
            {
                let what = format!("{method} {} wrong type in `{name}`", operation.path);
                let request = app
                    .client
                    .request(method.clone(), url(&path_with(&operation, None)))
                    .query(&[(name, "not-a-value")]);
                failures.extend(check(&key, &what, request, Some(name)).await);
                cases += 1;
            }
        }
        let Some(properties) = &operation.body else {
            continue;
        };
        let target = url(&path_with(&operation, None));
        let what = format!("{method} {} NUL body", operation.path);
        let request = app
            .client
            .request(method.clone(), &target)
            .json(&json!("a\u{0}b"));
        failures.extend(check(&key, &what, request, None).await);
        cases += 1;
        for (name, schema) in properties {
            for BadText {
                label,
                value,
                names_field,
            } in BAD_TEXT
            {
                let what = format!("{method} {} {label} in body `{name}`", operation.path);
                let request = app
                    .client
                    .request(method.clone(), &target)
                    .json(&json!({ name: value() }));
                let field = names_field.then_some(name.as_str());
                failures.extend(check(&key, &what, request, field).await);
                cases += 1;
            }
            let what = format!("{method} {} wrong type in body `{name}`", operation.path);
            let request = app
                .client
                .request(method.clone(), &target)
                .json(&json!({ name: wrong_type(schema) }));
            failures.extend(check(&key, &what, request, None).await);
            cases += 1;
        }
    }
    println!("{cases} bad-input cases over the OpenAPI document");
    assert!(
        cases > 300,
        "only {cases} cases: the document lost its routes?"
    );
    assert!(
        failures.is_empty(),
        "{} of {cases} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The answer to a request does not depend on which of its extractors
/// finishes first: authentication goes before input (a bad key with bad
/// input is a 401), a NUL in the `organization_id` the query names is a 400
/// naming it, and a bad path parameter is named before a missing body, every
/// time, also in a burst of concurrent requests.
#[actix_web::test]
async fn authentication_goes_before_input_every_time() {
    let app = spawn_app().await;
    let key = app.create_key("org-a", "org:admin").await;
    let wrong_key = "awk_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    for _ in 0..20 {
        for (path, bearer, status, field) in [
            ("/v1/events?principal_id=a%00b", wrong_key, 401, None),
            ("/v1/events/abc", wrong_key, 401, None),
            (
                "/v1/events?organization_id=a%00b",
                key.as_str(),
                400,
                Some("organization_id"),
            ),
            (
                "/v1/deliveries?organization_id=a%1Bb",
                key.as_str(),
                400,
                Some("organization_id"),
            ),
            (
                "/v1/alerts?organization_id=org-b&limit=0",
                key.as_str(),
                403,
                None,
            ),
        ] {
            let response = app
                .client
                .get(format!("{}{path}", app.address))
                .bearer_auth(bearer)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status().as_u16(), status, "{path}");
            let body: Value = response.json().await.unwrap();
            if let Some(field) = field {
                assert_eq!(
                    body["error"]["details"][0]["field"], field,
                    "{path}: {body}"
                );
            }
        }
    }
    let burst = (0..400).map(|_| {
        app.client
            .put(format!("{}/v1/alert-rules/a%1Bb", app.address))
            .bearer_auth(&key)
            .send()
    });
    for response in futures_util::future::join_all(burst).await {
        let body: Value = response.unwrap().json().await.unwrap();
        assert_eq!(body["error"]["details"][0]["field"], "id", "{body}");
    }
}
