//! Domain newtypes shared by the api, the database layer and (later) the media gateway.
//!
//! Parse, don't validate: every type here can only be built through a `parse`/`try_from` that
//! checks it, so a value that reaches the database or a SIP message is already known to be good.
//! Deserializing goes through the same checks (`#[serde(try_from = "String")]`).

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Why a value was refused. The message is safe to show to the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// The reason alone: callers that know the field name it (serde prefixes the JSON path).
    #[error("{reason}")]
    Invalid {
        field: &'static str,
        reason: &'static str,
    },
}

impl DomainError {
    /// The field (or type) the value was meant for.
    pub fn field(&self) -> &'static str {
        match self {
            DomainError::Invalid { field, .. } => field,
        }
    }
}

fn invalid(field: &'static str, reason: &'static str) -> DomainError {
    DomainError::Invalid { field, reason }
}

macro_rules! uuid_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A fresh, time-ordered id (UUIDv7), so primary keys index well.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl From<Uuid> for $name {
            fn from(id: Uuid) -> Self {
                Self(id)
            }
        }
    };
}

uuid_id!(
    /// A tenant: one customer company.
    TenantId
);
uuid_id!(
    /// A user of a tenant (or a platform operator, whose tenant is the platform tenant).
    UserId
);

/// What a user may do. Ordered from weakest to strongest inside a tenant; the platform operator
/// stands outside tenants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Agent,
    Supervisor,
    TenantAdmin,
    PlatformOperator,
}

impl Role {
    pub const ALL: [Role; 4] = [
        Role::Agent,
        Role::Supervisor,
        Role::TenantAdmin,
        Role::PlatformOperator,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Agent => "agent",
            Role::Supervisor => "supervisor",
            Role::TenantAdmin => "tenant_admin",
            Role::PlatformOperator => "platform_operator",
        }
    }

    pub fn parse(s: &str) -> Result<Self, DomainError> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| invalid("role", "unknown role"))
    }

    /// Tenant-internal rank: an agent < supervisor < tenant admin. The platform operator is not
    /// part of a tenant's hierarchy and is handled on its own routes.
    pub fn rank(self) -> u8 {
        match self {
            Role::Agent => 1,
            Role::Supervisor => 2,
            Role::TenantAdmin => 3,
            Role::PlatformOperator => 4,
        }
    }

    pub fn at_least(self, other: Role) -> bool {
        self.rank() >= other.rank()
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

macro_rules! string_newtype {
    ($(#[$meta:meta])* $name:ident, $parse:expr) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn parse(s: impl Into<String>) -> Result<Self, DomainError> {
                let parse: fn(String) -> Result<String, DomainError> = $parse;
                parse(s.into()).map(Self)
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = DomainError;
            fn try_from(s: String) -> Result<Self, DomainError> {
                Self::parse(s)
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

string_newtype!(
    /// An E.164 telephone number: `+`, a country code that does not start with 0, at most 15
    /// digits in all, at least 7. Spaces, dashes, dots and parentheses that people type are
    /// removed first.
    PhoneNumber,
    |s| {
        let s = s.trim();
        if s.len() > 32 {
            return Err(invalid("number", "longer than 32 characters"));
        }
        let Some(rest) = s.strip_prefix('+') else {
            return Err(invalid("number", "must start with + and a country code (E.164)"));
        };
        let mut digits = String::with_capacity(16);
        for c in rest.chars() {
            match c {
                '0'..='9' => digits.push(c),
                ' ' | '-' | '.' | '(' | ')' => {}
                _ => return Err(invalid("number", "may contain only digits after +")),
            }
        }
        if digits.starts_with('0') {
            return Err(invalid("number", "country code cannot start with 0"));
        }
        if !(7..=15).contains(&digits.len()) {
            return Err(invalid("number", "must have 7 to 15 digits (E.164)"));
        }
        Ok(format!("+{digits}"))
    }
);

string_newtype!(
    /// A tenant's short name used at login and in URLs: 2 to 40 of `a-z`, `0-9`, `-`, starting
    /// with a letter.
    Slug,
    |s| {
        if !(2..=40).contains(&s.len()) {
            return Err(invalid("slug", "must be 2 to 40 characters"));
        }
        if !s.starts_with(|c: char| c.is_ascii_lowercase()) {
            return Err(invalid("slug", "must start with a lowercase letter"));
        }
        if !s
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(invalid("slug", "may contain only a-z, 0-9 and -"));
        }
        Ok(s)
    }
);

string_newtype!(
    /// A human-readable name (tenant, queue, skill, user display name): 1 to 100 characters, no
    /// control characters, trimmed.
    DisplayName,
    |s| {
        let t = s.trim();
        if t.is_empty() {
            return Err(invalid("name", "must not be empty"));
        }
        if t.chars().count() > 100 {
            return Err(invalid("name", "must be at most 100 characters"));
        }
        if t.chars().any(char::is_control) {
            return Err(invalid("name", "must not contain control characters"));
        }
        Ok(t.to_owned())
    }
);

string_newtype!(
    /// An email address, lower-cased: one `@`, a non-empty local part and a domain with a dot,
    /// at most 254 characters. Deliverability is not checked here.
    Email,
    |s| {
        let s = s.trim().to_ascii_lowercase();
        if s.len() > 254 {
            return Err(invalid("email", "must be at most 254 characters"));
        }
        let Some((local, domain)) = s.split_once('@') else {
            return Err(invalid("email", "must contain @"));
        };
        let ok_chars = |p: &str| {
            p.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._%+-".contains(c))
        };
        if local.is_empty()
            || domain.len() < 3
            || !domain.contains('.')
            || domain.starts_with('.')
            || domain.ends_with('.')
            || !ok_chars(local)
            || !ok_chars(domain)
        {
            return Err(invalid("email", "is not a valid address"));
        }
        Ok(s)
    }
);

string_newtype!(
    /// A password as typed: 10 to 128 characters. Only ever hashed, never stored.
    Password,
    |s| {
        let n = s.chars().count();
        if n < 10 {
            return Err(invalid("password", "must be at least 10 characters"));
        }
        if n > 128 {
            return Err(invalid("password", "must be at most 128 characters"));
        }
        Ok(s)
    }
);

/// Status of a tenant. A suspended tenant's tokens stop working and its calls are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TenantStatus {
    Active,
    Suspended,
}

/// Lifecycle of a seat (a licensed agent position). Billing is computed from its history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SeatStatus {
    Provisioned,
    Suspended,
    Released,
}

/// What kind of number a tenant has: a geographic DID or a service (toll-free, 400-style) number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NumberKind {
    Did,
    Service,
}

macro_rules! str_enum {
    ($name:ident { $($variant:ident => $s:literal),+ $(,)? }) => {
        impl $name {
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $s),+ }
            }
            pub fn parse(s: &str) -> Result<Self, DomainError> {
                match s {
                    $($s => Ok($name::$variant),)+
                    _ => Err(invalid(stringify!($name), "unknown value")),
                }
            }
        }
    };
}

