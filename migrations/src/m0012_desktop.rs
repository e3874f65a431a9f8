//! What the agent desktop needs in the database: the tenant's disposition codes (how a call
//! ended, from the business's point of view: `sale`, `callback`, ...), the disposition an
//! agent gave each call at wrap-up (one per call, with notes), and a small contact book
//! (name, company, notes, E.164 numbers) that the screen pop looks callers up in.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

use crate::{a, protect_tenant_table, tenant_table};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0012_desktop"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            tenant_table("disposition_codes")
                .col(string_len(a("code"), 64))
                .col(string_len(a("label"), 200))
                .col(boolean(a("active")))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("disposition_codes_tenant_code")
                .table(a("disposition_codes"))
                .col(a("tenant_id"))
                .col(a("code"))
                .unique()
                .to_owned(),
        )
        .await?;
        protect_tenant_table(m, "disposition_codes").await?;

        m.create_table(
            tenant_table("call_dispositions")
                .col(string_len(a("call_id"), 128))
                .col(ColumnDef::new(a("agent_id")).uuid().null())
                .col(string_len(a("code"), 64))
                .col(text(a("notes")))
                .col(timestamp_with_time_zone(a("updated_at")))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("call_dispositions_tenant_call")
                .table(a("call_dispositions"))
                .col(a("tenant_id"))
                .col(a("call_id"))
                .unique()
                .to_owned(),
        )
        .await?;
        protect_tenant_table(m, "call_dispositions").await?;

        m.create_table(
            tenant_table("contacts")
                .col(string_len(a("name"), 200))
                .col(string_len(a("company"), 200))
                .col(text(a("notes")))
                .col(timestamp_with_time_zone(a("updated_at")))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("contacts_tenant_id")
                .table(a("contacts"))
                .col(a("tenant_id"))
                .col(a("id"))
                .to_owned(),
        )
        .await?;
        protect_tenant_table(m, "contacts").await?;

        m.create_table(
            tenant_table("contact_numbers")
                .col(ColumnDef::new(a("contact_id")).uuid().not_null())
                .foreign_key(
                    ForeignKey::create()
                        .from(a("contact_numbers"), a("contact_id"))
                        .to(a("contacts"), a("id"))
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .col(string_len(a("number"), 32))
                .to_owned(),
        )
        .await?;
        // One contact per number within a tenant: the screen pop must not guess.
        m.create_index(
            Index::create()
                .name("contact_numbers_tenant_number")
                .table(a("contact_numbers"))
                .col(a("tenant_id"))
                .col(a("number"))
                .unique()
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("contact_numbers_tenant_contact")
                .table(a("contact_numbers"))
                .col(a("tenant_id"))
                .col(a("contact_id"))
                .to_owned(),
        )
        .await?;
        protect_tenant_table(m, "contact_numbers").await?;

        // Recent calls of a caller (the screen pop) read CDRs by number.
        m.create_index(
            Index::create()
                .name("cdrs_tenant_from_started")
                .table(a("cdrs"))
                .col(a("tenant_id"))
                .col(a("from_number"))
                .col(a("started_at"))
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_index(
            Index::drop()
                .name("cdrs_tenant_from_started")
                .table(a("cdrs"))
                .to_owned(),
        )
        .await?;
        for t in [
            "contact_numbers",
            "contacts",
            "call_dispositions",
            "disposition_codes",
        ] {
            m.drop_table(Table::drop().table(a(t)).to_owned()).await?;
        }
        Ok(())
    }
}
