//! Persons, accounts, cards and data keys belong to one environment, on every engine.

use super::*;

/// Persons, accounts, cards and data keys belong to one environment: reads in another do
/// not find them, and no write moves them there (the write fails and changes nothing).
pub(super) async fn environments(store: &Arc<dyn Store>, t: &Tenant, card: &Card) {
    let backend = store.backend();
    let prod = Environment::Production;
    assert_eq!(
        store.get_card(&t.id, prod, &card.id).await.unwrap(),
        None,
        "{backend}: another environment's card is not found"
    );
    assert!(store.list_cards(&t.id, prod).await.unwrap().is_empty());
    assert_eq!(
        store.list_cards(&t.id, SB).await.unwrap(),
        vec![card.clone()]
    );
    let account = store
        .get_account(&t.id, SB, card.account_id.as_str())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(account.environment, SB, "{backend}");
    assert_eq!(
        store
            .get_account(&t.id, prod, card.account_id.as_str())
            .await
            .unwrap(),
        None,
        "{backend}"
    );
    // Not the card's cardholder: the contract's redemption reads a card without one.
    let person = Person {
        id: PersonId::new_random(),
        tenant_id: t.id.clone(),
        environment: SB,
        profile: PersonProfile {
            first_name: "P".into(),
            last_name: "Q".into(),
            email: None,
            isd_code: None,
            mobile_number: None,
            dob: None,
        },
        totp_secret_enc: None,
        key_version: 1,
    };
    store
        .apply(&[WriteSet::of(vec![Write::UpsertPerson(person.clone())])])
        .await
        .unwrap();
    assert_eq!(
        store.list_persons(&t.id, SB).await.unwrap(),
        vec![person.clone()],
        "{backend}"
    );
    assert_eq!(
        store.get_person(&t.id, prod, &person.id).await.unwrap(),
        None,
        "{backend}"
    );
    let elsewhere = store.other_environment_ids(&t.id, prod).await.unwrap();
    assert_eq!(
        (
            elsewhere.persons.into_iter().collect::<Vec<_>>(),
            elsewhere.accounts.into_iter().collect::<Vec<_>>(),
            elsewhere.cards.into_iter().collect::<Vec<_>>()
        ),
        (
            vec![person.id],
            vec![card.account_id.clone()],
            vec![card.id]
        ),
        "{backend}: ids used in sandbox, seen from production"
    );
    assert_eq!(
        store.other_environment_ids(&t.id, SB).await.unwrap(),
        OtherEnvironmentIds::default(),
        "{backend}"
    );
    // An upsert naming another environment's object fails, with the whole batch.
    let logged_before = logged(store).await;
    let moves = [
        Write::UpsertCard(Card {
            environment: prod,
            last4: "9999".into(),
            ..card.clone()
        }),
        Write::UpsertAccount(Account {
            environment: prod,
            account_number: "99".into(),
            ..account.clone()
        }),
        Write::UpsertPerson(Person {
            environment: prod,
            key_version: 9,
            ..person.clone()
        }),
    ];
    for w in moves {
        let res = store
            .apply(&[WriteSet::of(vec![audit("move"), w.clone()])])
            .await;
        assert!(
            matches!(res, Err(StoreError::OtherEnvironment(_))),
            "{backend}: {w:?} → {res:?}"
        );
    }
    assert_eq!(
        logged(store).await,
        logged_before,
        "{backend}: nothing of the batches was written"
    );
    assert_eq!(
        store.get_card(&t.id, SB, &card.id).await.unwrap().as_ref(),
        Some(card),
        "{backend}: the card stayed as it was"
    );
    assert_eq!(
        store
            .get_account(&t.id, SB, card.account_id.as_str())
            .await
            .unwrap(),
        Some(account),
        "{backend}"
    );
    assert_eq!(
        store.get_person(&t.id, SB, &person.id).await.unwrap(),
        Some(person),
        "{backend}"
    );
    // Data keys are per (tenant, environment, version).
    let key = |env: Environment, byte: u8| DataKeyRow {
        tenant_id: t.id.clone(),
        environment: env,
        version: 1,
        key_enc: vec![byte; 60],
        created_at_ms: 5,
    };
    store
        .apply(&[WriteSet::of(vec![
            Write::InsertDataKey(key(SB, 1)),
            Write::InsertDataKey(key(prod, 2)),
        ])])
        .await
        .unwrap();
    assert_eq!(store.load_data_keys(SB).await.unwrap(), vec![key(SB, 1)]);
    assert_eq!(
        store.load_data_keys(prod).await.unwrap(),
        vec![key(prod, 2)]
    );
}
