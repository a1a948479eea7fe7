//! What every layer shares, importing nothing else of the crate: parts, the live view, metrics.

pub mod format;
pub mod live;
pub mod metrics;
pub mod part;
