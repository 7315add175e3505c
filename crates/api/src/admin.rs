//! The administrator side, for orchestrators: create, replace, list and
//! delete instance records and their ports, read or clear a guest's
//! password. On its own listener (loopback by default), behind a bearer token.

use crate::error::text_error;
use crate::metadata::MetadataService;
use axum::extract::{Path, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use bytes::Bytes;
use http::{header, StatusCode};
use meta169_store::{StoreError, StoredInstance};
use meta169_tree::{Instance, Port};
use serde_json::json;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// Largest admin request body (a record with 64 KiB of user data fits many times).
pub const MAX_ADMIN_BODY_BYTES: usize = 4 * 1024 * 1024;

#[derive(Clone)]
struct AdminState {
    service: Arc<MetadataService>,
    token: Arc<String>,
}

/// Why an admin request failed; each becomes `{"error": message}` with a status.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// No record with that uuid (404).
    #[error("no instance with uuid {0}")]
    NoInstance(String),
    /// The body does not parse as what the endpoint takes (400).
    #[error("request body is not a valid record: {0}")]
    BadBody(String),
    /// PUT to one uuid with a record of another (400).
    #[error("the record's uuid {record} differs from the uuid in the path {path}")]
    UuidMismatch { record: String, path: String },
    /// POST of a record that exists (409).
    #[error("instance {0} exists; PUT /v1/instances/{0} replaces it")]
    Exists(String),
    /// The store refused or failed (400, 404, 409 or 500 by kind).
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl AdminError {
    fn status(&self) -> StatusCode {
        match self {
            AdminError::NoInstance(_) => StatusCode::NOT_FOUND,
            AdminError::BadBody(_) | AdminError::UuidMismatch { .. } => StatusCode::BAD_REQUEST,
            AdminError::Exists(_) => StatusCode::CONFLICT,
            AdminError::Store(StoreError::Invalid(_)) => StatusCode::BAD_REQUEST,
            AdminError::Store(StoreError::NotFound(_)) => StatusCode::NOT_FOUND,
            AdminError::Store(StoreError::AddressTaken { .. })
            | AdminError::Store(StoreError::PasswordAlreadySet(_)) => StatusCode::CONFLICT,
            AdminError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!("admin request failed: {self}");
        }
        (status, Json(json!({"error": self.to_string()}))).into_response()
    }
}

/// Parse a JSON body.
fn parse_json<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, AdminError> {
    serde_json::from_slice(body).map_err(|e| AdminError::BadBody(e.to_string()))
}

/// A record from a JSON body (`user_data_text` accepted for `user_data`).
fn parse_record(body: &Bytes) -> Result<Instance, AdminError> {
    Instance::from_json(body).map_err(|e| AdminError::BadBody(e.to_string()))
}

/// The stored record of `uuid`, or 404.
async fn stored(s: &AdminState, uuid: &str) -> Result<StoredInstance, AdminError> {
    s.service
        .store
        .get_instance(uuid)
        .await?
        .ok_or_else(|| AdminError::NoInstance(uuid.to_string()))
}

/// The credentials of `Authorization: Bearer <token>`; the scheme in any
/// letter case (RFC 9110).
fn bearer_token(request: &Request) -> &str {
    request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map_or("", |(_, token)| token.trim())
}

async fn require_token(State(state): State<AdminState>, request: Request, next: Next) -> Response {
    let presented = bearer_token(&request);
    let ok: bool = presented.as_bytes().ct_eq(state.token.as_bytes()).into();
    if !ok || state.token.is_empty() {
        let mut r = (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "missing or wrong bearer token: send 'Authorization: Bearer <token from admin.token_file>'"})),
        )
            .into_response();
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static("Bearer"),
        );
        return r;
    }
    next.run(request).await
}

