//! The command line: usage text, flags and their checks, and the run's configuration.

use std::time::Duration;

use crate::scenario::Scenario;

pub const USAGE: &str = "\
loadgen — closed-loop HTTP/1.1 keep-alive load generator for cardgate

USAGE:
  loadgen --scenario NAME [options]
  loadgen summarize RESULTS.jsonl      (table with ratios to healthz)

SCENARIOS:
  healthz            GET  /healthz                           -> 2xx
  token-jwt          POST /oauth2/token (client_credentials)  -> 200 {access_token}
  token-opaque       same as token-jwt (pass the opaque client's credentials)
  introspect-jwt     one token first, then POST /oauth2/introspect token=... -> {active:true}
  introspect-opaque  same as introspect-jwt (opaque client)
  card-pair          POST /v1/cards/ID/tokens -> {token}; then GET /v1/cards/ID/details
  token-dpop         token-jwt with a fresh ES256 DPoP proof per request -> token_type DPoP
  card-pair-dpop     card-pair with a DPoP proof at the mint and Authorization: DPoP + proof (ath) at the redemption
  (loadgen es256-verify prints the microseconds of one ES256 verification on this machine)
                     with Bearer token -> {pan}; one iteration = one pair
  card-mint          POST /v1/cards/ID/tokens with ApiKey KEY -> {token}
  widget-token       POST /synctera/v1/cards/ID/widget_token?widget_type=REVEAL (Bearer KEY)
  widget-token-fresh-key   same, a new Idempotency-Key on every request
  widget-token-retry-key   same, one Idempotency-Key retried (the stored answer)
  mfa-session        POST /v1/persons/ID/mfa/sessions {channel:totp} -> 201 (--person-id)
  card-reveal        one unlimited VIEW_CARD token first, then GET /v1/cards/ID/details -> {pan}
  bankezy-token      POST /bankezy/.../new/v2/token, X-API-KEY, a sealed body from --bodies
                     (one line each, a fresh referenceId each) -> 200
  bankezy-reveal     GET /bankezy/token-service/sdk/v1/cards/ID/details with the SDK's
                     X-API-KEY and X-API-TOKEN -> 200 (a JWE)

OPTIONS:
  --url URL             base URL, http only (default http://127.0.0.1:18080)
  --connections N, -c   concurrent keep-alive connections (default 64)
  --duration SECS       measured window (default 10)
  --warmup SECS         warm-up before the window, not counted (default 2)
  --server-pid PID      report server CPU per request and peak RSS from /proc/PID
  --client-id ID        OAuth client id (token/introspect/card-pair)
  --client-secret S     OAuth client secret
  --card-id ID          card id for card-pair, card-mint and widget-token*
  --api-key KEY         API key for card-mint and widget-token*
  --person-id ID        cardholder id for mfa-session
  --mint-auth MODE      card-pair mint auth: basic (default) or bearer (client_credentials token)
  --mint-body JSON      card-pair mint body (default {\"operations\":[\"VIEW_CARD\"]})
  --api-key K           bankezy-token: the partner server's X-API-KEY
  --bodies FILE         bankezy-token: sealed token requests, one per line
  --sdk-api-key K       bankezy-reveal: the SDK's X-API-KEY
  --sdk-token T         bankezy-reveal: the SDK token (X-API-TOKEN)
  --threads N           loadgen runtime threads (default 1: leaves the cores to the server)
  --timeout SECS        per-request timeout, counted as an error (default 5)
  --json-out FILE       also append the JSON result line to FILE
  -h, --help

OUTPUT: one human-readable line, then one JSON line (starts with '{'), on stdout.
Exit code: 0 ok, 2 the scenario had errors, 3 preflight failed, 1 usage/other.
";

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum MintAuth {
    Basic,
    Bearer,
}

pub struct Config {
    pub scenario_name: String,
    pub scenario: Scenario,
    pub url: String,
    /// `host:port` to connect to and send as `Host`.
    pub authority: String,
    /// The URL's path without a trailing slash, prefixed to every request path.
    pub base_path: String,
    pub connections: usize,
    pub duration: Duration,
    pub warmup: Duration,
    pub server_pid: Option<u32>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub card_id: Option<String>,
    pub api_key: Option<String>,
    pub person_id: Option<String>,
    pub mint_auth: MintAuth,
    pub mint_body: String,
    pub threads: usize,
    pub req_timeout: Duration,
    pub json_out: Option<String>,
    pub bodies: Option<String>,
    pub sdk_api_key: Option<String>,
    pub sdk_token: Option<String>,
}

fn parse_secs(flag: &str, v: &str) -> Result<Duration, String> {
    let t = v.trim().trim_end_matches('s');
    let f: f64 = t
        .parse()
        .map_err(|_| format!("{flag}: not a number of seconds: {v}"))?;
    if !(f > 0.0 && f < 86_400.0) {
        return Err(format!("{flag}: out of range: {v}"));
    }
    Ok(Duration::from_secs_f64(f))
}

/// The configuration, or `Err("")` for `--help`.
pub fn parse_args(args: Vec<String>) -> Result<Config, String> {
    let mut scenario_name: Option<String> = None;
    let mut url = "http://127.0.0.1:18080".to_string();
    let mut connections = 64usize;
    let mut duration = Duration::from_secs(10);
    let mut warmup = Duration::from_secs(2);
    let mut server_pid = None;
    let mut client_id = None;
    let mut client_secret = None;
    let mut card_id = None;
    let mut api_key = None;
    let mut person_id = None;
    let mut mint_auth = MintAuth::Basic;
    let mut mint_body = r#"{"operations":["VIEW_CARD"]}"#.to_string();
    let mut threads = 1usize;
    let mut req_timeout = Duration::from_secs(5);
    let mut json_out = None;
    let (mut bodies, mut sdk_api_key, mut sdk_token) = (None, None, None);

    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (a.clone(), None),
        };
        if flag == "-h" || flag == "--help" {
            return Err(String::new());
        }
        let mut val = || -> Result<String, String> {
            match inline.clone() {
                Some(v) => Ok(v),
                None => it.next().ok_or_else(|| format!("{flag} needs a value")),
            }
        };
        match flag.as_str() {
            "--scenario" => scenario_name = Some(val()?),
            "--url" => url = val()?,
            "--connections" | "-c" => {
                connections = val()?
                    .parse()
                    .map_err(|_| "--connections: not a number".to_string())?
            }
            "--duration" => duration = parse_secs("--duration", &val()?)?,
            "--warmup" => {
                let v = val()?;
                warmup = if v.trim_end_matches('s') == "0" {
                    Duration::ZERO
                } else {
                    parse_secs("--warmup", &v)?
                }
            }
            "--server-pid" => {
                let v = val()?;
                if !v.is_empty() {
                    server_pid = Some(
                        v.parse()
                            .map_err(|_| "--server-pid: not a pid".to_string())?,
                    )
                }
            }
            "--client-id" => client_id = Some(val()?),
            "--client-secret" => client_secret = Some(val()?),
            "--card-id" => card_id = Some(val()?),
            "--api-key" => api_key = Some(val()?),
            "--person-id" => person_id = Some(val()?),
            "--mint-auth" => {
                mint_auth = match val()?.as_str() {
                    "basic" => MintAuth::Basic,
                    "bearer" => MintAuth::Bearer,
                    o => return Err(format!("--mint-auth: basic or bearer, not {o}")),
                }
            }
            "--mint-body" => mint_body = val()?,
            "--threads" => {
                threads = val()?
                    .parse()
                    .map_err(|_| "--threads: not a number".to_string())?
            }
            "--timeout" => req_timeout = parse_secs("--timeout", &val()?)?,
            "--json-out" => json_out = Some(val()?),
            "--bodies" => bodies = Some(val()?),
            "--sdk-api-key" => sdk_api_key = Some(val()?),
            "--sdk-token" => sdk_token = Some(val()?),
            o => return Err(format!("unknown argument: {o}")),
        }
    }

    let scenario_name = scenario_name.ok_or("--scenario is required")?;
    let scenario = Scenario::from_name(&scenario_name)
        .ok_or_else(|| format!("unknown scenario: {scenario_name}"))?;
    let keyed = matches!(
        scenario,
        Scenario::CardMint | Scenario::Widget | Scenario::WidgetFreshKey | Scenario::WidgetRetryKey
    );
    if keyed && (api_key.is_none() || card_id.is_none()) {
        return Err(format!("scenario {scenario_name} needs --api-key and --card-id"));
    }
    let bankezy = matches!(scenario, Scenario::BankezyToken | Scenario::BankezyReveal);
    if scenario == Scenario::BankezyToken && (api_key.is_none() || bodies.is_none()) {
        return Err("scenario bankezy-token needs --api-key and --bodies".into());
    }
    if scenario == Scenario::BankezyReveal
        && (sdk_api_key.is_none() || sdk_token.is_none() || card_id.is_none())
    {
        return Err("scenario bankezy-reveal needs --sdk-api-key, --sdk-token and --card-id".into());
    }
    if !keyed && !bankezy && scenario != Scenario::Healthz && (client_id.is_none() || client_secret.is_none()) {
        return Err(format!(
            "scenario {scenario_name} needs --client-id and --client-secret"
        ));
    }
    if matches!(scenario, Scenario::CardPair | Scenario::CardPairDpop | Scenario::CardReveal) && card_id.is_none() {
        return Err("scenario card-pair needs --card-id".into());
    }
    if scenario == Scenario::MfaSession && person_id.is_none() {
        return Err("scenario mfa-session needs --person-id".into());
    }
    if connections == 0 || connections > 10_000 {
        return Err("--connections must be 1..=10000".into());
    }
    if threads == 0 || threads > 64 {
        return Err("--threads must be 1..=64".into());
    }

    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("--url must start with http:// (got {url})"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if authority.is_empty() {
        return Err(format!("--url has no host: {url}"));
    }
    let authority = if authority.contains(':') && !authority.ends_with(']') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let base_path = path.trim_end_matches('/').to_string();

    Ok(Config {
        scenario_name,
        scenario,
        url,
        authority,
        base_path,
        connections,
        duration,
        warmup,
        server_pid,
        client_id,
        client_secret,
        card_id,
        api_key,
        person_id,
        mint_auth,
        mint_body,
        threads,
        req_timeout,
        json_out,
        bodies,
        sdk_api_key,
        sdk_token,
    })
}
