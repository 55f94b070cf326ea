//! Events as OCSF 1.3 events, for SIEMs that read the Open Cybersecurity
//! Schema Framework: Authentication (3002) for `auth.*` actions, Account
//! Change (3001) for API keys and roles, API Activity (6003) for the rest.
//! The event as the API shows it rides along under `unmapped`.

use serde::Serialize;

use crate::db::events::StoredEvent;

const OCSF_VERSION: &str = "1.3.0";
const PRODUCT: &str = "audit-worker";

/// An OCSF class: its category, its id, and the activity an action is.
struct Class {
    category_uid: u32,
    class_uid: u32,
    activity_id: u32,
}

impl Class {
    fn of(action: &str) -> Self {
        let verb = action.rsplit('.').next().unwrap_or_default();
        if action.starts_with("auth.") {
            // Logon, Logoff, Other.
            let activity_id = match verb {
                "login" | "logon" | "signin" => 1,
                "logout" | "logoff" | "signout" => 2,
                _ if action.starts_with("auth.login") => 1,
                _ => 99,
            };
            return Self {
                category_uid: 3,
                class_uid: 3002,
                activity_id,
            };
        }
        if action.starts_with("admin.api_key.") || action.starts_with("admin.role.") {
            // Create, Enable, …, Delete, Other.
            let activity_id = match verb {
                "create" | "issue" => 1,
                "delete" | "revoke" => 6,
                _ => 99,
            };
            return Self {
                category_uid: 3,
                class_uid: 3001,
                activity_id,
            };
        }
        // Create, Read, Update, Delete, Other.
        let activity_id = match verb {
            "create" | "insert" | "add" => 1,
            "read" | "view" | "access" | "list" | "export" | "search" => 2,
            "update" | "change" | "modify" | "edit" => 3,
            "delete" | "remove" | "erase" => 4,
            _ => 99,
        };
        Self {
            category_uid: 6,
            class_uid: 6003,
            activity_id,
        }
    }
}

/// An OCSF event, written straight from the stored event (a batch writes
/// thousands: no intermediate JSON tree). Fields the class does not have are
/// left out; absent values of fields it has are `null`.
#[derive(Serialize)]
pub struct OcsfEvent<'a> {
    category_uid: u32,
    class_uid: u32,
    activity_id: u32,
    type_uid: u32,
    /// Epoch milliseconds.
    time: i64,
    severity_id: u8,
    status_id: u8,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    status_detail: Option<&'a str>,
    metadata: Metadata<'a>,
    /// Authentication: who signed in. Account Change: the account changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<User<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    actor: Option<Actor<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    api: Option<Api<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cloud: Option<Product>,
    #[serde(skip_serializing_if = "Option::is_none")]
    src_endpoint: Option<Endpoint>,
    #[serde(skip_serializing_if = "Option::is_none")]
    resources: Option<[Resource<'a>; 1]>,
    /// The event as the API shows it.
    unmapped: &'a StoredEvent,
}

#[derive(Serialize)]
struct Metadata<'a> {
    version: &'static str,
    uid: String,
    original_time: &'a str,
    correlation_uid: Option<&'a str>,
    tenant_uid: &'a str,
    product: Vendor,
}

#[derive(Serialize)]
struct Vendor {
    name: &'static str,
    vendor_name: &'static str,
}

#[derive(Serialize)]
struct User<'a> {
    uid: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<Option<&'a str>>,
}

#[derive(Serialize)]
struct Actor<'a> {
    user: User<'a>,
}

#[derive(Serialize)]
struct Api<'a> {
    operation: &'a str,
    service: Service,
}

#[derive(Serialize)]
struct Service {
    name: &'static str,
}

#[derive(Serialize)]
struct Product {
    provider: &'static str,
}

/// Where the call came from: nothing the trail knows.
#[derive(Serialize)]
struct Endpoint {}

#[derive(Serialize)]
struct Resource<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    uid: Option<&'a str>,
}

/// `event` as an OCSF event.
pub fn event(event: &StoredEvent) -> OcsfEvent<'_> {
    let class = Class::of(&event.action);
    let (status_id, status) = match event.status.as_str() {
        "success" => (1, "Success"),
        "failure" => (2, "Failure"),
        _ => (99, "Other"),
    };
    let time = chrono::DateTime::parse_from_rfc3339(&event.timestamp)
        .map(|time| time.timestamp_millis())
        .unwrap_or_default();
    let principal = || User {
        uid: Some(event.principal_id.as_str()),
        kind: None,
    };
    let mut ocsf = OcsfEvent {
        category_uid: class.category_uid,
        class_uid: class.class_uid,
        activity_id: class.activity_id,
        type_uid: class.class_uid * 100 + class.activity_id,
        time,
        severity_id: 1,
        status_id,
        status,
        status_detail: event.outcome_description.as_deref(),
        metadata: Metadata {
            version: OCSF_VERSION,
            uid: event.id.to_string(),
            original_time: &event.timestamp,
            correlation_uid: event.correlation_id.as_deref(),
            tenant_uid: &event.organization_id,
            product: Vendor {
                name: PRODUCT,
                vendor_name: PRODUCT,
            },
        },
        user: None,
        actor: None,
        api: None,
        cloud: None,
        src_endpoint: None,
        resources: None,
        unmapped: event,
    };
    match class.class_uid {
        3002 => ocsf.user = Some(principal()),
        3001 => {
            ocsf.actor = Some(Actor { user: principal() });
            ocsf.user = Some(User {
                uid: event.target_resource_id.as_deref(),
                kind: Some(event.target_resource_type.as_deref()),
            });
        }
        _ => {
            ocsf.actor = Some(Actor { user: principal() });
            ocsf.api = Some(Api {
                operation: &event.action,
                service: Service { name: PRODUCT },
            });
            ocsf.cloud = Some(Product { provider: PRODUCT });
            ocsf.src_endpoint = Some(Endpoint {});
            ocsf.resources = event.target_resource_type.as_deref().map(|kind| {
                [Resource {
                    kind,
                    uid: event.target_resource_id.as_deref(),
                }]
            });
        }
    }
    ocsf
}
