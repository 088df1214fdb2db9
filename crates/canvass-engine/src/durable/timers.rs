//! Which timers fire, when and in what order: the store's and the batch's together, in
//! (due time, timer id) order, each past the allowed lateness.

use canvass_core::{TimerId, UnixMillis};
use canvass_proto::v1::log_entry;

use super::{ClockMode, Pending, Result};

impl Pending {
    /// The latest due time of the timers that may fire at `now`: a timer waits for the
    /// allowed lateness past its due time, for events dated before it that come late.
    pub(super) fn timer_horizon(&self, now: UnixMillis) -> UnixMillis {
        UnixMillis(now.0.saturating_sub(self.options.allowed_lateness.0))
    }

    /// Fires, in (due, id) order, every armed timer that may fire at `now`: due at or
    /// before it less the allowed lateness.
    pub(super) fn fire_due(&mut self, now: UnixMillis) -> Result<()> {
        self.fire_due_at_most(now, self.timer_horizon(now), usize::MAX)
            .map(|_| ())
    }

    /// Fires at most `limit` of the timers due at or before `horizon`, in order, at `now`
    /// under the wall clock (at their due time, or the clock if later, under the event
    /// clock); returns how many.
    pub(super) fn fire_due_at_most(
        &mut self,
        now: UnixMillis,
        horizon: UnixMillis,
        limit: usize,
    ) -> Result<usize> {
        let mut fired_count = 0;
        while let Some((due, id)) = self.next_timer()? {
            if due > horizon || fired_count == limit {
                break;
            }
            fired_count += 1;
            let fired = id.fired(due);
            let at = match self.options.clock {
                ClockMode::Event => due.max(self.clock),
                ClockMode::Wall => now,
            };
            self.report.timers_fired += 1;
            self.append(log_entry::Input::TimerFired(fired), None, at)?;
        }
        Ok(fired_count)
    }

    /// The earliest armed timer, from the store and this batch together.
    pub(super) fn next_timer(&mut self) -> Result<Option<(UnixMillis, TimerId)>> {
        // The store does not change during a batch and its valid timers only get fewer (the
        // batch disarms them), so the scan resumes where the last one stopped.
        let mut stored = None;
        if !self.stored_timers_done {
            let from = self.timer_cursor.as_ref().map(|(due, id)| (*due, id));
            for t in self.store.timers(from) {
                let (due, id) = t?;
                // A timer this batch disarmed (or re-armed) is not what the store says.
                if self.timer_due.contains_key(&id) {
                    continue;
                }
                stored = Some((due, id));
                break;
            }
            self.stored_timers_done = stored.is_none();
            self.timer_cursor.clone_from(&stored);
        }
        let armed = self.timers_armed.first().cloned();
        Ok(match (stored, armed) {
            (Some(s), Some(a)) => Some(s.min(a)),
            (s, a) => s.or(a),
        })
    }

    pub(super) fn disarm(&mut self, id: &TimerId, due: UnixMillis) {
        self.timers_armed.remove(&(due, id.clone()));
        self.batch.remove_timer(due, id);
        self.timer_due.insert(id.clone(), None);
    }
}
