//! What the gateway's registrar reads: the tenant a SIP domain names, and an agent's digest
//! hashes. Writing them is the api's job (a tenant admin sets an agent's SIP password).

use chrono::Utc;
use sea_orm::sea_query::OnConflict;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, Set};
use switchboard_domain::TenantId;
use uuid::Uuid;

use crate::entities::{phone_numbers, sip_credentials, tenant_outbound, tenants, users};
use crate::{Access, Database, DbError, Result, TenantTxn};

/// An agent's SIP login as the registrar needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipLogin {
    pub tenant_id: Uuid,
    pub tenant_active: bool,
    pub user_id: Uuid,
    pub ha1_md5: String,
    pub ha1_sha256: String,
}

impl Database {
    /// The tenant whose slug is `slug`, if any (crosses tenants: the SIP domain names it).
    pub async fn tenant_by_slug(&self, slug: &str) -> Result<Option<tenants::Model>> {
        let sys = self.system_txn(Access::Read).await?;
        let t = tenants::Entity::find()
            .filter(tenants::Column::Slug.eq(slug))
            .one(sys.conn())
            .await?;
        sys.commit().await?;
        Ok(t)
    }

    /// The SIP login `username` of the tenant `slug`. `None` when either is unknown, so the
    /// registrar can answer both cases the same way.
    pub async fn sip_login(&self, slug: &str, username: &str) -> Result<Option<SipLogin>> {
        let Some(tenant) = self.tenant_by_slug(slug).await? else {
            return Ok(None);
        };
        let txn = self.tenant_txn(TenantId(tenant.id), Access::Read).await?;
        let cred = txn
            .first::<sip_credentials::Entity>(|q| {
                q.filter(sip_credentials::Column::Username.eq(username))
            })
            .await?;
        txn.commit().await?;
        Ok(cred.map(|c| SipLogin {
            tenant_id: tenant.id,
            tenant_active: tenant.status == "active",
            user_id: c.user_id,
            ha1_md5: c.ha1_md5,
            ha1_sha256: c.ha1_sha256,
        }))
    }
}

impl TenantTxn {
    /// Sets (or replaces) the SIP login of `user_id`. The user must belong to this tenant; a
    /// username another user of the tenant holds is a conflict.
    pub async fn set_sip_credential(
        &self,
        user_id: Uuid,
        username: &str,
        ha1_md5: &str,
        ha1_sha256: &str,
    ) -> Result<()> {
        self.one::<users::Entity>(|q| q.filter(users::Column::Id.eq(user_id)))
            .await?;
        let taken = self
            .first::<sip_credentials::Entity>(|q| {
                q.filter(sip_credentials::Column::Username.eq(username))
                    .filter(sip_credentials::Column::UserId.ne(user_id))
            })
            .await?;
        if taken.is_some() {
            return Err(DbError::Conflict("sip username already in use".into()));
        }
        let row = sip_credentials::ActiveModel {
            id: Set(Uuid::now_v7()),
            tenant_id: Set(self.tenant_id().0),
            user_id: Set(user_id),
            username: Set(username.to_owned()),
            ha1_md5: Set(ha1_md5.to_owned()),
            ha1_sha256: Set(ha1_sha256.to_owned()),
            updated_at: Set(Utc::now()),
        };
        sip_credentials::Entity::insert(row)
            .on_conflict(
                OnConflict::columns([
                    sip_credentials::Column::TenantId,
                    sip_credentials::Column::UserId,
                ])
                .update_columns([
                    sip_credentials::Column::Username,
                    sip_credentials::Column::Ha1Md5,
                    sip_credentials::Column::Ha1Sha256,
                    sip_credentials::Column::UpdatedAt,
                ])
                .to_owned(),
            )
            .exec_without_returning(self.txn()?)
            .await?;
        Ok(())
    }
}

/// A tenant's outbound settings as stored (the dial policy stays JSON here; the gateway and the
/// api parse it with the SIP guard's validation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundSettings {
    pub dial_policy: String,
    pub caller_id: Option<String>,
    pub max_concurrent_calls: i32,
    pub max_calls_per_seat: i32,
}

impl OutboundSettings {
    /// What a tenant gets until the operator sets its own: domestic (NANP), non-premium calls
    /// only, ten at a time, one per seat, the tenant's first number as caller id.
    pub fn safe_default() -> Self {
        Self {
            dial_policy: r#"{"home_country":"1"}"#.to_owned(),
            caller_id: None,
            max_concurrent_calls: 10,
            max_calls_per_seat: 1,
        }
    }
}

impl TenantTxn {
    /// The tenant's outbound settings, if an operator set them.
    pub async fn outbound_settings(&self) -> Result<Option<OutboundSettings>> {
        let row = self.first::<tenant_outbound::Entity>(|q| q).await?;
        Ok(row.map(|r| OutboundSettings {
            dial_policy: r.dial_policy,
            caller_id: r.caller_id,
            max_concurrent_calls: r.max_concurrent_calls,
            max_calls_per_seat: r.max_calls_per_seat,
        }))
    }

    /// Sets (or replaces) the tenant's outbound settings.
    pub async fn set_outbound_settings(&self, s: &OutboundSettings) -> Result<()> {
        let row = tenant_outbound::ActiveModel {
            tenant_id: Set(self.tenant_id().0),
            dial_policy: Set(s.dial_policy.clone()),
            caller_id: Set(s.caller_id.clone()),
            max_concurrent_calls: Set(s.max_concurrent_calls),
            max_calls_per_seat: Set(s.max_calls_per_seat),
            updated_at: Set(Utc::now()),
        };
        tenant_outbound::Entity::insert(row)
            .on_conflict(
                OnConflict::column(tenant_outbound::Column::TenantId)
                    .update_columns([
                        tenant_outbound::Column::DialPolicy,
                        tenant_outbound::Column::CallerId,
                        tenant_outbound::Column::MaxConcurrentCalls,
                        tenant_outbound::Column::MaxCallsPerSeat,
                        tenant_outbound::Column::UpdatedAt,
                    ])
                    .to_owned(),
            )
            .exec_without_returning(self.txn()?)
            .await?;
        Ok(())
    }

    /// The user holding the SIP username `username` in this tenant.
    pub async fn user_of_sip_username(&self, username: &str) -> Result<Option<Uuid>> {
        let row = self
            .first::<sip_credentials::Entity>(|q| {
                q.filter(sip_credentials::Column::Username.eq(username))
            })
            .await?;
        Ok(row.map(|r| r.user_id))
    }

    /// The tenant's first number (by number), the caller id when none is configured.
    pub async fn first_number(&self) -> Result<Option<String>> {
        use sea_orm::QueryOrder;
        let row = self
            .first::<phone_numbers::Entity>(|q| q.order_by_asc(phone_numbers::Column::Number))
            .await?;
        Ok(row.map(|r| r.number))
    }
}
