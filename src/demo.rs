//! `switchboard up --demo`: a demo tenant to click through, created with the same code paths
//! the API uses (so validation and audit apply). Idempotent: a second run leaves it alone.

use anyhow::Context;
use axum::extract::State;
use switchboard_api::AppState;
use switchboard_api::extract::{ApiJson, IdPath, TenantAdmin, TenantCtx};
use switchboard_api::routes::{dispositions, numbers, routing, tenants, users};
use switchboard_db::Access;
use switchboard_db::entities::tenants as tenant_rows;
use switchboard_db::sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use switchboard_domain::{
    DisplayName, Email, NumberKind, Password, PhoneNumber, Role, Slug, TenantId, UserId,
};

use crate::config::Config;

const PASSWORD: &str = "switchboard-demo";

fn anyhow_api(e: switchboard_api::error::ApiError) -> anyhow::Error {
    anyhow::anyhow!("{e}")
}

pub async fn seed(app: &AppState, cfg: &Config) -> anyhow::Result<()> {
    let sys = app.db.system_txn(Access::Read).await?;
    let existing = tenant_rows::Entity::find()
        .filter(tenant_rows::Column::Slug.eq("demo"))
        .one(sys.conn())
        .await
        .context("looking for the demo tenant")?;
    sys.commit().await?;
    let password = Password::parse(PASSWORD)?;
    if existing.is_none() {
        tenants::ensure_operator(app, Email::parse("operator@example.com")?, password.clone())
            .await
            .map_err(anyhow_api)?;
        let created = tenants::create_tenant_with_admin(
            app,
            None,
            Slug::parse("demo")?,
            DisplayName::parse("Demo Company")?,
            "standard",
            10,
            users::NewUser {
                email: Email::parse("admin@demo.example.com")?,
                display_name: DisplayName::parse("Demo Admin")?,
                password: password.clone(),
                role: None,
            },
        )
        .await
        .map_err(anyhow_api)?;
        let admin = TenantAdmin(TenantCtx {
            tenant_id: TenantId(created.tenant.id),
            user_id: Some(UserId(created.admin.id)),
            api_key_id: None,
            role: Role::TenantAdmin,
            request_id: Some("demo-seed".into()),
        });
        for (email, name, sip_user) in [
            ("agent1@demo.example.com", "Alice Agent", "agent1"),
            ("agent2@demo.example.com", "Bob Agent", "agent2"),
        ] {
            let (_, switchboard_api::json::Json(agent)) = users::create_user(
                State(app.clone()),
                admin.clone(),
                ApiJson(users::NewUser {
                    email: Email::parse(email)?,
                    display_name: DisplayName::parse(name)?,
                    password: password.clone(),
                    role: Some(Role::Agent),
                }),
            )
            .await
            .map_err(anyhow_api)?;
            users::put_sip_credential(
                State(app.clone()),
                admin.clone(),
                IdPath(agent.id),
                ApiJson(users::SipCredentialRequest {
                    username: sip_user.into(),
                    password: PASSWORD.into(),
                }),
            )
            .await
            .map_err(anyhow_api)?;
        }
        let (_, queue) = routing::create_queue(
            State(app.clone()),
            admin.clone(),
            ApiJson(routing::QueueSettings {
                name: Some(DisplayName::parse("Support")?),
                strategy: None,
                max_wait_s: None,
                max_length: None,
                wrap_up_s: None,
                service_level_s: None,
            }),
        )
        .await
        .map_err(anyhow_api)?;
        numbers::create_number(
            State(app.clone()),
            admin.clone(),
            Default::default(),
            ApiJson(numbers::CreateNumber {
                number: PhoneNumber::parse("+15550100100")?,
                kind: NumberKind::Did,
                label: DisplayName::parse("Support line")?,
                queue_id: Some(queue.id),
            }),
        )
        .await
        .map_err(anyhow_api)?;
        for (code, label) in [
            ("resolved", "Resolved"),
            ("callback", "Call back later"),
            ("sale", "Sale"),
        ] {
            let _ = dispositions::create_disposition_code(
                State(app.clone()),
                admin.clone(),
                ApiJson(dispositions::CreateDispositionCode {
                    code: code.into(),
                    label: DisplayName::parse(label)?,
                }),
            )
            .await
            .map_err(anyhow_api)?;
        }
    }
    println!(
        "Demo tenant ready. API at http://{addr}/v1 (docs: http://{addr}/v1/docs)\n\
         Log in: curl -s -X POST http://{addr}/v1/auth/login -H 'content-type: application/json' \\\n  \
         -d '{{\"tenant\":\"demo\",\"email\":\"admin@demo.example.com\",\"password\":\"{PASSWORD}\"}}'\n\
         Agent desktop: http://{addr}/desk/ (tenant demo, agent1@demo.example.com)\n\
         Agents: agent1@demo.example.com, agent2@demo.example.com; operator: tenant \"platform\", \
         operator@example.com; password for all: {PASSWORD}\n\
         Desk phones: register sip:agent1@demo.sip.local (or agent2) at {sip} with password \
         {PASSWORD}; calls from a trunk at {trunks:?} to +15550100100 queue for Support.",
        addr = cfg.http_addr,
        sip = cfg.gateway.sip_addr,
        trunks = cfg.gateway.trunk_sources,
    );
    Ok(())
}
