//! Pure campaign core: validated specs, CEL conditions and the deterministic state machine.
//!
//! Architecture invariant: this crate performs no I/O, reads no clock, spawns no thread and
//! draws no random number. Its dependency tree holds no tokio, sled, rdkafka or tonic (the
//! test command checks this with `cargo tree`). Time arrives as an argument; effects leave
//! as data ([`Effect`]) for the runtime to carry out.

pub mod assignment;
pub mod bindings;
pub mod catalog;
pub mod condition;
pub mod delivery;
pub mod graph;
pub mod key;
pub mod lifecycle;
pub mod machine;
pub mod materials;
pub mod partition;
pub mod policy;
pub mod satisfaction;
pub mod spec;
pub mod split;
pub mod stats;
pub mod time;
pub mod validate;

pub use catalog::{Catalog, CatalogError};
pub use machine::{
    Core, Effect, EnrollCause, Input, LeadChange, Shares, SkipReason, Spending, TimerId, Transition,
};
pub use spec::Campaign;
pub use time::{SpanMillis, UnixMillis};

/// A lifecycle stage's one name, wherever it is shown (reports, CEL's `contact.stage`,
/// `inspect`): a contact not identified yet is `TO_BE_IDENTIFIED`.
#[must_use]
pub fn stage_name(stage: canvass_proto::v1::LifecycleStage) -> &'static str {
    use canvass_proto::v1::LifecycleStage as S;
    match stage {
        S::Unspecified => "TO_BE_IDENTIFIED",
        S::Prospect => "PROSPECT",
        S::Opportunity => "OPPORTUNITY",
        S::Customer => "CUSTOMER",
        S::User => "USER",
    }
}
pub use validate::{Issue, SpecErrors, compile};

#[cfg(test)]
mod send_sync {
    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn cel_types_can_be_shared_between_threads() {
        assert_send_sync::<cel::Value>();
        assert_send_sync::<std::sync::Arc<cel::Env>>();
        assert_send_sync::<crate::Core>();
    }
}
