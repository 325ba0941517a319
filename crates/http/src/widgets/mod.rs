//! Embeddable widget pages (SPEC §5): `/widgets/v1/{reveal,get-pin,set-pin,activate}` for an
//! iframe, their script and style, and `/widgets/v1/embed.js` that mounts them. The pages are
//! static (compiled into the binary); the card token travels in the URL fragment and the page
//! redeems it with a header at the native redemption endpoints. Each page is framed only by
//! the origin the host names, if it is one of the tenant's `widget_origins`.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use cardgate_app::App;
use cardgate_core::TenantId;
use std::sync::Arc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

const PAGE: &str = include_str!("assets/page.html");
const WIDGET_JS: &str = include_str!("assets/widget.js");
const WIDGET_CSS: &str = include_str!("assets/widget.css");
const EMBED_JS: &str = include_str!("assets/embed.js");

pub fn router() -> OpenApiRouter<Arc<App>> {
    OpenApiRouter::new()
        .routes(routes!(page))
        .routes(routes!(embed_js))
        .routes(routes!(widget_js))
        .routes(routes!(widget_css))
}

/// The widgets, by the path segment that names them: `(segment, title, operation)`.
const WIDGETS: [(&str, &str); 4] = [
    ("reveal", "Card details"),
    ("get-pin", "Card PIN"),
    ("set-pin", "Set your card PIN"),
    ("activate", "Activate your card"),
];

/// Headers every widget answer carries (SPEC §5): nothing cached, no referrer, and a CSP
/// that allows only this server's script and style, framed by `ancestors`.
fn protected(
    status: StatusCode,
    content_type: &'static str,
    body: String,
    ancestors: &str,
) -> Response {
    let csp = format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
         img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors {ancestors}"
    );
    let mut res = (status, body).into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    if let Ok(v) = HeaderValue::from_str(&csp) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    res
}

fn escape(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '&' => "&amp;".into(),
            '<' => "&lt;".into(),
            '>' => "&gt;".into(),
            '"' => "&quot;".into(),
            '\'' => "&#39;".into(),
            c => c.to_string(),
        })
        .collect()
}

/// A page: the widget's markup for `widget`, or a message in its place.
fn render(widget: &str, title: &str, origin: &str, message: Option<&str>) -> String {
    PAGE.replace("{{widget}}", &escape(widget))
        .replace("{{title}}", &escape(title))
        .replace("{{origin}}", &escape(origin))
        .replace("{{message}}", &escape(message.unwrap_or("")))
        .replace(
            "{{state}}",
            if message.is_some() {
                "refused"
            } else {
                "loading"
            },
        )
}

fn refused(status: StatusCode, message: &str) -> Response {
    protected(
        status,
        "text/html; charset=utf-8",
        render("none", "Card widget", "", Some(message)),
        "'none'",
    )
}

/// A widget page for an iframe. The host names its own origin and the tenant (the `tenant`
/// of a Synctera widget token); the token and card come in the fragment
/// (`#token=…&card=…`), which never reaches the server.
#[utoipa::path(get, path = "/widgets/v1/{widget}", tag = "widgets",
    params(
        ("widget" = String, Path, pattern = "^(reveal|get-pin|set-pin|activate)$",
            description = "`reveal`, `get-pin`, `set-pin` or `activate`"),
        ("tenant" = String, Query, description = "The tenant whose card the token is for"),
        ("origin" = String, Query, description = "The host page's origin: one of the tenant's `widget_origins`"),
    ),
    responses(
        (status = 200, description = "The page", content_type = "text/html", body = String,
            headers(("Content-Security-Policy" = String), ("Cache-Control" = String), ("Referrer-Policy" = String))),
        (status = 400, description = "`tenant` or `origin` missing or malformed", content_type = "text/html", body = String),
        (status = 403, description = "The origin is not one of the tenant's `widget_origins`", content_type = "text/html", body = String),
        (status = 404, description = "No such widget or tenant", content_type = "text/html", body = String),
    ))]
pub async fn page(
    State(app): State<Arc<App>>,
    path: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
) -> Response {
    let Ok(Path(name)) = path else {
        return refused(StatusCode::NOT_FOUND, "There is no such widget.");
    };
    let Some((widget, title)) = WIDGETS.iter().find(|(w, _)| *w == name) else {
        return refused(StatusCode::NOT_FOUND, "There is no such widget.");
    };
    let Ok(params) =
        crate::wire::params(query.unwrap_or_default().as_bytes(), &["tenant", "origin"])
    else {
        return refused(StatusCode::BAD_REQUEST, "This widget link is malformed.");
    };
    let (Some(tenant), Some(origin)) = (params.get("tenant"), params.get("origin")) else {
        return refused(
            StatusCode::BAD_REQUEST,
            "This widget link is incomplete: it names no tenant or origin.",
        );
    };
    let Ok(tenant_id) = TenantId::parse(tenant) else {
        return refused(StatusCode::BAD_REQUEST, "This widget link is malformed.");
    };
    let Ok(t) = app.snapshot().tenant(&tenant_id).cloned() else {
        return refused(StatusCode::NOT_FOUND, "This widget link is not valid.");
    };
    if !t.settings.widget_origins.iter().any(|o| o == origin) {
        return refused(StatusCode::FORBIDDEN, "This page may not show this widget.");
    }
    // The origin is one the tenant listed; a value with a quote or space could not be.
    if origin
        .bytes()
        .any(|b| b.is_ascii_whitespace() || b == b';' || b == b'\'' || b == b',')
    {
        return refused(StatusCode::FORBIDDEN, "This page may not show this widget.");
    }
    protected(
        StatusCode::OK,
        "text/html; charset=utf-8",
        render(widget, title, origin, None),
        origin,
    )
}

/// `embed.js`: `CardgateWidgets.mount(element, {type, token, card, tenant, …})`.
#[utoipa::path(get, path = "/widgets/v1/embed.js", tag = "widgets",
    responses((status = 200, description = "The embedding script", content_type = "text/javascript", body = String)))]
pub async fn embed_js() -> Response {
    let mut res = protected(
        StatusCode::OK,
        "text/javascript; charset=utf-8",
        EMBED_JS.into(),
        "'none'",
    );
    // A host page loads it from another origin.
    res.headers_mut().insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("cross-origin"),
    );
    res
}

/// The widget pages' script.
#[utoipa::path(get, path = "/widgets/v1/widget.js", tag = "widgets",
    responses((status = 200, description = "The widget pages' script", content_type = "text/javascript", body = String)))]
pub async fn widget_js() -> Response {
    protected(
        StatusCode::OK,
        "text/javascript; charset=utf-8",
        WIDGET_JS.into(),
        "'none'",
    )
}

/// The widget pages' style.
#[utoipa::path(get, path = "/widgets/v1/widget.css", tag = "widgets",
    responses((status = 200, description = "The widget pages' style", content_type = "text/css", body = String)))]
pub async fn widget_css() -> Response {
    protected(
        StatusCode::OK,
        "text/css; charset=utf-8",
        WIDGET_CSS.into(),
        "'none'",
    )
}
