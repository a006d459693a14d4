//! The web UI: a page at `/` and its scripts, styles and icon at `/ui/{file}`, all built into
//! the binary from `src/http/ui/` (plain HTML, CSS and JavaScript modules: nothing to build, no
//! Node toolchain). The page logs in with the broker's users and does everything through the
//! management API, with the user's credentials; serving it needs none (it holds no data).
//!
//! Every answer is revalidated (`no-cache`) against an `ETag` of its contents, so that a browser
//! never runs scripts of an older Warren next to a newer page, and a reload costs a 304. The
//! page's content security policy lets it load and call only this origin: the UI makes no
//! request elsewhere (fonts, scripts, styles), and injected markup could not either.

use std::hash::{Hash, Hasher};

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// One file of the UI.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $content_type:expr) => {
        Asset {
            name: $name,
            content_type: $content_type,
            body: include_bytes!(concat!("ui/", $name)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

/// The page itself, served at `/`.
const INDEX: Asset = asset!("index.html", "text/html; charset=utf-8");

/// What the page loads, served at `/ui/{name}`.
const ASSETS: &[Asset] = &[
    asset!("app.css", "text/css; charset=utf-8"),
    asset!("favicon.svg", "image/svg+xml"),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("dom.js", JS),
    asset!("chart.js", JS),
    asset!("list.js", JS),
    asset!("forms.js", JS),
    asset!("overview.js", JS),
    asset!("queues.js", JS),
    asset!("exchanges.js", JS),
    asset!("connections.js", JS),
    asset!("admin.js", JS),
    asset!("nodes.js", JS),
];

/// Only this origin, for everything the page loads or calls; no inline script; not framed
/// (the page holds credentials).
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// `GET /`.
pub async fn index(headers: HeaderMap) -> Response {
    let mut response = serve(&INDEX, &headers);
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// `GET /ui/{name}`.
pub async fn asset(Path(name): Path<String>, headers: HeaderMap) -> Response {
    match ASSETS.iter().find(|a| a.name == name) {
        Some(asset) => serve(asset, &headers),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// A file's entity tag: a hash of its contents (tens of microseconds for the largest file, less
/// than keeping them would be worth).
fn etag(asset: &Asset) -> String {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    asset.body.hash(&mut hasher);
    format!("\"{:016x}\"", hasher.finish())
}

fn serve(asset: &Asset, headers: &HeaderMap) -> Response {
    let tag = etag(asset);
    let cached = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag || t.trim() == "*"));
    let common = [
        (header::CACHE_CONTROL, "no-cache".to_owned()),
        (header::ETAG, tag),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_owned()),
    ];
    if cached {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    (
        common,
        [(header::CONTENT_TYPE, asset.content_type)],
        asset.body,
    )
        .into_response()
}
