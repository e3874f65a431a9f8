//! SIP digest credentials of agents' desk phones. Only the digest hashes (HA1 for MD5 and for
//! SHA-256, RFC 7616) are stored, never the password: a stolen row does not give the password,
//! and the registrar needs nothing more to verify a REGISTER or INVITE.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;
use sea_orm_migration::sea_orm::DbBackend;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0004_sip_credentials"
    }
}

fn a(name: &str) -> Alias {
    Alias::new(name)
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(a("sip_credentials"))
                .col(ColumnDef::new(a("id")).uuid().not_null().primary_key())
                .col(ColumnDef::new(a("tenant_id")).uuid().not_null())
                .foreign_key(
                    ForeignKey::create()
                        .from(a("sip_credentials"), a("tenant_id"))
                        .to(a("tenants"), a("id"))
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .col(ColumnDef::new(a("user_id")).uuid().not_null())
                .foreign_key(
                    ForeignKey::create()
                        .from(a("sip_credentials"), a("user_id"))
                        .to(a("users"), a("id"))
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .col(string_len(a("username"), 64))
                .col(string_len(a("ha1_md5"), 32))
                .col(string_len(a("ha1_sha256"), 64))
                .col(timestamp_with_time_zone(a("updated_at")))
                .to_owned(),
        )
        .await?;
        for (name, col) in [
            ("sip_credentials_tenant_username", "username"),
            ("sip_credentials_tenant_user", "user_id"),
        ] {
            m.create_index(
                Index::create()
                    .name(name)
                    .table(a("sip_credentials"))
                    .col(a("tenant_id"))
                    .col(a(col))
                    .unique()
                    .to_owned(),
            )
            .await?;
        }
        if m.get_database_backend() == DbBackend::Postgres {
            m.get_connection()
                .execute_unprepared(&crate::m0002_row_level_security::tenant_policy_sql(
                    "sip_credentials",
                    "tenant_id",
                ))
                .await?;
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(a("sip_credentials")).to_owned())
            .await
    }
}
