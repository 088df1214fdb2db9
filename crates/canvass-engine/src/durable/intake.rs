//! Taking an input in: validation, the bound on how far ahead it may be dated, dedupe by
//! event id within the window, dead letters, and the publications queued for outside
//! topics.

use canvass_core::{SpanMillis, UnixMillis};
use canvass_proto::v1::{self, log_entry};

use super::{ClockMode, Incoming, Outcome, Pending, Result, Sourced, check_record};

impl Pending {
    /// Whether the contact's event `event_id` was applied within the retention window
    /// before `now`.
    pub(super) fn seen(
        &mut self,
        contact_id: &str,
        event_id: &str,
        now: UnixMillis,
    ) -> Result<bool> {
        let cutoff = self.dedupe_cutoff(now);
        Ok(self.contact(contact_id)?.recent_events.iter().any(|e| {
            e.id == event_id && e.applied_at.as_ref().map(UnixMillis::from_proto) >= Some(cutoff)
        }))
    }

    /// Why `record` is dated too far ahead of the wall clock, if it is (see
    /// [`EngineOptions::max_lead`]).
    pub(super) fn too_far_ahead(
        &self,
        record: &v1::IngestRecord,
        wall_now: UnixMillis,
    ) -> Option<String> {
        let lead = self.options.max_lead?;
        let (field, at) = match &record.input {
            Some(v1::ingest_record::Input::Event(e)) => ("event.occurredAt", e.occurred_at),
            _ => ("at", record.at),
        };
        let at = at?;
        let ahead = UnixMillis::from_proto(&at).0.saturating_sub(wall_now.0);
        (ahead > lead.0).then(|| {
            format!(
                "field `{field}`: {at} is {} ahead of the wall clock ({}), more than the {} allowed (`--max-lead-hours`)",
                SpanMillis(ahead),
                wall_now.to_proto(),
                lead
            )
        })
    }

    /// Why a survey answer, complaint or fault report names a campaign the engine does not
    /// know, if it does: its figures would belong to no campaign.
    fn unknown_campaign(&self, record: &v1::IngestRecord) -> Option<String> {
        let Some(v1::ingest_record::Input::Event(e)) = &record.input else {
            return None;
        };
        (canvass_core::satisfaction::names_campaign(e)
            && self.core.catalog().latest(&e.campaign_id).is_none())
        .then(|| {
            format!(
                "field `event.campaignId`: no campaign `{}` (a `{}` event must name a campaign the engine knows, or none)",
                e.campaign_id, e.r#type
            )
        })
    }

    pub(super) fn dedupe_cutoff(&self, now: UnixMillis) -> UnixMillis {
        UnixMillis(now.0.saturating_sub(self.options.dedupe_retention.0))
    }

