//! The tenant's contact book: customer records (name, company, notes, E.164 numbers) that the
//! agent's screen pop finds by the caller's number. Supervisors and admins manage them; a
//! number belongs to at most one contact of a tenant, so a lookup never has to guess.

use std::collections::{BTreeMap, BTreeSet};

use crate::json::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use switchboard_db::entities::{contact_numbers, contacts};
use switchboard_db::sea_orm::{ColumnTrait, QueryFilter, Set};
use switchboard_db::{Access, TenantTxn};
use switchboard_domain::{DisplayName, PhoneNumber};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::AppState;
use crate::common::{Page, PageParams, Resource, audit, list_page};
use crate::error::{ApiError, Problem};
use crate::extract::{ApiJson, ApiQuery, IdPath, Supervisor};

/// Most numbers one contact has.
pub const MAX_NUMBERS: usize = 10;
/// Longest company name and notes, in characters.
pub const MAX_COMPANY_CHARS: usize = 200;
pub const MAX_CONTACT_NOTES_CHARS: usize = 4000;

/// A customer record.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ContactView {
    pub id: Uuid,
    pub name: String,
    pub company: String,
    pub notes: String,
    /// E.164 numbers.
    pub numbers: Vec<String>,
    #[serde(serialize_with = "crate::timefmt::rfc3339")]
    pub created_at: chrono::DateTime<Utc>,
    #[serde(serialize_with = "crate::timefmt::rfc3339")]
    pub updated_at: chrono::DateTime<Utc>,
}

impl ContactView {
    fn of(c: contacts::Model, numbers: Vec<String>) -> Self {
        Self {
            id: c.id,
            name: c.name,
            company: c.company,
            notes: c.notes,
            numbers,
            created_at: c.created_at,
            updated_at: c.updated_at,
        }
    }
}

impl Resource for contacts::Entity {
    type View = contacts::Model;
    fn id_column() -> contacts::Column {
        contacts::Column::Id
    }
    fn id_of(row: &contacts::Model) -> Uuid {
        row.id
    }
    fn view(row: contacts::Model) -> Result<contacts::Model, ApiError> {
        Ok(row)
    }
}

/// The numbers of each contact in `ids`.
async fn numbers_of(
    tx: &TenantTxn,
    ids: impl IntoIterator<Item = Uuid>,
) -> Result<BTreeMap<Uuid, Vec<String>>, ApiError> {
    let rows = tx
        .all::<contact_numbers::Entity>(|q| q.filter(contact_numbers::Column::ContactId.is_in(ids)))
        .await?;
    let mut out: BTreeMap<Uuid, Vec<String>> = BTreeMap::new();
    for r in rows {
        out.entry(r.contact_id).or_default().push(r.number);
    }
    for v in out.values_mut() {
        v.sort();
    }
    Ok(out)
}

/// One contact with its numbers.
pub async fn contact_view(tx: &TenantTxn, c: contacts::Model) -> Result<ContactView, ApiError> {
    let mut numbers = numbers_of(tx, [c.id]).await?;
    let n = numbers.remove(&c.id).unwrap_or_default();
    Ok(ContactView::of(c, n))
}

/// The contact that has `number`, if any.
pub async fn contact_by_number(
    tx: &TenantTxn,
    number: &str,
) -> Result<Option<ContactView>, ApiError> {
    let Some(n) = tx
        .first::<contact_numbers::Entity>(|q| q.filter(contact_numbers::Column::Number.eq(number)))
        .await?
    else {
        return Ok(None);
    };
    let Some(c) = tx
        .first::<contacts::Entity>(|q| q.filter(contacts::Column::Id.eq(n.contact_id)))
        .await?
    else {
        return Ok(None);
    };
    Ok(Some(contact_view(tx, c).await?))
}

fn check_text(field: &str, v: &str, max: usize) -> Result<String, ApiError> {
    if v.chars().count() > max {
        return Err(ApiError::Validation(format!(
            "{field}: at most {max} characters"
        )));
    }
    Ok(v.trim().to_owned())
}

fn check_numbers(numbers: &[PhoneNumber]) -> Result<BTreeSet<String>, ApiError> {
    if numbers.len() > MAX_NUMBERS {
        return Err(ApiError::Validation(format!(
            "numbers: at most {MAX_NUMBERS}"
        )));
    }
    Ok(numbers.iter().map(|n| n.as_str().to_owned()).collect())
}

