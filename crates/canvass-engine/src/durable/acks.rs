//! Delivery results: an acknowledged action leaves the outbox, and its result reaches the
//! campaign as a touchpoint.

use canvass_core::stats;
use canvass_proto::v1;

use super::{Pending, Result};

impl Pending {
    pub(super) fn acknowledge(&mut self, ack: &v1::ActionAck) -> Result<()> {
        self.batch.remove_outbox((ack.outbox_seq, ack.outbox_index));
        // Campaign ids hold no '/': the key starts with the campaign.
        let campaign = ack
            .idempotency_key
            .split('/')
            .next()
            .unwrap_or_default()
            .to_string();
        // What a service reports back reaches the campaign as a result touchpoint, which the
        // core counts (as it counts one sent as a touchpoint); the rest is counted here.
        if !ack.executed {
            let counters = self.counters(&campaign)?;
            let outcome = v1::DeliveryOutcome::try_from(ack.outcome).unwrap_or_default();
            stats::record_outcome(counters, ack.kind(), outcome, false);
        }
        Ok(())
    }
}
