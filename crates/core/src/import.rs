//! The declarative import file (SPEC §6): parsing and validation into a plan of domain
//! values. A file with any bad value is refused as a whole, naming the field.

use crate::cards::CardSecrets;
use crate::ids::{AccountId, CardId, ClientId, Environment, PersonId, TenantId};
use crate::model::*;
use crate::scope::{ScopeSet, KNOWN};
use crate::secret::Secret;
use cardgate_jose::jwk::EcPublicJwk;
use serde::Deserialize;
use std::collections::HashSet;

/// A refused import: which field, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ImportError {
    pub path: String,
    pub message: String,
}

fn err<T>(path: impl Into<String>, message: impl Into<String>) -> Result<T, ImportError> {
    Err(ImportError {
        path: path.into(),
        message: message.into(),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDoc {
    tenants: Vec<TenantDoc>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantDoc {
    id: String,
    name: String,
    #[serde(default)]
    financial_institution_id: Option<String>,
    #[serde(default)]
    widget_origins: Vec<String>,
    #[serde(default)]
    mfa_required_for: Vec<String>,
    #[serde(default)]
    webhook_url: Option<String>,
    #[serde(default)]
    webhook_secret: Option<String>,
    #[serde(default)]
    rate_limit_per_minute: Option<u32>,
    #[serde(default)]
    card_token_ttl_seconds: Option<u32>,
    #[serde(default)]
    card_token_max_ttl_seconds: Option<u32>,
    #[serde(default)]
    card_token_max_uses: Option<u32>,
    #[serde(default)]
    widget_token_ttl_seconds: Option<u32>,
    #[serde(default)]
    dpop_nonce_required: bool,
    #[serde(default)]
    mfa_max_failures: Option<u32>,
    #[serde(default)]
    mfa_failure_window_seconds: Option<u32>,
    #[serde(default)]
    mfa_lockout_seconds: Option<u32>,
    #[serde(default)]
    sdk_token_ttl_seconds: Option<u32>,
    #[serde(default)]
    clients: Vec<ClientDoc>,
    #[serde(default)]
    persons: Vec<PersonDoc>,
    #[serde(default)]
    accounts: Vec<AccountDoc>,
    #[serde(default)]
    cards: Vec<CardDoc>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientDoc {
    id: String,
    secret: String,
    #[serde(default)]
    api_key: Option<String>,
    #[serde(default)]
    sdk_api_key: Option<String>,
    #[serde(default)]
    payload_key: Option<String>,
    #[serde(default)]
    environment: Option<String>,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    person_id: Option<String>,
    #[serde(default)]
    encryption_jwk: Option<serde_json::Value>,
    #[serde(default)]
    access_token_format: Option<String>,
    #[serde(default)]
    disabled: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PersonDoc {
    id: String,
    first_name: String,
    last_name: String,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    isd_code: Option<String>,
    #[serde(default)]
    mobile_number: Option<String>,
    #[serde(default)]
    dob: Option<String>,
    #[serde(default)]
    totp_secret: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AccountDoc {
    id: String,
    account_number: String,
    #[serde(default)]
    person_ids: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CardDoc {
    id: String,
    account_id: String,
    person_id: String,
    pan: String,
    cvv: String,
    expiry: String,
    #[serde(default)]
    pin: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    wallet_eligible: bool,
}

pub struct ImportPlan {
    pub tenants: Vec<TenantPlan>,
}

pub struct TenantPlan {
    pub id: TenantId,
    pub settings: TenantSettings,
    pub webhook_secret: Option<Secret>,
    pub clients: Vec<ClientPlan>,
    pub persons: Vec<PersonPlan>,
    pub accounts: Vec<AccountPlan>,
    pub cards: Vec<CardPlan>,
}

pub struct ClientPlan {
    pub id: ClientId,
    pub environment: Environment,
    pub secret: Secret,
    pub api_key: Option<Secret>,
    pub sdk_api_key: Option<Secret>,
    pub payload_key: Option<Secret>,
    pub settings: ClientSettings,
    pub disabled: bool,
}

/// An account as the file states it; the import gives it the tenant and environment.
#[derive(Debug, Clone, PartialEq)]
pub struct AccountPlan {
    pub id: AccountId,
    pub account_number: String,
    pub person_ids: Vec<PersonId>,
}

pub struct PersonPlan {
    pub id: PersonId,
    pub profile: PersonProfile,
    pub totp_secret: Option<Vec<u8>>,
}

pub struct CardPlan {
    pub id: CardId,
    pub account_id: AccountId,
    pub person_id: PersonId,
    pub status: CardStatus,
    pub wallet_eligible: bool,
    pub secrets: CardSecrets,
}

/// The (year, month) of a moment, UTC (days-to-civil, H. Hinnant).
pub fn year_month(now_ms: i64) -> (u16, u8) {
    let z = now_ms.div_euclid(86_400_000) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (u16::try_from(y).unwrap_or(0), u8::try_from(m).unwrap_or(1))
}

pub const MIN_SECRET_LEN: usize = 32;

fn secret_field(path: &str, value: &str) -> Result<Secret, ImportError> {
    if value.len() < MIN_SECRET_LEN {
        return err(
            path,
            format!("must be at least {MIN_SECRET_LEN} characters"),
        );
    }
    if value.chars().any(|c| c.is_control() || c == ' ') {
        return err(path, "must not contain spaces or control characters");
    }
    Ok(Secret::new(value))
}

/// Checks an origin is `scheme://host[:port]` with no path.
pub fn origin_ok(origin: &str) -> bool {
    let Some((scheme, rest)) = origin.split_once("://") else {
        return false;
    };
    matches!(scheme, "http" | "https")
        && !rest.is_empty()
        && !rest.contains(['/', '?', '#', ' ', '*', '\'', '"', ';'])
}

fn date_ok(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && s.bytes()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
        && {
            let year: u32 = s[0..4].parse().unwrap_or(0);
            let day: u32 = s[8..10].parse().unwrap_or(0);
            let leap =
                year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400));
            let days = match s[5..7].parse::<u32>().unwrap_or(0) {
                1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
                4 | 6 | 9 | 11 => 30,
                2 if leap => 29,
                2 => 28,
                _ => 0,
            };
            (1..=days).contains(&day)
        }
}

/// One card of an import file, its fields checked on their own (`cp` is its path, for errors;
/// whether its account and cardholder exist is for the caller to check).
fn card_plan(c: CardDoc, cp: &str, ym: (u16, u8)) -> Result<CardPlan, ImportError> {
    let id = CardId::parse(&c.id).or_else(|m| err(format!("{cp}.id"), m))?;
    let account_id =
        AccountId::parse(&c.account_id).or_else(|m| err(format!("{cp}.account_id"), m))?;
    let person_id = PersonId::parse(&c.person_id).or_else(|m| err(format!("{cp}.person_id"), m))?;
    let secrets = CardSecrets::parse(&c.pan, &c.cvv, &c.expiry, c.pin.as_deref(), ym)
        .or_else(|e| err(format!("{cp}.{}", e.field()), e.to_string()))?;
    let status = match c.status.as_deref() {
        None => CardStatus::Inactive,
        Some(s) => CardStatus::parse(s).map_or_else(
            || {
                err(
                    format!("{cp}.status"),
                    "must be INACTIVE, ACTIVE, SUSPENDED or TERMINATED",
                )
            },
            Ok,
        )?,
    };
    Ok(CardPlan {
        id,
        account_id,
        person_id,
        status,
        wallet_eligible: c.wallet_eligible,
        secrets,
    })
}

/// Parses and validates one card given on its own (`cardgate card add`): an object of the
/// import file's `cards` schema. Whether its account and cardholder exist is for the caller.
pub fn parse_card(json: &[u8], now_ms: i64) -> Result<CardPlan, ImportError> {
    let doc: CardDoc = from_json(json, "card.")?;
    card_plan(doc, "card", year_month(now_ms))
}

/// Deserializes `json`, naming the field of any error (after `prefix`) or its position.
fn from_json<T: serde::de::DeserializeOwned>(json: &[u8], prefix: &str) -> Result<T, ImportError> {
    let de = &mut serde_json::Deserializer::from_slice(json);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        ImportError {
            path: if path == "." {
                format!("line {} column {}", inner.line(), inner.column())
            } else {
                format!("{prefix}{path}")
            },
            message: crate::json_error_message(&inner),
        }
    })
}

/// Parses and validates an import file. `now_ms` decides which expiries are in the past.
pub fn parse(json: &[u8], now_ms: i64) -> Result<ImportPlan, ImportError> {
    let doc: FileDoc = from_json(json, "")?;
    let mut tenant_ids = HashSet::new();
    let mut client_ids = HashSet::new();
    let mut tenants = Vec::new();
    for (ti, t) in doc.tenants.into_iter().enumerate() {
        let tp = format!("tenants[{ti}]");
        let plan = tenant(&tp, t, now_ms, &mut client_ids)?;
        if !tenant_ids.insert(plan.id.clone()) {
            return err(format!("{tp}.id"), "duplicate tenant id");
        }
        tenants.push(plan);
    }
    Ok(ImportPlan { tenants })
}

fn tenant(
    tp: &str,
    t: TenantDoc,
    now_ms: i64,
    client_ids: &mut HashSet<ClientId>,
) -> Result<TenantPlan, ImportError> {
    let id = TenantId::parse(&t.id).or_else(|m| err(format!("{tp}.id"), m))?;
    if t.name.trim().is_empty() || t.name.len() > 200 {
        return err(format!("{tp}.name"), "must be 1-200 characters");
    }
    if let Some(fi) = &t.financial_institution_id {
        if fi.len() != 8 || !fi.bytes().all(|b| b.is_ascii_digit()) {
            return err(format!("{tp}.financial_institution_id"), "must be 8 digits");
        }
    }
    for (i, o) in t.widget_origins.iter().enumerate() {
        if !origin_ok(o) {
            return err(
                format!("{tp}.widget_origins[{i}]"),
                "must be an origin like https://app.example.com",
            );
        }
    }
    let mut mfa = Vec::new();
    for (i, op) in t.mfa_required_for.iter().enumerate() {
        mfa.push(Operation::parse(op).map_or_else(
            || err(format!("{tp}.mfa_required_for[{i}]"), "unknown operation"),
            Ok,
        )?);
    }
    if let Some(url) = &t.webhook_url {
        if !(url.starts_with("https://") || url.starts_with("http://")) || url.contains(' ') {
            return err(format!("{tp}.webhook_url"), "must be an http(s) URL");
        }
    }
    let webhook_secret = match (&t.webhook_url, &t.webhook_secret) {
        (_, Some(s)) => Some(secret_field(&format!("{tp}.webhook_secret"), s)?),
        (Some(_), None) => {
            return err(
                format!("{tp}.webhook_secret"),
                "is required when webhook_url is set",
            )
        }
        (None, None) => None,
    };
    let max_ttl = t
        .card_token_max_ttl_seconds
        .unwrap_or(DEFAULT_CARD_TOKEN_MAX_TTL);
    if max_ttl == 0 || max_ttl > 86_400 {
        return err(
            format!("{tp}.card_token_max_ttl_seconds"),
            "must be 1-86400",
        );
    }
    let ttl = t
        .card_token_ttl_seconds
        .unwrap_or(DEFAULT_CARD_TOKEN_TTL.min(max_ttl));
    if ttl == 0 || ttl > max_ttl {
        return err(
            format!("{tp}.card_token_ttl_seconds"),
            "must be 1 up to card_token_max_ttl_seconds",
        );
    }
    if t.widget_token_ttl_seconds
        .is_some_and(|w| w == 0 || w > max_ttl)
    {
        return err(
            format!("{tp}.widget_token_ttl_seconds"),
            "must be 1 up to card_token_max_ttl_seconds",
        );
    }
    let max_uses = t.card_token_max_uses.unwrap_or(DEFAULT_CARD_TOKEN_MAX_USES);
    if max_uses == 0 {
        return err(format!("{tp}.card_token_max_uses"), "must be at least 1");
    }
    let rate = t
        .rate_limit_per_minute
        .unwrap_or(DEFAULT_RATE_LIMIT_PER_MINUTE);
    if rate == 0 {
        return err(format!("{tp}.rate_limit_per_minute"), "must be at least 1");
    }
    let bounded = |field: &str, given: Option<u32>, default: u32| match given {
        Some(n) if (1..=2_592_000).contains(&n) => Ok(n),
        Some(_) => err(format!("{tp}.{field}"), "must be 1-2592000"),
        None => Ok(default),
    };
    let d = crate::mfa::Lockout::default();
    let mfa_lockout = crate::mfa::Lockout {
        max_failures: bounded("mfa_max_failures", t.mfa_max_failures, d.max_failures)?,
        window_seconds: bounded(
            "mfa_failure_window_seconds",
            t.mfa_failure_window_seconds,
            d.window_seconds,
        )?,
        lockout_seconds: bounded(
            "mfa_lockout_seconds",
            t.mfa_lockout_seconds,
            d.lockout_seconds,
        )?,
    };
    let settings = TenantSettings {
        name: t.name,
        financial_institution_id: t.financial_institution_id,
        widget_origins: t.widget_origins,
        mfa_required_for: mfa,
        webhook_url: t.webhook_url,
        rate_limit_per_minute: rate,
        card_token_ttl_seconds: ttl,
        card_token_max_ttl_seconds: max_ttl,
        card_token_max_uses: max_uses,
        mfa_lockout,
        widget_token_ttl_seconds: t.widget_token_ttl_seconds,
        dpop_nonce_required: t.dpop_nonce_required,
        sdk_token_ttl_seconds: match t.sdk_token_ttl_seconds {
            Some(n) if (60..=86_400).contains(&n) => Some(n),
            Some(_) => return err(format!("{tp}.sdk_token_ttl_seconds"), "must be 60-86400"),
            None => None,
        },
    };

    let mut persons = Vec::new();
    let mut person_ids = HashSet::new();
    for (i, p) in t.persons.into_iter().enumerate() {
        let pp = format!("{tp}.persons[{i}]");
        let pid = PersonId::parse(&p.id).or_else(|m| err(format!("{pp}.id"), m))?;
        if !person_ids.insert(pid) {
            return err(format!("{pp}.id"), "duplicate person id");
        }
        for (field, v) in [("first_name", &p.first_name), ("last_name", &p.last_name)] {
            if v.trim().is_empty() || v.len() > 100 {
                return err(format!("{pp}.{field}"), "must be 1-100 characters");
            }
        }
        if p.email
            .as_ref()
            .is_some_and(|e| !e.contains('@') || e.len() > 254 || e.contains(' '))
        {
            return err(format!("{pp}.email"), "must be an email address");
        }
        if p.isd_code
            .as_ref()
            .is_some_and(|c| c.is_empty() || c.len() > 4 || !c.bytes().all(|b| b.is_ascii_digit()))
        {
            return err(format!("{pp}.isd_code"), "must be 1-4 digits");
        }
        if p.mobile_number
            .as_ref()
            .is_some_and(|c| c.len() < 4 || c.len() > 15 || !c.bytes().all(|b| b.is_ascii_digit()))
        {
            return err(format!("{pp}.mobile_number"), "must be 4-15 digits");
        }
        if p.dob.as_ref().is_some_and(|d| !date_ok(d)) {
            return err(format!("{pp}.dob"), "must be YYYY-MM-DD");
        }
        let totp_secret = match &p.totp_secret {
            None => None,
            Some(s) => {
                let clean = s.trim_end_matches('=').to_ascii_uppercase();
                let bytes = data_encoding::BASE32_NOPAD
                    .decode(clean.as_bytes())
                    .ok()
                    .filter(|b| b.len() >= 10);
                match bytes {
                    Some(b) => Some(b),
                    None => {
                        return err(
                            format!("{pp}.totp_secret"),
                            "must be base32 of at least 10 bytes",
                        )
                    }
                }
            }
        };
        persons.push(PersonPlan {
            id: pid,
            profile: PersonProfile {
                first_name: p.first_name,
                last_name: p.last_name,
                email: p.email,
                isd_code: p.isd_code,
                mobile_number: p.mobile_number,
                dob: p.dob,
            },
            totp_secret,
        });
    }

    let mut clients = Vec::new();
    for (i, c) in t.clients.into_iter().enumerate() {
        let cp = format!("{tp}.clients[{i}]");
        let cid = ClientId::parse(&c.id).or_else(|m| err(format!("{cp}.id"), m))?;
        if !client_ids.insert(cid.clone()) {
            return err(format!("{cp}.id"), "duplicate client id");
        }
        let secret = secret_field(&format!("{cp}.secret"), &c.secret)?;
        let api_key = c
            .api_key
            .as_deref()
            .map(|k| secret_field(&format!("{cp}.api_key"), k))
            .transpose()?;
        let sdk_api_key = c
            .sdk_api_key
            .as_deref()
            .map(|k| secret_field(&format!("{cp}.sdk_api_key"), k))
            .transpose()?;
        let payload_key = match &c.payload_key {
            None => None,
            Some(k) => match cardgate_jose::b64::decode(k.trim_end_matches('=')) {
                Ok(b) if b.len() == 32 => Some(Secret::new(k.clone())),
                _ => return err(format!("{cp}.payload_key"), "must be base64url of 32 bytes"),
            },
        };
        let environment = match c.environment.as_deref() {
            None => Environment::Sandbox,
            Some(e) => Environment::parse(e).map_or_else(
                || err(format!("{cp}.environment"), "must be sandbox or production"),
                Ok,
            )?,
        };
        for (si, s) in c.scopes.iter().enumerate() {
            if !KNOWN.contains(&s.as_str()) {
                return err(
                    format!("{cp}.scopes[{si}]"),
                    format!("unknown scope; known: {}", KNOWN.join(", ")),
                );
            }
        }
        let person_id = match &c.person_id {
            None => None,
            Some(p) => {
                let pid = PersonId::parse(p).or_else(|m| err(format!("{cp}.person_id"), m))?;
                if !person_ids.contains(&pid) {
                    return err(format!("{cp}.person_id"), "no such person in this tenant");
                }
                Some(pid)
            }
        };
        let encryption_jwk = match &c.encryption_jwk {
            None | Some(serde_json::Value::Null) => None,
            Some(v) => Some(
                EcPublicJwk::from_json(v)
                    .or_else(|e| err(format!("{cp}.encryption_jwk"), e.to_string()))?,
            ),
        };
        let access_token_format = match c.access_token_format.as_deref() {
            None | Some("jwt") => AccessTokenFormat::Jwt,
            Some("opaque") => AccessTokenFormat::Opaque,
            Some(_) => return err(format!("{cp}.access_token_format"), "must be jwt or opaque"),
        };
        clients.push(ClientPlan {
            id: cid,
            environment,
            secret,
            api_key,
            sdk_api_key,
            payload_key,
            settings: ClientSettings {
                scopes: ScopeSet::of(c.scopes),
                person_id,
                encryption_jwk,
                access_token_format,
            },
            disabled: c.disabled,
        });
    }

    let mut accounts = Vec::new();
    let mut account_ids = HashSet::new();
    for (i, a) in t.accounts.into_iter().enumerate() {
        let ap = format!("{tp}.accounts[{i}]");
        let aid = AccountId::parse(&a.id).or_else(|m| err(format!("{ap}.id"), m))?;
        if !account_ids.insert(aid.clone()) {
            return err(format!("{ap}.id"), "duplicate account id");
        }
        if a.account_number.is_empty()
            || a.account_number.len() > 19
            || !a.account_number.bytes().all(|b| b.is_ascii_digit())
        {
            return err(format!("{ap}.account_number"), "must be 1-19 digits");
        }
        let mut holders = Vec::new();
        for (pi, p) in a.person_ids.iter().enumerate() {
            let pid = PersonId::parse(p).or_else(|m| err(format!("{ap}.person_ids[{pi}]"), m))?;
            if !person_ids.contains(&pid) {
                return err(
                    format!("{ap}.person_ids[{pi}]"),
                    "no such person in this tenant",
                );
            }
            holders.push(pid);
        }
        accounts.push(AccountPlan {
            id: aid,
            account_number: a.account_number,
            person_ids: holders,
        });
    }

    let mut cards = Vec::new();
    let mut card_ids = HashSet::new();
    let ym = year_month(now_ms);
    for (i, c) in t.cards.into_iter().enumerate() {
        let cp = format!("{tp}.cards[{i}]");
        let card = card_plan(c, &cp, ym)?;
        if !card_ids.insert(card.id) {
            return err(format!("{cp}.id"), "duplicate card id");
        }
        let Some(account) = accounts.iter().find(|a| a.id == card.account_id) else {
            return err(format!("{cp}.account_id"), "no such account in this tenant");
        };
        if !person_ids.contains(&card.person_id) {
            return err(format!("{cp}.person_id"), "no such person in this tenant");
        }
        if !account.person_ids.contains(&card.person_id) {
            return err(
                format!("{cp}.person_id"),
                "the cardholder must be a holder of the card's account",
            );
        }
        cards.push(card);
    }

    Ok(TenantPlan {
        id,
        settings,
        webhook_secret,
        clients,
        persons,
        accounts,
        cards,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn year_month_of_known_dates() {
        assert_eq!(year_month(0), (1970, 1));
        assert_eq!(year_month(1_795_000_000_000), (2026, 11));
    }

    #[test]
    fn dates_must_exist() {
        for ok in ["1988-05-15", "2000-02-29", "2024-02-29", "1999-12-31"] {
            assert!(date_ok(ok), "{ok}");
        }
        for bad in [
            "1988-02-30",
            "1900-02-29",
            "2023-02-29",
            "2024-04-31",
            "2024-13-01",
            "2024-00-10",
            "2024-01-00",
            "24-01-01",
        ] {
            assert!(!date_ok(bad), "{bad}");
        }
    }

    #[test]
    fn origins_must_be_bare() {
        assert!(origin_ok("http://127.0.0.1:9000"));
        assert!(!origin_ok("https://a.example/path"));
        assert!(!origin_ok("*"));
    }
}
