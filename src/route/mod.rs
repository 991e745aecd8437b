//! Routing: which route an alert (or a whole group) takes, and so what the bridge does with it.
//! It owns no state and performs no I/O.

pub mod matcher;

pub use matcher::{MatchOp, Matcher, MatcherError};
