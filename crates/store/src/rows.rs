//! Reading rows, written once for both engines: [`Cols`] is how a row gives up its columns,
//! and the functions here turn rows into domain types.

use crate::{DataKeyRow, Result, SigningKeyRow, StoreError};
use cardgate_core::audit::StoredAuditEvent;
use cardgate_core::ids::MfaSessionId;
use cardgate_core::mfa::{Channel, MfaSession};
use cardgate_core::model::{ClientSettings, PersonProfile, TenantSettings};
use cardgate_core::scope::ScopeSet;
use cardgate_core::secret::SecretHash;
use cardgate_core::tokens::{AccessTokenRecord, CardTokenRecord, TokenId, TokenKind, UseLimit};
use cardgate_core::{
    Account, AccountId, Card, CardId, CardStatus, Client, ClientId, Environment, Operation, Person,
    PersonId, Tenant, TenantId,
};

/// A row's columns, by name.
pub(crate) trait Cols {
    fn text(&self, c: &str) -> Result<String>;
    fn opt_text(&self, c: &str) -> Result<Option<String>>;
    fn int(&self, c: &str) -> Result<i64>;
    fn opt_int(&self, c: &str) -> Result<Option<i64>>;
    fn blob(&self, c: &str) -> Result<Vec<u8>>;
    fn opt_blob(&self, c: &str) -> Result<Option<Vec<u8>>>;
    fn flag(&self, c: &str) -> Result<bool>;
}

impl Cols for rusqlite::Row<'_> {
    fn text(&self, c: &str) -> Result<String> {
        self.get(c).map_err(db_err)
    }
    fn opt_text(&self, c: &str) -> Result<Option<String>> {
        self.get(c).map_err(db_err)
    }
    fn int(&self, c: &str) -> Result<i64> {
        self.get(c).map_err(db_err)
    }
    fn opt_int(&self, c: &str) -> Result<Option<i64>> {
        self.get(c).map_err(db_err)
    }
    fn blob(&self, c: &str) -> Result<Vec<u8>> {
        self.get(c).map_err(db_err)
    }
    fn opt_blob(&self, c: &str) -> Result<Option<Vec<u8>>> {
        self.get(c).map_err(db_err)
    }
    fn flag(&self, c: &str) -> Result<bool> {
        self.get(c).map_err(db_err)
    }
}

impl Cols for sqlx::postgres::PgRow {
    fn text(&self, c: &str) -> Result<String> {
        Ok(sqlx::Row::try_get(self, c)?)
    }
    fn opt_text(&self, c: &str) -> Result<Option<String>> {
        Ok(sqlx::Row::try_get(self, c)?)
    }
    fn int(&self, c: &str) -> Result<i64> {
        Ok(sqlx::Row::try_get(self, c)?)
    }
    fn opt_int(&self, c: &str) -> Result<Option<i64>> {
        Ok(sqlx::Row::try_get(self, c)?)
    }
    fn blob(&self, c: &str) -> Result<Vec<u8>> {
        Ok(sqlx::Row::try_get(self, c)?)
    }
    fn opt_blob(&self, c: &str) -> Result<Option<Vec<u8>>> {
        Ok(sqlx::Row::try_get(self, c)?)
    }
    fn flag(&self, c: &str) -> Result<bool> {
        Ok(sqlx::Row::try_get(self, c)?)
    }
}

/// A SQLite error: the database file cannot be used (locked past the busy timeout, I/O
/// error, disk full, cannot open, read-only, out of memory) is unavailable; anything else is
/// a failed statement.
pub(crate) fn db_err(e: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode as C;
    match e.sqlite_error_code() {
        Some(
            C::DatabaseBusy
            | C::DatabaseLocked
            | C::SystemIoFailure
            | C::DiskFull
            | C::CannotOpen
            | C::ReadOnly
            | C::OutOfMemory,
        ) => StoreError::Unavailable(e.to_string()),
        _ => StoreError::Database(e.to_string()),
    }
}

pub(crate) fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

pub(crate) fn env_of(s: &str) -> Result<Environment> {
    Environment::parse(s).ok_or_else(|| corrupt("environment"))
}

pub(crate) fn hash_of(b: &[u8]) -> Result<SecretHash> {
    SecretHash::from_slice(b).ok_or_else(|| corrupt("hash"))
}

fn json_of<T: serde::de::DeserializeOwned>(s: &str, what: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|_| corrupt(what))
}

fn ops_of(s: &str) -> Result<Vec<Operation>> {
    s.split(',')
        .filter(|p| !p.is_empty())
        .map(|p| Operation::parse(p).ok_or_else(|| corrupt("operation")))
        .collect()
}

pub(crate) fn tenant_id(r: &dyn Cols, c: &str) -> Result<TenantId> {
    TenantId::parse(&r.text(c)?).map_err(|_| corrupt("tenant id"))
}

