//! Wire-compatible dialects of other platforms' token endpoints. Each module reads its wire
//! format into a use case's request and writes the outcome (or the one `AppError`, through
//! its own error map) back in its shape; no business rule lives here.

pub mod bankezy;
pub mod equals;
pub mod fiserv;
pub mod synctera;
pub mod treasuryprime;
