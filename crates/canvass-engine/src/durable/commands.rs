//! Commands: the lifecycle rules that accept or refuse them, what an accepted one changes,
//! and the sweep that takes its follow-up to every contact in slices.

use std::collections::BTreeSet;

use canvass_core::{Core, Input, UnixMillis, lifecycle};
use canvass_proto::v1::{self, follow_up::Kind, log_entry};
use canvass_store::EMBEDDED_PARTITION;
use rust_decimal::Decimal;

use super::{Pending, Result, SWEEP_SLICE};

impl Pending {
    /// Why a command cannot be accepted, if it cannot.
    pub(super) fn check_command(&mut self, c: &v1::CampaignCommand) -> Result<Result<(), String>> {
        let Some(cmd) = &c.command else {
            return Ok(Err("the command is empty".into()));
        };
        let current = self.lifecycle(lifecycle::campaign_of(cmd))?;
        Ok(lifecycle::check(c, current.as_ref(), self.core.catalog()))
    }

    /// A campaign's lifecycle as this batch sees it.
    pub(super) fn lifecycle(&mut self, id: &str) -> Result<Option<v1::CampaignLifecycle>> {
        if let Some(l) = self.lifecycles.get(id) {
            return Ok(Some(l.clone()));
        }
        Ok(self.store.lifecycle(id)?)
    }

    pub(super) fn command(
        &mut self,
        c: &v1::CampaignCommand,
        now: UnixMillis,
        seq: u64,
    ) -> Result<()> {
        let Some(cmd) = &c.command else {
            return Ok(());
        };
        if let v1::campaign_command::Command::ReassignLeads(r) = cmd {
            return self.step_everyone(&Kind::ReassignLeads(r.clone()), now, seq);
        }
        if let Some((id, _)) = canvass_core::materials::command_target(cmd) {
            let mut catalog = self.core.catalog().clone();
            lifecycle::apply(c, &mut v1::CampaignLifecycle::default(), &mut catalog, now);
            if let Some(material) = catalog.materials().get(id) {
                self.batch.put_material(material);
            }
            self.core = Core::new(catalog).with_share(self.core.share());
            return Ok(());
        }
        if let v1::campaign_command::Command::SetPolicy(policy) = cmd {
            let mut catalog = self.core.catalog().clone();
            lifecycle::apply(c, &mut v1::CampaignLifecycle::default(), &mut catalog, now);
            self.core = Core::new(catalog).with_share(self.core.share());
            self.batch.put_policy(policy);
            return Ok(());
        }
        let id = lifecycle::campaign_of(cmd).to_string();
        let mut record = self.lifecycle(&id)?.unwrap_or_default();
        let mut catalog = self.core.catalog().clone();
        let follow = lifecycle::apply(c, &mut record, &mut catalog, now);
        self.core = Core::new(catalog).with_share(self.core.share());
        if let v1::campaign_command::Command::PutSpec(spec) = cmd {
            self.batch.put_spec(spec);
        }
        self.lifecycles.insert(id, record);
        match follow {
            Some(follow_up) => self.step_everyone(&follow_up, now, seq),
            None => Ok(()),
        }
    }

    /// Steps every contact known now (those stored and those this batch created): the
    /// first [`SWEEP_SLICE`] here, the others by a sweep, a slice per log entry.
    pub(super) fn step_everyone(
        &mut self,
        follow_up: &Kind,
        now: UnixMillis,
        seq: u64,
    ) -> Result<()> {
        let full = self.step_slice(None, None, Some(follow_up), now, seq)?;
        if let Some(last) = full {
            self.batch.put_sweep(&v1::Sweep {
                command_seq: seq,
                follow_up: Some(v1::FollowUp {
                    kind: Some(follow_up.clone()),
                }),
                after: last,
            });
            self.sweeping = true;
        }
        Ok(())
    }

    /// Steps the next slice of the contacts known now: those after `after`, up to
    /// `through` if given, at most [`SWEEP_SLICE`]. Returns the last id when the slice was
    /// full (more may follow).
    pub(super) fn step_slice(
        &mut self,
        after: Option<&str>,
        through: Option<&str>,
        follow_up: Option<&Kind>,
        now: UnixMillis,
        seq: u64,
    ) -> Result<Option<String>> {
        let mut ids = self.contacts_after(after, SWEEP_SLICE)?;
        if let Some(through) = through {
            ids.retain(|id| id.as_str() <= through);
        }
        if let Some(follow_up) = follow_up {
            for contact in &ids {
                self.step(contact, &Input::FollowUp(follow_up), now, seq)?;
            }
        }
        Ok(ids.pop().filter(|_| ids.len() + 1 == SWEEP_SLICE))
    }

    /// The ids of the contacts known now that sort after `after`, in order, at most `limit`.
    pub(super) fn contacts_after(&self, after: Option<&str>, limit: usize) -> Result<Vec<String>> {
        let mut ids: BTreeSet<String> = self
            .contacts
            .keys()
            .filter(|id| after.is_none_or(|a| id.as_str() > a))
            .cloned()
            .collect();
        for contact in self
            .store
            .contact_ids_after(EMBEDDED_PARTITION, after)
            .take(limit)
        {
            ids.insert(contact?);
        }
        Ok(ids.into_iter().take(limit).collect())
    }

    /// Logs and applies the next slice of a sweep.
    pub(super) fn sweep_step(&mut self, sweep: &v1::Sweep) -> Result<()> {
        let ids = self.contacts_after(Some(&sweep.after), SWEEP_SLICE)?;
        let step = v1::SweepStep {
            sweep: Some(sweep.clone()),
            through: ids.last().cloned().unwrap_or_else(|| sweep.after.clone()),
        };
        self.append(log_entry::Input::SweepStep(step), None, self.clock)
    }

    /// Applies a logged sweep step: the contacts in its range, then the sweep's progress
    /// (ended once a slice comes out short).
    pub(super) fn apply_sweep_step(
        &mut self,
        s: &v1::SweepStep,
        now: UnixMillis,
        seq: u64,
    ) -> Result<()> {
        let Some(sweep) = &s.sweep else {
            return Err(canvass_store::Error::CorruptLog {
                seq,
                reason: "a sweep step without its sweep".into(),
            }
            .into());
        };
        let follow_up = sweep.follow_up.as_ref().and_then(|f| f.kind.as_ref());
        let full = self.step_slice(Some(&sweep.after), Some(&s.through), follow_up, now, seq)?;
        match full {
            Some(last) => self.batch.put_sweep(&v1::Sweep {
                after: last,
                ..sweep.clone()
            }),
            None => self.batch.remove_sweep(sweep.command_seq),
        }
        Ok(())
    }

    /// Notes in the campaign's history that its budget ran out: the first cost-bearing
    /// action withheld. Derived from the log, so replay writes the same note.
    pub(super) fn budget_exhausted(
        &mut self,
        campaign: &str,
        kind: v1::ActionKind,
        spent: Decimal,
        total: Decimal,
        now: UnixMillis,
    ) -> Result<()> {
        let Some(mut record) = self.lifecycle(campaign)? else {
            return Ok(());
        };
        let change = lifecycle::budget_exhausted(kind, spent, total, self.placement.share(), now);
        record.history.push(v1::LifecycleChange {
            status: record.status,
            ..change
        });
        self.lifecycles.insert(campaign.to_string(), record);
        Ok(())
    }
}
