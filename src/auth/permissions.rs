//! The permission model: `{resource, action}` pairs with wildcards, the built-in
//! roles every organization has, transitive inheritance and cycle detection.
//! Pure logic, no I/O: the database and cache layers feed it role definitions.

use std::collections::{BTreeSet, HashMap};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Resources a permission may name (or match with `*` / `prefix.*`).
pub const RESOURCES: &[&str] = &[
    "audit.events",
    "audit.integrity",
    "audit.alerts",
    "audit.reports",
    "audit.presets",
    "audit.deliveries",
    "audit.gdpr",
    "audit.retention",
    "audit.metrics",
    "organization.roles",
    "organization.api_keys",
    // The platform operators' tools (`/v1/admin`): held only in the operators' organization.
    "system.operations",
];

/// Actions a permission may name (or `*`).
pub const ACTIONS: &[&str] = &[
    "read",
    "create",
    "update",
    "delete",
    "export",
    "verify",
    "pseudonymize",
    "reverse",
    "acknowledge",
    "resolve",
    "dismiss",
    "manage",
];

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Permission {
    /// A resource, `*`, or a prefix wildcard such as `audit.*`.
    pub resource: String,
    /// An action, or `*`.
    pub action: String,
}

impl Permission {
    pub fn new(resource: &str, action: &str) -> Self {
        Self {
            resource: resource.to_owned(),
            action: action.to_owned(),
        }
    }

    /// Why this permission is malformed, if it is.
    pub fn problem(&self) -> Option<String> {
        let resource_ok = self.resource == "*"
            || RESOURCES.contains(&self.resource.as_str())
            || self.resource.strip_suffix(".*").is_some_and(|prefix| {
                RESOURCES
                    .iter()
                    .any(|known| known.starts_with(&format!("{prefix}.")))
            });
        if !resource_ok {
            return Some(format!(
                "unknown resource `{}`: use one of {}, `*` or a prefix such as `audit.*`",
                self.resource,
                RESOURCES.join(", ")
            ));
        }
        if self.action != "*" && !ACTIONS.contains(&self.action.as_str()) {
            return Some(format!(
                "unknown action `{}`: use one of {} or `*`",
                self.action,
                ACTIONS.join(", ")
            ));
        }
        None
    }

    /// Whether holding `self` grants everything `other` grants (`other` may
    /// itself contain wildcards).
    fn covers(&self, other: &Permission) -> bool {
        pattern_covers(&self.resource, &other.resource)
            && pattern_covers(&self.action, &other.action)
    }
}

/// `*` covers everything; `audit.*` covers `audit.events` and `audit.x.*`;
/// anything else covers only itself.
fn pattern_covers(pattern: &str, value: &str) -> bool {
    if pattern == "*" || pattern == value {
        return true;
    }
    match pattern.strip_suffix('*') {
        Some(prefix) if prefix.ends_with('.') => value != "*" && value.starts_with(prefix),
        _ => false,
    }
}

/// The effective permissions of a role, inheritance resolved.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PermissionSet(BTreeSet<Permission>);

impl PermissionSet {
    pub fn allows(&self, resource: &str, action: &str) -> bool {
        let wanted = Permission::new(resource, action);
        self.0.iter().any(|held| held.covers(&wanted))
    }

    /// Whether every permission of `other` is granted by this set: a caller may
    /// only hand out (through keys or roles) what it holds itself.
    pub fn includes(&self, other: &PermissionSet) -> bool {
        other
            .0
            .iter()
            .all(|wanted| self.0.iter().any(|held| held.covers(wanted)))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Permission> {
        self.0.iter()
    }
}

/// A role's own definition, before inheritance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleDefinition {
    pub name: String,
    pub description: Option<String>,
    pub permissions: Vec<Permission>,
    pub inherits: Vec<String>,
}

