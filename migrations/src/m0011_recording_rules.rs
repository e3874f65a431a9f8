//! Recording rules and pauses: a tenant's rule (always / never / weekly windows) with its time
//! zone and the agent's DTMF pause/resume codes, a queue's own rule overriding the tenant's,
//! and the paused stretches of each recording (silence in the file, listed in its row).
//! Rules are JSON in a text column: the api and the gateway parse them with the same
//! validating type (`switchboard_recording::RecordingRule`), and nothing queries inside them.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

use crate::a;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0011_recording_rules"
    }
}

/// (table, column, nullable text) added one statement each (SQLite alters one column at a time).
const COLUMNS: &[(&str, &str)] = &[
    ("tenant_recording_settings", "recording_rule"),
    ("tenant_recording_settings", "time_zone"),
    ("tenant_recording_settings", "pause_code"),
    ("tenant_recording_settings", "resume_code"),
    ("queues", "recording_rule"),
    ("recordings", "pauses"),
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for (table, column) in COLUMNS {
            m.alter_table(
                Table::alter()
                    .table(a(table))
                    .add_column(text_null(a(column)))
                    .to_owned(),
            )
            .await?;
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for (table, column) in COLUMNS.iter().rev() {
            m.alter_table(
                Table::alter()
                    .table(a(table))
                    .drop_column(a(column))
                    .to_owned(),
            )
            .await?;
        }
        Ok(())
    }
}
