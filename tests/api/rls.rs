//! PostgreSQL row-level security, the second wall. These tests always run on PostgreSQL (they
//! are about it), whichever backend the rest of the suite uses.

use switchboard_db::sea_orm::{ConnectionTrait, DbBackend, Statement, TransactionTrait};
use switchboard_db::{APP_ROLE, Access, Database, PoolConfig, TENANT_TABLES};

use crate::helpers::*;

async fn migrated_pg() -> Database {
    let url = fresh_pg_database().await;
    let db = Database::connect(&url, &PoolConfig::default())
        .await
        .expect("connect");
    db.migrate().await.expect("migrate");
    db
}

async fn scalar_i64(conn: &impl ConnectionTrait, sql: &str) -> i64 {
    let row = conn
        .query_one(Statement::from_string(DbBackend::Postgres, sql.to_owned()))
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .expect("a row");
    row.try_get_by_index::<i64>(0).expect("i64")
}

#[tokio::test]
async fn every_tenant_table_has_forced_rls_and_the_app_role_cannot_bypass_it() {
    let db = migrated_pg().await;
    let conn = db.raw_connection();
    for table in std::iter::once(&"tenants").chain(TENANT_TABLES) {
        let sql = format!(
            "SELECT (c.relrowsecurity AND c.relforcerowsecurity)::int::int8 \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = 'public' AND c.relname = '{table}'"
        );
        assert_eq!(
            scalar_i64(conn, &sql).await,
            1,
            "{table}: RLS not enabled and forced"
        );
        let policies = scalar_i64(conn, &format!(
            "SELECT count(*) FROM pg_policies WHERE schemaname = 'public' AND tablename = '{table}'")).await;
        assert!(policies >= 1, "{table} has no policy");
        // The policy's functions run once per statement (m0014), not once per row.
        let per_row = scalar_i64(conn, &format!(
            "SELECT count(*) FROM pg_policies WHERE schemaname = 'public' AND tablename = '{table}' \
             AND NOT (qual LIKE '%SELECT app_tenant()%' AND qual LIKE '%SELECT app_system()%' \
             AND with_check LIKE '%SELECT app_tenant()%' AND with_check LIKE '%SELECT app_system()%')")).await;
        assert_eq!(
            per_row, 0,
            "{table}: a policy evaluates its functions per row"
        );
        let owned = scalar_i64(conn, &format!(
            "SELECT (tableowner = '{APP_ROLE}')::int::int8 FROM pg_tables WHERE schemaname='public' AND tablename='{table}'")).await;
        assert_eq!(owned, 0, "{table} is owned by the app role");
    }
    // Every table with a tenant_id column is in the list (a new one cannot be forgotten).
    let unlisted = conn
        .query_all(Statement::from_string(
            DbBackend::Postgres,
            "SELECT table_name::text FROM information_schema.columns \
             WHERE table_schema = 'public' AND column_name = 'tenant_id'"
                .to_owned(),
        ))
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.try_get_by_index::<String>(0).unwrap())
        .filter(|t| !TENANT_TABLES.contains(&t.as_str()))
        .collect::<Vec<_>>();
    assert!(
        unlisted.is_empty(),
        "tenant tables missing from TENANT_TABLES: {unlisted:?}"
    );
    let role = scalar_i64(conn, &format!(
        "SELECT (rolbypassrls OR rolsuper)::int::int8 FROM pg_roles WHERE rolname = '{APP_ROLE}'")).await;
    assert_eq!(role, 0, "the app role bypasses RLS");
}

