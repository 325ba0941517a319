//! Write sets: what one request changes, with the guards that must hold for it to apply.

use crate::{DataKeyRow, SigningKeyRow};
use cardgate_core::audit::AuditEvent;
use cardgate_core::ids::MfaSessionId;
use cardgate_core::mfa::{Lockout, MfaSession};
use cardgate_core::tokens::{AccessTokenRecord, CardTokenRecord, TokenId};
use cardgate_core::{
    Account, Card, CardId, CardStatus, Client, ClientId, Person, PersonId, Tenant, TenantId,
};

/// A condition checked and acted on atomically (a conditional UPDATE).
#[derive(Debug, Clone)]
pub enum Guard {
    /// Counts one use of a card token that is unrevoked, unexpired and has uses left.
    RedeemCardToken { id: TokenId, now_ms: i64 },
    /// Counts one code checked by an MFA session that is unused, unexpired and has attempts
    /// left; with `consume` (the code was right) it also marks the session used. At most
    /// `mfa::MAX_ATTEMPTS` codes are ever checked per session, whatever the concurrency.
    MfaAttempt {
        id: MfaSessionId,
        now_ms: i64,
        consume: bool,
    },
    /// Counts a step-up attempt of a cardholder who is not locked out, as a failure until a
    /// right code clears it ([`Write::MfaPersonPassed`]); the failure that reaches the
    /// tenant's threshold within its window starts the lockout.
    MfaPersonAttempt {
        tenant: TenantId,
        person: PersonId,
        now_ms: i64,
        lockout: Lockout,
    },
    /// Accepts TOTP time step `step` for a cardholder only if it is later than every step
    /// accepted before: a TOTP code is accepted once per person (RFC 6238 §5.2).
    TotpStep {
        tenant: TenantId,
        person: PersonId,
        step: i64,
    },
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
    /// Claims `key` in `namespace` once: holds when the key is free, or its claim expired
    /// (which it takes over), and then records `fingerprint` and `value` until
    /// `expires_at_ms`. When another claimant holds it, the set is refused as
    /// [`WriteOutcome::Taken`] with what that first claimant stored, whatever its fallback. Across
    /// replicas a second claimant waits for the first's commit and then finds the key taken.
    Claim {
        namespace: &'static str,
        key: ClaimKey,
        fingerprint: Vec<u8>,
        value: Option<Vec<u8>>,
        now_ms: i64,
        expires_at_ms: i64,
    },
}

/// Which guard refused a write set (see [`WriteOutcome`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuardKind {
    RedeemCardToken,
    MfaAttempt,
    MfaPersonAttempt,
    TotpStep,
    CardStatus,
    CardIs,
    CardVault,
    Claim,
}

/// What a [`Guard::Claim`] claims: the SHA-256 of what the caller claims (an idempotency key
/// with the client it came from, a reference id, a proof's `jti`), so the store never holds
/// the claimed value itself.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClaimKey(pub [u8; 32]);

impl ClaimKey {
    /// The key of `parts` taken together: each part is length-prefixed before it is hashed,
    /// so `["ab", "c"]` and `["a", "bc"]` are different keys.
    pub fn of(parts: &[&[u8]]) -> Self {
        let mut buf = Vec::with_capacity(parts.iter().map(|p| p.len() + 8).sum());
        for p in parts {
            buf.extend_from_slice(&(p.len() as u64).to_be_bytes());
            buf.extend_from_slice(p);
        }
        Self(cardgate_jose::digest::sha256(&buf))
    }
}

impl std::fmt::Debug for ClaimKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClaimKey({})", cardgate_jose::digest::hex(&self.0))
    }
}

/// What the first claimant of a key stored (see [`WriteOutcome::Taken`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredClaim {
    /// What the first claimant's request was: equal to a later claimant's when it is a retry
    /// of the same request.
    pub fingerprint: Vec<u8>,
    /// What the first claimant stored for a repeat to be answered with.
    pub value: Option<Vec<u8>>,
    /// When the claim expires; from then on the key may be claimed again.
    pub expires_at_ms: i64,
}

impl Guard {
    /// Whether the guard changes a row when it holds (every guard but a pure check).
    pub fn writes(&self) -> bool {
        !matches!(self, Guard::CardIs { .. })
    }

