//! Simulation: the durable engine itself over a store in memory, on the event clock. A
//! preview runs the code production runs (dedupe, dead letters, timers, sweeps, counters,
//! budgets): a preview that disagrees with `run --clock event` on the same input is a bug.
//!
//! The helpers below turn what a marketer has at hand (spec files, a contacts file, an
//! events file) into the input stream `canvass run` would take for them.

use canvass_core::UnixMillis;
use canvass_proto::v1;
use canvass_store::{Layout, StoreOptions, Stores};

use crate::durable::{
    BatchReport, ClockMode, DispatchError, EngineOptions, Incoming, Result, Sourced,
};
use crate::partitions::Partitions;

/// The engine on a store in memory, fed directly (no source thread, no channel).
#[derive(Debug)]
pub struct Simulation {
    engine: Partitions,
}

/// The actor of the commands a simulation issues for the campaigns it was given.
pub const SIMULATION_AUTHOR: &str = "simulation";
/// Who approves them: the lifecycle requires someone other than the author.
pub const SIMULATION_APPROVER: &str = "simulation-approver";

impl Simulation {
    /// An empty simulation under `options`, on the event clock whatever `options` says.
    ///
    /// # Errors
    /// None in practice: an empty store in memory has no log to apply.
    pub fn new(options: EngineOptions) -> Result<Self> {
        Self::partitioned(options, Layout::default(), 1)
    }

    /// An empty simulation over the partitions of `layout`, as `run` would build them, on
    /// `workers` threads.
    ///
    /// # Errors
    /// None in practice: empty stores in memory have no log to apply.
    pub fn partitioned(options: EngineOptions, layout: Layout, workers: usize) -> Result<Self> {
        let stores = Stores::in_memory(
            layout,
            &StoreOptions {
                // Nothing is gained by writing the in-memory tables on a thread of their own.
                background_checkpoints: false,
                ..StoreOptions::default()
            },
        );
        let options = EngineOptions {
            clock: ClockMode::Event,
            ..options
        };
        Ok(Self {
            engine: Partitions::open(stores, options, workers)?,
        })
    }

    /// Applies inputs as one group commit, as `run` does for a batch read from its input.
    ///
    /// # Errors
    /// A store error (a defect: the store is in memory).
    pub fn ingest(&mut self, inputs: Vec<Sourced>) -> Result<BatchReport> {
        // The wall clock only dates dead letters here: the event clock drives the rest.
        let now = self.engine.clock();
        self.engine.ingest(inputs, now)
    }

    /// Moves the clock on to `until`, firing every timer due until then.
    ///
    /// # Errors
    /// A store error.
    pub fn advance_to(&mut self, until: UnixMillis) -> Result<BatchReport> {
        self.engine.advance_to(until)
    }

    /// Takes the actions emitted since the last call, in emission order (they leave the
    /// outbox as a file sink would take them).
    ///
    /// # Errors
    /// A store error.
    pub fn take_actions(&mut self) -> Result<Vec<v1::Action>> {
        let mut out = Vec::new();
        loop {
            let n = self
                .engine
                .dispatch(4096, &mut |actions| {
                    out.extend_from_slice(actions);
                    Ok(())
                })
                .map_err(|e| match e {
                    DispatchError::Engine(e) => e,
                    // Collecting into memory cannot fail.
                    DispatchError::Deliver(e) => unreachable!("{e}"),
                })?;
            if n == 0 {
                return Ok(out);
            }
        }
    }

    /// The engine (its stores hold the states, counters and logs, as a data directory
    /// would).
    #[must_use]
    pub fn engine(&self) -> &Partitions {
        &self.engine
    }
}

/// An input from no source (a simulation's own), for [`Simulation::ingest`].
#[must_use]
pub fn unsourced(record: v1::IngestRecord) -> Sourced {
    Sourced {
        incoming: Incoming::Record(Box::new(record)),
        position: None,
        caller: None,
    }
}

fn command(
    at: UnixMillis,
    actor: &str,
    command: v1::campaign_command::Command,
) -> v1::IngestRecord {
    v1::IngestRecord {
        input: Some(v1::ingest_record::Input::Command(v1::CampaignCommand {
            actor: actor.to_string(),
            reason: String::new(),
            command: Some(command),
        })),
        at: Some(at.to_proto()),
    }
}

/// The commands that load campaign specs and make each ready to launch, at `at`: put by
/// [`SIMULATION_AUTHOR`], submitted, approved by [`SIMULATION_APPROVER`].
#[must_use]
pub fn load_commands(specs: &[v1::CampaignSpec], at: UnixMillis) -> Vec<v1::IngestRecord> {
    use v1::campaign_command::Command;
    let mut out = Vec::new();
    for spec in specs {
        let version = v1::VersionRef {
            campaign_id: spec.id.clone(),
            version: spec.version,
        };
        out.push(command(
            at,
            SIMULATION_AUTHOR,
            Command::PutSpec(spec.clone()),
        ));
        out.push(command(
            at,
            SIMULATION_AUTHOR,
            Command::Submit(version.clone()),
        ));
        out.push(command(at, SIMULATION_APPROVER, Command::Approve(version)));
    }
    out
}

/// The command that launches `campaign` (its newest approved version) at `at`.
#[must_use]
pub fn launch_command(campaign: &str, at: UnixMillis) -> v1::IngestRecord {
    command(
        at,
        SIMULATION_AUTHOR,
        v1::campaign_command::Command::Launch(campaign.to_string()),
    )
}

/// The command that sets the engine-wide policy at `at`.
#[must_use]
pub fn policy_command(policy: v1::Policy, at: UnixMillis) -> v1::IngestRecord {
    command(
        at,
        SIMULATION_AUTHOR,
        v1::campaign_command::Command::SetPolicy(policy),
    )
}

/// A contact upsert at `at`.
#[must_use]
pub fn contact_record(contact: v1::Contact, at: UnixMillis) -> v1::IngestRecord {
    v1::IngestRecord {
        input: Some(v1::ingest_record::Input::Contact(contact)),
        at: Some(at.to_proto()),
    }
}

/// A touchpoint event (applied at its own `occurredAt` under the event clock).
#[must_use]
pub fn event_record(event: v1::TouchpointEvent) -> v1::IngestRecord {
    v1::IngestRecord {
        input: Some(v1::ingest_record::Input::Event(event)),
        at: None,
    }
}
