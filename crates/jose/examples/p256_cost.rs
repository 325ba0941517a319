//! Times the P-256 primitives BankEzy's dialect pays per request, with the same code the
//! server runs: one static-key agreement (`ECDH-ES` of a reveal), one public-key validation
//! (the `sdkPublicKey` check of a token call), and a whole reveal JWE. `bench/run.sh` prints
//! these next to the HTTP scenarios of the same run.
//!
//! `cargo run --release -p cardgate-jose --example p256_cost [ITERATIONS]`

use cardgate_jose::ecdh::{agree_once, encrypt_static, StaticKey, ValidPublicKey};
use std::time::Instant;

fn per_op(n: u32, mut f: impl FnMut() -> u8) -> f64 {
    let mut sink = 0u8;
    let start = Instant::now();
    for _ in 0..n {
        sink ^= f();
    }
    let us = start.elapsed().as_secs_f64() * 1e6 / f64::from(n);
    std::hint::black_box(sink);
    us
}

fn main() -> Result<(), cardgate_jose::JoseError> {
    let n: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2000);
    let server = StaticKey::generate()?;
    let sdk = StaticKey::generate()?;
    let jwk = sdk.public_jwk().clone();
    let peer = ValidPublicKey::from_jwk(&jwk)?;
    let details = br#"{"cardId":"e9293471-5eb3-4dbc-916c-dbaf9e2deefd","pan":"xxxxxxxxxxxxxxxx","cvv":"xxx","expiryMonth":12,"expiryYear":2029,"cardholderName":"Ada Lovelace"}"#;
    // Warm up.
    per_op(n / 10 + 1, || agree_once(&server, &peer)[0]);
    let agreement = per_op(n, || agree_once(&server, &peer)[0]);
    let validation = per_op(n, || u8::from(ValidPublicKey::from_jwk(&jwk).is_ok()));
    let reveal_jwe = per_op(n, || {
        encrypt_static(&server, "kid", &peer, details).map_or(0, |j| j.len() as u8)
    });
    println!(
        "{{\"p256_agreement_us\": {agreement:.1}, \"p256_validation_us\": {validation:.1}, \"reveal_jwe_us\": {reveal_jwe:.1}, \"iterations\": {n}}}"
    );
    Ok(())
}