/// The roles every organization has; they cannot be changed or deleted.
pub fn built_in_roles() -> Vec<RoleDefinition> {
    let role = |name: &str, description: &str, permissions: &[(&str, &str)], inherits: &[&str]| {
        RoleDefinition {
            name: name.to_owned(),
            description: Some(description.to_owned()),
            permissions: permissions
                .iter()
                .map(|(resource, action)| Permission::new(resource, action))
                .collect(),
            inherits: inherits.iter().map(|name| (*name).to_owned()).collect(),
        }
    };
    vec![
        role(
            "org:owner",
            "Owns the organization: everything an administrator can do",
            &[],
            &["org:admin"],
        ),
        role(
            "org:admin",
            "Administers the organization: every resource and action",
            &[("*", "*")],
            &[],
        ),
        role(
            "org:member",
            "Works with the audit trail: reads it, writes events, acknowledges alerts",
            &[
                ("audit.events", "read"),
                ("audit.events", "create"),
                ("audit.integrity", "read"),
                ("audit.alerts", "read"),
                ("audit.alerts", "acknowledge"),
                ("audit.reports", "read"),
                ("audit.presets", "read"),
                ("audit.metrics", "read"),
            ],
            &[],
        ),
        role(
            "auditor",
            "Reads, exports and verifies; changes nothing",
            &[
                ("audit.*", "read"),
                ("audit.*", "export"),
                ("audit.*", "verify"),
            ],
            &[],
        ),
        role(
            "ingest",
            "Writes audit events and nothing else: the role of a service that records events",
            &[("audit.events", "create")],
            &[],
        ),
    ]
}

pub fn is_built_in(name: &str) -> bool {
    built_in_roles().iter().any(|role| role.name == name)
}

/// All roles of an organization by name: the built-ins plus its own.
pub fn role_catalog(custom: Vec<RoleDefinition>) -> HashMap<String, RoleDefinition> {
    built_in_roles()
        .into_iter()
        .chain(custom)
        .map(|role| (role.name.clone(), role))
        .collect()
}

/// The effective permissions of `role`: its own plus, transitively, those of every
/// role it inherits. `None` when the role does not exist. A cycle (which saving
/// refuses, see [`find_cycle`]) cannot loop: each role is visited once.
pub fn resolve(role: &str, catalog: &HashMap<String, RoleDefinition>) -> Option<PermissionSet> {
    catalog.get(role)?;
    let mut permissions = BTreeSet::new();
    let mut visited = BTreeSet::new();
    let mut pending = vec![role.to_owned()];
    while let Some(name) = pending.pop() {
        if !visited.insert(name.clone()) {
            continue;
        }
        if let Some(definition) = catalog.get(&name) {
            permissions.extend(definition.permissions.iter().cloned());
            pending.extend(definition.inherits.iter().cloned());
        }
    }
    Some(PermissionSet(permissions))
}

/// Whether `role` inherits, directly or transitively, from `ancestor`.
pub fn inherits_from(
    role: &str,
    ancestor: &str,
    catalog: &HashMap<String, RoleDefinition>,
) -> bool {
    let mut visited = BTreeSet::new();
    let mut pending: Vec<&str> = catalog
        .get(role)
        .map(|definition| definition.inherits.iter().map(String::as_str).collect())
        .unwrap_or_default();
    while let Some(name) = pending.pop() {
        if name == ancestor {
            return true;
        }
        if visited.insert(name) {
            if let Some(definition) = catalog.get(name) {
                pending.extend(definition.inherits.iter().map(String::as_str));
            }
        }
    }
    false
}

