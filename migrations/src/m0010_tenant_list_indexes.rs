//! Indexes for the tenant-scoped lists: every list page is `WHERE tenant_id = $1 AND id > $2
//! ORDER BY id LIMIT n`, which without an index on (tenant_id, id) reads and sorts every row
//! of the table (all tenants') per page. With it, a page is an index range scan of n rows.

use sea_orm_migration::prelude::*;

use crate::a;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0010_tenant_list_indexes"
    }
}

/// Tenant tables served as cursor pages by id.
const LISTED: &[&str] = &[
    "users",
    "seats",
    "phone_numbers",
    "skills",
    "queues",
    "api_keys",
    "audit_log",
    "cdrs",
    "recordings",
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for table in LISTED {
            m.create_index(
                Index::create()
                    .if_not_exists()
                    .name(format!("{table}_tenant_id_id"))
                    .table(a(table))
                    .col(a("tenant_id"))
                    .col(a("id"))
                    .to_owned(),
            )
            .await?;
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for table in LISTED {
            m.drop_index(
                Index::drop()
                    .name(format!("{table}_tenant_id_id"))
                    .table(a(table))
                    .to_owned(),
            )
            .await?;
        }
        Ok(())
    }
}
