//! Delivery of one-time MFA codes to the tenant's webhook: a JSON POST signed with
//! HMAC-SHA256 over the exact body (`X-Cardgate-Signature: sha256=<hex>`), retried with
//! exponential backoff. A redirect is never followed. In production the URL must be https
//! and the connection goes only to a public address: an IP host is checked before sending,
//! a name's addresses are filtered as they are resolved, so what is connected to is what was
//! checked (see `cardgate_core::webhook`). The code travels only in this body, never in a log.

use super::{Service, ServiceError};
use cardgate_core::mfa::MfaSession;
use cardgate_core::webhook::{check_address, check_scheme, WebhookRefusal};
use cardgate_core::{Environment, Tenant};
use cardgate_jose::digest::{hex, hmac_sha256};
use cardgate_store::WriteSet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::redirect::Policy;
use serde_json::json;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use zeroize::Zeroizing;

pub const SIGNATURE_HEADER: &str = "x-cardgate-signature";
const ATTEMPTS: u32 = 5;

/// A tenant's webhook URL that passed this environment's checks on everything known before
/// DNS: the scheme, and the address when the host is one.
pub(crate) struct WebhookDestination(reqwest::Url);

impl WebhookDestination {
    pub(crate) fn check(env: Environment, url: &str) -> Result<Self, WebhookRefusal> {
        let url = reqwest::Url::parse(url).map_err(|_| WebhookRefusal::Malformed)?;
        check_scheme(env, url.scheme())?;
        // The URL parser normalises IPv4 in any spelling (`2130706433`, `0x7f.1`) to dotted
        // form, and the connector dials an IP host without asking the resolver.
        let host = url.host_str().ok_or(WebhookRefusal::Malformed)?;
        if let Ok(ip) = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            check_address(env, ip)?;
        }
        Ok(Self(url))
    }
}

/// Every address a name resolved to was refused; carried to the sender through reqwest's
/// error chain.
#[derive(Debug, thiserror::Error)]
#[error("{address}: {refusal}")]
struct AddressRefused {
    address: IpAddr,
    refusal: WebhookRefusal,
}

/// Production's resolver: the system's (`getaddrinfo`, so `/etc/hosts` counts), keeping only
/// the addresses production may connect to. The connector dials only what this returns.
struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let mut refused = None;
            let allowed: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| match check_address(Environment::Production, a.ip()) {
                    Ok(()) => true,
                    Err(refusal) => {
                        refused.get_or_insert(AddressRefused {
                            address: a.ip(),
                            refusal,
                        });
                        false
                    }
                })
                .collect();
            match refused {
                Some(r) if allowed.is_empty() => Err(r.into()),
                _ => Ok(Box::new(allowed.into_iter()) as Addrs),
            }
        })
    }
}

/// The client webhooks are sent with. It never follows a redirect. In production it speaks
/// only https, resolves names through [`PublicOnly`], and ignores `HTTP(S)_PROXY`: a proxy
/// would resolve the name itself, out of the check's reach.
pub(crate) fn client(env: Environment) -> reqwest::Result<reqwest::Client> {
    let builder = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .redirect(Policy::none());
    match env {
        Environment::Sandbox => builder,
        Environment::Production => builder
            .https_only(true)
            .no_proxy()
            .dns_resolver(Arc::new(PublicOnly)),
    }
    .build()
}

/// The refusal in `e`'s chain of causes, if the connection was refused by [`PublicOnly`].
fn address_refused(e: &reqwest::Error) -> Option<&AddressRefused> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(r) = c.downcast_ref::<AddressRefused>() {
            return Some(r);
        }
        cause = c.source();
    }
    None
}

impl Service {
    /// The tenant's webhook, if this instance may send codes to it. A refusal is audited and
    /// answered with what production refuses, so a session never waits for a code that
    /// cannot be sent.
    pub(crate) async fn usable_webhook(
        &self,
        tenant: &Tenant,
        actor: &str,
        subject: &str,
    ) -> Result<WebhookDestination, ServiceError> {
        let Some(url) = tenant.settings.webhook_url.as_deref() else {
            return Err(ServiceError::BadRequest(
                "the tenant has no webhook_url to deliver codes".into(),
            ));
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
                Err(ServiceError::BadRequest(refusal.to_string()))
            }
        }
    }

    pub(crate) fn send_mfa_code(
        self: &Arc<Self>,
        tenant: &Arc<Tenant>,
        session: &MfaSession,
        destination: &str,
        code: Zeroizing<String>,
        webhook: WebhookDestination,
    ) {
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
        let svc = Arc::downgrade(self);
        let tenant_id = tenant.id.clone();
        let (session_id, person_id) = (session.id, session.person_id);
        tokio::spawn(async move {
            let mut delay = Duration::from_millis(250);
            for attempt in 1..=ATTEMPTS {
                let res = client
                    .post(webhook.0.clone())
                    .header("content-type", "application/json")
                    .header(SIGNATURE_HEADER, &signature)
                    .body(body.as_bytes().to_vec())
                    .send()
                    .await;
                match res {
                    Ok(r) if r.status().is_success() => {
                        tracing::info!(session = %session_id, attempt, delivery = "delivered", "MFA code delivered to webhook");
                        return;
                    }
                    Ok(r) if r.status().is_redirection() => {
                        // Final: a redirect says the URL is wrong, and will say so again.
                        tracing::error!(tenant = %tenant_id, session = %session_id, attempt, status = r.status().as_u16(), delivery = "redirected",
                            "MFA code not delivered: the webhook answered with a redirect, which is never followed");
                        return;
                    }
                    Ok(r) => {
                        tracing::warn!(session = %session_id, attempt, status = r.status().as_u16(), "webhook refused MFA code")
                    }
                    Err(e) => {
                        if let Some(&AddressRefused { address, refusal }) = address_refused(&e) {
                            // Audited first: the log line that ends the delivery follows the event.
                            if let Some(svc) = svc.upgrade() {
                                let event = svc.audit(
                                    Some(&tenant_id),
                                    "system",
                                    "mfa.code_delivery",
                                    "destination_refused",
                                    format!("person:{person_id}"),
                                    json!({"session": session_id.to_string(), "reason": refusal.as_str()}),
                                );
                                if let Err(e) = svc.commit(WriteSet::of(vec![event])).await {
                                    tracing::error!(error = %e, "could not record a refused webhook destination in the audit log");
                                }
                            }
                            tracing::error!(tenant = %tenant_id, session = %session_id, %address,
                                reason = refusal.as_str(), delivery = "refused",
                                "MFA code not sent: every address of the webhook's host is refused in production");
                            return;
                        }
                        tracing::warn!(session = %session_id, attempt, error = %e.without_url(), "webhook unreachable")
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

pub fn webhook_secret_aad(tenant: &cardgate_core::TenantId) -> String {
    format!("cardgate:webhook-secret:{tenant}")
}