/// The inheritance path that leads from `start` back to itself, if any
/// (e.g. `["a", "b", "a"]`).
pub fn find_cycle(start: &str, catalog: &HashMap<String, RoleDefinition>) -> Option<Vec<String>> {
    fn walk(
        name: &str,
        start: &str,
        catalog: &HashMap<String, RoleDefinition>,
        path: &mut Vec<String>,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        let Some(definition) = catalog.get(name) else {
            return false;
        };
        for parent in &definition.inherits {
            path.push(parent.clone());
            if parent == start {
                return true;
            }
            if seen.insert(parent.clone()) && walk(parent, start, catalog, path, seen) {
                return true;
            }
            path.pop();
        }
        false
    }
    let mut path = vec![start.to_owned()];
    let mut seen = BTreeSet::new();
    walk(start, start, catalog, &mut path, &mut seen).then_some(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn custom(name: &str, permissions: &[(&str, &str)], inherits: &[&str]) -> RoleDefinition {
        RoleDefinition {
            name: name.to_owned(),
            description: None,
            permissions: permissions
                .iter()
                .map(|(r, a)| Permission::new(r, a))
                .collect(),
            inherits: inherits.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    #[test]
    fn wildcards_match_as_documented() {
        assert!(pattern_covers("*", "audit.events"));
        assert!(pattern_covers("audit.*", "audit.events"));
        assert!(pattern_covers("audit.*", "audit.x.*"));
        assert!(!pattern_covers("audit.*", "organization.roles"));
        assert!(!pattern_covers("audit.*", "*"));
        assert!(!pattern_covers("audit.events", "audit.*"));
        assert!(!pattern_covers("audit", "audit.events"));
    }

    #[test]
    fn built_in_roles_grant_what_their_names_promise() {
        let catalog = role_catalog(vec![]);
        let owner = resolve("org:owner", &catalog).unwrap();
        assert!(
            owner.allows("organization.roles", "delete"),
            "owner inherits admin"
        );
        let auditor = resolve("auditor", &catalog).unwrap();
        assert!(auditor.allows("audit.events", "read"));
        assert!(auditor.allows("audit.integrity", "verify"));
        assert!(auditor.allows("audit.events", "export"));
        assert!(!auditor.allows("audit.events", "create"));
        assert!(!auditor.allows("organization.roles", "read"));
        let ingest = resolve("ingest", &catalog).unwrap();
        assert!(ingest.allows("audit.events", "create"));
        assert!(!ingest.allows("audit.events", "read"));
    }

    #[test]
    fn inheritance_is_transitive() {
        let catalog = role_catalog(vec![
            custom("a", &[("audit.alerts", "resolve")], &["b"]),
            custom("b", &[], &["auditor"]),
        ]);
        let a = resolve("a", &catalog).unwrap();
        assert!(a.allows("audit.alerts", "resolve"));
        assert!(a.allows("audit.events", "read"), "through b, from auditor");
        assert!(resolve("missing", &catalog).is_none());
    }

    #[test]
    fn cycles_are_found_with_their_path() {
        let catalog = role_catalog(vec![
            custom("a", &[], &["b"]),
            custom("b", &[], &["c"]),
            custom("c", &[], &["a"]),
            custom("d", &[], &["auditor"]),
        ]);
        assert_eq!(find_cycle("a", &catalog).unwrap(), ["a", "b", "c", "a"]);
        assert!(find_cycle("d", &catalog).is_none());
        // Resolution still terminates.
        assert!(resolve("a", &catalog).is_some());
    }

    #[test]
    fn a_set_includes_only_what_it_covers() {
        let catalog = role_catalog(vec![]);
        let admin = resolve("org:admin", &catalog).unwrap();
        let auditor = resolve("auditor", &catalog).unwrap();
        let member = resolve("org:member", &catalog).unwrap();
        assert!(admin.includes(&auditor));
        assert!(!auditor.includes(&admin));
        assert!(!auditor.includes(&member), "member may create events");
    }

    #[test]
    fn malformed_permissions_are_explained() {
        assert!(Permission::new("audit.events", "read").problem().is_none());
        assert!(Permission::new("audit.*", "*").problem().is_none());
        assert!(Permission::new("*", "verify").problem().is_none());
        assert!(Permission::new("audit.event", "read")
            .problem()
            .unwrap()
            .contains("audit.event"));
        assert!(Permission::new("audit.events", "fly")
            .problem()
            .unwrap()
            .contains("fly"));
        assert!(Permission::new("nothing.*", "read").problem().is_some());
    }
}