fn person_id(r: &dyn Cols, c: &str) -> Result<PersonId> {
    PersonId::parse(&r.text(c)?).map_err(|_| corrupt("person id"))
}

pub(crate) fn tenant(r: &dyn Cols) -> Result<Tenant> {
    Ok(Tenant {
        id: tenant_id(r, "id")?,
        settings: json_of::<TenantSettings>(&r.text("settings")?, "tenant settings")?,
        webhook_secret_enc: r.opt_blob("webhook_secret_enc")?,
    })
}

pub(crate) fn client(r: &dyn Cols) -> Result<Client> {
    let opt_hash =
        |c: &str| -> Result<Option<SecretHash>> { r.opt_blob(c)?.map(|b| hash_of(&b)).transpose() };
    Ok(Client {
        id: ClientId::parse(&r.text("id")?).map_err(|_| corrupt("client id"))?,
        tenant_id: tenant_id(r, "tenant_id")?,
        environment: env_of(&r.text("environment")?)?,
        secret_hash: hash_of(&r.blob("secret_hash")?)?,
        api_key_hash: opt_hash("api_key_hash")?,
        sdk_api_key_hash: opt_hash("sdk_api_key_hash")?,
        payload_key_enc: r.opt_blob("payload_key_enc")?,
        disabled: r.flag("disabled")?,
        tokens_not_before_ms: r.int("tokens_not_before")?,
        settings: json_of::<ClientSettings>(&r.text("settings")?, "client settings")?,
    })
}

pub(crate) fn person(r: &dyn Cols) -> Result<Person> {
    Ok(Person {
        id: person_id(r, "id")?,
        tenant_id: tenant_id(r, "tenant_id")?,
        environment: env_of(&r.text("environment")?)?,
        profile: json_of::<PersonProfile>(&r.text("profile")?, "person profile")?,
        totp_secret_enc: r.opt_blob("totp_secret_enc")?,
        key_version: r.int("key_version")?,
    })
}

pub(crate) fn account(r: &dyn Cols) -> Result<Account> {
    Ok(Account {
        id: AccountId::parse(&r.text("id")?).map_err(|_| corrupt("account id"))?,
        tenant_id: tenant_id(r, "tenant_id")?,
        environment: env_of(&r.text("environment")?)?,
        account_number: r.text("account_number")?,
        person_ids: json_of::<Vec<PersonId>>(&r.text("person_ids")?, "account holders")?,
    })
}

/// A card from columns named `<prefix>id`, `<prefix>tenant_id`, … (a join names them apart).
fn card_cols(r: &dyn Cols, p: &str) -> Result<Card> {
    let c = |name: &str| format!("{p}{name}");
    Ok(Card {
        id: CardId::parse(&r.text(&c("id"))?).map_err(|_| corrupt("card id"))?,
        tenant_id: tenant_id(r, &c("tenant_id"))?,
        environment: env_of(&r.text(&c("environment"))?)?,
        account_id: AccountId::parse(&r.text(&c("account_id"))?)
            .map_err(|_| corrupt("account id"))?,
        person_id: person_id(r, &c("person_id"))?,
        status: CardStatus::parse(&r.text(&c("status"))?).ok_or_else(|| corrupt("card status"))?,
        wallet_eligible: r.flag(&c("wallet_eligible"))?,
        last4: r.text(&c("last4"))?,
        vault: r.blob(&c("vault"))?,
        key_version: r.int(&c("key_version"))?,
    })
}

pub(crate) fn card(r: &dyn Cols) -> Result<Card> {
    card_cols(r, "")
}

pub(crate) fn audit_event(r: &dyn Cols) -> Result<StoredAuditEvent> {
    Ok(StoredAuditEvent {
        chain: r.int("chain")?,
        seq: r.int("seq")?,
        ts_ms: r.int("ts_ms")?,
        tenant_id: r.opt_text("tenant_id")?,
        environment: r.text("environment")?,
        actor: r.text("actor")?,
        action: r.text("action")?,
        outcome: r.text("outcome")?,
        subject: r.text("subject")?,
        details: r.text("details")?,
        prev_hash: r.text("prev_hash")?,
        hash: r.text("hash")?,
    })
}

pub(crate) fn token_id(r: &dyn Cols) -> Result<TokenId> {
    TokenId::from_slice(&r.blob("id")?).ok_or_else(|| corrupt("token id"))
}

fn token_kind(r: &dyn Cols) -> Result<TokenKind> {
    TokenKind::parse(&r.text("kind")?).ok_or_else(|| corrupt("token kind"))
}

