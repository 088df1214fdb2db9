//! The store's metrics, by name (recorded through the `metrics` facade: nothing is kept
//! until a binary installs an exporter).

/// Histogram: how long one flush of sled to disk took, in seconds.
pub const FLUSH_SECONDS: &str = "canvass_flush_duration_seconds";
/// Histogram: how long one checkpoint of the projections took, in seconds.
pub const CHECKPOINT_SECONDS: &str = "canvass_checkpoint_duration_seconds";
