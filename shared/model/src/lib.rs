//! The streamcube domain, in pure Rust: no AWS, no async runtime.
//!
//! - [`event`]: the playback event contract and its validation, one machine-readable reason per
//!   failed field;
//! - [`reader`]: streaming CSV and JSON-lines readers (plain or gzip) that keep one row in memory;
//! - [`pseudonym`]: keyed HMAC-SHA-256 pseudonyms for viewer ids;
//! - [`catalog`]: the reference data join (`unknown` genre for unknown content);
//! - [`sketch`]: the mergeable unique-viewer sketch;
//! - [`cube`]: cuboid sets, cells, measures and merges;
//! - [`query`]: query parameters, cuboid choice, roll-up, ordering and top-N;
//! - [`report`]: per-file accounting and quarantine records;
//! - [`batch`]: the whole batch path from bronze files to the cube CSV.
//!
//! Adapters and functions depend on this crate, never the other way.

pub mod batch;
pub mod catalog;
pub mod codec;
pub mod cube;
pub mod event;
pub mod pseudonym;
pub mod query;
pub mod reader;
pub mod report;
pub mod sketch;