/// The admin router.
pub fn router(service: Arc<MetadataService>, token: String) -> Router {
    let state = AdminState {
        service,
        token: Arc::new(token),
    };
    Router::new()
        .route("/v1/instances", get(list).post(create))
        .route(
            "/v1/instances/{uuid}",
            get(show).put(replace).delete(remove),
        )
        .route(
            "/v1/instances/{uuid}/ports",
            get(show_ports).put(replace_ports),
        )
        .route(
            "/v1/instances/{uuid}/password",
            get(show_password).delete(clear_password),
        )
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token))
        .route("/healthz", get(|| async { "ok\n" }))
        .fallback(|| async {
            text_error(
                StatusCode::NOT_FOUND,
                "No such admin endpoint; see docs/admin-api.md.",
            )
        })
        .layer(axum::extract::DefaultBodyLimit::max(MAX_ADMIN_BODY_BYTES))
        .with_state(state)
}

async fn list(State(s): State<AdminState>) -> Result<Response, AdminError> {
    let list = s.service.store.list_instances().await?;
    Ok(Json(
        list.into_iter()
            .map(|i| json!({"uuid": i.uuid, "name": i.name, "project_id": i.project_id, "addresses": i.addresses, "revision": i.revision}))
            .collect::<Vec<_>>(),
    )
    .into_response())
}

async fn put_record(
    s: &AdminState,
    instance: Instance,
    created: bool,
) -> Result<Response, AdminError> {
    let revision = s.service.store.put_instance(&instance).await?;
    s.service.caches.invalidate(&instance.uuid);
    tracing::info!(instance = %instance.uuid, revision, "instance record written");
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(json!({"uuid": instance.uuid, "revision": revision})),
    )
        .into_response())
}

async fn create(State(s): State<AdminState>, body: Bytes) -> Result<Response, AdminError> {
    let instance = parse_record(&body)?;
    if s.service
        .store
        .get_instance(&instance.uuid)
        .await?
        .is_some()
    {
        return Err(AdminError::Exists(instance.uuid));
    }
    put_record(&s, instance, true).await
}

async fn replace(
    State(s): State<AdminState>,
    Path(uuid): Path<String>,
    body: Bytes,
) -> Result<Response, AdminError> {
    let instance = parse_record(&body)?;
    if instance.uuid != uuid {
        return Err(AdminError::UuidMismatch {
            record: instance.uuid,
            path: uuid,
        });
    }
    let existed = matches!(s.service.store.get_instance(&uuid).await, Ok(Some(_)));
    put_record(&s, instance, !existed).await
}

async fn show(
    State(s): State<AdminState>,
    Path(uuid): Path<String>,
) -> Result<Response, AdminError> {
    Ok(Json(stored(&s, &uuid).await?.instance).into_response())
}

async fn remove(
    State(s): State<AdminState>,
    Path(uuid): Path<String>,
) -> Result<Response, AdminError> {
    if !s.service.store.delete_instance(&uuid).await? {
        return Err(AdminError::NoInstance(uuid));
    }
    s.service.caches.invalidate(&uuid);
    tracing::info!(instance = %uuid, "instance record deleted");
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn show_ports(
    State(s): State<AdminState>,
    Path(uuid): Path<String>,
) -> Result<Response, AdminError> {
    Ok(Json(stored(&s, &uuid).await?.instance.ports).into_response())
}

async fn replace_ports(
    State(s): State<AdminState>,
    Path(uuid): Path<String>,
    body: Bytes,
) -> Result<Response, AdminError> {
    let ports: Vec<Port> = parse_json(&body)?;
    let mut instance = stored(&s, &uuid).await?.instance;
    instance.ports = ports;
    put_record(&s, instance, false).await
}

async fn show_password(
    State(s): State<AdminState>,
    Path(uuid): Path<String>,
) -> Result<Response, AdminError> {
    Ok(Json(json!({"password": stored(&s, &uuid).await?.password})).into_response())
}

async fn clear_password(
    State(s): State<AdminState>,
    Path(uuid): Path<String>,
) -> Result<Response, AdminError> {
    if !s.service.store.clear_password(&uuid).await? {
        return Err(AdminError::NoInstance(uuid));
    }
    s.service.caches.forget_instance(&uuid);
    tracing::info!(instance = %uuid, "password cleared");
    Ok(StatusCode::NO_CONTENT.into_response())
}
