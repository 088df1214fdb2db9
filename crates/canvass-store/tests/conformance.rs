//! The store's contract, checked on every backend: sled on disk and the sorted map in
//! memory that simulations run on. A backend that passes this suite can stand in for the
//! other; each test runs on both and names the backend that failed.

#![allow(clippy::unwrap_used)]

use canvass_core::{TimerId, UnixMillis};
use canvass_proto::v1;
use canvass_store::{
    LOG_SCHEMA_VERSION, Shipped, Shipper, Standing, Store, StoreOptions, WriteBatch,
};

/// Runs `test` on a store in memory and on a sled store in a fresh directory, each with
/// the given options.
fn on_both(options: &StoreOptions, test: impl Fn(&Store)) {
    let memory = Store::in_memory(options.clone());
    run_named("memory", &memory, &test);
    let dir = tempfile::tempdir().unwrap();
    let sled = Store::open(dir.path(), options.clone()).unwrap();
    run_named("sled", &sled, &test);
}

fn run_named(name: &str, store: &Store, test: &impl Fn(&Store)) {
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| test(store)));
    if let Err(panic) = outcome {
        eprintln!("conformance failure on the {name} backend");
        std::panic::resume_unwind(panic);
    }
}

fn foreground() -> StoreOptions {
    StoreOptions {
        background_checkpoints: false,
        ..StoreOptions::default()
    }
}

fn entry(seq: u64, at: i64, payload_bytes: usize) -> v1::LogEntry {
    v1::LogEntry {
        schema_version: LOG_SCHEMA_VERSION,
        seq,
        applied_at: Some(UnixMillis(at).to_proto()),
        caller: "x".repeat(payload_bytes),
        ..Default::default()
    }
}