/// Sets a contact's numbers; a number another contact has is a conflict.
async fn put_numbers(
    tx: &TenantTxn,
    contact: Uuid,
    numbers: &BTreeSet<String>,
) -> Result<(), ApiError> {
    tx.delete::<contact_numbers::Entity>(|q| {
        q.filter(contact_numbers::Column::ContactId.eq(contact))
    })
    .await?;
    for n in numbers {
        tx.insert(contact_numbers::ActiveModel {
            id: Set(Uuid::now_v7()),
            tenant_id: Set(tx.tenant_id().0),
            created_at: Set(Utc::now()),
            contact_id: Set(contact),
            number: Set(n.clone()),
        })
        .await
        .map_err(|e| match e {
            switchboard_db::DbError::Conflict(_) => {
                ApiError::Conflict(format!("numbers: {n} belongs to another contact"))
            }
            e => e.into(),
        })?;
    }
    Ok(())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateContact {
    #[schema(value_type = String, example = "Ada Lovelace")]
    pub name: DisplayName,
    #[serde(default)]
    pub company: String,
    #[serde(default)]
    pub notes: String,
    /// E.164 numbers, at most 10.
    #[schema(value_type = Vec<String>, example = json!(["+14155550199"]))]
    #[serde(default)]
    pub numbers: Vec<PhoneNumber>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateContact {
    #[schema(value_type = Option<String>)]
    pub name: Option<DisplayName>,
    pub company: Option<String>,
    pub notes: Option<String>,
    /// Replaces the contact's numbers.
    #[schema(value_type = Option<Vec<String>>)]
    pub numbers: Option<Vec<PhoneNumber>>,
}

/// Creates a contact.
#[utoipa::path(post, path = "/v1/contacts", tag = "desktop", request_body = CreateContact,
    responses((status = 201, body = ContactView), (status = 409, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])), extensions(("x-min-role" = json!("supervisor"))))]
pub async fn create_contact(
    State(app): State<AppState>,
    sup: Supervisor,
    ApiJson(req): ApiJson<CreateContact>,
) -> Result<(StatusCode, Json<ContactView>), ApiError> {
    let company = check_text("company", &req.company, MAX_COMPANY_CHARS)?;
    let notes = check_text("notes", &req.notes, MAX_CONTACT_NOTES_CHARS)?;
    let numbers = check_numbers(&req.numbers)?;
    let tx = app.db.tenant_txn(sup.tenant_id, Access::Write).await?;
    let now = Utc::now();
    let row = tx
        .insert(contacts::ActiveModel {
            id: Set(Uuid::now_v7()),
            tenant_id: Set(sup.tenant_id.0),
            created_at: Set(now),
            name: Set(req.name.as_str().to_owned()),
            company: Set(company),
            notes: Set(notes),
            updated_at: Set(now),
        })
        .await?;
    put_numbers(&tx, row.id, &numbers).await?;
    let view = contact_view(&tx, row).await?;
    audit(
        &tx,
        &sup,
        "create",
        "contact",
        Some(view.id),
        None::<&()>,
        Some(&view),
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(view)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ContactListParams {
    /// Only the contact with this E.164 number.
    pub number: Option<String>,
    /// Items per page, 1 to 200 (default 50).
    pub limit: Option<u64>,
    /// Opaque cursor from a previous page.
    pub cursor: Option<String>,
}

/// Lists contacts, or looks one up by number (`?number=+1...`).
#[utoipa::path(get, path = "/v1/contacts", tag = "desktop", params(ContactListParams),
    responses((status = 200, body = Page<ContactView>), (status = 400, body = Problem)),
    security(("bearer" = [])), extensions(("x-min-role" = json!("supervisor"))))]
pub async fn list_contacts(
    State(app): State<AppState>,
    sup: Supervisor,
    ApiQuery(params): ApiQuery<ContactListParams>,
) -> Result<Json<Page<ContactView>>, ApiError> {
    let tx = app.db.tenant_txn(sup.tenant_id, Access::Read).await?;
    if let Some(n) = &params.number {
        let n = PhoneNumber::parse(n.as_str())
            .map_err(|e| ApiError::BadRequest(format!("number: {e}")))?;
        let found = contact_by_number(&tx, n.as_str()).await?;
        tx.commit().await?;
        return Ok(Json(Page {
            items: found.into_iter().collect(),
            next_cursor: None,
        }));
    }
    let page = list_page::<contacts::Entity>(
        &tx,
        &PageParams {
            limit: params.limit,
            cursor: params.cursor,
        },
        |q| q,
    )
    .await?;
    let mut numbers = numbers_of(&tx, page.items.iter().map(|c| c.id)).await?;
    tx.commit().await?;
    Ok(Json(Page {
        items: page
            .items
            .into_iter()
            .map(|c| {
                let n = numbers.remove(&c.id).unwrap_or_default();
                ContactView::of(c, n)
            })
            .collect(),
        next_cursor: page.next_cursor,
    }))
}

