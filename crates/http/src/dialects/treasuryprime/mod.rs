//! Treasury Prime's UX Toolkit access token (seed `treasury-prime-uxt-access-token.md`, SPEC
//! §4.4): `POST /treasuryprime/person/{id}/uxt_access_token` with `{"dpop": "<proof>"}` (or a
//! `DPoP` header), answered with a DPoP-bound person token for an hour. Errors:
//! `{"error"}` ([`error`]). This module only reads the wire format; the proof policy and the
//! mint decide.

mod error;

use crate::auth::{BasicOrBearerApiKey, Caller};
use crate::wire;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{OriginalUri, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Json;
use cardgate_app::dpop::ProofInput;
use cardgate_app::App;
use cardgate_core::tokens::UXT_TOKEN_TTL_SECONDS;
use cardgate_core::PersonId;
pub use error::{TreasuryPrimeError, TreasuryPrimeErrorBody};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The Treasury Prime routes, and Treasury-Prime-shaped answers for every other path under
/// `/treasuryprime`.
pub fn router() -> OpenApiRouter<Arc<App>> {
    let (schemas, paths, methods) = routes!(uxt_access_token);
    OpenApiRouter::new()
        .routes((schemas, paths, methods.fallback(no_route)))
        .route("/treasuryprime/{*rest}", any(no_route))
}

/// The ux-token-person request.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct UxtRequest {
    /// A valid Demonstrating Proof of Possession (DPoP) JSON Web Token (JWT): `htm` `POST`,
    /// `htu` this endpoint's URL.
    #[serde(default)]
    dpop: Option<String>,
}

/// A UX Toolkit access token.
#[derive(Serialize, utoipa::ToSchema)]
pub struct UxtResponse {
    /// An ES256 JWT bound to the proof's key (`cnf.jkt`): the person's cards, redeemed at
    /// `/v1/cards/{id}/…` with `Authorization: DPoP` and a fresh proof carrying `ath`.
    access_token: String,
    /// Seconds: 3600.
    expires_in: u32,
    /// `DPoP`.
    token_type: &'static str,
}

/// Request a UX Toolkit access token for a cardholder. `Authorization: Basic` (`id:secret`)
/// or `Bearer <api_key>`; scope `persons:uxt`; an own-key client only for its own person.
#[utoipa::path(post, path = "/treasuryprime/person/{id}/uxt_access_token", tag = "treasuryprime",
    operation_id = "uxtAccessToken",
    params(("id" = String, Path, format = "uuid", max_length = 36,
        description = "The person ID of the cardholder to generate a token for")),
    request_body(content = UxtRequest, content_type = "application/json"),
    security(("basic" = ["persons:uxt"]), ("bearer" = ["persons:uxt"])),
    responses(
        (status = 200, description = "The ux-token-person", body = UxtResponse),
        (status = 400, description = "A malformed body or person id; `invalid_dpop_proof: …`; `use_dpop_nonce: …` (with `DPoP-Nonce`)", body = TreasuryPrimeErrorBody,
            headers(("DPoP-Nonce" = String))),
        (status = 401, description = "No, unknown or disabled credentials", body = TreasuryPrimeErrorBody,
            headers(("WWW-Authenticate" = String))),
        (status = 403, description = "No `persons:uxt` scope, or another person than an own key's", body = TreasuryPrimeErrorBody),
        (status = 404, description = "No such person here", body = TreasuryPrimeErrorBody),
        (status = 405, description = "Another method", body = TreasuryPrimeErrorBody),
        (status = 413, description = "Body over 64 KiB", body = TreasuryPrimeErrorBody),
        (status = 415, description = "A body that is not `application/json`", body = TreasuryPrimeErrorBody),
        (status = 429, description = "Rate limited", body = TreasuryPrimeErrorBody,
            headers(("Retry-After" = u64))),
        (status = 503, description = "The store cannot answer", body = TreasuryPrimeErrorBody,
            headers(("Retry-After" = u64))),
    ))]
pub async fn uxt_access_token(
    State(app): State<Arc<App>>,
    caller: Caller<TreasuryPrimeError, BasicOrBearerApiKey>,
    path: Result<Path<String>, PathRejection>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, TreasuryPrimeError> {
    let principal = caller.principal;
    let Ok(Path(raw)) = path else {
        return Err(TreasuryPrimeError::bad("id must be a person id"));
    };
    let person = PersonId::parse(&raw)
        .map_err(|_| TreasuryPrimeError::bad("id must be a UUID of at most 36 characters"))?;
    let body = wire::body(body).map_err(|e| match e {
        wire::BodyError::TooLarge => TreasuryPrimeError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "the request body is larger than 64 KiB",
        ),
        wire::BodyError::Unreadable => {
            TreasuryPrimeError::bad("the request body could not be read")
        }
    })?;
    let in_body = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        if wire::content_type(&headers).as_deref() != Some("application/json") {
            return Err(TreasuryPrimeError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Content-Type must be application/json",
            ));
        }
        let req: UxtRequest = serde_json::from_slice(&body).map_err(|e| {
            TreasuryPrimeError::bad(format!(
                "invalid JSON body: {}",
                cardgate_core::json_error_message(&e)
            ))
        })?;
        req.dpop
    };
    // The proof in the body, or in a `DPoP` header; both must then be the same proof.
    let mut input: ProofInput = crate::auth::proof_input_of(&Method::POST, uri.path(), &headers);
    if let Some(proof) = in_body {
        if input.proofs.iter().any(|h| h != &proof) {
            return Err(TreasuryPrimeError::bad(
                "invalid_dpop_proof: the body's dpop and the DPoP header differ",
            ));
        }
        input.proofs = vec![proof];
    }
    let jkt = app
        .dpop()
        .check(&input, &principal.client.tenant_id, None, None)
        .await?;
    let minted = app
        .card_tokens()
        .mint_for_person(&principal, &person, jkt)
        .await?;
    let mut res = Json(UxtResponse {
        access_token: minted.token.expose().to_string(),
        expires_in: UXT_TOKEN_TTL_SECONDS,
        token_type: "DPoP",
    })
    .into_response();
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(res)
}

/// Unknown paths and methods under `/treasuryprime`, in Treasury Prime's shape.
pub async fn no_route(method: Method) -> TreasuryPrimeError {
    if method == Method::POST {
        TreasuryPrimeError::new(StatusCode::NOT_FOUND, "no such resource")
    } else {
        TreasuryPrimeError::new(StatusCode::METHOD_NOT_ALLOWED, "use POST")
    }
}
