//! `GET` and `POST /api/definitions` (and per vhost): the broker's definitions in RabbitMQ
//! 3.10's format, and such a file imported (`crate::definitions` has the format, the export and
//! the import). Administrators only, as in RabbitMQ. An import is checked whole before anything
//! is applied: a bad entry is a 400 naming it, and nothing changes.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::admin::Admin;
use super::api::{ApiError, Shared};
use crate::definitions::export;
use crate::definitions::import::{import, parse, ImportError, Scope};

/// `?download=NAME` asks for the file as an attachment, as the web UI does.
fn download(uri: &Uri, body: serde_json::Value) -> Response {
    let name = uri.query().unwrap_or_default().split('&').find_map(|pair| {
        pair.strip_prefix("download=")
            .filter(|n| !n.is_empty())
            .map(|n| n.replace(['"', '\r', '\n'], ""))
    });
    match name {
        Some(name) => (
            [(
                header::CONTENT_DISPOSITION,
                format!("attachment; filename={name}"),
            )],
            Json(body),
        )
            .into_response(),
        None => Json(body).into_response(),
    }
}

pub async fn export_all(State(broker): Shared, _admin: Admin, uri: Uri) -> Response {
    download(&uri, export::export_all(&broker))
}

/// `GET /api/definitions/{vhost}`: RabbitMQ answers a missing vhost with a 400.
pub async fn export_vhost(
    State(broker): Shared,
    _admin: Admin,
    Path(name): Path<String>,
    uri: Uri,
) -> Result<Response, ApiError> {
    let v = broker
        .vhost(&name)
        .ok_or_else(|| ApiError::BadRequest(json!("vhost_not_found")))?;
    Ok(download(&uri, export::export_vhost(&broker, &v)))
}

fn import_error(e: ImportError) -> ApiError {
    tracing::warn!("definitions import refused: {e}");
    if e.is_internal() {
        ApiError::Internal(e.to_string())
    } else {
        ApiError::BadRequest(e.reason())
    }
}

/// `POST /api/definitions`: 204 once imported.
pub async fn import_all(
    State(broker): Shared,
    _admin: Admin,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let defs = parse(&body).map_err(import_error)?;
    import(&broker, &defs, Scope::All)
        .await
        .map_err(import_error)?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/definitions/{vhost}`: the file's queues, exchanges and bindings, into that vhost.
pub async fn import_vhost(
    State(broker): Shared,
    _admin: Admin,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let defs = parse(&body).map_err(import_error)?;
    if broker.vhost(&name).is_none() {
        return Err(ApiError::NotFoundBecause("vhost_not_found".into()));
    }
    import(&broker, &defs, Scope::Vhost(&name))
        .await
        .map_err(import_error)?;
    Ok(StatusCode::NO_CONTENT)
}
