//! Events as OCSF 1.3 events, for SIEMs that read the Open Cybersecurity
//! Schema Framework: Authentication (3002) for `auth.*` actions, Account
//! Change (3001) for API keys and roles, API Activity (6003) for the rest.
//! The event as the API shows it rides along under `unmapped`.

use serde_json::{json, Map, Value};

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

/// `event` as an OCSF event; `native` is the event as the API shows it.
pub fn event(event: &StoredEvent, native: Value) -> Value {
    let class = Class::of(&event.action);
    let (status_id, status) = match event.status.as_str() {
        "success" => (1, "Success"),
        "failure" => (2, "Failure"),
        _ => (99, "Other"),
    };
    let time = chrono::DateTime::parse_from_rfc3339(&event.timestamp)
        .map(|time| time.timestamp_millis())
        .unwrap_or_default();
    let mut ocsf = Map::new();
    ocsf.insert("category_uid".into(), json!(class.category_uid));
    ocsf.insert("class_uid".into(), json!(class.class_uid));
    ocsf.insert("activity_id".into(), json!(class.activity_id));
    ocsf.insert(
        "type_uid".into(),
        json!(class.class_uid * 100 + class.activity_id),
    );
    ocsf.insert("time".into(), json!(time));
    ocsf.insert("severity_id".into(), json!(1));
    ocsf.insert("status_id".into(), json!(status_id));
    ocsf.insert("status".into(), json!(status));
    if let Some(description) = &event.outcome_description {
        ocsf.insert("status_detail".into(), json!(description));
    }
    ocsf.insert(
        "metadata".into(),
        json!({
            "version": OCSF_VERSION,
            "uid": event.id.to_string(),
            "original_time": event.timestamp,
            "correlation_uid": event.correlation_id,
            "tenant_uid": event.organization_id,
            "product": {"name": PRODUCT, "vendor_name": PRODUCT},
        }),
    );
    let user = json!({"uid": event.principal_id});
    let resource = event
        .target_resource_type
        .as_ref()
        .map(|kind| json!({"type": kind, "uid": event.target_resource_id}));
    match class.class_uid {
        3002 => {
            ocsf.insert("user".into(), user);
        }
        3001 => {
            ocsf.insert("actor".into(), json!({"user": user}));
            ocsf.insert(
                "user".into(),
                json!({"uid": event.target_resource_id, "type": event.target_resource_type}),
            );
        }
        _ => {
            ocsf.insert("actor".into(), json!({"user": user}));
            ocsf.insert(
                "api".into(),
                json!({"operation": event.action, "service": {"name": PRODUCT}}),
            );
            ocsf.insert("cloud".into(), json!({"provider": PRODUCT}));
            ocsf.insert("src_endpoint".into(), json!({}));
            if let Some(resource) = resource {
                ocsf.insert("resources".into(), json!([resource]));
            }
        }
    }
    ocsf.insert("unmapped".into(), native);
    Value::Object(ocsf)
}