#[tokio::test]
async fn a_transaction_without_a_tenant_sees_and_writes_nothing() {
    let app_db = migrated_pg().await;
    // Seed two tenants through the normal path.
    let tokens = switchboard_api::auth::TokenService::new(auth_settings()).unwrap();
    let state = switchboard_api::AppState::new(
        app_db.clone(),
        tokens,
        Default::default(),
        memory_engine(),
        30_000,
    );
    switchboard_api::routes::tenants::ensure_operator(
        &state,
        switchboard_domain::Email::parse("op@example.com").unwrap(),
        switchboard_domain::Password::parse(PASSWORD).unwrap(),
    )
    .await
    .unwrap();
    let conn = app_db.raw_connection();
    assert!(
        scalar_i64(conn, "SELECT count(*) FROM users").await >= 1,
        "owner sees rows"
    );

    // As the app role, with no tenant set: nothing visible, nothing insertable.
    let txn = conn.begin().await.unwrap();
    txn.execute_unprepared(&format!("SET LOCAL ROLE {APP_ROLE}"))
        .await
        .unwrap();
    for table in std::iter::once(&"tenants").chain(TENANT_TABLES) {
        assert_eq!(
            scalar_i64(&txn, &format!("SELECT count(*) FROM {table}")).await,
            0,
            "{table} visible without a tenant"
        );
    }
    let insert = txn
        .execute_unprepared(
            "INSERT INTO skills (tenant_id, id, name, created_at) \
         SELECT gen_random_uuid(), gen_random_uuid(), 'x', now()",
        )
        .await;
    assert!(insert.is_err(), "insert without a tenant succeeded");
    txn.rollback().await.unwrap();

    // A tenant-scoped transaction on tenant X cannot see tenant Y's rows even with no filter.
    let platform = scalar_i64(conn, "SELECT count(*) FROM tenants").await;
    assert_eq!(platform, 1);
    let other = switchboard_domain::TenantId::new();
    let tx = app_db.tenant_txn(other, Access::Read).await.unwrap();
    tx.commit().await.unwrap();
    let txn = conn.begin().await.unwrap();
    txn.execute_unprepared(&format!(
        "SELECT set_config('role', '{APP_ROLE}', true), set_config('app.tenant_id', '{other}', true)")).await.unwrap();
    assert_eq!(scalar_i64(&txn, "SELECT count(*) FROM users").await, 0);
    assert_eq!(scalar_i64(&txn, "SELECT count(*) FROM tenants").await, 0);
    txn.rollback().await.unwrap();
}

/// A migrated database whose pools have one connection each, so every read shares it.
async fn migrated_pg_on_one_connection() -> Database {
    let url = fresh_pg_database().await;
    let db = Database::connect(
        &url,
        &PoolConfig {
            max_connections: 1,
            read_connections: 1,
            ..Default::default()
        },
    )
    .await
    .expect("connect");
    db.migrate().await.expect("migrate");
    db
}

/// Tenants `aaa`, `bbb` and `ccc` with 2, 3 and 0 skills named `<slug>-<i>`.
async fn tenants_with_skills(
    db: &Database,
) -> Vec<(switchboard_domain::TenantId, &'static str, usize)> {
    use switchboard_db::entities::{skills, tenants};
    use switchboard_db::sea_orm::{ActiveModelTrait, Set};
    use switchboard_domain::TenantId;
    let now = chrono::Utc::now();
    let mut ids = Vec::new();
    for (slug, skill_count) in [("aaa", 2), ("bbb", 3), ("ccc", 0)] {
        let id = TenantId::new();
        let sys = db.system_txn(Access::Write).await.unwrap();
        tenants::ActiveModel {
            id: Set(id.0),
            slug: Set(slug.into()),
            name: Set(slug.into()),
            status: Set("active".into()),
            plan: Set("standard".into()),
            seat_limit: Set(5),
            tokens_valid_after: Set(None),
            created_at: Set(now),
            updated_at: Set(now),
        }
        .insert(sys.conn())
        .await
        .unwrap();
        sys.commit().await.unwrap();
        let tx = db.tenant_txn(id, Access::Write).await.unwrap();
        for i in 0..skill_count {
            tx.insert(skills::ActiveModel {
                id: Set(uuid::Uuid::now_v7()),
                tenant_id: Set(id.0),
                name: Set(format!("{slug}-{i}")),
                created_at: Set(now),
            })
            .await
            .unwrap();
        }
        tx.commit().await.unwrap();
        ids.push((id, slug, skill_count));
    }
    ids
}