pub(crate) fn card_token(r: &dyn Cols) -> Result<CardTokenRecord> {
    Ok(CardTokenRecord {
        id: token_id(r)?,
        hash: hash_of(&r.blob("hash")?)?,
        kind: token_kind(r)?,
        tenant_id: tenant_id(r, "tenant_id")?,
        client_id: ClientId::parse(&r.text("client_id")?).map_err(|_| corrupt("client id"))?,
        environment: env_of(&r.text("environment")?)?,
        card_id: r
            .opt_text("card_id")?
            .map(|c| CardId::parse(&c))
            .transpose()
            .map_err(|_| corrupt("card id"))?,
        person_id: r
            .opt_text("person_id")?
            .map(|c| PersonId::parse(&c))
            .transpose()
            .map_err(|_| corrupt("person id"))?,
        operations: ops_of(&r.text("operations")?)?,
        issued_at_ms: r.int("issued_at")?,
        expires_at_ms: r.int("expires_at")?,
        use_limit: UseLimit::from_max_uses(r.opt_int("max_uses")?),
        uses_made: r.int("uses_made")?,
        revoked: r.flag("revoked")?,
        cnf_jkt: r.opt_text("cnf_jkt")?,
    })
}

pub(crate) fn access_token(r: &dyn Cols) -> Result<AccessTokenRecord> {
    Ok(AccessTokenRecord {
        id: token_id(r)?,
        hash: hash_of(&r.blob("hash")?)?,
        kind: token_kind(r)?,
        tenant_id: tenant_id(r, "tenant_id")?,
        client_id: ClientId::parse(&r.text("client_id")?).map_err(|_| corrupt("client id"))?,
        environment: env_of(&r.text("environment")?)?,
        scopes: ScopeSet::parse(&r.text("scope")?).map_err(|_| corrupt("scope"))?,
        issued_at_ms: r.int("issued_at")?,
        expires_at_ms: r.int("expires_at")?,
        revoked: r.flag("revoked")?,
        cnf_jkt: r.opt_text("cnf_jkt")?,
    })
}

/// A redemption's joined row: the token, its card (`c_…`) if it exists, the holder's profile.
pub(crate) fn redemption(r: &dyn Cols) -> Result<crate::RedemptionContext> {
    let token = card_token(r)?;
    let card = match r.opt_text("c_id")? {
        None => None,
        Some(_) => Some(card_cols(r, "c_")?),
    };
    let cardholder_name = r
        .opt_text("p_profile")?
        .map(|p| json_of::<PersonProfile>(&p, "person profile"))
        .transpose()?
        .map(|p| format!("{} {}", p.first_name, p.last_name));
    Ok(crate::RedemptionContext {
        token,
        card,
        cardholder_name,
    })
}

pub(crate) fn mfa_session(r: &dyn Cols) -> Result<MfaSession> {
    Ok(MfaSession {
        id: MfaSessionId::parse(&r.text("id")?).map_err(|_| corrupt("mfa session id"))?,
        tenant_id: tenant_id(r, "tenant_id")?,
        person_id: person_id(r, "person_id")?,
        environment: env_of(&r.text("environment")?)?,
        channel: Channel::parse(&r.text("channel")?).ok_or_else(|| corrupt("channel"))?,
        code_hash: r
            .opt_blob("code_hash")?
            .map(|b| b.try_into().map_err(|_| corrupt("code hash")))
            .transpose()?,
        attempts: r.int("attempts")?,
        created_at_ms: r.int("created_at")?,
        expires_at_ms: r.int("expires_at")?,
        consumed: r.flag("consumed")?,
    })
}

pub(crate) fn signing_key(r: &dyn Cols) -> Result<SigningKeyRow> {
    Ok(SigningKeyRow {
        kid: r.text("kid")?,
        environment: env_of(&r.text("environment")?)?,
        private_enc: r.blob("private_enc")?,
        public_jwk: r.text("public_jwk")?,
        created_at_ms: r.int("created_at")?,
        retired_at_ms: r.opt_int("retired_at")?,
    })
}

pub(crate) fn data_key(r: &dyn Cols) -> Result<DataKeyRow> {
    Ok(DataKeyRow {
        tenant_id: tenant_id(r, "tenant_id")?,
        environment: env_of(&r.text("environment")?)?,
        version: r.int("version")?,
        key_enc: r.blob("key_enc")?,
        created_at_ms: r.int("created_at")?,
    })
}

pub(crate) fn mfa_person(r: &dyn Cols) -> Result<crate::MfaPersonState> {
    Ok(crate::MfaPersonState {
        failures: r.int("failures")?,
        locked_until_ms: r.int("locked_until")?,
    })
}

pub(crate) fn stored_claim(r: &dyn Cols) -> Result<crate::StoredClaim> {
    Ok(crate::StoredClaim {
        fingerprint: r.blob("fingerprint")?,
        value: r.opt_blob("value")?,
        expires_at_ms: r.int("expires_at")?,
    })
}
