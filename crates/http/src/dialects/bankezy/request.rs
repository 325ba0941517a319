//! Reading BankEzy's decrypted request JSON: each field as BankEzy sends it (numbers where
//! its sample sends numbers, `firstname` for `firstName`), checked by `cardgate_core::sdk`,
//! each refusal with its own `TOK4xx` code. Unknown fields are ignored; no message repeats a
//! value.

use super::error::BankEzyError;
use cardgate_app::sdk::SdkTokenRequest;
use cardgate_core::sdk::{self, SdkFieldError};
use cardgate_core::secret::Secret;
use cardgate_jose::jwk::EcPublicJwk;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

type Fields = Map<String, Value>;

/// The decrypted payload as a JSON object, or the plain TOK400 of a payload that is not the
/// request JSON (SPEC §4.5.1).
pub fn object(plain: &[u8]) -> Result<Fields, BankEzyError> {
    match serde_json::from_slice::<Value>(plain) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(BankEzyError::undecryptable()),
    }
}

fn code(e: SdkFieldError) -> &'static str {
    match e {
        SdkFieldError::ReferenceId => "TOK411",
        SdkFieldError::AccountNumber => "TOK414",
        SdkFieldError::Dob => "TOK416",
        SdkFieldError::IsdCode => "TOK417",
        SdkFieldError::MobileNumber => "TOK418",
        SdkFieldError::Email => "TOK419",
        SdkFieldError::Name => "TOK420",
        SdkFieldError::Data => "TOK421",
    }
}

fn refused(e: SdkFieldError) -> BankEzyError {
    BankEzyError::bad(code(e), e.to_string())
}

fn missing(name: &str) -> BankEzyError {
    BankEzyError::bad("TOK410", format!("{name} is required and must be a string"))
}

/// A field that is absent or `null`: `None`.
fn field<'a>(m: &'a Fields, name: &str) -> Option<&'a Value> {
    m.get(name).filter(|v| !v.is_null())
}

/// A string field, or a whole number written as one where BankEzy's sample sends numbers.
fn text_or_number(
    m: &Fields,
    name: &str,
    bad: SdkFieldError,
) -> Result<Option<String>, BankEzyError> {
    match field(m, name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => n
            .as_u64()
            .map(|u| Some(u.to_string()))
            .ok_or_else(|| refused(bad)),
        Some(_) => Err(refused(bad)),
    }
}

fn text(m: &Fields, name: &str, bad: SdkFieldError) -> Result<Option<String>, BankEzyError> {
    match field(m, name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(refused(bad)),
    }
}

fn checked(
    value: Option<String>,
    check: fn(&str) -> Result<String, SdkFieldError>,
) -> Result<Option<String>, BankEzyError> {
    value.map(|v| check(&v).map_err(refused)).transpose()
}

/// `sdkPublicKey`: a public EC JWK as JSON, standard base64 (url-safe accepted too). Whether
/// its point is on the curve is the use case's check.
fn public_key(m: &Fields) -> Result<EcPublicJwk, BankEzyError> {
    let bad = || {
        BankEzyError::bad(
            "TOK412",
            "sdkPublicKey must be a P-256 public JWK as JSON, base64-encoded",
        )
    };
    let Some(Value::String(s)) = field(m, "sdkPublicKey") else {
        return Err(missing("sdkPublicKey"));
    };
    let bytes = cardgate_jose::b64::decode_std(s)
        .or_else(|_| cardgate_jose::b64::decode(s.trim().trim_end_matches('=')))
        .map_err(|_| bad())?;
    let jwk: Value = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    if jwk.get("d").is_some() {
        return Err(bad());
    }
    let jwk: EcPublicJwk = serde_json::from_value(jwk).map_err(|_| bad())?;
    if jwk.kty != "EC" || jwk.crv != "P-256" {
        return Err(bad());
    }
    Ok(jwk)
}

/// The token request's fields.
pub fn token_request(m: &Fields) -> Result<SdkTokenRequest, BankEzyError> {
    let Some(Value::String(reference)) = field(m, "referenceId") else {
        return Err(missing("referenceId"));
    };
    let reference_id = sdk::reference_id(reference).map_err(refused)?;
    let sdk_public_key = public_key(m)?;
    let Some(Value::String(sdk_api_key)) = field(m, "sdkApiKey") else {
        return Err(missing("sdkApiKey"));
    };
    let account = text_or_number(m, "accountNumber", SdkFieldError::AccountNumber)?
        .ok_or_else(|| missing("accountNumber"))?;
    let account_number = sdk::account_number(&account).map_err(refused)?;
    let first = match text(m, "firstName", SdkFieldError::Name)? {
        Some(f) => Some(f),
        None => text(m, "firstname", SdkFieldError::Name)?,
    };
    let data = match field(m, "data") {
        None => BTreeMap::new(),
        Some(Value::Object(d)) => d
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                _ => Err(refused(SdkFieldError::Data)),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(refused(SdkFieldError::Data)),
    };
    sdk::data(&data).map_err(refused)?;
    Ok(SdkTokenRequest {
        reference_id,
        sdk_public_key,
        sdk_api_key: Secret::new(sdk_api_key.clone()),
        account_number,
        first_name: checked(first, sdk::name)?,
        last_name: checked(text(m, "lastName", SdkFieldError::Name)?, sdk::name)?,
        email: checked(text(m, "email", SdkFieldError::Email)?, sdk::email)?,
        isd_code: checked(
            text_or_number(m, "isdCode", SdkFieldError::IsdCode)?,
            sdk::isd_code,
        )?,
        mobile_number: checked(
            text_or_number(m, "mobileNumber", SdkFieldError::MobileNumber)?,
            sdk::mobile_number,
        )?,
        dob: checked(text_or_number(m, "dob", SdkFieldError::Dob)?, sdk::dob)?,
        data,
    })
}

/// The invalidation's `tokenReferenceId`.
pub fn token_reference_id(m: &Fields) -> Result<String, BankEzyError> {
    match field(m, "tokenReferenceId") {
        Some(Value::String(s)) => sdk::reference_id(s)
            .map_err(|_| BankEzyError::bad("TOK422", "tokenReferenceId is malformed")),
        _ => Err(BankEzyError::bad(
            "TOK422",
            "tokenReferenceId is required and must be a string",
        )),
    }
}
