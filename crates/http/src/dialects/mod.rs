//! Wire-compatible dialects of other platforms' token endpoints. Each module translates its
//! wire format to service calls and back; no business rule lives here.

pub mod equals;
pub mod fiserv;
