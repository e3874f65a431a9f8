//! Core configuration tables: tenants, users, seats (with their history), phone numbers, skills,
//! queues, agent profiles, audit log, refresh tokens, API keys, idempotency keys.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0001_core"
    }
}

fn id(name: &str) -> Alias {
    Alias::new(name)
}

fn uuid_col(name: &str) -> ColumnDef {
    ColumnDef::new(id(name)).uuid().not_null().to_owned()
}

fn uuid_null(name: &str) -> ColumnDef {
    ColumnDef::new(id(name)).uuid().null().to_owned()
}

fn pk(name: &str) -> ColumnDef {
    ColumnDef::new(id(name))
        .uuid()
        .not_null()
        .primary_key()
        .to_owned()
}

fn ts(name: &str) -> ColumnDef {
    timestamp_with_time_zone(id(name))
}

fn ts_null(name: &str) -> ColumnDef {
    timestamp_with_time_zone_null(id(name))
}

fn str_col(name: &str) -> ColumnDef {
    string(id(name))
}

fn str_null(name: &str) -> ColumnDef {
    string_null(id(name))
}

fn text_col(name: &str) -> ColumnDef {
    text(id(name))
}

/// A table owned by a tenant: `tenant_id` referencing tenants, cascading on delete.
fn tenant_table(name: &str) -> TableCreateStatement {
    Table::create()
        .table(id(name))
        .col(uuid_col("tenant_id"))
        .foreign_key(
            ForeignKey::create()
                .from(id(name), id("tenant_id"))
                .to(id("tenants"), id("id"))
                .on_delete(ForeignKeyAction::Cascade),
        )
        .to_owned()
}

fn fk(table: &str, col: &str, to: &str) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .from(id(table), id(col))
        .to(id(to), id("id"))
        .on_delete(ForeignKeyAction::Cascade)
        .to_owned()
}

