//! The headers a decoder reads (CloudEvents binary mode): the crate's one [`HeaderLookup`]
//! view (`crate::headers`), implemented for HTTP ([`http::HeaderMap`]), NATS
//! ([`async_nats::HeaderMap`], or `Option` of one) and the headers a dead letter carries
//! (`[(String, String)]`), re-exported here for decoders and their callers.

pub use crate::headers::{HeaderLookup, NoHeaders};