/// Tenant reads on PostgreSQL run a statement prepared once per connection, on a session whose
/// `app.tenant_id` follows the tenant of each read (see `db/src/pg_read.rs`). On a single connection, alternating tenants many times (past the point
/// where PostgreSQL switches to a cached generic plan) must keep each tenant to its own rows.
#[tokio::test]
async fn prepared_tenant_reads_on_one_connection_keep_tenants_apart() {
    use switchboard_db::entities::skills;
    use switchboard_db::sea_orm::{ColumnTrait, QueryFilter};

    let db = migrated_pg_on_one_connection().await;
    let ids = tenants_with_skills(&db).await;
    for round in 0..12 {
        for &(id, slug, skill_count) in &ids {
            let tx = db.tenant_txn(id, Access::Read).await.unwrap();
            let rows = tx.all::<skills::Entity>(|q| q).await.unwrap();
            assert_eq!(rows.len(), skill_count, "round {round}, tenant {slug}");
            assert!(
                rows.iter()
                    .all(|r| r.tenant_id == id.0 && r.name.starts_with(slug))
            );
            assert_eq!(
                tx.count::<skills::Entity>(|q| q).await.unwrap(),
                skill_count as u64
            );
            // A value in the statement: another tenant's skill name finds nothing.
            let other = if slug == "aaa" { "bbb-0" } else { "aaa-0" };
            let found = tx
                .first::<skills::Entity>(|q| q.filter(skills::Column::Name.eq(other)))
                .await
                .unwrap();
            assert!(found.is_none(), "round {round}: {slug} sees {other}");
            // An empty IN list (sea-query binds it as two integers the server sees as text).
            let none = tx
                .all::<skills::Entity>(|q| {
                    q.filter(skills::Column::Id.is_in(Vec::<uuid::Uuid>::new()))
                })
                .await
                .unwrap();
            assert!(none.is_empty(), "round {round}: empty IN matched {none:?}");
            assert_eq!(tx.tenant().await.unwrap().slug, slug);
            tx.commit().await.unwrap();
        }
    }
    // They were statements prepared once on that one connection (one per query shape: list,
    // count, by name, empty IN, tenant row), not once per read.
    let prepared = db.read_statements_prepared();
    assert!(
        (3..=8).contains(&prepared),
        "{prepared} statements prepared for 144 reads"
    );
}

/// Reads of concurrent requests share a read connection, many in flight at once (see
/// `db/src/pg_pipeline.rs`). On one connection: 300 reads at once, tenants interleaved, each
/// get their own tenant's rows; reads abandoned after they were sent (their requests went
/// away) leave the connection in use, not replaced (nothing is prepared again), and reads
/// after them are right.
#[tokio::test]
async fn concurrent_reads_on_one_connection_keep_tenants_apart_and_survive_abandoned_ones() {
    use switchboard_db::entities::skills;

    let db = migrated_pg_on_one_connection().await;
    let ids = tenants_with_skills(&db).await;
    let read = |i: usize| {
        let db = db.clone();
        let (id, slug, skill_count) = ids[i % ids.len()];
        async move {
            let tx = db.tenant_txn(id, Access::Read).await.unwrap();
            let rows = tx.all::<skills::Entity>(|q| q).await.unwrap();
            assert_eq!(rows.len(), skill_count, "read {i}, tenant {slug}");
            assert!(
                rows.iter()
                    .all(|r| r.tenant_id == id.0 && r.name.starts_with(slug)),
                "read {i}, tenant {slug}: {rows:?}"
            );
        }
    };
    read(0).await;
    let prepared = db.read_statements_prepared();
    let all: Vec<_> = (0..300).map(|i| tokio::spawn(read(i))).collect();
    for task in all {
        task.await.expect("a read failed");
    }
    for round in 0..5 {
        let abandoned: Vec<_> = (0..50).map(|i| tokio::spawn(read(i))).collect();
        tokio::task::yield_now().await;
        for task in &abandoned {
            task.abort();
        }
        for task in abandoned {
            let _ = task.await;
        }
        for i in 0..30 {
            read(round * 30 + i).await;
        }
    }
    assert_eq!(
        db.read_statements_prepared(),
        prepared,
        "the connection was replaced, or statements prepared again"
    );
}

