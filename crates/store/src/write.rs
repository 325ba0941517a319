//! Write sets: what one request changes, with the guards that must hold for it to apply.

use crate::{DataKeyRow, SigningKeyRow};
use cardgate_core::audit::AuditEvent;
use cardgate_core::ids::MfaSessionId;
use cardgate_core::mfa::MfaSession;
use cardgate_core::tokens::{AccessTokenRecord, CardTokenRecord, TokenId};
use cardgate_core::{
    Account, Card, CardId, CardStatus, Client, ClientId, Person, Tenant, TenantId,
};

/// A condition checked and acted on atomically (a conditional UPDATE).
#[derive(Debug, Clone)]
pub enum Guard {
    /// Counts one use of a card token that is unrevoked, unexpired and has uses left.
    RedeemCardToken { id: TokenId, now_ms: i64 },
    /// Marks an MFA session used if it is unused, unlocked and unexpired.
    ConsumeMfaSession { id: MfaSessionId, now_ms: i64 },
    /// Moves a card from one status to another.
    CardStatus {
        tenant: TenantId,
        card: CardId,
        from: CardStatus,
        to: CardStatus,
        now_ms: i64,
    },
    /// Holds while the card is still exactly as the caller last saw it (same status and sealed
    /// data): lets a decision made on a cached card commit only if the card did not change.
    /// Checks without writing anything.
    CardIs {
        tenant: TenantId,
        card: CardId,
        status: CardStatus,
        vault: Vec<u8>,
    },
    /// Replaces a card's sealed data if it is still exactly `expect_vault` (compare-and-swap,
    /// so a PIN change and a data-key rotation never overwrite each other).
    CardVault {
        tenant: TenantId,
        card: CardId,
        expect_vault: Vec<u8>,
        vault: Vec<u8>,
        key_version: i64,
        now_ms: i64,
    },
}

impl Guard {
    /// Whether the guard changes a row when it holds (every guard but a pure check).
    pub fn writes(&self) -> bool {
        !matches!(self, Guard::CardIs { .. })
    }
}

#[derive(Debug, Clone)]
pub enum Write {
    Audit(AuditEvent),
    InsertAccessToken(AccessTokenRecord),
    InsertCardToken(CardTokenRecord),
    RevokeAccessToken {
        id: TokenId,
    },
    RevokeCardToken {
        id: TokenId,
    },
    /// Records a revoked token id (JWT `jti` or hash hex) so every replica learns of it.
    AddRevocation {
        token_id: String,
        tenant: TenantId,
        now_ms: i64,
        expires_at_ms: i64,
    },
    InsertMfaSession(MfaSession),
    MfaWrongAttempt {
        id: MfaSessionId,
    },
    UpsertTenant(Tenant),
    UpsertClient(Client),
    SetClientDisabled {
        id: ClientId,
        disabled: bool,
    },
    UpsertPerson(Person),
    UpsertAccount(Account),
    UpsertCard(Card),
    InsertSigningKey(SigningKeyRow),
    RetireSigningKey {
        kid: String,
        at_ms: i64,
    },
    InsertDataKey(DataKeyRow),
    /// Tells every replica to reload tenants, clients and keys.
    BumpConfigVersion,
}

/// One request's changes.
#[derive(Debug, Clone, Default)]
pub struct WriteSet {
    pub guards: Vec<Guard>,
    /// How many of the leading guards are preconditions: when one of them fails the set writes
    /// nothing at all (the caller decides again on fresh data), not even `on_refused`.
    pub preconditions: usize,
    pub writes: Vec<Write>,
    /// Applied instead of `writes` when a guard after the preconditions fails (typically the
    /// refusal's audit event).
    pub on_refused: Vec<Write>,
}

impl WriteSet {
    pub fn of(writes: Vec<Write>) -> Self {
        Self {
            guards: Vec::new(),
            preconditions: 0,
            writes,
            on_refused: Vec::new(),
        }
    }

    pub fn guarded(guards: Vec<Guard>, writes: Vec<Write>, on_refused: Vec<Write>) -> Self {
        Self {
            guards,
            preconditions: 0,
            writes,
            on_refused,
        }
    }

    /// Puts `checks` ahead of the guards as preconditions (see [`WriteSet::preconditions`]).
    pub fn with_preconditions(mut self, checks: Vec<Guard>) -> Self {
        self.preconditions += checks.len();
        self.guards.splice(0..0, checks);
        self
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    Applied,
    /// Guard number `n` did not hold; nothing of `writes` was applied.
    Refused(usize),
}
