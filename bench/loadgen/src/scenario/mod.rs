//! Scenarios: the steps of one iteration (requests and response checks), built and tried once before any load.

mod bankezy;
mod card;
pub mod dpop;
mod oauth;
mod widget;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::HeaderValue;
use hyper::{Method, Request, StatusCode};
use serde_json::Value;

use crate::config::Config;
use crate::encode::{base64, snippet};
use crate::http::{hv, one, Fail, Header, ReqSpec};

/// A load scenario. Adding one takes a variant here with its `--scenario` names in
/// [`Scenario::from_name`] (and in `USAGE`), and one request builder returning its [`Step`]s,
/// called from [`build_ctx`]; the workers, the report and the summary work from the steps alone.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Scenario {
    Healthz,
    Token,
    Introspect,
    CardPair,
    /// Native card-token mint with `ApiKey` (the widget scenarios' reference).
    CardMint,
    Widget,
    WidgetFreshKey,
    WidgetRetryKey,
    TokenDpop,
    CardPairDpop,
    MfaSession,
    CardReveal,
    BankezyToken,
    BankezyReveal,
}

impl Scenario {
    /// The scenario a `--scenario` name selects.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "healthz" => Some(Scenario::Healthz),
            "token-jwt" | "token-opaque" => Some(Scenario::Token),
            "introspect-jwt" | "introspect-opaque" => Some(Scenario::Introspect),
            "card-pair" => Some(Scenario::CardPair),
            "card-mint" => Some(Scenario::CardMint),
            "widget-token" => Some(Scenario::Widget),
            "widget-token-fresh-key" => Some(Scenario::WidgetFreshKey),
            "widget-token-retry-key" => Some(Scenario::WidgetRetryKey),
            "token-dpop" => Some(Scenario::TokenDpop),
            "card-pair-dpop" => Some(Scenario::CardPairDpop),
            "mfa-session" => Some(Scenario::MfaSession),
            "card-reveal" => Some(Scenario::CardReveal),
            "bankezy-token" => Some(Scenario::BankezyToken),
            "bankezy-reveal" => Some(Scenario::BankezyReveal),
            _ => None,
        }
    }
}

/// Judges a step's response; `Ok` carries what the next step needs (the card token a redeem sends).
pub type Check = fn(StatusCode, &[u8]) -> Result<Option<String>, Fail>;

/// Headers a step adds on every iteration, given what the previous step's check returned
/// (`None` for the first step).
pub type PerIteration = Box<dyn Fn(Option<&str>) -> Result<Vec<Header>, String> + Send + Sync>;

/// One HTTP exchange of an iteration; all steps of an iteration share one connection.
pub struct Step {
    /// `request` in one-step scenarios. In multi-step ones (reported as pairs) it also names the
    /// step's own figures: `mint_p50_ms`, `mint_errors`, the `mint` row of the summary.
    pub name: &'static str,
    spec: ReqSpec,
    per_iteration: Option<PerIteration>,
    /// Bodies sent in turn, one per iteration, instead of the spec's (bankezy-token).
    bodies: Option<std::sync::Arc<Bodies>>,
    check: Check,
}

/// Request bodies taken in turn by every connection; wraps around when used up.
pub struct Bodies {
    all: Vec<Bytes>,
    next: std::sync::atomic::AtomicUsize,
}

impl Bodies {
    pub fn new(all: Vec<Bytes>, first: usize) -> Self {
        Bodies {
            all,
            next: std::sync::atomic::AtomicUsize::new(first),
        }
    }

    fn take(&self) -> Bytes {
        let i = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.all[i % self.all.len()].clone()
    }
}

impl Step {
    pub fn new(name: &'static str, spec: ReqSpec, check: Check) -> Self {
        Step {
            name,
            spec,
            per_iteration: None,
            bodies: None,
            check,
        }
    }

    pub fn with_bodies(mut self, bodies: Bodies) -> Self {
        self.bodies = Some(std::sync::Arc::new(bodies));
        self
    }

    pub fn with_headers(
        mut self,
        f: impl Fn(Option<&str>) -> Result<Vec<Header>, String> + Send + Sync + 'static,
    ) -> Self {
        self.per_iteration = Some(Box::new(f));
        self
    }

    fn extra_headers(&self, carried: Option<&str>) -> Result<Vec<Header>, String> {
        match &self.per_iteration {
            Some(f) => f(carried),
            None => Ok(Vec::new()),
        }
    }

    /// This iteration's request, given what the previous step returned.
    pub fn request(
        &self,
        host: &HeaderValue,
        carried: Option<&str>,
    ) -> Result<Request<Full<Bytes>>, Fail> {
        let extra = self.extra_headers(carried).map_err(Fail::Invalid)?;
        match &self.bodies {
            Some(b) => self.spec.build_with_body(host, extra, b.take()),
            None => self.spec.build(host, extra),
        }
    }

