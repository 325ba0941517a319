//! The webhook courier: how step-up codes leave the service (`cardgate_app::Courier`), over
//! HTTP with reqwest. It never follows a redirect. In production it speaks only https,
//! resolves names through [`PublicOnly`] — so the connector dials only addresses that passed
//! `cardgate_core::webhook::check_address`, with no second lookup to rebind — and ignores
//! `HTTP(S)_PROXY`, since a proxy would resolve the name itself.

use cardgate_app::mfa::{Attempt, Courier, SIGNATURE_HEADER};
use cardgate_core::webhook::{check_address, WebhookRefusal};
use cardgate_core::Environment;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::redirect::Policy;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// Every address a name resolved to was refused; carried back through reqwest's error chain.
#[derive(Debug, thiserror::Error)]
#[error("{address}: {refusal}")]
struct AddressRefused {
    address: IpAddr,
    refusal: WebhookRefusal,
}

/// Production's resolver: the system's (`getaddrinfo`, so `/etc/hosts` counts), keeping only
/// the addresses production may connect to.
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

/// Delivers webhooks with reqwest, by this environment's rules.
pub struct HttpCourier(reqwest::Client);

impl HttpCourier {
    pub fn new(env: Environment) -> reqwest::Result<Arc<Self>> {
        let builder = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .redirect(Policy::none());
        let client = match env {
            Environment::Sandbox => builder,
            Environment::Production => builder
                .https_only(true)
                .no_proxy()
                .dns_resolver(Arc::new(PublicOnly)),
        }
        .build()?;
        Ok(Arc::new(Self(client)))
    }
}

#[async_trait::async_trait]
impl Courier for HttpCourier {
    async fn post(&self, url: &url::Url, body: &[u8], signature: &str) -> Attempt {
        let res = self
            .0
            .post(url.clone())
            .header("content-type", "application/json")
            .header(SIGNATURE_HEADER, signature)
            .body(body.to_vec())
            .send()
            .await;
        match res {
            Ok(r) if r.status().is_success() => Attempt::Delivered,
            Ok(r) if r.status().is_redirection() => Attempt::Redirected(r.status().as_u16()),
            Ok(r) => Attempt::Failed {
                status: Some(r.status().as_u16()),
                error: String::new(),
            },
            Err(e) => match address_refused(&e) {
                Some(&AddressRefused { address, refusal }) => Attempt::Refused { address, refusal },
                None => Attempt::Failed {
                    status: None,
                    error: e.without_url().to_string(),
                },
            },
        }
    }
}