    /// Accepts one input from a source: dedupe, dead-letter or append and apply.
    pub(super) fn accept(&mut self, input: Sourced, wall_now: UnixMillis) -> Result<()> {
        let Sourced {
            incoming,
            position,
            caller,
        } = input;
        // The offset is written with the commit, beside the log frame, whatever becomes of
        // the input: the log holds inputs only, never a position without one.
        if let Some(p) = &position {
            self.offsets.insert(p.source.clone(), p.next_offset);
        }
        let record = match incoming {
            Incoming::Malformed {
                payload,
                key,
                reason,
            } => {
                self.dead_letter(payload, key, reason, position, wall_now, ("malformed", ""));
                return Ok(());
            }
            Incoming::Acks(acks) => return self.accept_acks(acks, position, caller, wall_now),
            Incoming::Redriven { letter, by, .. } => {
                return self.mark_redriven(letter, by, wall_now);
            }
            Incoming::Record(r) => *r,
        };
        // What is logged while the input is applied says whose it is (the partition comes
        // from the enclosing span).
        let _span = match &record.input {
            Some(v1::ingest_record::Input::Event(e)) => tracing::debug_span!(
                "input",
                contact = %e.contact_id,
                campaign = %e.campaign_id,
                event = %e.r#type
            ),
            Some(v1::ingest_record::Input::Contact(c)) => {
                tracing::debug_span!("input", contact = %c.id)
            }
            _ => tracing::debug_span!("input"),
        }
        .entered();
        let refusal = match check_record(&record).or_else(|| self.unknown_campaign(&record)) {
            Some(reason) => Some((reason, "invalid")),
            None => self
                .too_far_ahead(&record, wall_now)
                .map(|reason| (reason, "too_far_ahead")),
        };
        if let Some((reason, class)) = refusal {
            // A command reaches every partition: its home alone parks and tells it.
            if let Some(v1::ingest_record::Input::Command(c)) = &record.input
                && !self.placement.is_home(c)
            {
                self.outcomes.push(Outcome::DeadLetter { reason });
                return Ok(());
            }
            let payload = prost::Message::encode_to_vec(&record);
            self.dead_letter(
                payload,
                Vec::new(),
                reason,
                position,
                wall_now,
                (class, "protobuf-record"),
            );
            return Ok(());
        }
        use v1::ingest_record::Input as R;
        let record_time = record.at.as_ref().map(UnixMillis::from_proto);
        let (input, event_time) = match record.input {
            // Rejected by check_record above.
            None => return Ok(()),
            Some(R::Event(e)) => {
                let t = e.occurred_at.as_ref().map(UnixMillis::from_proto);
                if self.seen(&e.contact_id, &e.id, self.processing_time(t, wall_now))? {
                    tracing::debug!(event = %e.id, "a duplicate of an event applied before: ignored");
                    self.report.duplicates += 1;
                    self.outcomes.push(Outcome::Duplicate);
                    return Ok(());
                }
                (log_entry::Input::Event(e), t)
            }
            Some(R::Contact(c)) => (log_entry::Input::ContactUpsert(c), record_time),
            Some(R::Command(c)) => {
                if let Err(reason) = self.check_command(&c)? {
                    self.outcomes.push(Outcome::Refused {
                        reason: reason.clone(),
                    });
                    // Every partition refuses it alike; its home alone parks and tells it.
                    if !self.placement.is_home(&c) {
                        return Ok(());
                    }
                    // Decided at the time it would have been applied, as an accepted one is
                    // (under the event clock, the command's own time, not the wall clock).
                    let decided = self.processing_time(record_time, wall_now);
                    let payload = prost::Message::encode_to_vec(&c);
                    self.park(
                        payload,
                        Vec::new(),
                        reason.clone(),
                        position.clone(),
                        decided,
                        ("command_refused", "protobuf-command"),
                    );
                    self.queue_result(c, Err(reason), position, decided);
                    return Ok(());
                }
                (log_entry::Input::Command(c), record_time)
            }
        };
        let now = self.processing_time(event_time, wall_now);
        if self.options.clock == ClockMode::Event {
            self.fire_due(now)?;
            self.late = matches!(input, log_entry::Input::Event(_))
                && event_time.is_some_and(|t| self.timer_horizon(self.clock) > t);
        }
        let command = match &input {
            log_entry::Input::Command(c) if self.options.publish && self.placement.is_home(c) => {
                Some(c.clone())
            }
            _ => None,
        };
        let seq = self.next_seq;
        self.caller = caller.unwrap_or_default();
        self.append(input, position.clone(), now)?;
        self.outcomes.push(Outcome::Logged { seq });
        if let Some(c) = command {
            self.queue_result(c, Ok(seq), position, now);
        }
        Ok(())
    }

    /// Logs the acknowledgements of actions still queued; the others (acknowledged before)
    /// are dropped, so an action is counted once however often it is reported.
    pub(super) fn accept_acks(
        &mut self,
        mut acks: v1::ActionAcks,
        position: Option<v1::SourcePosition>,
        caller: Option<String>,
        wall_now: UnixMillis,
    ) -> Result<()> {
        let now = self.processing_time(None, wall_now);
        let mut kept = Vec::with_capacity(acks.acks.len());
        for ack in acks.acks {
            let at = (ack.outbox_seq, ack.outbox_index);
            if !self.acked.insert(at) {
                continue;
            }
            if ack.gave_up {
                // The action itself is the dead letter: what an operator redrives.
                let Some(action) = self.store.outbox_action(at)? else {
                    continue;
                };
                let letter = self.park_action(action, ack.detail.clone(), now);
                self.queue(v1::publication::Kind::DeadLetter(letter));
                kept.push(ack);
            } else if self.store.outbox_holds(at)? {
                kept.push(ack);
            }
        }
        if kept.is_empty() {
            self.outcomes.push(Outcome::Duplicate);
            return Ok(());
        }
        acks.acks = kept;
        let seq = self.next_seq;
        self.caller = caller.unwrap_or_default();
        self.append(log_entry::Input::ActionAcks(acks), position, now)?;
        self.outcomes.push(Outcome::Logged { seq });
        Ok(())
    }