    pub fn check(&self, status: StatusCode, body: &[u8]) -> Result<Option<String>, Fail> {
        (self.check)(status, body)
    }
}

/// What every worker shares: where to connect and the steps of one iteration.
pub struct Ctx {
    pub authority: String,
    pub host: HeaderValue,
    /// One step, or two for a pair (card-pair: mint, then redeem).
    pub steps: Vec<Step>,
    pub req_timeout: Duration,
}

impl Ctx {
    /// An iteration of more than one step is reported per pair, with figures per step.
    pub fn is_pair(&self) -> bool {
        self.steps.len() > 1
    }
}

/// What the request builders work from.
struct Setup<'a> {
    cfg: &'a Config,
    host: HeaderValue,
    basic: Option<HeaderValue>,
}

impl Setup<'_> {
    /// `path` under the URL's base path.
    fn path(&self, path: &str) -> String {
        format!("{}{path}", self.cfg.base_path)
    }

    fn basic(&self) -> Result<HeaderValue, String> {
        self.basic
            .clone()
            .ok_or_else(|| "client credentials required".to_string())
    }

    /// Runs `step` once on a fresh connection (the preflight): what its check returns, or why
    /// not — a wrong response prefixed with `label`, e.g. `POST /oauth2/token: HTTP 401: …`.
    async fn try_once(
        &self,
        step: &Step,
        carried: Option<&str>,
        label: &str,
    ) -> Result<Option<String>, String> {
        let extra = step.extra_headers(carried)?;
        let (status, body) = one(&self.cfg.authority, &self.host, &step.spec, extra).await?;
        step.check(status, &body)
            .map_err(|f| format!("{label}: {}", f.describe()))
    }
}

/// The scenario's steps, each tried once (aborts with the server's answer if one fails).
pub async fn build_ctx(cfg: &Config) -> Result<Ctx, String> {
    let host = hv(&cfg.authority)?;
    let basic = match (&cfg.client_id, &cfg.client_secret) {
        (Some(id), Some(secret)) => Some(hv(&format!(
            "Basic {}",
            base64(format!("{id}:{secret}").as_bytes())
        ))?),
        _ => None,
    };
    let setup = Setup { cfg, host, basic };
    let steps = match cfg.scenario {
        Scenario::Healthz => healthz(&setup).await?,
        Scenario::Token => oauth::token(&setup).await?,
        Scenario::Introspect => oauth::introspect(&setup).await?,
        Scenario::CardPair => card::pair(&setup).await?,
        Scenario::CardMint => widget::mint(&setup).await?,
        s @ (Scenario::Widget | Scenario::WidgetFreshKey | Scenario::WidgetRetryKey) => {
            widget::widget(&setup, s).await?
        }
        Scenario::TokenDpop => dpop::token(&setup).await?,
        Scenario::CardPairDpop => dpop::pair(&setup).await?,
        Scenario::MfaSession => card::mfa_session(&setup).await?,
        Scenario::CardReveal => card::reveal(&setup).await?,
        Scenario::BankezyToken => bankezy::token(&setup).await?,
        Scenario::BankezyReveal => bankezy::reveal(&setup).await?,
    };
    Ok(Ctx {
        authority: cfg.authority.clone(),
        host: setup.host,
        steps,
        req_timeout: cfg.req_timeout,
    })
}

/// `GET /healthz` → 2xx: the baseline every ratio is taken against.
async fn healthz(setup: &Setup<'_>) -> Result<Vec<Step>, String> {
    let spec = ReqSpec::new(Method::GET, &setup.path("/healthz"), vec![], Bytes::new())?;
    let step = Step::new("request", spec, |status, body| {
        expect_2xx(status, body).map(|_| None)
    });
    setup.try_once(&step, None, "GET /healthz").await?;
    Ok(vec![step])
}

// ---- response checks shared by the scenarios

fn expect_2xx(status: StatusCode, body: &[u8]) -> Result<(), Fail> {
    if status.is_success() {
        Ok(())
    } else {
        Err(Fail::Status(status.as_u16(), snippet(body)))
    }
}

fn parse_json(body: &[u8]) -> Result<Value, Fail> {
    serde_json::from_slice(body)
        .map_err(|e| Fail::Invalid(format!("not JSON ({e}): {}", snippet(body))))
}

fn json_str_field(v: &Value, key: &str, body: &[u8]) -> Result<String, Fail> {
    match v.get(key).and_then(Value::as_str) {
        Some(s) if !s.is_empty() => Ok(s.to_string()),
        _ => Err(Fail::Invalid(format!(
            "no string field {key:?} in {}",
            snippet(body)
        ))),
    }
}
