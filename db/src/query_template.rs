//! Query texts rendered once per entity and shape, reused with each call's values.
//!
//! Why this module exists: sea-query renders a select's SQL text afresh on every call, only
//! for the read pool to find the statement it already prepared under that text; for the plain
//! list page and the get-by-id that every resource serves, that rendering was about a sixth of
//! the api's instructions per request (callgrind, `scripts/bench api`). A [`Template`] is the
//! text rendered once with stand-in values, plus which of this call's values goes into each
//! placeholder, found by where the stand-ins landed; a shape whose values are not all
//! stand-ins cannot be made into a template (an error, never a guess).

use std::any::TypeId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sea_orm::sea_query::PostgresQueryBuilder;
use sea_orm::{EntityTrait, QueryTrait, Select, Value};
use uuid::Uuid;

use crate::{DbError, Result};

/// What fills a placeholder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Tenant,
    Id,
    Limit,
}

/// Stand-ins: values no real call passes in these positions (a tenant, an id and a limit of
/// these exact values would only make a template render to the same text anyway).
const TENANT_STAND_IN: Uuid = Uuid::from_u128(0x5b5b_0001_0000_7000_8000_0000_0000_0001);
const ID_STAND_IN: Uuid = Uuid::from_u128(0x5b5b_0002_0000_7000_8000_0000_0000_0002);
const LIMIT_STAND_IN: u64 = 0x5b5b_0003;

/// The values of one call of a template.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Args {
    pub tenant: Uuid,
    pub id: Option<Uuid>,
    pub limit: u64,
}

impl Args {
    fn stand_ins(&self) -> Self {
        Self {
            tenant: TENANT_STAND_IN,
            id: self.id.map(|_| ID_STAND_IN),
            limit: LIMIT_STAND_IN,
        }
    }
}

#[derive(Debug)]
pub(crate) struct Template {
    pub sql: String,
    slots: Vec<Slot>,
}

impl Template {
    /// Renders `build(stand-ins)` and finds each stand-in's placeholder.
    fn render<E: EntityTrait>(build: impl Fn(Args) -> Select<E>, args: Args) -> Result<Self> {
        let (sql, values) = build(args.stand_ins())
            .as_query()
            .build(PostgresQueryBuilder);
        let slots = values
            .0
            .iter()
            .map(|v| match v {
                Value::Uuid(Some(u)) if **u == TENANT_STAND_IN => Ok(Slot::Tenant),
                Value::Uuid(Some(u)) if **u == ID_STAND_IN => Ok(Slot::Id),
                Value::BigUnsigned(Some(LIMIT_STAND_IN)) => Ok(Slot::Limit),
                other => Err(DbError::Db(sea_orm::DbErr::Custom(format!(
                    "query template: a value {other:?} that is not a stand-in in {sql}"
                )))),
            })
            .collect::<Result<_>>()?;
        Ok(Self { sql, slots })
    }

    /// This call's values, in placeholder order.
    pub fn values(&self, args: Args) -> Result<Vec<Value>> {
        self.slots
            .iter()
            .map(|slot| match slot {
                Slot::Tenant => Ok(Value::from(args.tenant)),
                Slot::Id => args.id.map(Value::from).ok_or_else(|| {
                    DbError::Db(sea_orm::DbErr::Custom(
                        "query template: an id placeholder without an id".into(),
                    ))
                }),
                Slot::Limit => Ok(Value::BigUnsigned(Some(args.limit))),
            })
            .collect()
    }
}

/// Templates by entity and shape.
type TemplateMap = HashMap<(TypeId, &'static str), Arc<Template>>;

/// Templates by entity and shape, shared by every connection of the read pool.
#[derive(Clone, Default)]
pub(crate) struct Templates(Arc<Mutex<TemplateMap>>);

impl Templates {
    /// The template of `shape` for `E`, rendering it from `build` the first time.
    pub fn get<E: EntityTrait>(
        &self,
        shape: &'static str,
        args: Args,
        build: impl Fn(Args) -> Select<E>,
    ) -> Result<Arc<Template>> {
        let key = (TypeId::of::<E>(), shape);
        if let Some(t) = self.lock().get(&key) {
            return Ok(t.clone());
        }
        let template = Arc::new(Template::render(build, args)?);
        self.lock().insert(key, template.clone());
        Ok(template)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TemplateMap> {
        // A panic while holding the lock leaves the map as it was (inserts are whole).
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::entities::seats;
    use sea_orm::{ColumnTrait, QueryFilter};

    fn page(a: Args) -> Select<seats::Entity> {
        crate::paged(
            seats::Entity::find().filter(seats::Column::TenantId.eq(a.tenant)),
            seats::Column::Id,
            a.id,
            a.limit,
        )
    }

    /// A template with a call's values is exactly what sea-query renders for that call.
    #[test]
    fn a_template_gives_the_text_and_values_sea_query_renders() {
        let templates = Templates::default();
        for id in [None, Some(Uuid::now_v7())] {
            let args = Args {
                tenant: Uuid::now_v7(),
                id,
                limit: 21,
            };
            let shape = if id.is_some() { "after" } else { "first" };
            let t = templates.get(shape, args, page).unwrap();
            let (sql, values) = page(args).as_query().build(PostgresQueryBuilder);
            assert_eq!(t.sql, sql);
            assert_eq!(t.values(args).unwrap(), values.0);
        }
        assert_eq!(templates.0.lock().unwrap().len(), 2);
    }

    /// A shape with a value the template cannot fill is refused.
    #[test]
    fn a_shape_with_other_values_is_refused() {
        let err = Templates::default()
            .get(
                "labelled",
                Args {
                    tenant: Uuid::now_v7(),
                    id: None,
                    limit: 1,
                },
                |a| page(a).filter(seats::Column::Label.eq("x")),
            )
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a stand-in"), "{err}");
    }
}
