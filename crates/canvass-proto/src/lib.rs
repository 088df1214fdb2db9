//! Generated protobuf types of the `canvass.v1` API; serde impls follow the canonical proto3 JSON mapping.
//!
//! Nothing but generated code and thin conveniences lives here: every other crate talks
//! in these types at its edges.

/// The `canvass.v1` package.
pub mod v1 {
    #![allow(
        missing_docs,
        clippy::all,
        unused_qualifications,
        missing_debug_implementations
    )]
    include!(concat!(env!("OUT_DIR"), "/canvass.v1.rs"));
    include!(concat!(env!("OUT_DIR"), "/canvass.v1.serde.rs"));
}

/// The encoded `FileDescriptorSet` of every `canvass.v1` file and its imports (for gRPC
/// server reflection).
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/canvass_descriptor.bin"));

pub mod json;
mod structs;
mod timestamp;

/// Well-known types with their canonical JSON forms: pbjson's, but for `Timestamp` (Z-normalized)
/// and `Struct`/`Value`/`ListValue` (ordered fields, so that encoding is deterministic).
pub mod wkt {
    pub use pbjson_types::*;

    pub use crate::{
        structs::{ListValue, NullValue, Struct, Value, value},
        timestamp::Timestamp,
    };
}