    pub fn kind(&self) -> GuardKind {
        match self {
            Guard::RedeemCardToken { .. } => GuardKind::RedeemCardToken,
            Guard::MfaAttempt { .. } => GuardKind::MfaAttempt,
            Guard::MfaPersonAttempt { .. } => GuardKind::MfaPersonAttempt,
            Guard::TotpStep { .. } => GuardKind::TotpStep,
            Guard::CardStatus { .. } => GuardKind::CardStatus,
            Guard::CardIs { .. } => GuardKind::CardIs,
            Guard::CardVault { .. } => GuardKind::CardVault,
            Guard::Claim { .. } => GuardKind::Claim,
        }
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
    /// A cardholder stepped up: the attempt [`Guard::MfaPersonAttempt`] counted as a failure
    /// is taken back (earlier failures stay), and the lockout it started, if any, ends.
    MfaPersonPassed {
        tenant: TenantId,
        person: PersonId,
    },
    UpsertTenant(Tenant),
    UpsertClient(Client),
    /// Refuses every token the client was issued before `now_ms`, on disabling and on
    /// enabling: nothing issued before an enable works after it, not even a token a replica
    /// minted while it had not yet learned of the disable.
    SetClientDisabled {
        id: ClientId,
        disabled: bool,
        now_ms: i64,
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
    /// A new version of a tenant's BankEzy server key.
    InsertSdkServerKey(crate::SdkServerKeyRow),
    InsertSdkToken(cardgate_core::sdk::SdkTokenRecord),
    /// Invalidates an SDK token: every replica reads it on each use, so at once everywhere.
    RevokeSdkToken {
        id: TokenId,
    },
    /// Tells every replica to reload tenants, clients and keys.
    BumpConfigVersion,
    /// Sets a `meta` key to a value.
    SetMeta {
        key: &'static str,
        value: String,
    },
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
    /// When set, decided (guards and all) instead of `on_refused` when a guard after the
    /// preconditions fails: what the request does if it cannot do what it asked. A right MFA
    /// code falls back to exactly what a wrong code does, so losing a race tells it apart
    /// from nothing.
    pub fallback: Option<Box<WriteSet>>,
}

impl WriteSet {
    pub fn of(writes: Vec<Write>) -> Self {
        Self {
            guards: Vec::new(),
            preconditions: 0,
            writes,
            on_refused: Vec::new(),
            fallback: None,
        }
    }

    pub fn guarded(guards: Vec<Guard>, writes: Vec<Write>, on_refused: Vec<Write>) -> Self {
        Self {
            guards,
            preconditions: 0,
            writes,
            on_refused,
            fallback: None,
        }
    }

    /// Puts `checks` ahead of the guards as preconditions (see [`WriteSet::preconditions`]).
    pub fn with_preconditions(mut self, checks: Vec<Guard>) -> Self {
        self.preconditions += checks.len();
        self.guards.splice(0..0, checks);
        self
    }

    /// Decides `fallback` instead of `on_refused` when a guard fails (see
    /// [`WriteSet::fallback`]).
    pub fn or_else(mut self, fallback: WriteSet) -> Self {
        self.fallback = Some(Box::new(fallback));
        self
    }
}

/// What became of a write set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOutcome {
    Applied,
    /// A precondition (this one) no longer holds: nothing at all was written; the caller
    /// decides again on fresh data.
    Stale(GuardKind),
    /// Guard `by` did not hold, so nothing of `writes` was applied: `on_refused` was, or —
    /// when the set has a fallback — the fallback was decided and `fallback` says how.
    Refused {
        by: GuardKind,
        fallback: Option<Box<WriteOutcome>>,
    },
    /// A [`Guard::Claim`] found its key held by an earlier claimant: nothing of `writes` was
    /// applied (`on_refused` was, unless the claim was a precondition), no fallback was
    /// decided, and here is what the first claimant stored.
    Taken(StoredClaim),
}

impl WriteOutcome {
    /// Refused by `by`, with no fallback.
    pub fn refused(by: GuardKind) -> Self {
        Self::Refused { by, fallback: None }
    }
}
