//! Handlers, one module per resource. Handlers are named verb_noun and carry their OpenAPI
//! description (`#[utoipa::path]`) including the weakest role allowed (`x-min-role`).

pub mod admin;
pub mod agent_state;
pub mod auth;
pub mod call_control;
pub mod calls;
pub mod contacts;
pub mod desk;
pub mod dispositions;
pub mod events;
pub mod numbers;
pub mod recordings;
pub mod routing;
pub mod seats;
pub mod tenants;
pub mod users;
