//! The canvass runtime: feeds inputs and due timers to the pure core and applies its effects.
//!
//! Architecture invariant: the engine decides *when* an input is applied and *what is done*
//! with the effects; it never decides what a campaign does (that is the core's step).

pub mod durable;
pub mod letters;
pub mod metrics;
pub mod migrate;
pub mod partitions;
pub mod process;
pub mod reports;
pub mod runtime;
pub mod simulate;
pub mod summary;
pub mod throttle;

pub use partitions::Partitions;
pub use simulate::Simulation;
pub use summary::Summary;
