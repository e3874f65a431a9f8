//! How each call leg's media travelled and in which codec: `media` (`rtp` or `webrtc`) and
//! `codec` (`PCMU`, `PCMA`, `opus`: the party's side, so a WebRTC leg with `opus` was
//! transcoded). Nullable: legs written before this, and legs that never got media, have none.
//! New columns on an existing tenant table: its row-level security already covers them.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

use crate::a;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0013_cdr_leg_media"
    }
}

/// One column per statement: SQLite adds one at a time.
const COLUMNS: [&str; 2] = ["media", "codec"];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for column in COLUMNS {
            m.alter_table(
                Table::alter()
                    .table(a("cdr_legs"))
                    .add_column(string_len_null(a(column), 16))
                    .to_owned(),
            )
            .await?;
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for column in COLUMNS.iter().rev() {
            m.alter_table(
                Table::alter()
                    .table(a("cdr_legs"))
                    .drop_column(a(column))
                    .to_owned(),
            )
            .await?;
        }
        Ok(())
    }
}
