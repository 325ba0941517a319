//! DPoP (RFC 9449) scenarios: `token-dpop` (a DPoP-bound access token per request) and
//! `card-pair-dpop` (a bound card token minted with a proof, redeemed with `Authorization:
//! DPoP` and a proof carrying `ath`), each request with a fresh ES256 proof signed here with
//! ring; and `es256_verify_micros`, the cost of one ES256 verification on this machine.

use bytes::Bytes;
use hyper::header::{HeaderName, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use hyper::Method;
use ring::rand::SystemRandom;
use ring::signature::{
    EcdsaKeyPair, KeyPair, UnparsedPublicKey, ECDSA_P256_SHA256_FIXED,
    ECDSA_P256_SHA256_FIXED_SIGNING,
};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use super::{card, oauth, Setup, Step};
use crate::encode::path_segment;
use crate::http::{hv, ReqSpec};

fn b64url(input: &[u8]) -> String {
    crate::encode::base64(input)
        .trim_end_matches('=')
        .replace('+', "-")
        .replace('/', "_")
}

/// A device key and what every proof of it repeats.
pub struct Prover {
    pair: EcdsaKeyPair,
    rng: SystemRandom,
    header_b64: String,
    run: String,
    counter: AtomicU64,
}

impl Prover {
    pub fn new() -> Result<Self, String> {
        let rng = SystemRandom::new();
        let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| "cannot generate a P-256 key".to_string())?;
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, doc.as_ref(), &rng)
            .map_err(|_| "cannot load the P-256 key".to_string())?;
        let point = pair.public_key().as_ref();
        let header = format!(
            r#"{{"typ":"dpop+jwt","alg":"ES256","jwk":{{"kty":"EC","crv":"P-256","x":"{}","y":"{}"}}}}"#,
            b64url(&point[1..33]),
            b64url(&point[33..65])
        );
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        Ok(Prover {
            pair,
            rng,
            header_b64: b64url(header.as_bytes()),
            run: format!("{nanos:x}"),
            counter: AtomicU64::new(0),
        })
    }

    /// A fresh proof for `method` on `url`, with `ath` of `token` when one is presented.
    pub fn proof(&self, method: &str, url: &str, token: Option<&str>) -> Result<String, String> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let iat = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let ath = token.map_or(String::new(), |t| {
            let d = ring::digest::digest(&ring::digest::SHA256, t.as_bytes());
            format!(r#","ath":"{}""#, b64url(d.as_ref()))
        });
        let claims = format!(
            r#"{{"jti":"{}-{n}","htm":"{method}","htu":"{url}","iat":{iat}{ath}}}"#,
            self.run
        );
        let input = format!("{}.{}", self.header_b64, b64url(claims.as_bytes()));
        let sig = self
            .pair
            .sign(&self.rng, input.as_bytes())
            .map_err(|_| "cannot sign".to_string())?;
        Ok(format!("{input}.{}", b64url(sig.as_ref())))
    }
}

fn dpop_header(v: String) -> Result<(HeaderName, HeaderValue), String> {
    Ok((HeaderName::from_static("dpop"), hv(&v)?))
}

/// The absolute URL of `path` as the server sees it (its default `--public-url`).
fn url(setup: &Setup<'_>, path: &str) -> String {
    format!("http://{}{}", setup.cfg.authority, setup.path(path))
}

/// `POST /oauth2/token` with a fresh proof → 200 `{token_type: "DPoP"}`.
pub(super) async fn token(setup: &Setup<'_>) -> Result<Vec<Step>, String> {
    let b = setup.basic()?;
    let prover = Arc::new(Prover::new()?);
    let htu = url(setup, "/oauth2/token");
    let step = Step::new("request", oauth::token_request(setup, &b)?, |status, body| {
        oauth::check_token_response(status, body).map(|_| None)
    })
    .with_headers(move |_| Ok(vec![dpop_header(prover.proof("POST", &htu, None)?)?]));
    setup.try_once(&step, None, "POST /oauth2/token (DPoP)").await?;
    Ok(vec![step])
}

/// `POST /v1/cards/{id}/tokens` with a proof → a bound card token, then
/// `GET /v1/cards/{id}/details` with `Authorization: DPoP` and a proof with `ath`.
pub(super) async fn pair(setup: &Setup<'_>) -> Result<Vec<Step>, String> {
    let cfg = setup.cfg;
    let b = setup.basic()?;
    let card_id = path_segment(cfg.card_id.as_deref().unwrap_or_default());
    let prover = Arc::new(Prover::new()?);
    let mint_path = format!("/v1/cards/{card_id}/tokens");
    let details_path = format!("/v1/cards/{card_id}/details");
    let mint = ReqSpec::new(
        Method::POST,
        &setup.path(&mint_path),
        vec![
            (AUTHORIZATION, b),
            (CONTENT_TYPE, HeaderValue::from_static("application/json")),
            (ACCEPT, HeaderValue::from_static("application/json")),
        ],
        Bytes::from(cfg.mint_body.clone()),
    )?;
    let redeem = ReqSpec::new(
        Method::GET,
        &setup.path(&details_path),
        vec![(ACCEPT, HeaderValue::from_static("application/json"))],
        Bytes::new(),
    )?;
    let (p1, mint_url) = (prover.clone(), url(setup, &mint_path));
    let mint = Step::new("mint", mint, |status, body| {
        card::check_mint_response(status, body).map(Some)
    })
    .with_headers(move |_| Ok(vec![dpop_header(p1.proof("POST", &mint_url, None)?)?]));
    let redeem_url = url(setup, &details_path);
    let redeem = Step::new("redeem", redeem, |status, body| {
        card::check_details_response(status, body).map(|_| None)
    })
    .with_headers(move |card_token| {
        let tok = card_token.ok_or("no card token to redeem")?;
        Ok(vec![
            (AUTHORIZATION, hv(&format!("DPoP {tok}"))?),
            dpop_header(prover.proof("GET", &redeem_url, Some(tok))?)?,
        ])
    });
    let tok = setup
        .try_once(&mint, None, &format!("POST {mint_path} (DPoP)"))
        .await?;
    setup
        .try_once(&redeem, tok.as_deref(), &format!("GET {details_path} (DPoP)"))
        .await?;
    Ok(vec![mint, redeem])
}

/// Microseconds per ES256 verification (ring, one thread): the median of five 0.4 s rounds.
pub fn es256_verify_micros() -> Result<f64, String> {
    let prover = Prover::new()?;
    let proof = prover.proof("GET", "http://127.0.0.1/x", Some("token"))?;
    let (input, sig) = proof.rsplit_once('.').ok_or("no signature")?;
    let sig = crate::encode::base64_decode_url(sig).ok_or("signature is not base64url")?;
    let key = UnparsedPublicKey::new(
        &ECDSA_P256_SHA256_FIXED,
        prover.pair.public_key().as_ref().to_vec(),
    );
    let mut rounds = Vec::new();
    for _ in 0..5 {
        let start = Instant::now();
        let mut n = 0u64;
        while start.elapsed().as_millis() < 400 {
            key.verify(input.as_bytes(), &sig)
                .map_err(|_| "a proof does not verify".to_string())?;
            n += 1;
        }
        rounds.push(start.elapsed().as_secs_f64() * 1e6 / n as f64);
    }
    rounds.sort_by(f64::total_cmp);
    Ok(rounds[2])
}
