//! sea-orm entities, one module per table. Column types are plain (Uuid, String); the
//! repository and the api turn them into domain types. Tenant-owned entities implement
//! [`crate::TenantOwned`] so the scoped repository can AND the tenant into every query.
#![allow(clippy::derive_partial_eq_without_eq)]

/// How a model is read from a PostgreSQL tenant read (`crate::pg_read::PgModel`): its fields
/// in declaration order, which is the order sea-orm selects them in (checked by name on every
/// read; the struct literal makes the compiler check the list is complete).
macro_rules! pg_model {
    ($($field:ident),+ $(,)?) => {
        impl crate::pg_read::PgModel for Model {
            fn from_pg_row(row: &mut crate::pg_read::FieldReader<'_>) -> crate::Result<Self> {
                Ok(Self {
                    $($field: row.next(stringify!($field))?,)+
                })
            }
        }
    };
}

/// A tenant-owned entity: no custom save behaviour, its tenant column, and its fields for
/// [`pg_model!`].
macro_rules! tenant_owned {
    ($($field:ident),+ $(,)?) => {
        impl ActiveModelBehavior for ActiveModel {}

        impl crate::TenantOwned for Entity {
            fn tenant_column() -> Column {
                Column::TenantId
            }
        }

        pg_model!($($field),+);
    };
}

pub mod tenants {
    //! The `tenants` table.
    use sea_orm::entity::prelude::*;
    use serde::Serialize;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, Serialize)]
    #[sea_orm(table_name = "tenants")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub slug: String,
        pub name: String,
        pub status: String,
        pub plan: String,
        pub seat_limit: i32,
        pub tokens_valid_after: Option<DateTimeUtc>,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}

    pg_model!(
        id,
        slug,
        name,
        status,
        plan,
        seat_limit,
        tokens_valid_after,
        created_at,
        updated_at
    );
}

pub mod users {
    //! The `users` table.
    use sea_orm::entity::prelude::*;
    use serde::Serialize;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, Serialize)]
    #[sea_orm(table_name = "users")]
    pub struct Model {
        pub tenant_id: Uuid,
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub email: String,
        pub display_name: String,
        pub role: String,
        pub password_hash: String,
        pub disabled: bool,
        pub tokens_valid_after: Option<DateTimeUtc>,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    tenant_owned!(
        tenant_id,
        id,
        email,
        display_name,
        role,
        password_hash,
        disabled,
        tokens_valid_after,
        created_at,
        updated_at
    );
}

pub mod seats {
    //! The `seats` table.
    use sea_orm::entity::prelude::*;
    use serde::Serialize;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, Serialize)]
    #[sea_orm(table_name = "seats")]
    pub struct Model {
        pub tenant_id: Uuid,
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub label: String,
        pub status: String,
        pub user_id: Option<Uuid>,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    tenant_owned!(
        tenant_id, id, label, status, user_id, created_at, updated_at
    );
}

pub mod seat_events {
    //! The `seat_events` table.
    use sea_orm::entity::prelude::*;
    use serde::Serialize;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, Serialize)]
    #[sea_orm(table_name = "seat_events")]
    pub struct Model {
        pub tenant_id: Uuid,
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub seat_id: Uuid,
        pub from_status: Option<String>,
        pub to_status: String,
        pub user_id: Option<Uuid>,
        pub actor_id: Option<Uuid>,
        pub at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    tenant_owned!(
        tenant_id,
        id,
        seat_id,
        from_status,
        to_status,
        user_id,
        actor_id,
        at
    );
}

pub mod phone_numbers {
    //! The `phone_numbers` table.
    use sea_orm::entity::prelude::*;
    use serde::Serialize;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, Serialize)]
    #[sea_orm(table_name = "phone_numbers")]
    pub struct Model {
        pub tenant_id: Uuid,
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub number: String,
        pub kind: String,
        pub label: String,
        pub queue_id: Option<Uuid>,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    tenant_owned!(tenant_id, id, number, kind, label, queue_id, created_at);
}