    /// Queues a command's result for the audit topic (when publishing).
    pub(super) fn queue_result(
        &mut self,
        command: v1::CampaignCommand,
        result: std::result::Result<u64, String>,
        source: Option<v1::SourcePosition>,
        now: UnixMillis,
    ) {
        let (accepted, seq, reason) = match result {
            Ok(seq) => (true, seq, String::new()),
            Err(reason) => (false, 0, reason),
        };
        self.queue(v1::publication::Kind::CommandResult(v1::CommandResult {
            command: Some(command),
            accepted,
            reason,
            seq,
            source,
            decided_at: Some(now.to_proto()),
        }));
    }

    pub(super) fn queue(&mut self, kind: v1::publication::Kind) {
        if !self.options.publish {
            return;
        }
        let publication = v1::Publication { kind: Some(kind) };
        self.batch
            .put_publication(self.next_publication, &publication);
        self.next_publication += 1;
    }

    /// The time an input arriving now is applied at: the clock never goes back.
    pub(super) fn processing_time(
        &self,
        event_time: Option<UnixMillis>,
        wall_now: UnixMillis,
    ) -> UnixMillis {
        match self.options.clock {
            ClockMode::Wall => wall_now.max(self.clock),
            ClockMode::Event => event_time.unwrap_or(self.clock).max(self.clock),
        }
    }

    /// Parks an input that cannot be used (its outcome: a dead letter), and queues it for the
    /// dead-letter topic.
    pub(super) fn dead_letter(
        &mut self,
        payload: Vec<u8>,
        key: Vec<u8>,
        reason: String,
        source: Option<v1::SourcePosition>,
        now: UnixMillis,
        class: (&'static str, &'static str),
    ) {
        self.outcomes.push(Outcome::DeadLetter {
            reason: reason.clone(),
        });
        let letter = self.park(payload, key, reason, source, now, class);
        self.queue(v1::publication::Kind::DeadLetter(letter));
    }

    /// Parks an action the delivery gave up on, with the reason.
    fn park_action(
        &mut self,
        action: v1::Action,
        reason: String,
        now: UnixMillis,
    ) -> v1::DeadLetter {
        self.park_letter(
            v1::DeadLetter {
                key: action.contact_id.clone().into_bytes(),
                action: Some(action),
                reason,
                rejected_at: Some(now.to_proto()),
                ..v1::DeadLetter::default()
            },
            "action_given_up",
        )
    }

    /// Parks an input in the dead-letter tree, with the reason; `(class, format)`: what kind
    /// of refusal it is (for the metrics) and how the payload is encoded, if known.
    pub(super) fn park(
        &mut self,
        payload: Vec<u8>,
        key: Vec<u8>,
        reason: String,
        source: Option<v1::SourcePosition>,
        now: UnixMillis,
        (class, format): (&'static str, &'static str),
    ) -> v1::DeadLetter {
        self.park_letter(
            v1::DeadLetter {
                source,
                payload,
                reason,
                rejected_at: Some(now.to_proto()),
                key,
                format: format.to_string(),
                ..v1::DeadLetter::default()
            },
            class,
        )
    }

    /// Marks a dead letter of this partition redriven (its input was submitted again).
    fn mark_redriven(&mut self, number: u64, by: String, wall_now: UnixMillis) -> Result<()> {
        match self.store.dead_letter(number)? {
            Some(mut letter) if letter.redriven_at.is_none() => {
                letter.redriven_at = Some(wall_now.to_proto());
                letter.redriven_by = by;
                self.batch.put_dead_letter(number, &letter);
                self.outcomes.push(Outcome::Noted);
            }
            Some(_) => self.outcomes.push(Outcome::Duplicate),
            None => self.outcomes.push(Outcome::Refused {
                reason: format!("no dead letter {number} in this partition"),
            }),
        }
        Ok(())
    }

    /// Parks a dead letter; `class`: what kind of refusal it is, for the metrics.
    fn park_letter(&mut self, letter: v1::DeadLetter, class: &'static str) -> v1::DeadLetter {
        tracing::debug!(number = self.next_dead_letter, class, reason = %letter.reason, "dead letter parked");
        *self.report.dead_letters_by.entry(class).or_default() += 1;
        self.batch.put_dead_letter(self.next_dead_letter, &letter);
        self.next_dead_letter += 1;
        self.report.dead_letters += 1;
        letter
    }
}