/// One contact.
#[utoipa::path(get, path = "/v1/contacts/{id}", tag = "desktop", params(("id" = Uuid, Path)),
    responses((status = 200, body = ContactView), (status = 404, body = Problem)),
    security(("bearer" = [])), extensions(("x-min-role" = json!("supervisor"))))]
pub async fn get_contact(
    State(app): State<AppState>,
    sup: Supervisor,
    IdPath(id): IdPath,
) -> Result<Json<ContactView>, ApiError> {
    let tx = app.db.tenant_txn(sup.tenant_id, Access::Read).await?;
    let c = tx
        .one::<contacts::Entity>(|q| q.filter(contacts::Column::Id.eq(id)))
        .await?;
    let view = contact_view(&tx, c).await?;
    tx.commit().await?;
    Ok(Json(view))
}

/// Changes a contact (numbers, when given, replace the old ones).
#[utoipa::path(patch, path = "/v1/contacts/{id}", tag = "desktop", params(("id" = Uuid, Path)),
    request_body = UpdateContact,
    responses((status = 200, body = ContactView), (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])), extensions(("x-min-role" = json!("supervisor"))))]
pub async fn update_contact(
    State(app): State<AppState>,
    sup: Supervisor,
    IdPath(id): IdPath,
    ApiJson(req): ApiJson<UpdateContact>,
) -> Result<Json<ContactView>, ApiError> {
    let company = req
        .company
        .as_deref()
        .map(|c| check_text("company", c, MAX_COMPANY_CHARS))
        .transpose()?;
    let notes = req
        .notes
        .as_deref()
        .map(|n| check_text("notes", n, MAX_CONTACT_NOTES_CHARS))
        .transpose()?;
    let numbers = req.numbers.as_deref().map(check_numbers).transpose()?;
    let tx = app.db.tenant_txn(sup.tenant_id, Access::Write).await?;
    let row = tx
        .one::<contacts::Entity>(|q| q.filter(contacts::Column::Id.eq(id)))
        .await?;
    let before = contact_view(&tx, row).await?;
    let mut values = contacts::ActiveModel {
        updated_at: Set(Utc::now()),
        ..Default::default()
    };
    if let Some(n) = &req.name {
        values.name = Set(n.as_str().to_owned());
    }
    if let Some(c) = company {
        values.company = Set(c);
    }
    if let Some(n) = notes {
        values.notes = Set(n);
    }
    tx.update(values, |q| q.filter(contacts::Column::Id.eq(id)))
        .await?;
    if let Some(numbers) = &numbers {
        put_numbers(&tx, id, numbers).await?;
    }
    let row = tx
        .one::<contacts::Entity>(|q| q.filter(contacts::Column::Id.eq(id)))
        .await?;
    let after = contact_view(&tx, row).await?;
    audit(
        &tx,
        &sup,
        "update",
        "contact",
        Some(id),
        Some(&before),
        Some(&after),
    )
    .await?;
    tx.commit().await?;
    Ok(Json(after))
}

/// Deletes a contact.
#[utoipa::path(delete, path = "/v1/contacts/{id}", tag = "desktop", params(("id" = Uuid, Path)),
    responses((status = 204), (status = 404, body = Problem)),
    security(("bearer" = [])), extensions(("x-min-role" = json!("supervisor"))))]
pub async fn delete_contact(
    State(app): State<AppState>,
    sup: Supervisor,
    IdPath(id): IdPath,
) -> Result<StatusCode, ApiError> {
    let tx = app.db.tenant_txn(sup.tenant_id, Access::Write).await?;
    let row = tx
        .one::<contacts::Entity>(|q| q.filter(contacts::Column::Id.eq(id)))
        .await?;
    let before = contact_view(&tx, row).await?;
    tx.delete::<contact_numbers::Entity>(|q| q.filter(contact_numbers::Column::ContactId.eq(id)))
        .await?;
    tx.delete::<contacts::Entity>(|q| q.filter(contacts::Column::Id.eq(id)))
        .await?;
    audit(
        &tx,
        &sup,
        "delete",
        "contact",
        Some(id),
        Some(&before),
        None::<&()>,
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