pub mod skills {
    //! The `skills` table.
    use sea_orm::entity::prelude::*;
    use serde::Serialize;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, Serialize)]
    #[sea_orm(table_name = "skills")]
    pub struct Model {
        pub tenant_id: Uuid,
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub name: String,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    tenant_owned!(tenant_id, id, name, created_at);
}

pub mod queues {
    //! The `queues` table.
    use sea_orm::entity::prelude::*;
    use serde::Serialize;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, Serialize)]
    #[sea_orm(table_name = "queues")]
    pub struct Model {
        pub tenant_id: Uuid,
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub name: String,
        pub strategy: String,
        pub max_wait_s: i32,
        pub max_length: i32,
        pub wrap_up_s: i32,
        pub service_level_s: i32,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
        /// JSON `switchboard_recording::RecordingRule` overriding the tenant's; none: the
        /// tenant's rule applies.
        #[serde(skip)]
        pub recording_rule: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    tenant_owned!(
        tenant_id,
        id,
        name,
        strategy,
        max_wait_s,
        max_length,
        wrap_up_s,
        service_level_s,
        created_at,
        updated_at,
        recording_rule
    );
}

pub mod agent_skills {
    //! The `agent_skills` table.
    use sea_orm::entity::prelude::*;
    use serde::Serialize;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, Serialize)]
    #[sea_orm(table_name = "agent_skills")]
    pub struct Model {
        pub tenant_id: Uuid,
        #[sea_orm(primary_key, auto_increment = false)]
        pub user_id: Uuid,
        #[sea_orm(primary_key, auto_increment = false)]
        pub skill_id: Uuid,
        pub level: i32,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    tenant_owned!(tenant_id, user_id, skill_id, level);
}

pub mod queue_members {
    //! The `queue_members` table.
    use sea_orm::entity::prelude::*;
    use serde::Serialize;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, Serialize)]
    #[sea_orm(table_name = "queue_members")]
    pub struct Model {
        pub tenant_id: Uuid,
        #[sea_orm(primary_key, auto_increment = false)]
        pub queue_id: Uuid,
        #[sea_orm(primary_key, auto_increment = false)]
        pub user_id: Uuid,
        pub tier: i32,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    tenant_owned!(tenant_id, queue_id, user_id, tier);
}

pub mod audit_log {
    //! The `audit_log` table.
    use sea_orm::entity::prelude::*;
    use serde::Serialize;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, Serialize)]
    #[sea_orm(table_name = "audit_log")]
    pub struct Model {
        pub tenant_id: Uuid,
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub actor_id: Option<Uuid>,
        pub action: String,
        pub entity: String,
        pub entity_id: Option<Uuid>,
        pub before: Option<String>,
        pub after: Option<String>,
        pub request_id: Option<String>,
        pub at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    tenant_owned!(
        tenant_id, id, actor_id, action, entity, entity_id, before, after, request_id, at
    );
}

pub mod refresh_tokens {
    //! The `refresh_tokens` table.
    use sea_orm::entity::prelude::*;
    use serde::Serialize;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, Serialize)]
    #[sea_orm(table_name = "refresh_tokens")]
    pub struct Model {
        pub tenant_id: Uuid,
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub user_id: Uuid,
        pub token_hash: String,
        pub expires_at: DateTimeUtc,
        pub revoked_at: Option<DateTimeUtc>,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    tenant_owned!(
        tenant_id, id, user_id, token_hash, expires_at, revoked_at, created_at
    );
}

pub mod api_keys {
    //! The `api_keys` table.
    use sea_orm::entity::prelude::*;
    use serde::Serialize;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, Serialize)]
    #[sea_orm(table_name = "api_keys")]
    pub struct Model {
        pub tenant_id: Uuid,
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub name: String,
        pub role: String,
        pub key_hash: String,
        pub prefix: String,
        pub created_by: Option<Uuid>,
        pub created_at: DateTimeUtc,
        pub revoked_at: Option<DateTimeUtc>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    tenant_owned!(
        tenant_id, id, name, role, key_hash, prefix, created_by, created_at, revoked_at
    );
}