str_enum!(TenantStatus { Active => "active", Suspended => "suspended" });
str_enum!(SeatStatus { Provisioned => "provisioned", Suspended => "suspended", Released => "released" });
str_enum!(NumberKind { Did => "did", Service => "service" });

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn e164_accepts_and_normalises() {
        assert_eq!(
            PhoneNumber::parse("+1 (415) 555-0100").unwrap().as_str(),
            "+14155550100"
        );
        assert_eq!(
            PhoneNumber::parse("+4930123456").unwrap().as_str(),
            "+4930123456"
        );
    }

    #[test]
    fn e164_rejects_bad_numbers() {
        for bad in [
            "4155550100",
            "+0123456789",
            "+12",
            "+1234567890123456",
            "+1415abc0100",
            "",
            "+",
        ] {
            assert!(PhoneNumber::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn serde_goes_through_parse() {
        let ok: PhoneNumber = serde_json::from_str("\"+14155550100\"").unwrap();
        assert_eq!(ok.as_str(), "+14155550100");
        assert!(serde_json::from_str::<PhoneNumber>("\"555\"").is_err());
        assert!(serde_json::from_str::<Slug>("\"Acme\"").is_err());
        assert!(serde_json::from_str::<Email>("\"a@b\"").is_err());
    }

    #[test]
    fn slug_email_name_password() {
        assert!(Slug::parse("acme-1").is_ok());
        assert!(Slug::parse("1acme").is_err());
        assert_eq!(
            Email::parse(" Ann@Example.COM ").unwrap().as_str(),
            "ann@example.com"
        );
        assert!(DisplayName::parse("  ").is_err());
        assert!(DisplayName::parse("a\u{0}b").is_err());
        assert!(DisplayName::parse("x".repeat(101)).is_err());
        assert!(Password::parse("short").is_err());
        assert!(Password::parse("long enough pw").is_ok());
    }

    #[test]
    fn roles_rank_and_parse() {
        assert!(Role::TenantAdmin.at_least(Role::Supervisor));
        assert!(!Role::Agent.at_least(Role::Supervisor));
        for r in Role::ALL {
            assert_eq!(Role::parse(r.as_str()).unwrap(), r);
        }
        assert!(Role::parse("root").is_err());
    }
}
