//! The gateway's HTTP routes.

pub mod buildsense;
pub mod otlp;
pub mod token;
