//! MFA sessions in the store contract: attempts counted and capped atomically, a cardholder's
//! lockout across sessions, a TOTP step accepted once per person, and fallbacks.

use super::*;

/// Each checked code counts an attempt, at most `MAX_ATTEMPTS`; a right code consumes the
/// session once; a person's failures lock them out; a TOTP step is used once.
pub(super) async fn mfa_sessions(store: &Arc<dyn Store>, t: &Tenant, person: PersonId) {
    let backend = store.backend();
    use WriteOutcome::Applied as A;
    // MFA sessions: each checked code counts an attempt, at most MAX_ATTEMPTS of them, and a
    // right code consumes the session once.
    let sid = MfaSessionId::new_random();
    let session = MfaSession {
        id: sid,
        tenant_id: t.id.clone(),
        person_id: person,
        environment: Environment::Sandbox,
        channel: Channel::Sms,
        code_hash: Some([7; 32]),
        attempts: 0,
        created_at_ms: 1_000,
        expires_at_ms: 5_000,
        consumed: false,
    };
    store
        .apply(&[WriteSet::of(vec![Write::InsertMfaSession(session.clone())])])
        .await
        .unwrap();
    let attempt = |consume: bool, now_ms: i64| {
        WriteSet::guarded(
            vec![Guard::MfaAttempt {
                id: sid,
                now_ms,
                consume,
            }],
            vec![],
            vec![],
        )
    };
    let refused = || WriteOutcome::refused(GuardKind::MfaAttempt);
    assert_eq!(
        store
            .apply(&[attempt(false, 2_000), attempt(false, 5_000)])
            .await
            .unwrap(),
        vec![A, refused()],
        "{backend}: an expired session checks no code"
    );
    let stored = store.get_mfa_session(&sid, SB).await.unwrap().unwrap();
    assert_eq!(
        (stored.attempts, stored.code_hash, stored.channel),
        (1, Some([7; 32]), Channel::Sms),
        "{backend}"
    );
    assert_eq!(
        store
            .apply(&[
                attempt(true, 2_000),
                attempt(true, 2_000),
                attempt(false, 2_000)
            ])
            .await
            .unwrap(),
        vec![A, refused(), refused()],
        "{backend}: a consumed session checks nothing more"
    );
    let sid2 = MfaSessionId::new_random();
    store
        .apply(&[WriteSet::of(vec![Write::InsertMfaSession(MfaSession {
            id: sid2,
            ..session.clone()
        })])])
        .await
        .unwrap();
    let wrong = || {
        WriteSet::guarded(
            vec![Guard::MfaAttempt {
                id: sid2,
                now_ms: 2_000,
                consume: false,
            }],
            vec![],
            vec![],
        )
    };
    let out = store.apply(&vec![wrong(); 7]).await.unwrap();
    assert_eq!(
        out.iter().filter(|o| **o == A).count(),
        cardgate_core::mfa::MAX_ATTEMPTS as usize,
        "{backend}: five attempts, then the session is locked"
    );
    assert_eq!(
        store
            .get_mfa_session(&sid2, SB)
            .await
            .unwrap()
            .unwrap()
            .attempts,
        cardgate_core::mfa::MAX_ATTEMPTS,
        "{backend}"
    );

    // A cardholder's failures across sessions lock them out; the lockout ends by itself, and
    // a right code forgives the failures.
    let lockout = cardgate_core::mfa::Lockout {
        max_failures: 3,
        window_seconds: 60,
        lockout_seconds: 30,
    };
    let person_attempt = |now_ms: i64| {
        WriteSet::guarded(
            vec![Guard::MfaPersonAttempt {
                tenant: t.id.clone(),
                person,
                now_ms,
                lockout,
            }],
            vec![],
            vec![],
        )
    };
    let locked = || WriteOutcome::refused(GuardKind::MfaPersonAttempt);
    let out = store
        .apply(&[
            person_attempt(10_000),
            person_attempt(10_001),
            person_attempt(10_002),
            person_attempt(10_003),
        ])
        .await
        .unwrap();
    assert_eq!(
        out,
        vec![A, A, A, locked()],
        "{backend}: the third failure locks"
    );
    assert_eq!(
        store.get_mfa_person(&t.id, &person).await.unwrap(),
        Some(cardgate_store::MfaPersonState {
            failures: 3,
            locked_until_ms: 40_002
        }),
        "{backend}"
    );
    assert_eq!(
        store
            .apply(&[
                person_attempt(40_001),
                person_attempt(40_002),
                person_attempt(40_003)
            ])
            .await
            .unwrap(),
        vec![locked(), A, A],
        "{backend}: until the lockout ends"
    );
    store
        .apply(&[WriteSet::of(vec![Write::MfaPersonPassed {
            tenant: t.id.clone(),
            person,
        }])])
        .await
        .unwrap();
    assert_eq!(
        store.get_mfa_person(&t.id, &person).await.unwrap(),
        Some(cardgate_store::MfaPersonState {
            failures: 1,
            locked_until_ms: 0
        }),
        "{backend}: a right code takes back its own attempt, not the failures before it"
    );

    // A TOTP step is accepted once per person, and only moving forward.
    let step = |step: i64| {
        WriteSet::guarded(
            vec![Guard::TotpStep {
                tenant: t.id.clone(),
                person,
                step,
            }],
            vec![],
            vec![],
        )
    };
    let replayed = || WriteOutcome::refused(GuardKind::TotpStep);
    assert_eq!(
        store
            .apply(&[step(100), step(100), step(99), step(101)])
            .await
            .unwrap(),
        vec![A, replayed(), replayed(), A],
        "{backend}"
    );

    // A fallback is decided instead of `on_refused` when a guard fails, and the outcome says
    // which guard refused and what the fallback did; the refused set's own guards are undone.
    let sid3 = MfaSessionId::new_random();
    store
        .apply(&[WriteSet::of(vec![Write::InsertMfaSession(MfaSession {
            id: sid3,
            ..session.clone()
        })])])
        .await
        .unwrap();
    let head_before = logged(store).await;
    let right_code = |step_no: i64| {
        WriteSet::guarded(
            vec![
                Guard::MfaAttempt {
                    id: sid3,
                    now_ms: 2_000,
                    consume: true,
                },
                Guard::TotpStep {
                    tenant: t.id.clone(),
                    person,
                    step: step_no,
                },
            ],
            vec![audit("stepped up")],
            vec![audit("never")],
        )
        .or_else(WriteSet::guarded(
            vec![Guard::MfaAttempt {
                id: sid3,
                now_ms: 2_000,
                consume: false,
            }],
            vec![audit("counted as wrong")],
            vec![audit("refused")],
        ))
    };
    assert_eq!(
        store.apply(&[right_code(101)]).await.unwrap(),
        vec![WriteOutcome::Refused {
            by: GuardKind::TotpStep,
            fallback: Some(Box::new(A))
        }],
        "{backend}"
    );
    let stored = store.get_mfa_session(&sid3, SB).await.unwrap().unwrap();
    assert_eq!(
        (stored.attempts, stored.consumed),
        (1, false),
        "{backend}: the refused set's consumption was undone, the fallback's attempt kept"
    );
    assert_eq!(
        store.apply(&[right_code(102)]).await.unwrap(),
        vec![A],
        "{backend}"
    );
    assert_eq!(
        store.apply(&[right_code(103)]).await.unwrap(),
        vec![WriteOutcome::Refused {
            by: GuardKind::MfaAttempt,
            fallback: Some(Box::new(refused()))
        }],
        "{backend}: a consumed session refuses both"
    );
    assert_eq!(
        logged(store).await,
        head_before + 3,
        "{backend}: counted as wrong, stepped up, refused"
    );
}
