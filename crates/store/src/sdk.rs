//! BankEzy's SDK tokens and per-tenant server keys (migration 0010): their rows, reads and
//! writes, for both engines.

use crate::exec::{Arg, WriteTx};
use crate::rows::{self, corrupt, Cols};
use crate::sql::{Engine, SqlStore};
use crate::Result;
use cardgate_core::sdk::SdkTokenRecord;
use cardgate_core::tokens::TokenId;
use cardgate_core::{Account, AccountId, Card, ClientId, Environment, TenantId};

/// A tenant's server key version in one environment: the private scalar sealed under the
/// master key, and the public half as a JWK (JSON).
#[derive(Debug, Clone, PartialEq)]
pub struct SdkServerKeyRow {
    pub tenant_id: TenantId,
    pub environment: Environment,
    pub version: i64,
    pub private_enc: Vec<u8>,
    pub public_jwk: String,
    pub created_at_ms: i64,
}

fn server_key(r: &dyn Cols) -> Result<SdkServerKeyRow> {
    Ok(SdkServerKeyRow {
        tenant_id: rows::tenant_id(r, "tenant_id")?,
        environment: rows::env_of(&r.text("environment")?)?,
        version: r.int("version")?,
        private_enc: r.blob("private_enc")?,
        public_jwk: r.text("public_jwk")?,
        created_at_ms: r.int("created_at")?,
    })
}

fn token_row(r: &dyn Cols) -> Result<SdkTokenRecord> {
    Ok(SdkTokenRecord {
        id: rows::token_id(r)?,
        hash: rows::hash_of(&r.blob("hash")?)?,
        tenant_id: rows::tenant_id(r, "tenant_id")?,
        client_id: ClientId::parse(&r.text("client_id")?).map_err(|_| corrupt("client id"))?,
        environment: rows::env_of(&r.text("environment")?)?,
        reference_key: r
            .blob("reference_key")?
            .try_into()
            .map_err(|_| corrupt("reference key"))?,
        account_id: AccountId::parse(&r.text("account_id")?).map_err(|_| corrupt("account id"))?,
        sdk_public_jwk: r.text("sdk_public_jwk")?,
        server_key_version: r.int("server_key_version")?,
        issued_at_ms: r.int("issued_at")?,
        expires_at_ms: r.int("expires_at")?,
        revoked: r.flag("revoked")?,
    })
}

pub(crate) async fn sdk_server_keys<E: Engine>(
    store: &SqlStore<E>,
    env: Environment,
) -> Result<Vec<SdkServerKeyRow>> {
    store
        .engine
        .fetch_all(
            "SELECT * FROM sdk_server_keys WHERE environment = $1 ORDER BY tenant_id, version",
            vec![Arg::text(env.as_str())],
            server_key,
        )
        .await
}

pub(crate) async fn sdk_token<E: Engine>(
    store: &SqlStore<E>,
    id: &TokenId,
    env: Environment,
) -> Result<Option<SdkTokenRecord>> {
    store
        .engine
        .fetch_opt(
            "SELECT * FROM sdk_tokens WHERE id = $1 AND environment = $2",
            vec![Arg::blob(&id.0), Arg::text(env.as_str())],
            token_row,
        )
        .await
}

pub(crate) async fn sdk_token_by_reference<E: Engine>(
    store: &SqlStore<E>,
    client: &ClientId,
    env: Environment,
    reference_key: &[u8; 32],
) -> Result<Option<SdkTokenRecord>> {
    store
        .engine
        .fetch_opt(
            "SELECT * FROM sdk_tokens WHERE reference_key = $1 AND client_id = $2 \
             AND environment = $3 ORDER BY issued_at DESC",
            vec![
                Arg::blob(reference_key),
                Arg::text(client.as_str()),
                Arg::text(env.as_str()),
            ],
            token_row,
        )
        .await
}

pub(crate) async fn account_by_number<E: Engine>(
    store: &SqlStore<E>,
    tenant: &TenantId,
    env: Environment,
    number: &str,
) -> Result<Option<Account>> {
    store
        .engine
        .fetch_opt(
            "SELECT * FROM accounts WHERE tenant_id = $1 AND environment = $2 \
             AND account_number = $3 ORDER BY id",
            vec![
                Arg::text(tenant.as_str()),
                Arg::text(env.as_str()),
                Arg::text(number),
            ],
            rows::account,
        )
        .await
}

pub(crate) async fn account_cards<E: Engine>(
    store: &SqlStore<E>,
    tenant: &TenantId,
    env: Environment,
    account: &AccountId,
) -> Result<Vec<Card>> {
    store
        .engine
        .fetch_all(
            "SELECT * FROM cards WHERE tenant_id = $1 AND environment = $2 \
             AND account_id = $3 ORDER BY id",
            vec![
                Arg::text(tenant.as_str()),
                Arg::text(env.as_str()),
                Arg::text(account.as_str()),
            ],
            rows::card,
        )
        .await
}

pub(crate) async fn insert_server_key<T: WriteTx>(tx: &mut T, k: &SdkServerKeyRow) -> Result<()> {
    tx.exec(
        "INSERT INTO sdk_server_keys (tenant_id, environment, version, private_enc, public_jwk, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
        vec![
            Arg::text(k.tenant_id.as_str()),
            Arg::text(k.environment.as_str()),
            Arg::int(k.version),
            Arg::blob(&k.private_enc),
            Arg::text(&k.public_jwk),
            Arg::int(k.created_at_ms),
        ],
    )
    .await
    .map(|_| ())
}

pub(crate) async fn insert_token<T: WriteTx>(tx: &mut T, t: &SdkTokenRecord) -> Result<()> {
    tx.exec(
        "INSERT INTO sdk_tokens (id, hash, tenant_id, client_id, environment, reference_key, account_id, \
         sdk_public_jwk, server_key_version, issued_at, expires_at, revoked) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        vec![
            Arg::blob(&t.id.0),
            Arg::blob(&t.hash.0),
            Arg::text(t.tenant_id.as_str()),
            Arg::text(t.client_id.as_str()),
            Arg::text(t.environment.as_str()),
            Arg::blob(&t.reference_key),
            Arg::text(t.account_id.as_str()),
            Arg::text(&t.sdk_public_jwk),
            Arg::int(t.server_key_version),
            Arg::int(t.issued_at_ms),
            Arg::int(t.expires_at_ms),
            Arg::Bool(t.revoked),
        ],
    )
    .await
    .map(|_| ())
}

pub(crate) async fn revoke_token<T: WriteTx>(tx: &mut T, id: &TokenId) -> Result<()> {
    tx.exec(
        "UPDATE sdk_tokens SET revoked = TRUE WHERE id = $1",
        vec![Arg::blob(&id.0)],
    )
    .await
    .map(|_| ())
}