fn index(name: &str, table: &str, cols: &[&str], unique: bool) -> IndexCreateStatement {
    let mut s = Index::create();
    s.name(name).table(id(table));
    for c in cols {
        s.col(id(c));
    }
    if unique {
        s.unique();
    }
    s.to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(id("tenants"))
                .col(pk("id"))
                .col(string_len_uniq(id("slug"), 40))
                .col(str_col("name"))
                .col(str_col("status"))
                .col(str_col("plan"))
                .col(integer(id("seat_limit")))
                .col(ts_null("tokens_valid_after"))
                .col(ts("created_at"))
                .col(ts("updated_at"))
                .to_owned(),
        )
        .await?;

        m.create_table(
            tenant_table("users")
                .col(pk("id"))
                .col(str_col("email"))
                .col(str_col("display_name"))
                .col(str_col("role"))
                .col(str_col("password_hash"))
                .col(boolean(id("disabled")))
                .col(ts_null("tokens_valid_after"))
                .col(ts("created_at"))
                .col(ts("updated_at"))
                .to_owned(),
        )
        .await?;
        m.create_index(index(
            "users_tenant_email",
            "users",
            &["tenant_id", "email"],
            true,
        ))
        .await?;

        m.create_table(
            tenant_table("seats")
                .col(pk("id"))
                .col(str_col("label"))
                .col(str_col("status"))
                .col(uuid_null("user_id"))
                .foreign_key(&mut fk("seats", "user_id", "users"))
                .col(ts("created_at"))
                .col(ts("updated_at"))
                .to_owned(),
        )
        .await?;
        m.create_index(index(
            "seats_tenant_status",
            "seats",
            &["tenant_id", "status"],
            false,
        ))
        .await?;
        m.create_index(index("seats_user", "seats", &["user_id"], true))
            .await?;

        m.create_table(
            tenant_table("seat_events")
                .col(pk("id"))
                .col(uuid_col("seat_id"))
                .foreign_key(&mut fk("seat_events", "seat_id", "seats"))
                .col(str_null("from_status"))
                .col(str_col("to_status"))
                .col(uuid_null("user_id"))
                .col(uuid_null("actor_id"))
                .col(ts("at"))
                .to_owned(),
        )
        .await?;
        m.create_index(index(
            "seat_events_seat",
            "seat_events",
            &["tenant_id", "seat_id", "at"],
            false,
        ))
        .await?;

        m.create_table(
            tenant_table("skills")
                .col(pk("id"))
                .col(str_col("name"))
                .col(ts("created_at"))
                .to_owned(),
        )
        .await?;
        m.create_index(index(
            "skills_tenant_name",
            "skills",
            &["tenant_id", "name"],
            true,
        ))
        .await?;

        m.create_table(
            tenant_table("queues")
                .col(pk("id"))
                .col(str_col("name"))
                .col(str_col("strategy"))
                .col(integer(id("max_wait_s")))
                .col(integer(id("max_length")))
                .col(integer(id("wrap_up_s")))
                .col(integer(id("service_level_s")))
                .col(ts("created_at"))
                .col(ts("updated_at"))
                .to_owned(),
        )
        .await?;
        m.create_index(index(
            "queues_tenant_name",
            "queues",
            &["tenant_id", "name"],
            true,
        ))
        .await?;

        m.create_table(
            tenant_table("phone_numbers")
                .col(pk("id"))
                .col(string_len_uniq(id("number"), 16))
                .col(str_col("kind"))
                .col(str_col("label"))
                .col(uuid_null("queue_id"))
                .foreign_key(
                    ForeignKey::create()
                        .from(id("phone_numbers"), id("queue_id"))
                        .to(id("queues"), id("id"))
                        .on_delete(ForeignKeyAction::SetNull),
                )
                .col(ts("created_at"))
                .to_owned(),
        )
        .await?;

        m.create_table(
            tenant_table("agent_skills")
                .col(uuid_col("user_id"))
                .col(uuid_col("skill_id"))
                .col(integer(id("level")))
                .primary_key(Index::create().col(id("user_id")).col(id("skill_id")))
                .foreign_key(&mut fk("agent_skills", "user_id", "users"))
                .foreign_key(&mut fk("agent_skills", "skill_id", "skills"))
                .to_owned(),
        )
        .await?;

        m.create_table(
            tenant_table("queue_members")
                .col(uuid_col("queue_id"))
                .col(uuid_col("user_id"))
                .col(integer(id("tier")))
                .primary_key(Index::create().col(id("queue_id")).col(id("user_id")))
                .foreign_key(&mut fk("queue_members", "queue_id", "queues"))
                .foreign_key(&mut fk("queue_members", "user_id", "users"))
                .to_owned(),
        )
        .await?;

        m.create_table(
            tenant_table("audit_log")
                .col(pk("id"))
                .col(uuid_null("actor_id"))
                .col(str_col("action"))
                .col(str_col("entity"))
                .col(uuid_null("entity_id"))
                .col(text_null(id("before")))
                .col(text_null(id("after")))
                .col(str_null("request_id"))
                .col(ts("at"))
                .to_owned(),
        )
        .await?;
        m.create_index(index(
            "audit_log_tenant_at",
            "audit_log",
            &["tenant_id", "id"],
            false,
        ))
        .await?;

        m.create_table(
            tenant_table("refresh_tokens")
                .col(pk("id"))
                .col(uuid_col("user_id"))
                .foreign_key(&mut fk("refresh_tokens", "user_id", "users"))
                .col(string_len_uniq(id("token_hash"), 64))
                .col(ts("expires_at"))
                .col(ts_null("revoked_at"))
                .col(ts("created_at"))
                .to_owned(),
        )
        .await?;

        m.create_table(
            tenant_table("api_keys")
                .col(pk("id"))
                .col(str_col("name"))
                .col(str_col("role"))
                .col(string_len_uniq(id("key_hash"), 64))
                .col(str_col("prefix"))
                .col(uuid_null("created_by"))
                .col(ts("created_at"))
                .col(ts_null("revoked_at"))
                .to_owned(),
        )
        .await?;

        m.create_table(
            tenant_table("idempotency_keys")
                .col(str_col("key"))
                .col(str_col("request_hash"))
                .col(integer(id("status")))
                .col(text_col("body"))
                .col(ts("created_at"))
                .primary_key(Index::create().col(id("tenant_id")).col(id("key")))
                .to_owned(),
        )
        .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for t in [
            "idempotency_keys",
            "api_keys",
            "refresh_tokens",
            "audit_log",
            "queue_members",
            "agent_skills",
            "phone_numbers",
            "queues",
            "skills",
            "seat_events",
            "seats",
            "users",
            "tenants",
        ] {
            m.drop_table(Table::drop().table(id(t)).to_owned()).await?;
        }
        Ok(())
    }
}