pub mod idempotency_keys {
    //! The `idempotency_keys` table.
    use sea_orm::entity::prelude::*;
    use serde::Serialize;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, Serialize)]
    #[sea_orm(table_name = "idempotency_keys")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub tenant_id: Uuid,
        #[sea_orm(primary_key, auto_increment = false)]
        pub key: String,
        pub request_hash: String,
        pub status: i32,
        pub body: String,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    tenant_owned!(tenant_id, key, request_hash, status, body, created_at);
}

pub mod cdrs {
    //! The `cdrs` table: one call detail record per (tenant, call id).
    use sea_orm::entity::prelude::*;
    use serde::Serialize;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, Serialize)]
    #[sea_orm(table_name = "cdrs")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub tenant_id: Uuid,
        pub call_id: String,
        pub direction: String,
        pub from_number: String,
        pub to_number: String,
        pub queue_id: Option<Uuid>,
        pub agent_id: Option<Uuid>,
        pub started_at: DateTimeUtc,
        pub queued_at: Option<DateTimeUtc>,
        pub answered_at: Option<DateTimeUtc>,
        pub ended_at: DateTimeUtc,
        pub wait_ms: i64,
        pub talk_ms: i64,
        pub hangup_cause: String,
        pub hangup_side: String,
        pub media_stats: Option<String>,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    tenant_owned!(
        id,
        tenant_id,
        call_id,
        direction,
        from_number,
        to_number,
        queue_id,
        agent_id,
        started_at,
        queued_at,
        answered_at,
        ended_at,
        wait_ms,
        talk_ms,
        hangup_cause,
        hangup_side,
        media_stats,
        created_at
    );
}

pub mod sip_credentials {
    //! The `sip_credentials` table: an agent's SIP digest hashes (never the password).
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "sip_credentials")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub tenant_id: Uuid,
        pub user_id: Uuid,
        pub username: String,
        pub ha1_md5: String,
        pub ha1_sha256: String,
        pub updated_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    tenant_owned!(
        id, tenant_id, user_id, username, ha1_md5, ha1_sha256, updated_at
    );
}

pub mod tenant_outbound {
    //! The `tenant_outbound` table: a tenant's dial policy, caller id and call caps.
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "tenant_outbound")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub tenant_id: Uuid,
        /// JSON of `switchboard_sip_guard::DialPolicy`.
        pub dial_policy: String,
        pub caller_id: Option<String>,
        pub max_concurrent_calls: i32,
        pub max_calls_per_seat: i32,
        pub updated_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    tenant_owned!(
        tenant_id,
        dial_policy,
        caller_id,
        max_concurrent_calls,
        max_calls_per_seat,
        updated_at
    );
}

pub mod recordings {
    //! The `recordings` table: one recorded call's file, size, checksum and upload state.
    use sea_orm::entity::prelude::*;
    use serde::Serialize;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, Serialize)]
    #[sea_orm(table_name = "recordings")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub tenant_id: Uuid,
        pub call_id: String,
        pub object_key: String,
        pub duration_ms: i64,
        pub size_bytes: i64,
        pub sha256: String,
        pub upload_state: String,
        pub created_at: DateTimeUtc,
        /// JSON list of `{start_ms, end_ms}`: where the recording was paused.
        pub pauses: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    tenant_owned!(
        id,
        tenant_id,
        call_id,
        object_key,
        duration_ms,
        size_bytes,
        sha256,
        upload_state,
        created_at,
        pauses
    );
}

