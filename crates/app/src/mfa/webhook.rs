//! Delivery of one-time MFA codes to the tenant's webhook: a JSON POST signed with
//! HMAC-SHA256 over the exact body (`X-Cardgate-Signature: sha256=<hex>`), retried with
//! exponential backoff while the webhook is unreachable or answers an error. A redirect is
//! never followed. In production the URL must be https and the connection goes only to a
//! public address: an IP host is checked here, before a session starts; a name's addresses
//! are checked by the [`Courier`] as they are resolved, so what is connected to is what was
//! checked (see `cardgate_core::webhook`). The code travels only in this body, never in a log.

use super::Mfa;
use crate::error::Misconfigured;
use crate::AppError;
use cardgate_core::mfa::MfaSession;
use cardgate_core::webhook::{check_address, check_scheme, WebhookRefusal};
use cardgate_core::{Environment, Tenant};
use cardgate_jose::digest::{hex, hmac_sha256};
use cardgate_jose::vault::aad;
use cardgate_store::WriteSet;
use serde_json::json;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use zeroize::Zeroizing;

pub const SIGNATURE_HEADER: &str = "x-cardgate-signature";
const ATTEMPTS: u32 = 5;

/// What one delivery attempt came to.
#[derive(Debug)]
pub enum Attempt {
    Delivered,
    /// The webhook answered with a redirect, which is never followed: final.
    Redirected(u16),
    /// Every address the webhook's host resolved to is refused in this environment: final.
    Refused {
        address: IpAddr,
        refusal: WebhookRefusal,
    },
    /// Worth another try: the webhook answered this error status, or could not be reached.
    Failed {
        status: Option<u16>,
        error: String,
    },
}

/// Carries one signed webhook POST. It must never follow a redirect, and in production must
/// connect only to addresses [`check_address`] allows (the HTTP crate's courier resolves
/// names through such a filter).
#[async_trait::async_trait]
pub trait Courier: Send + Sync + 'static {
    async fn post(&self, url: &url::Url, body: &[u8], signature: &str) -> Attempt;
}

/// A tenant's webhook URL that passed this environment's checks on everything known before
/// DNS: the scheme, and the address when the host is one.
pub(crate) struct WebhookDestination(url::Url);

impl WebhookDestination {
    pub(crate) fn check(env: Environment, url: &str) -> Result<Self, WebhookRefusal> {
        let url = url::Url::parse(url).map_err(|_| WebhookRefusal::Malformed)?;
        check_scheme(env, url.scheme())?;
        // The URL parser normalises IPv4 in any spelling (`2130706433`, `0x7f.1`) to dotted
        // form, and a connector dials an IP host without asking the resolver.
        match url.host() {
            Some(url::Host::Ipv4(ip)) => check_address(env, IpAddr::V4(ip))?,
            Some(url::Host::Ipv6(ip)) => check_address(env, IpAddr::V6(ip))?,
            Some(url::Host::Domain(_)) => {}
            None => return Err(WebhookRefusal::Malformed),
        }
        Ok(Self(url))
    }
}

impl Mfa<'_> {
    /// The tenant's webhook, if this instance may send codes to it. A refusal is audited and
    /// answered with what production refuses, so a session never waits for a code that
    /// cannot be sent.
    pub(crate) async fn usable_webhook(
        &self,
        tenant: &Tenant,
        actor: &str,
        subject: &str,
    ) -> Result<WebhookDestination, AppError> {
        let Some(url) = tenant.settings.webhook_url.as_deref() else {
            return Err(AppError::Misconfigured(Misconfigured::NoWebhook));
        };
        match WebhookDestination::check(self.env(), url) {
            Ok(webhook) => Ok(webhook),
            Err(refusal) => {
                let event = self.audit(
                    Some(&tenant.id),
                    actor,
                    "mfa.start",
                    "webhook_refused",
                    subject,
                    json!({"reason": refusal.as_str()}),
                );
                if let Err(e) = self.commit(WriteSet::of(vec![event])).await {
                    tracing::error!(error = %e, "could not record a refused webhook in the audit log");
                }
                Err(AppError::Misconfigured(Misconfigured::Webhook(refusal)))
            }
        }
    }

    pub(crate) fn send_mfa_code(
        &self,
        tenant: &Arc<Tenant>,
        session: &MfaSession,
        destination: &str,
        code: Zeroizing<String>,
        webhook: WebhookDestination,
    ) {
        let secret = match tenant.webhook_secret_enc.as_ref().map(|enc| {
            self.master()
                .open(&aad::webhook_secret(tenant.id.as_str()), enc)
        }) {
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
        let courier = self.courier.clone();
        let app = Arc::downgrade(self);
        let tenant_id = tenant.id.clone();
        let (session_id, person_id) = (session.id, session.person_id);
        tokio::spawn(async move {
            let mut delay = Duration::from_millis(250);
            for attempt in 1..=ATTEMPTS {
                match courier.post(&webhook.0, body.as_bytes(), &signature).await {
                    Attempt::Delivered => {
                        tracing::info!(session = %session_id, attempt, delivery = "delivered", "MFA code delivered to webhook");
                        return;
                    }
                    Attempt::Redirected(status) => {
                        // Final: a redirect says the URL is wrong, and will say so again.
                        tracing::error!(tenant = %tenant_id, session = %session_id, attempt, status, delivery = "redirected",
                            "MFA code not delivered: the webhook answered with a redirect, which is never followed");
                        return;
                    }
                    Attempt::Refused { address, refusal } => {
                        // Audited first: the log line that ends the delivery follows the event.
                        if let Some(app) = app.upgrade() {
                            let event = app.audit(
                                Some(&tenant_id),
                                "system",
                                "mfa.code_delivery",
                                "destination_refused",
                                format!("person:{person_id}"),
                                json!({"session": session_id.to_string(), "reason": refusal.as_str()}),
                            );
                            if let Err(e) = app.commit(WriteSet::of(vec![event])).await {
                                tracing::error!(error = %e, "could not record a refused webhook destination in the audit log");
                            }
                        }
                        tracing::error!(tenant = %tenant_id, session = %session_id, %address,
                            reason = refusal.as_str(), delivery = "refused",
                            "MFA code not sent: every address of the webhook's host is refused in production");
                        return;
                    }
                    Attempt::Failed {
                        status: Some(status),
                        ..
                    } => {
                        tracing::warn!(session = %session_id, attempt, status, "webhook refused MFA code")
                    }
                    Attempt::Failed { error, .. } => {
                        tracing::warn!(session = %session_id, attempt, error = %error, "webhook unreachable")
                    }
                }
                if attempt < ATTEMPTS {
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
            }
            tracing::error!(session = %session_id, delivery = "failed", "MFA code not delivered after {ATTEMPTS} attempts");
        });
    }
}