/// A read held up on its connection (here by a table lock) does not hold up the reads after
/// it: they go to the read connection with fewer reads in flight (see `db/src/pg_read.rs`).
#[tokio::test]
async fn reads_avoid_a_read_connection_held_up_by_a_slow_read() {
    use switchboard_db::entities::{seats, skills};

    let url = fresh_pg_database().await;
    let db = Database::connect(
        &url,
        &PoolConfig {
            read_connections: 2,
            ..Default::default()
        },
    )
    .await
    .expect("connect");
    db.migrate().await.expect("migrate");
    let (tenant, _, skill_count) = tenants_with_skills(&db).await[1];
    let locker = db.raw_connection().begin().await.unwrap();
    locker
        .execute_unprepared("LOCK TABLE skills IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let held_up = {
        let db = db.clone();
        tokio::spawn(async move {
            let tx = db.tenant_txn(tenant, Access::Read).await.unwrap();
            tx.all::<skills::Entity>(|q| q).await.unwrap().len()
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    for i in 0..20 {
        let read = async {
            let tx = db.tenant_txn(tenant, Access::Read).await.unwrap();
            tx.all::<seats::Entity>(|q| q).await.unwrap()
        };
        let seats = tokio::time::timeout(std::time::Duration::from_secs(5), read)
            .await
            .unwrap_or_else(|_| panic!("read {i} waited behind the held-up one"));
        assert!(seats.is_empty());
    }
    assert!(
        !held_up.is_finished(),
        "the lock did not hold the first read up"
    );
    locker.commit().await.unwrap();
    assert_eq!(held_up.await.unwrap(), skill_count);
}

/// A tenant read sets `app.tenant_id` and reads in one pipeline that PostgreSQL runs as one
/// implicit transaction (see `db/src/pg_wire.rs`): the setting must not outlive it. On the
/// one read connection, a statement run outside a scoped read, before and after reads of a
/// tenant with rows, sees no tenant setting and no rows, as the application role.
#[tokio::test]
async fn a_tenant_read_leaves_no_tenant_on_its_connection() {
    use switchboard_db::entities::skills;

    let db = migrated_pg_on_one_connection().await;
    let nothing = (String::new(), 0, APP_ROLE.to_owned());
    assert_eq!(
        db.read_connection_probe().await.unwrap(),
        Some(nothing.clone()),
        "a fresh read connection"
    );
    let (id, _, skill_count) = tenants_with_skills(&db).await[0];
    for round in 0..3 {
        let tx = db.tenant_txn(id, Access::Read).await.unwrap();
        assert_eq!(tx.all::<skills::Entity>(|q| q).await.unwrap().len(), 2);
        assert_eq!(
            tx.count::<skills::Entity>(|q| q).await.unwrap(),
            skill_count as u64
        );
        tx.commit().await.unwrap();
        assert_eq!(
            db.read_connection_probe().await.unwrap(),
            Some(nothing.clone()),
            "round {round}: the read connection after a read of tenant {id:?}"
        );
    }
}

/// m0014 rewrites policies made in m0002's per-row form, and its `down` puts that form back.
#[tokio::test]
async fn m0014_turns_per_row_policies_into_once_per_statement_ones_and_back() {
    use migrations::MigratorTrait;
    let db = migrated_pg().await;
    let conn = db.raw_connection();
    let with_form = |form: &str| {
        format!(
            "SELECT count(*) FROM pg_policies WHERE schemaname = 'public' \
             AND policyname = 'switchboard_tenant_isolation' AND qual LIKE '{form}' \
             AND with_check LIKE '{form}'"
        )
    };
    let once = with_form("%( SELECT app_tenant() AS app_tenant)%");
    let per_row = with_form("%= app_tenant()) OR app_system())");
    let tables = 1 + TENANT_TABLES.len() as i64;
    assert_eq!(scalar_i64(conn, &once).await, tables);
    switchboard_db::Migrator::down(conn, Some(1))
        .await
        .expect("m0014 down");
    assert_eq!(scalar_i64(conn, &per_row).await, tables);
    assert_eq!(scalar_i64(conn, &once).await, 0);
    db.migrate().await.expect("m0014 up again");
    assert_eq!(scalar_i64(conn, &once).await, tables);
}
