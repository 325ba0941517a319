//! cardgate's domain: tenants, clients, cards, tokens, MFA and audit rules. Pure decisions,
//! no web or SQL; time arrives as a parameter (`now_ms`, milliseconds since the epoch).

pub mod audit;
pub mod cards;
pub mod ids;
pub mod import;
pub mod mfa;
pub mod model;
pub mod scope;
pub mod secret;
pub mod tokens;

pub use ids::{AccountId, CardId, ClientId, Environment, PersonId, TenantId};
pub use model::{AccessTokenFormat, Account, Card, CardStatus, Client, Operation, Person, Tenant};