fn contact(id: &str) -> v1::ContactState {
    v1::ContactState {
        contact: Some(v1::Contact {
            id: id.to_string(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn timer(contact: &str, entry_seq: u64) -> TimerId {
    TimerId {
        contact_id: contact.into(),
        campaign_id: "welcome".into(),
        entry_seq,
        kind: canvass_core::machine::TimerKind::Transition,
        index: 0,
    }
}

/// Commits one batch built by `fill`, under log entry `seq` (none if 0).
fn commit(store: &Store, seq: u64, fill: impl FnOnce(&mut WriteBatch)) {
    let mut batch = WriteBatch::new();
    if seq > 0 {
        batch.append_log(&entry(seq, i64::try_from(seq).unwrap() * 1000, 10));
        batch.set_last_seq(seq);
    }
    fill(&mut batch);
    store.commit(batch).unwrap();
}

#[test]
fn the_log_reads_back_in_sequence_from_any_entry_across_frames() {
    on_both(&foreground(), |store| {
        assert_eq!(store.last_seq().unwrap(), 0);
        assert_eq!(store.last_applied_at().unwrap(), UnixMillis::default());
        // Entries of a few KiB each: one batch spans several frames.
        let mut batch = WriteBatch::new();
        for seq in 1..=40 {
            batch.append_log(&entry(seq, i64::try_from(seq).unwrap(), 3000));
        }
        store.commit(batch).unwrap();
        let mut batch = WriteBatch::new();
        batch.append_log(&entry(41, 41, 1));
        store.commit(batch).unwrap();
        assert_eq!(store.last_seq().unwrap(), 41);
        assert_eq!(store.last_applied_at().unwrap(), UnixMillis(41));
        let all: Vec<u64> = store.log_from(1).map(|e| e.unwrap().seq).collect();
        assert_eq!(all, (1..=41).collect::<Vec<_>>());
        for from in [0, 1, 2, 17, 40, 41] {
            let first = store.log_from(from).next().unwrap().unwrap();
            assert_eq!(first.seq, from.max(1), "reading from {from}");
            assert_eq!(first.caller.len(), if from == 41 { 1 } else { 3000 });
        }
        assert!(store.log_from(42).next().is_none());
    });
}

#[test]
fn contacts_and_groups_read_back_in_id_order_with_paging() {
    on_both(&foreground(), |store| {
        commit(store, 1, |b| {
            for id in ["c3", "c1", "c2", "c10"] {
                b.put_contact(0, id, &contact(id));
                b.add_to_group("welcome", "responders", id);
            }
            b.add_to_group("welcome", "silent", "c9");
        });
        commit(store, 2, |b| {
            b.remove_from_group("welcome", "responders", "c2")
        });
        assert_eq!(store.contact(0, "c2").unwrap(), Some(contact("c2")));
        assert_eq!(store.contact(0, "nobody").unwrap(), None);
        assert_eq!(store.contact(1, "c2").unwrap(), None, "another partition");
        let ids: Vec<String> = store.contact_ids(0).map(Result::unwrap).collect();
        assert_eq!(ids, ["c1", "c10", "c2", "c3"]);
        let after: Vec<String> = store
            .contact_ids_after(0, Some("c10"))
            .map(Result::unwrap)
            .collect();
        assert_eq!(after, ["c2", "c3"]);
        let members: Vec<String> = store
            .group_members("welcome", "responders")
            .map(Result::unwrap)
            .collect();
        assert_eq!(members, ["c1", "c10", "c3"]);
        let page: Vec<String> = store
            .group_members_after("welcome", "responders", Some("c1"))
            .map(Result::unwrap)
            .collect();
        assert_eq!(page, ["c10", "c3"]);
    });
}

#[test]
fn timers_come_in_due_order_and_a_removed_one_is_gone() {
    on_both(&foreground(), |store| {
        commit(store, 1, |b| {
            b.put_timer(UnixMillis(300), &timer("a", 1));
            b.put_timer(UnixMillis(-5), &timer("b", 1));
            b.put_timer(UnixMillis(100), &timer("c", 1));
            b.put_timer(UnixMillis(100), &timer("a", 2));
        });
        commit(store, 2, |b| {
            b.remove_timer(UnixMillis(300), &timer("a", 1))
        });
        let all: Vec<(i64, String)> = store
            .timers(None)
            .map(|t| {
                let (due, id) = t.unwrap();
                (due.0, id.contact_id)
            })
            .collect();
        // Same due time: by timer id, whose key starts with the state entry's number.
        assert_eq!(
            all,
            [(-5, "b".into()), (100, "c".into()), (100, "a".into())]
        );
        let from_a: Vec<String> = store
            .timers(Some((UnixMillis(100), &timer("a", 2))))
            .map(|t| t.unwrap().1.contact_id)
            .collect();
        assert_eq!(from_a, ["a"]);
    });
}

#[test]
fn the_outbox_reads_in_emission_order_after_a_position() {
    on_both(&foreground(), |store| {
        let action = |key: &str| v1::Action {
            idempotency_key: key.into(),
            ..Default::default()
        };
        commit(store, 1, |b| {
            b.put_outbox((2, 0), &action("k20"));
            b.put_outbox((1, 1), &action("k11"));
            b.put_outbox((1, 0), &action("k10"));
        });
        commit(store, 2, |b| b.remove_outbox((1, 1)));
        let keys = |list: Vec<((u64, u32), v1::Action)>| -> Vec<String> {
            list.into_iter().map(|(_, a)| a.idempotency_key).collect()
        };
        assert_eq!(keys(store.outbox(10).unwrap()), ["k10", "k20"]);
        assert_eq!(keys(store.outbox(1).unwrap()), ["k10"]);
        assert_eq!(keys(store.outbox_after(Some((1, 0)), 10).unwrap()), ["k20"]);
        assert!(store.outbox_holds((2, 0)).unwrap());
        assert!(!store.outbox_holds((1, 1)).unwrap());
    });
}

/// A commit without its flush is read by the engine at once, but its actions may leave
/// only once a flush made it durable; a mark of the commits tells when that is.
#[test]
fn an_unsynced_commit_holds_its_actions_back_until_a_flush() {
    on_both(&foreground(), |store| {
        let action = |key: &str| v1::Action {
            idempotency_key: key.into(),
            ..Default::default()
        };
        commit(store, 1, |b| b.put_outbox((1, 0), &action("k10")));
        let mut batch = WriteBatch::new();
        batch.append_log(&entry(2, 2000, 10));
        batch.set_last_seq(2);
        batch.put_outbox((2, 0), &action("k20"));
        store.commit_unsynced(batch).unwrap();
        let mark = store.commit_mark();
        let keys = |list: Vec<((u64, u32), v1::Action)>| -> Vec<String> {
            list.into_iter().map(|(_, a)| a.idempotency_key).collect()
        };
        assert_eq!(keys(store.outbox_after(None, 10).unwrap()), ["k10", "k20"]);
        assert_eq!(keys(store.outbox_durable_after(None, 10).unwrap()), ["k10"]);
        assert_eq!(store.durable_seq(), 1);
        store.sync_in_background().unwrap();
        store.wait_durable(mark).unwrap();
        assert_eq!(store.durable_seq(), 2);
        assert_eq!(
            keys(store.outbox_durable_after(None, 10).unwrap()),
            ["k10", "k20"]
        );
        // With nothing running, waiting for a mark not yet flushed flushes.
        let mut batch = WriteBatch::new();
        batch.append_log(&entry(3, 3000, 10));
        batch.set_last_seq(3);
        store.commit_unsynced(batch).unwrap();
        store.wait_durable(store.commit_mark()).unwrap();
        assert_eq!(store.durable_seq(), 3);
    });
}

#[test]
fn campaign_records_offsets_and_settings_read_back() {
    on_both(&foreground(), |store| {
        let spec = |id: &str, version| v1::CampaignSpec {
            id: id.into(),
            version,
            ..Default::default()
        };
        commit(store, 1, |b| {
            b.put_spec(&spec("b", 1));
            b.put_spec(&spec("a", 2));
            b.put_spec(&spec("a", 1));
            b.put_lifecycle(&v1::CampaignLifecycle {
                campaign_id: "a".into(),
                ..Default::default()
            });
            b.put_policy(&v1::Policy {
                churn_days: 90,
                ..Default::default()
            });
            b.put_counters(
                "a",
                &v1::CampaignCounters {
                    enrollments: 3,
                    ..Default::default()
                },
            );
            b.set_offset("file:in.jsonl", 7);
            b.put_sweep(&v1::Sweep {
                command_seq: 1,
                after: "c9".into(),
                ..Default::default()
            });
        });
        let versions: Vec<(String, u32)> = store
            .specs()
            .unwrap()
            .into_iter()
            .map(|s| (s.id, s.version))
            .collect();
        assert_eq!(
            versions,
            [("a".into(), 1), ("a".into(), 2), ("b".into(), 1)]
        );
        assert_eq!(store.lifecycles().unwrap().len(), 1);
        assert!(store.lifecycle("a").unwrap().is_some());
        assert!(store.lifecycle("b").unwrap().is_none());
        assert_eq!(store.policy().unwrap().unwrap().churn_days, 90);
        assert_eq!(store.counters("a").unwrap().enrollments, 3);
        assert_eq!(
            store.counters("none").unwrap(),
            v1::CampaignCounters::default()
        );
        assert_eq!(store.offset("file:in.jsonl").unwrap(), Some(7));
        assert_eq!(store.offset("other").unwrap(), None);
        assert_eq!(store.sweeps().unwrap()[0].after, "c9");
        commit(store, 2, |b| b.remove_sweep(1));
        assert!(store.sweeps().unwrap().is_empty());
        assert_eq!(store.setting("dedupe").unwrap(), None);
        store.put_setting("dedupe", 42).unwrap();
        assert_eq!(store.setting("dedupe").unwrap(), Some(42));
    });
}

#[test]
fn dead_letters_and_publications_are_numbered_and_kept_in_order() {
    on_both(&foreground(), |store| {
        assert_eq!(store.dead_letter_count().unwrap(), 0);
        assert_eq!(store.last_publication().unwrap(), 0);
        let letter = |reason: &str| v1::DeadLetter {
            reason: reason.into(),
            ..Default::default()
        };
        commit(store, 0, |b| {
            b.put_dead_letter(1, &letter("first"));
            b.put_dead_letter(2, &letter("second"));
            for n in 1..=3 {
                b.put_publication(n, &v1::Publication::default());
            }
        });
        commit(store, 0, |b| b.remove_publication(1));
        let reasons: Vec<String> = store
            .dead_letters()
            .unwrap()
            .into_iter()
            .map(|l| l.reason)
            .collect();
        assert_eq!(reasons, ["first", "second"]);
        assert_eq!(store.dead_letter_count().unwrap(), 2);
        assert_eq!(store.last_publication().unwrap(), 3);
        let numbers: Vec<u64> = store
            .publications(10)
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(numbers, [2, 3]);
    });
}

#[test]
fn checkpoints_keep_every_row_visible_and_move_the_mark() {
    // Small tables: commits start background checkpoints all along.
    let options = StoreOptions {
        checkpoint_entries: 7,
        checkpoint_bytes: 2048,
        ..StoreOptions::default()
    };
    on_both(&options, |store| {
        for seq in 1..=200u64 {
            commit(store, seq, |b| {
                let id = format!("c{:03}", seq % 50);
                let mut state = contact(&id);
                state.campaigns.push(v1::ContactCampaignState {
                    entry_seq: seq,
                    ..Default::default()
                });
                b.put_contact(0, &id, &state);
                let due = |seq: u64| UnixMillis(i64::try_from(seq).unwrap());
                b.put_timer(due(seq), &timer("t", seq));
                if seq > 1 {
                    b.remove_timer(due(seq - 1), &timer("t", seq - 1));
                }
            });
            // Every read sees the last commit, whatever the checkpoint is doing.
            let id = format!("c{:03}", seq % 50);
            let row = store.contact(0, &id).unwrap().unwrap();
            assert_eq!(row.campaigns[0].entry_seq, seq);
        }
        assert_eq!(store.applied_seq().unwrap(), 200);
        assert_eq!(store.contact_ids(0).count(), 50);
        assert_eq!(
            store.timers(None).count(),
            1,
            "each commit removes the one before"
        );
        store.checkpoint().unwrap();
        assert_eq!(store.checkpoint_seq().unwrap(), 200);
        assert_eq!(store.applied_seq().unwrap(), 200);
        assert_eq!(store.contact_ids(0).count(), 50);
    });
}

#[test]
fn a_key_created_and_removed_between_checkpoints_leaves_nothing() {
    on_both(&foreground(), |store| {
        commit(store, 1, |b| b.put_timer(UnixMillis(5), &timer("a", 1)));
        commit(store, 2, |b| b.remove_timer(UnixMillis(5), &timer("a", 1)));
        store.checkpoint().unwrap();
        assert!(store.projection_dump().unwrap().is_empty());
    });
}

#[test]
fn the_command_journal_numbers_in_order_and_forgets_only_what_is_pruned() {
    on_both(&foreground(), |store| {
        let command = |actor: &str| v1::JournaledCommand {
            record: Some(v1::IngestRecord {
                input: Some(v1::ingest_record::Input::Command(v1::CampaignCommand {
                    actor: actor.into(),
                    ..Default::default()
                })),
                at: None,
            }),
            caller: "ops".into(),
            received_at: None,
        };
        assert_eq!(store.journal_end().unwrap(), 0);
        assert_eq!(
            store
                .journal_commands(&[command("a"), command("b")])
                .unwrap(),
            1
        );
        assert_eq!(store.journal_commands(&[command("c")]).unwrap(), 3);
        let actors = |from: u64| -> Vec<(u64, String)> {
            store
                .journal_from(from)
                .unwrap()
                .into_iter()
                .map(|(n, c)| match c.record.and_then(|r| r.input) {
                    Some(v1::ingest_record::Input::Command(c)) => (n, c.actor),
                    other => panic!("not a command: {other:?}"),
                })
                .collect()
        };
        assert_eq!(actors(2), vec![(2, "b".into()), (3, "c".into())]);
        store.prune_journal(3).unwrap();
        assert_eq!(actors(0), vec![(3, "c".into())]);
        // Everything held: the last number stays, so numbering goes on after it.
        store.prune_journal(10).unwrap();
        assert_eq!(actors(0), vec![(3, "c".into())]);
        assert_eq!(store.journal_commands(&[command("d")]).unwrap(), 4);
        // The journal is not a projection: a replay leaves it alone.
        store.clear_projections().unwrap();
        assert_eq!(store.journal_end().unwrap(), 4);
    });
}

#[test]
fn clearing_the_projections_keeps_the_log_and_the_dead_letters() {
    on_both(&foreground(), |store| {
        commit(store, 1, |b| {
            b.put_contact(0, "c1", &contact("c1"));
            b.put_dead_letter(1, &v1::DeadLetter::default());
            b.set_offset("file:in.jsonl", 99);
        });
        store.checkpoint().unwrap();
        commit(store, 2, |b| b.put_contact(0, "c2", &contact("c2")));
        assert_eq!(store.projection_dump().unwrap().len(), 2);
        store.clear_projections().unwrap();
        assert!(store.projection_dump().unwrap().is_empty());
        assert_eq!(store.contact(0, "c1").unwrap(), None);
        assert_eq!(store.checkpoint_seq().unwrap(), 0);
        assert_eq!(store.last_seq().unwrap(), 2);
        assert_eq!(store.dead_letter_count().unwrap(), 1);
        assert_eq!(
            store.offset("file:in.jsonl").unwrap(),
            Some(99),
            "written with the log"
        );
    });
}

#[test]
fn a_projection_dump_holds_every_table_in_key_order() {
    on_both(&foreground(), |store| {
        commit(store, 1, |b| {
            b.put_contact(0, "c1", &contact("c1"));
            b.put_counters("a", &v1::CampaignCounters::default());
            b.set_offset("s", 1);
        });
        let dump = store.projection_dump().unwrap();
        assert_eq!(dump.len(), 2, "offsets are not a projection");
        assert!(dump.windows(2).all(|w| w[0].0 < w[1].0));
    });
}

/// A changelog in memory: the frames shipped, each at the next offset; refuses while
/// `refusing` is set.
#[derive(Debug, Default)]
struct MemoryChangelog {
    frames: std::sync::Mutex<Vec<v1::CommitFrame>>,
    refusing: std::sync::atomic::AtomicBool,
}

impl Shipper for MemoryChangelog {
    fn ship(&self, frame: &v1::CommitFrame) -> Result<u64, String> {
        if self.refusing.load(std::sync::atomic::Ordering::SeqCst) {
            return Err("the broker is away".into());
        }
        let mut frames = self.frames.lock().unwrap();
        frames.push(frame.clone());
        Ok(frames.len() as u64 - 1)
    }

    fn standing(&self) -> Standing {
        Standing {
            epoch: 7,
            verified: 1,
        }
    }
}

#[test]
fn the_commits_shipped_to_another_copy_give_it_the_same_log_offsets_and_letters() {
    on_both(&foreground(), |store| {
        commit(store, 1, |b| b.set_offset("kafka:t/0", 1));
        assert_eq!(
            store.shipped().unwrap(),
            None,
            "nothing shipped without a shipper"
        );
        let changelog = std::sync::Arc::new(MemoryChangelog::default());
        store.ship_to(Some(changelog.clone()));
        commit(store, 2, |b| {
            b.set_offset("kafka:t/0", 2);
            b.put_dead_letter(
                1,
                &v1::DeadLetter {
                    reason: "not json".into(),
                    ..Default::default()
                },
            );
            b.put_counters("a", &v1::CampaignCounters::default());
        });
        commit(store, 0, |b| {
            b.put_publication(1, &v1::Publication::default());
            b.put_publication(2, &v1::Publication::default());
        });
        commit(store, 0, |b| b.remove_publication(1));
        commit(store, 3, |b| b.set_offset("kafka:t/0", 3));
        let frames = changelog.frames.lock().unwrap().clone();
        assert_eq!(
            frames
                .iter()
                .map(|f| (f.number, f.first_seq, f.last_seq))
                .collect::<Vec<_>>(),
            [(1, 2, 2), (2, 3, 2), (3, 3, 2), (4, 3, 3)],
            "each commit numbered, with the log entries it appended (none: last below first)"
        );
        assert!(
            frames
                .iter()
                .flat_map(|f| &f.writes)
                .all(|w| w.key[0] != b'N'),
            "projections are not shipped: the log rebuilds them"
        );
        assert_eq!(
            store.shipped().unwrap(),
            Some(Shipped {
                frame: 4,
                offset: 3,
                epoch: 7,
                verified: 1
            }),
            "the store knows where it stands in its changelog, and how far it was read back"
        );
        assert!(
            frames.iter().all(|f| f.epoch == 7),
            "frames go under the shipper's epoch"
        );

        // A copy that held what the store held before the first frame.
        let copy = Store::in_memory(foreground());
        commit(&copy, 1, |b| b.set_offset("kafka:t/0", 1));
        assert!(
            matches!(
                copy.apply_shipped(&frames[1], 1),
                Err(canvass_store::Error::Changelog(_))
            ),
            "frame 2 cannot follow nothing"
        );
        for (offset, frame) in frames.iter().enumerate() {
            assert!(copy.apply_shipped(frame, offset as u64).unwrap());
        }
        assert!(!copy.apply_shipped(&frames[2], 2).unwrap(), "held already");
        let diverged = Store::in_memory(foreground());
        commit(&diverged, 1, |b| b.set_offset("kafka:t/0", 1));
        commit(&diverged, 2, |b| b.set_offset("kafka:t/0", 9));
        assert!(
            matches!(
                diverged.apply_shipped(&frames[0], 0),
                Err(canvass_store::Error::Changelog(_))
            ),
            "a copy whose log went its own way is not patched"
        );
        let log = |s: &Store| s.log_from(1).map(Result::unwrap).collect::<Vec<_>>();
        assert_eq!(log(&copy), log(store));
        assert_eq!(copy.last_seq().unwrap(), 3);
        assert_eq!(copy.offset("kafka:t/0").unwrap(), Some(3));
        assert_eq!(copy.dead_letters().unwrap(), store.dead_letters().unwrap());
        assert_eq!(
            copy.publications(10).unwrap(),
            store.publications(10).unwrap()
        );
        let copied = copy.shipped().unwrap().unwrap();
        assert_eq!(
            (copied.frame, copied.offset, copied.epoch, copied.verified),
            (4, 3, 7, 3),
            "a copy that applied frames read them: verified through the last"
        );

        // A commit the changelog did not take is not written, nor is any after it.
        changelog
            .refusing
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let mut batch = WriteBatch::new();
        batch.set_offset("kafka:t/0", 4);
        assert!(matches!(
            store.commit(batch),
            Err(canvass_store::Error::Changelog(_))
        ));
        changelog
            .refusing
            .store(false, std::sync::atomic::Ordering::SeqCst);
        let mut batch = WriteBatch::new();
        batch.set_offset("kafka:t/0", 5);
        assert!(store.commit(batch).is_err(), "refused until opened again");
        assert_eq!(store.offset("kafka:t/0").unwrap(), Some(3));
        assert_eq!(changelog.frames.lock().unwrap().len(), 4);
    });
}

#[test]
fn a_snapshot_loaded_into_an_emptied_store_gives_it_the_same_keys_and_log() {
    on_both(&foreground(), |store| {
        let changelog = std::sync::Arc::new(MemoryChangelog::default());
        store.ship_to(Some(changelog.clone()));
        commit(store, 1, |b| {
            b.set_offset("kafka:t/0", 1);
            b.put_counters("a", &v1::CampaignCounters::default());
        });
        commit(store, 2, |b| {
            b.set_offset("kafka:t/0", 2);
            b.put_dead_letter(1, &v1::DeadLetter::default());
        });
        let at = store.shipped().unwrap().unwrap();
        let keys = store.snapshot().unwrap();
        assert!(
            keys.iter().all(|(k, _)| k[0] != b'F' && k[0] != b'K'),
            "neither the changelog position nor a checkpoint in progress is in a snapshot"
        );

        let other = Store::in_memory(foreground());
        commit(&other, 5, |b| b.set_offset("kafka:t/0", 9));
        other.reset().unwrap();
        assert_eq!(other.last_seq().unwrap(), 0, "reset: nothing is left");
        assert_eq!(other.offset("kafka:t/0").unwrap(), None);
        assert!(other.is_rebuilding().unwrap(), "a rebuild is in progress");
        for part in keys.chunks(2) {
            other
                .load_snapshot_part(
                    part.iter()
                        .map(|(k, v)| (k.clone(), Some(v.clone())))
                        .collect(),
                )
                .unwrap();
        }
        other.finish_snapshot(at).unwrap();
        let log = |s: &Store| s.log_from(1).map(Result::unwrap).collect::<Vec<_>>();
        assert_eq!(log(&other), log(store));
        assert_eq!(other.last_seq().unwrap(), 2);
        assert_eq!(other.offset("kafka:t/0").unwrap(), Some(2));
        assert_eq!(
            other.projection_dump().unwrap(),
            store.projection_dump().unwrap()
        );
        assert_eq!(other.dead_letters().unwrap(), store.dead_letters().unwrap());
        assert_eq!(other.shipped().unwrap(), Some(at));
        assert_eq!(
            other.checkpoint_seq().unwrap(),
            2,
            "its projections hold the whole log"
        );

        // The frames after the snapshot follow it.
        commit(store, 3, |b| b.set_offset("kafka:t/0", 3));
        let frames = changelog.frames.lock().unwrap().clone();
        let last = frames.last().unwrap();
        assert!(other.apply_shipped(last, 2).unwrap());
        assert_eq!(log(&other), log(store));
        assert!(
            other.is_rebuilding().unwrap(),
            "a rebuild lasts until a claim is held"
        );
        other.hold_claim(9, 3).unwrap();
        assert!(!other.is_rebuilding().unwrap());
    });
}

#[test]
fn a_rebuild_a_crash_interrupted_opens_empty_and_still_in_progress() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path(), foreground()).unwrap();
        commit(&store, 3, |b| b.set_offset("kafka:t/0", 3));
        store.reset().unwrap();
        // Half a snapshot loaded, then the process dies.
        let log = vec![(b"L".to_vec(), Some(b"not a frame".to_vec()))];
        store.load_snapshot_part(log).unwrap();
        store.flush().unwrap();
    }
    let store = Store::open(dir.path(), foreground()).unwrap();
    assert!(store.is_rebuilding().unwrap(), "the rebuild is still to do");
    assert_eq!(
        store.last_seq().unwrap(),
        0,
        "nothing half-loaded is taken for a copy"
    );
    assert_eq!(store.offset("kafka:t/0").unwrap(), None);
}
