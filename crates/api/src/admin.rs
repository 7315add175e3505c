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
use meta169_store::StoreError;
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

/// A JSON error answer: `{"error": "..."}` with a status.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({"error": message.into()}))).into_response()
}

fn store_error(e: StoreError) -> Response {
    let status = match &e {
        StoreError::Invalid(_) => StatusCode::BAD_REQUEST,
        StoreError::NotFound(_) => StatusCode::NOT_FOUND,
        StoreError::AddressTaken { .. } | StoreError::PasswordAlreadySet(_) => StatusCode::CONFLICT,
        _ => {
            tracing::error!("admin request failed: {e}");
            StatusCode::INTERNAL_SERVER_ERROR
        }
    };
    error(status, e.to_string())
}

/// Parse a JSON body; the error is the 400 answer's message.
fn parse_json<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|e| format!("request body is not a valid record: {e}"))
}

async fn require_token(State(state): State<AdminState>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let ok: bool = presented.as_bytes().ct_eq(state.token.as_bytes()).into();
    if !ok || state.token.is_empty() {
        let mut r = error(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token: send 'Authorization: Bearer <token from admin.token_file>'",
        );
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

async fn list(State(s): State<AdminState>) -> Response {
    match s.service.store.list_instances().await {
        Ok(list) => Json(
            list.into_iter()
                .map(|i| json!({"uuid": i.uuid, "name": i.name, "project_id": i.project_id, "addresses": i.addresses, "revision": i.revision}))
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Err(e) => store_error(e),
    }
}

async fn put_record(s: &AdminState, instance: Instance, created: bool) -> Response {
    match s.service.store.put_instance(&instance).await {
        Ok(revision) => {
            s.service.caches.invalidate(&instance.uuid);
            tracing::info!(instance = %instance.uuid, revision, "instance record written");
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            (
                status,
                Json(json!({"uuid": instance.uuid, "revision": revision})),
            )
                .into_response()
        }
        Err(e) => store_error(e),
    }
}

async fn create(State(s): State<AdminState>, body: Bytes) -> Response {
    let instance: Instance = match parse_json(&body) {
        Ok(i) => i,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    match s.service.store.get_instance(&instance.uuid).await {
        Ok(Some(_)) => error(
            StatusCode::CONFLICT,
            format!(
                "instance {} exists; PUT /v1/instances/{} replaces it",
                instance.uuid, instance.uuid
            ),
        ),
        Ok(None) => put_record(&s, instance, true).await,
        Err(e) => store_error(e),
    }
}

async fn replace(State(s): State<AdminState>, Path(uuid): Path<String>, body: Bytes) -> Response {
    let instance: Instance = match parse_json(&body) {
        Ok(i) => i,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    if instance.uuid != uuid {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "the record's uuid {} differs from the uuid in the path {uuid}",
                instance.uuid
            ),
        );
    }
    let existed = matches!(s.service.store.get_instance(&uuid).await, Ok(Some(_)));
    put_record(&s, instance, !existed).await
}

async fn show(State(s): State<AdminState>, Path(uuid): Path<String>) -> Response {
    match s.service.store.get_instance(&uuid).await {
        Ok(Some(stored)) => Json(stored.instance).into_response(),
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            format!("no instance with uuid {uuid}"),
        ),
        Err(e) => store_error(e),
    }
}

async fn remove(State(s): State<AdminState>, Path(uuid): Path<String>) -> Response {
    match s.service.store.delete_instance(&uuid).await {
        Ok(true) => {
            s.service.caches.invalidate(&uuid);
            tracing::info!(instance = %uuid, "instance record deleted");
            StatusCode::NO_CONTENT.into_response()
        }
        Ok(false) => error(
            StatusCode::NOT_FOUND,
            format!("no instance with uuid {uuid}"),
        ),
        Err(e) => store_error(e),
    }
}

async fn show_ports(State(s): State<AdminState>, Path(uuid): Path<String>) -> Response {
    match s.service.store.get_instance(&uuid).await {
        Ok(Some(stored)) => Json(stored.instance.ports).into_response(),
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            format!("no instance with uuid {uuid}"),
        ),
        Err(e) => store_error(e),
    }
}

async fn replace_ports(
    State(s): State<AdminState>,
    Path(uuid): Path<String>,
    body: Bytes,
) -> Response {
    let ports: Vec<Port> = match parse_json(&body) {
        Ok(p) => p,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    match s.service.store.get_instance(&uuid).await {
        Ok(Some(stored)) => {
            let mut instance = stored.instance;
            instance.ports = ports;
            put_record(&s, instance, false).await
        }
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            format!("no instance with uuid {uuid}"),
        ),
        Err(e) => store_error(e),
    }
}

async fn show_password(State(s): State<AdminState>, Path(uuid): Path<String>) -> Response {
    match s.service.store.get_instance(&uuid).await {
        Ok(Some(stored)) => Json(json!({"password": stored.password})).into_response(),
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            format!("no instance with uuid {uuid}"),
        ),
        Err(e) => store_error(e),
    }
}

async fn clear_password(State(s): State<AdminState>, Path(uuid): Path<String>) -> Response {
    match s.service.store.clear_password(&uuid).await {
        Ok(true) => {
            s.service.caches.invalidate(&uuid);
            tracing::info!(instance = %uuid, "password cleared");
            StatusCode::NO_CONTENT.into_response()
        }
        Ok(false) => error(
            StatusCode::NOT_FOUND,
            format!("no instance with uuid {uuid}"),
        ),
        Err(e) => store_error(e),
    }
}
