//! DPoP policy (RFC 9449): what a proof must say about the request it comes with — method,
//! URL under `--public-url` (RFC 3986 normalised, no query or fragment), a fresh `iat`, `ath`
//! for a presented token, the bound key, a tenant's server nonce (§8) — and that its `jti` is
//! claimed once per key within the window, through the store's claim-once guard so that every
//! replica shares the replay store; a store that cannot answer fails the request closed (503).

use crate::{facade, App, AppError};
use cardgate_core::TenantId;
use cardgate_jose::digest::{ct_eq, HmacKey};
use cardgate_jose::dpop::{self, Proof};
use cardgate_store::{ClaimKey, Guard, WriteOutcome, WriteSet};
use std::sync::atomic::Ordering;

facade!(
    /// DPoP proofs: checked against their request, and claimed once.
    Dpop,
    dpop
);

/// Why a proof whose `jti` was claimed before is refused.
pub const REPLAYED: &str = "the proof was used before (its jti is replayed)";
/// The claim-once namespace of proofs' `jti`s.
pub const JTI_NAMESPACE: &str = "dpop-jti";
/// How long one server nonce step lasts; a nonce of this step or the previous one is fresh.
pub const NONCE_STEP_SECONDS: i64 = 300;
/// Defaults of `--dpop-iat-window-seconds` and `--dpop-clock-skew-seconds`.
pub const DEFAULT_IAT_WINDOW_SECONDS: i64 = 60;
pub const DEFAULT_CLOCK_SKEW_SECONDS: i64 = 10;

/// Why a request's DPoP does not hold (RFC 9449 §5, §7.1, §8).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DpopError {
    /// `invalid_dpop_proof`: a proof missing, malformed, for another request, stale or replayed.
    #[error("{0}")]
    InvalidProof(&'static str),
    /// `use_dpop_nonce`: the tenant asks for a server nonce and the proof has no fresh one.
    #[error("a fresh DPoP-Nonce is required")]
    UseNonce(String),
    /// `invalid_token`: the proof's key is not the one the token is bound to.
    #[error("the DPoP proof's key is not the one the token is bound to")]
    KeyMismatch,
    /// `invalid_token`: a DPoP-bound token presented as `Bearer` (RFC 9449 §7.2).
    #[error("the token is DPoP-bound: present it with Authorization: DPoP and a proof")]
    BoundAsBearer,
    /// `invalid_token`: a token bound to no key presented with the `DPoP` scheme.
    #[error("the token is not DPoP-bound: present it as Bearer")]
    NotBound,
}

impl From<DpopError> for AppError {
    fn from(e: DpopError) -> Self {
        AppError::Dpop(e)
    }
}

/// What a request carried for DPoP: its `DPoP` proofs (header values, or a dialect's body
/// field), its method and path. Debug hides the proofs.
#[derive(Clone, Default)]
pub struct ProofInput {
    pub proofs: Vec<String>,
    pub method: String,
    /// The request's path (no query), as the server received it.
    pub path: String,
}

impl std::fmt::Debug for ProofInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProofInput")
            .field("proofs", &self.proofs.len())
            .field("method", &self.method)
            .field("path", &self.path)
            .finish()
    }
}

/// How a token was presented: `Bearer`, or `DPoP` with the request's proofs.
#[derive(Clone, Debug)]
pub enum Scheme {
    Bearer,
    DPoP(ProofInput),
}

/// A proof that holds for its request; `claim` is its `jti`'s claim, still to be committed
/// ([`Dpop::claim`], or as a precondition of the request's own write set).
#[derive(Debug)]
pub struct CheckedProof {
    /// The RFC 7638 thumbprint of the proof's key.
    pub jkt: String,
    pub claim: Guard,
}

/// The normal form of an absolute http(s) URL for `htu` comparison (RFC 9449 §4.3 point 9):
/// RFC 3986 §6.2.2 syntax-based normalisation (case, percent-encoding, dot segments) and
/// §6.2.3 scheme-based (default port, empty path), without query and fragment.
pub fn normalise_htu(raw: &str) -> Option<String> {
    let mut url = url::Url::parse(raw).ok()?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return None;
    }
    url.set_query(None);
    url.set_fragment(None);
    let path = normalise_percent(url.path());
    url.set_path(&path);
    Some(url.as_str().to_string())
}

