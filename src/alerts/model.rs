//! What an alert is: its severity, type and status, each stored as one of a
//! fixed set of strings (the columns' CHECK constraints), and the lifecycle
//! steps between statuses.

use serde::{Deserialize, Serialize};
use tokio_postgres::types::{FromSql, Type};
use utoipa::ToSchema;

/// A stored value outside the fixed set its column allows (the CHECK
/// constraints make this a bug), or a client's unknown value.
#[derive(Debug, thiserror::Error)]
#[error("unknown {kind} `{value}`: one of {expected}")]
pub struct UnknownValue {
    pub kind: &'static str,
    pub value: String,
    pub expected: String,
}

/// Declares an enumeration stored as one of a fixed set of strings (those of
/// its column's CHECK constraint): serde and the API use the same strings, and
/// rows decode into it without a panic on a value outside the set.
///
/// The strings are `tt`, not `literal`: a `literal` fragment reaches the
/// derives wrapped in an invisible group, which serde reads through but
/// utoipa's derive does not, so the OpenAPI document showed the variants'
/// Rust names (`Info`) instead of the wire's (`INFO`).
macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident, $kind:literal { $($(#[$variant_meta:meta])* $variant:ident = $text:tt,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema)]
        pub enum $name {
            $($(#[$variant_meta])* #[serde(rename = $text)] $variant,)+
        }

        impl $name {
            /// Every value, in the declared (for [`Severity`], ascending) order.
            pub const ALL: &[$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = UnknownValue;

            fn from_str(value: &str) -> Result<Self, UnknownValue> {
                match value {
                    $($text => Ok($name::$variant),)+
                    _ => Err(UnknownValue {
                        kind: $kind,
                        value: value.to_owned(),
                        expected: [$($text),+].join(", "),
                    }),
                }
            }
        }

        impl<'a> FromSql<'a> for $name {
            fn from_sql(
                ty: &Type,
                raw: &'a [u8],
            ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
                Ok(<&str as FromSql>::from_sql(ty, raw)?.parse()?)
            }

            fn accepts(ty: &Type) -> bool {
                <&str as FromSql>::accepts(ty)
            }
        }
    };
}

text_enum! {
    /// How bad an alert is. The order is meaningful: escalation and the
    /// subscriptions' `min_severity` compare with it.
    Severity, "severity" {
        Info = "INFO",
        Low = "LOW",
        Medium = "MEDIUM",
        High = "HIGH",
        Critical = "CRITICAL",
    }
}

text_enum! {
    /// What an alert is about.
    AlertType, "type" {
        Security = "SECURITY",
        Compliance = "COMPLIANCE",
        Performance = "PERFORMANCE",
        System = "SYSTEM",
        Delivery = "DELIVERY",
        /// Raised by a client over `POST /v1/alerts`.
        Custom = "CUSTOM",
    }
}

text_enum! {
    /// Where an alert is in its lifecycle. `active` and `acknowledged` are
    /// open; `resolved` and `dismissed` are final.
    AlertStatus, "status" {
        Active = "active",
        Acknowledged = "acknowledged",
        Resolved = "resolved",
        Dismissed = "dismissed",
    }
}

/// A lifecycle step of an alert, with who takes it.
#[derive(Debug, Clone, Copy)]
pub enum Transition<'a> {
    /// Someone is on it: active → acknowledged.
    Acknowledge { by: &'a str },
    /// Dealt with: active or acknowledged → resolved. Starts the rule's cooldown.
    Resolve { by: &'a str, notes: Option<&'a str> },
    /// Not worth acting on: active or acknowledged → dismissed. No cooldown:
    /// the rule may raise it again at once.
    Dismiss { by: &'a str },
}

impl Transition<'_> {
    /// The status the step leads to.
    pub fn target(&self) -> AlertStatus {
        match self {
            Transition::Acknowledge { .. } => AlertStatus::Acknowledged,
            Transition::Resolve { .. } => AlertStatus::Resolved,
            Transition::Dismiss { .. } => AlertStatus::Dismissed,
        }
    }
}
