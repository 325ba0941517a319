//! Delivery of one-time MFA codes to the tenant's webhook: a JSON POST signed with
//! HMAC-SHA256 over the exact body (`X-Cardgate-Signature: sha256=<hex>`), retried with
//! exponential backoff. The code travels only in this body, never in a log.

use super::Service;
use cardgate_core::mfa::MfaSession;
use cardgate_core::Tenant;
use cardgate_jose::digest::{hex, hmac_sha256};
use std::sync::Arc;
use std::time::Duration;
use zeroize::Zeroizing;

pub const SIGNATURE_HEADER: &str = "x-cardgate-signature";
const ATTEMPTS: u32 = 5;

impl Service {
    pub(crate) fn send_mfa_code(
        &self,
        tenant: &Arc<Tenant>,
        session: &MfaSession,
        destination: &str,
        code: Zeroizing<String>,
    ) {
        let Some(url) = tenant.settings.webhook_url.clone() else {
            return;
        };
        let secret = match tenant
            .webhook_secret_enc
            .as_ref()
            .map(|enc| self.master().open(&webhook_secret_aad(&tenant.id), enc))
        {
            Some(Ok(s)) => s,
            _ => {
                tracing::error!(tenant = %tenant.id, "webhook secret missing or unreadable; code not sent");
                return;
            }
        };
        let body = Zeroizing::new(
            serde_json::json!({
                "type": "mfa.code",
                "tenant": tenant.id.as_str(),
                "session_id": session.id.to_string(),
                "person_id": session.person_id.to_string(),
                "channel": session.channel.as_str(),
                "destination": destination,
                "code": code.as_str(),
                "expires_at_ms": session.expires_at_ms,
                "sent_at_ms": self.now_ms(),
            })
            .to_string(),
        );
        let signature = format!("sha256={}", hex(&hmac_sha256(&secret, body.as_bytes())));
        let client = self.http.clone();
        let session_id = session.id;
        tokio::spawn(async move {
            let mut delay = Duration::from_millis(250);
            for attempt in 1..=ATTEMPTS {
                let res = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .header(SIGNATURE_HEADER, &signature)
                    .body(body.as_bytes().to_vec())
                    .send()
                    .await;
                match res {
                    Ok(r) if r.status().is_success() => {
                        tracing::info!(session = %session_id, attempt, "MFA code delivered to webhook");
                        return;
                    }
                    Ok(r) => {
                        tracing::warn!(session = %session_id, attempt, status = r.status().as_u16(), "webhook refused MFA code")
                    }
                    Err(e) => {
                        tracing::warn!(session = %session_id, attempt, error = %e.without_url(), "webhook unreachable")
                    }
                }
                if attempt < ATTEMPTS {
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
            }
            tracing::error!(session = %session_id, "MFA code not delivered after {ATTEMPTS} attempts");
        });
    }
}

pub fn webhook_secret_aad(tenant: &cardgate_core::TenantId) -> String {
    format!("cardgate:webhook-secret:{tenant}")
}