/// Upper-cases percent-encodings' hex digits and decodes those of unreserved characters.
fn normalise_percent(path: &str) -> String {
    let b = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && b[i + 1].is_ascii_hexdigit()
            && b[i + 2].is_ascii_hexdigit()
        {
            let hex = &path[i + 1..i + 3];
            if let Ok(v) = u8::from_str_radix(hex, 16) {
                let c = v as char;
                if c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~') {
                    out.push(c);
                } else {
                    out.push('%');
                    out.push_str(&hex.to_ascii_uppercase());
                }
                i += 3;
                continue;
            }
        }
        out.push(b[i] as char);
        i += 1;
    }
    out
}

impl App {
    /// Sets the `iat` window (how old a proof may be) and the clock skew allowed either way.
    pub fn set_dpop_window(&self, window_seconds: i64, skew_seconds: i64) {
        self.dpop_window_s
            .store(window_seconds.max(1), Ordering::Relaxed);
        self.dpop_skew_s
            .store(skew_seconds.max(0), Ordering::Relaxed);
    }
}

impl Dpop<'_> {
    fn nonce_key(&self) -> &HmacKey {
        &self.dpop_nonce_key
    }

    /// The tenant's server nonce for time step `step` (stateless: an HMAC under a key derived
    /// from the master key, so every replica computes the same).
    fn nonce_at(&self, tenant: &TenantId, step: i64) -> String {
        let mut data = step.to_be_bytes().to_vec();
        data.extend_from_slice(tenant.as_str().as_bytes());
        let mac = self.nonce_key().sign(&data);
        let mut raw = step.to_be_bytes().to_vec();
        raw.extend_from_slice(&mac[..18]);
        cardgate_jose::b64::encode(&raw)
    }

    /// A fresh nonce for `tenant`, for a `DPoP-Nonce` header.
    pub fn nonce(&self, tenant: &TenantId) -> String {
        self.nonce_at(tenant, self.now_ms() / 1000 / NONCE_STEP_SECONDS)
    }

    /// Whether `tenant` asks every proof for a server nonce.
    pub fn nonce_required(&self, tenant: &TenantId) -> bool {
        self.snapshot()
            .tenants
            .get(tenant)
            .is_some_and(|t| t.settings.dpop_nonce_required)
    }

    fn nonce_fresh(&self, tenant: &TenantId, nonce: &str) -> bool {
        let step = self.now_ms() / 1000 / NONCE_STEP_SECONDS;
        [step, step - 1]
            .iter()
            .any(|s| ct_eq(self.nonce_at(tenant, *s).as_bytes(), nonce.as_bytes()))
    }

    /// Checks a request's proof (RFC 9449 §4.3) for `tenant`: one proof, its form and
    /// signature, `htm` and `htu` this request's, `iat` within the window, `ath` of `token`
    /// when one is presented, the key `bound` when the token is bound, the tenant's nonce
    /// when it asks for one. The `jti` is not claimed yet.
    pub fn verify(
        &self,
        input: &ProofInput,
        tenant: &TenantId,
        token: Option<&str>,
        bound: Option<&str>,
    ) -> Result<CheckedProof, DpopError> {
        use DpopError::InvalidProof;
        let proof: Proof = match input.proofs.as_slice() {
            [] => return Err(InvalidProof("a DPoP proof is required")),
            [one] => dpop::verify(one).map_err(|e| {
                InvalidProof(match e {
                    cardgate_jose::JoseError::Malformed(m) => m,
                    cardgate_jose::JoseError::BadSignature => {
                        "the proof's signature does not verify"
                    }
                    cardgate_jose::JoseError::Unsupported(_) => {
                        "alg must be one of ES256, ES384, EdDSA, RS256, PS256"
                    }
                    _ => "the proof is not valid",
                })
            })?,
            _ => return Err(InvalidProof("more than one DPoP proof")),
        };
        if proof.htm != input.method {
            return Err(InvalidProof("htm is not this request's method"));
        }
        let expected = normalise_htu(&format!(
            "{}{}",
            self.settings.public_url.trim_end_matches('/'),
            input.path
        ));
        if expected.is_none() || normalise_htu(&proof.htu) != expected {
            return Err(InvalidProof("htu is not this request's URL"));
        }
        let now_s = self.now_ms() / 1000;
        let window = self.dpop_window_s.load(Ordering::Relaxed);
        let skew = self.dpop_skew_s.load(Ordering::Relaxed);
        if proof.iat > now_s + skew {
            return Err(InvalidProof("iat is in the future"));
        }
        if proof.iat < now_s - window - skew {
            return Err(InvalidProof("iat is too old"));
        }
        if let Some(token) = token {
            match &proof.ath {
                None => return Err(InvalidProof("ath is required with an access token")),
                Some(a) if !ct_eq(a.as_bytes(), dpop::ath(token).as_bytes()) => {
                    return Err(InvalidProof("ath is not the presented token's hash"))
                }
                Some(_) => {}
            }
        }
        if let Some(bound) = bound {
            if !ct_eq(bound.as_bytes(), proof.jkt.as_bytes()) {
                return Err(DpopError::KeyMismatch);
            }
        }
        if self.nonce_required(tenant) {
            let fresh = proof
                .nonce
                .as_deref()
                .is_some_and(|n| self.nonce_fresh(tenant, n));
            if !fresh {
                return Err(DpopError::UseNonce(self.nonce(tenant)));
            }
        }
        let now_ms = self.now_ms();
        let claim = Guard::Claim {
            namespace: JTI_NAMESPACE,
            key: ClaimKey::of(&[proof.jkt.as_bytes(), proof.jti.as_bytes()]),
            fingerprint: Vec::new(),
            value: None,
            now_ms,
            // Past this, the proof's iat is out of the window anyway.
            expires_at_ms: (proof.iat + window + 2 * skew + 1) * 1000,
        };
        Ok(CheckedProof {
            jkt: proof.jkt,
            claim,
        })
    }

    /// Claims a checked proof's `jti` on its own: a proof seen before (on any replica) is
    /// `invalid_dpop_proof`; a store that cannot answer is 503.
    pub async fn claim(&self, proof: CheckedProof) -> Result<String, AppError> {
        let set = WriteSet::guarded(vec![proof.claim], vec![], vec![]);
        match self.commit(set).await? {
            WriteOutcome::Applied => Ok(proof.jkt),
            WriteOutcome::Taken(_) => Err(DpopError::InvalidProof(REPLAYED).into()),
            other => Err(crate::cards::unexpected(&other)),
        }
    }

    /// [`Dpop::verify`] and [`Dpop::claim`]: the bound key's thumbprint.
    pub async fn check(
        &self,
        input: &ProofInput,
        tenant: &TenantId,
        token: Option<&str>,
        bound: Option<&str>,
    ) -> Result<String, AppError> {
        let checked = self.verify(input, tenant, token, bound)?;
        self.claim(checked).await
    }

    /// Deletes expired `jti` claims (and every other expired claim), a bounded batch.
    pub async fn purge(&self) -> Result<u64, AppError> {
        self.read(self.store.purge_expired_claims(self.now_ms(), 10_000))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::normalise_htu;

    #[test]
    fn htu_is_compared_after_rfc_3986_normalisation() {
        let n = |s: &str| normalise_htu(s);
        let want = n("https://cardgate.example/v1/cards/a/details");
        for same in [
            "HTTPS://CardGate.Example:443/v1/cards/a/details",
            "https://cardgate.example/v1/./cards/x/../a/details?q=1#f",
            "https://cardgate.example/v1/cards/%61/details",
        ] {
            assert_eq!(n(same), want, "{same}");
        }
        assert_ne!(n("https://cardgate.example:8443/v1/cards/a/details"), want);
        assert_ne!(n("http://cardgate.example/v1/cards/a/details"), want);
        assert_eq!(n("https://h"), n("https://h/"));
        assert_eq!(n("ftp://h/x"), None);
        assert_eq!(n("/relative"), None);
        assert_eq!(n("https://h/a%2fb"), n("https://h/a%2Fb"));
    }
}