pub mod cdr_legs {
    //! The `cdr_legs` table: one row per SIP leg of a call, keyed by (tenant, call id, leg no).
    use sea_orm::entity::prelude::*;
    use serde::Serialize;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, Serialize)]
    #[sea_orm(table_name = "cdr_legs")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub tenant_id: Uuid,
        pub created_at: DateTimeUtc,
        pub call_id: String,
        pub leg_no: i32,
        pub role: String,
        pub party: String,
        pub agent_id: Option<Uuid>,
        pub started_at: DateTimeUtc,
        pub answered_at: Option<DateTimeUtc>,
        pub ended_at: DateTimeUtc,
        pub sip_status: Option<i32>,
        pub end_reason: String,
        pub media_stats: Option<String>,
        /// `rtp` or `webrtc` (m0013; none on older rows and legs without media).
        pub media: Option<String>,
        /// `PCMU`, `PCMA` or `opus`: the codec on the party's side.
        pub codec: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    tenant_owned!(
        id,
        tenant_id,
        created_at,
        call_id,
        leg_no,
        role,
        party,
        agent_id,
        started_at,
        answered_at,
        ended_at,
        sip_status,
        end_reason,
        media_stats,
        media,
        codec
    );
}

pub mod tenant_recording_settings {
    //! The `tenant_recording_settings` table: how long a tenant's recordings are kept.
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "tenant_recording_settings")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub tenant_id: Uuid,
        /// Days a recording is kept; none: forever.
        pub retention_days: Option<i32>,
        pub updated_at: DateTimeUtc,
        /// JSON `switchboard_recording::RecordingRule`; none: record every call.
        pub recording_rule: Option<String>,
        /// IANA time zone the rule's windows are in; none: UTC.
        pub time_zone: Option<String>,
        /// DTMF code the agent types to pause the recording (none: no code).
        pub pause_code: Option<String>,
        /// DTMF code that resumes it.
        pub resume_code: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    tenant_owned!(
        tenant_id,
        retention_days,
        updated_at,
        recording_rule,
        time_zone,
        pause_code,
        resume_code
    );
}

pub mod disposition_codes {
    //! The `disposition_codes` table: a tenant's codes for how a call ended (unique per tenant).
    use sea_orm::entity::prelude::*;
    use serde::Serialize;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, Serialize)]
    #[sea_orm(table_name = "disposition_codes")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub tenant_id: Uuid,
        pub created_at: DateTimeUtc,
        pub code: String,
        pub label: String,
        /// Inactive codes stay on old calls but are not offered at wrap-up.
        pub active: bool,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    tenant_owned!(id, tenant_id, created_at, code, label, active);
}

pub mod call_dispositions {
    //! The `call_dispositions` table: the disposition and notes an agent gave a call at
    //! wrap-up, one per (tenant, call id).
    use sea_orm::entity::prelude::*;
    use serde::Serialize;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, Serialize)]
    #[sea_orm(table_name = "call_dispositions")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub tenant_id: Uuid,
        pub created_at: DateTimeUtc,
        /// The gateway's call id (the CDR's `call_id`).
        pub call_id: String,
        pub agent_id: Option<Uuid>,
        pub code: String,
        pub notes: String,
        pub updated_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    tenant_owned!(
        id, tenant_id, created_at, call_id, agent_id, code, notes, updated_at
    );
}

pub mod contacts {
    //! The `contacts` table: a tenant's customer records for the screen pop.
    use sea_orm::entity::prelude::*;
    use serde::Serialize;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, Serialize)]
    #[sea_orm(table_name = "contacts")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub tenant_id: Uuid,
        pub created_at: DateTimeUtc,
        pub name: String,
        pub company: String,
        pub notes: String,
        pub updated_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    tenant_owned!(id, tenant_id, created_at, name, company, notes, updated_at);
}

pub mod contact_numbers {
    //! The `contact_numbers` table: a contact's E.164 numbers (one contact per number).
    use sea_orm::entity::prelude::*;
    use serde::Serialize;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, Serialize)]
    #[sea_orm(table_name = "contact_numbers")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub tenant_id: Uuid,
        pub created_at: DateTimeUtc,
        pub contact_id: Uuid,
        pub number: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    tenant_owned!(id, tenant_id, created_at, contact_id, number);
}
