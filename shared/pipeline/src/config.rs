//! The deployment's settings, read once at start.

use std::collections::BTreeSet;

use streamcube_model::cube::CuboidSet;
use streamcube_model::event::Country;
use streamcube_model::pseudonym::Pseudonymizer;
use streamcube_model::query::QueryLimits;

/// Where reference (catalog) files land in the bronze store.
pub const DEFAULT_REFERENCE_PREFIX: &str = "reference/catalog/";

#[derive(Clone, Debug)]
pub struct PipelineConfig {
    pub pseudonymizer: Pseudonymizer,
    pub cuboids: CuboidSet,
    /// The countries this deployment accepts events for (data residency); `None`: all.
    pub served_countries: Option<BTreeSet<Country>>,
    pub query_limits: QueryLimits,
    /// Bronze keys under this prefix are catalog files.
    pub reference_prefix: String,
    /// Events per silver write call when streaming a file.
    pub write_batch: usize,
    /// Silver write calls in flight at once when streaming a file.
    pub write_concurrency: usize,
}

impl PipelineConfig {
    pub fn new(pseudonymizer: Pseudonymizer) -> Self {
        PipelineConfig {
            pseudonymizer,
            cuboids: CuboidSet::default(),
            served_countries: None,
            query_limits: QueryLimits::default(),
            reference_prefix: DEFAULT_REFERENCE_PREFIX.to_owned(),
            write_batch: 500,
            write_concurrency: 4,
        }
    }

    /// Whether this deployment keeps events of `country`.
    pub fn serves(&self, country: Country) -> bool {
        self.served_countries
            .as_ref()
            .is_none_or(|set| set.contains(&country))
    }

    /// Parses a comma-separated list of country codes (`*` or empty: all).
    pub fn parse_countries(spec: &str) -> Result<Option<BTreeSet<Country>>, String> {
        let spec = spec.trim();
        if spec.is_empty() || spec == "*" {
            return Ok(None);
        }
        spec.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                Country::parse(s).map_err(|r| format!("`{s}` is not a country code ({})", r.name()))
            })
            .collect::<Result<BTreeSet<_>, _>>()
            .map(Some)
    }
}
