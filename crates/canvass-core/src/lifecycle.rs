//! Campaign lifecycle: draft -> pending approval -> approved -> running -> paused ->
//! completed / stopped, with a new version taking over a running campaign.
//!
//! Pure rules: [`check`] says whether a command may be accepted and why not; [`apply`]
//! carries an accepted command out on the lifecycle record and the catalog, and says which
//! per-contact input the engine must then feed to every contact.

use canvass_proto::v1::{
    self, CampaignStatus as S, VersionStatus as V, campaign_command::Command, follow_up::Kind,
};
use rust_decimal::Decimal;

use crate::{
    Catalog, UnixMillis, assignment, materials,
    validate::{compile_stored, compile_with},
};

/// What the engine must do for every known contact after a command was applied, in the
/// form its sweep logs it (`None`: nothing).
pub type FollowUp = Option<Kind>;

fn version(l: &v1::CampaignLifecycle, v: u32) -> Option<&v1::VersionLifecycle> {
    l.versions.iter().find(|x| x.version == v)
}

fn newest_approved(l: &v1::CampaignLifecycle) -> Option<u32> {
    l.versions
        .iter()
        .filter(|v| v.status() == V::Approved)
        .map(|v| v.version)
        .max()
}

fn name(status: S) -> &'static str {
    status.as_str_name().trim_start_matches("CAMPAIGN_STATUS_")
}

/// Whether `command` may be accepted given the campaign's lifecycle (`None`: unknown
/// campaign) and the catalog in force: a new spec's conditions must stay within the policy's
/// CEL limits and its rules name teams the policy has; a new policy keeps the teams the
/// campaigns' rules name. The error says why not, for the dead-letter record.
pub fn check(
    command: &v1::CampaignCommand,
    lifecycle: Option<&v1::CampaignLifecycle>,
    catalog: &Catalog,
) -> Result<(), String> {
    let limits = &catalog.policy().cel;
    if command.actor.trim().is_empty() {
        return Err("field `actor`: required".into());
    }
    let Some(cmd) = &command.command else {
        return Err("the command is empty".into());
    };
    if materials::command_target(cmd).is_some() {
        return materials::check(command, catalog.materials(), &catalog.sending_specs());
    }
    if let Command::ReassignLeads(r) = cmd {
        if r.from_owner.trim().is_empty() {
            return Err("field `fromOwner`: required".into());
        }
        if r.from_owner == r.to_owner {
            return Err(format!("`{}` would take over their own leads", r.to_owner));
        }
        return Ok(());
    }
    let listed = |what: &str, issues: Vec<crate::Issue>| {
        let issues: Vec<String> = issues.iter().map(ToString::to_string).collect();
        format!("{what}: {}", issues.join("; "))
    };
    if let Command::SetPolicy(policy) = cmd {
        let compiled =
            crate::policy::compile(policy).map_err(|issues| listed("invalid policy", issues))?;
        // Every version contacts may be on, of every campaign not stopped.
        let orphaned: Vec<crate::Issue> = catalog
            .versions_where(|s| s != S::Stopped)
            .flat_map(|c| {
                let prefix = format!("campaign `{}` v{}: ", c.id(), c.version());
                assignment::missing_teams(&c.assignment, &compiled.teams, &prefix)
            })
            .collect();
        if !orphaned.is_empty() {
            return Err(listed(
                "the policy would drop teams campaigns name",
                orphaned,
            ));
        }
        return Ok(());
    }
    if let Command::PutSpec(spec) = cmd {
        let compiled = compile_with(spec, limits).map_err(|e| e.to_string())?;
        let mut missing =
            assignment::missing_teams(&compiled.assignment, &catalog.policy().teams, "");
        missing.extend(materials::spec_problems(spec, catalog.materials(), false));
        if !missing.is_empty() {
            return Err(listed(&format!("campaign `{}`", spec.id), missing));
        }
        if let Some(l) = lifecycle {
            let newest = l.versions.iter().map(|v| v.version).max().unwrap_or(0);
            if spec.version <= newest {
                return Err(format!(
                    "campaign `{}` already has version {newest}: a new version must be higher",
                    spec.id
                ));
            }
            if matches!(l.status(), S::Stopped | S::Completed) {
                return Err(format!("campaign `{}` is {}", spec.id, name(l.status())));
            }
        }
        return Ok(());
    }
    let id = campaign_of(cmd);
    let Some(l) = lifecycle else {
        return Err(format!("unknown campaign `{id}`"));
    };
    let status = l.status();
    let need = |ok: bool, what: &str| {
        if ok {
            Ok(())
        } else {
            Err(format!(
                "campaign `{id}` is {}: cannot {what}",
                name(status)
            ))
        }
    };
    match cmd {
        Command::PutSpec(_)
        | Command::SetPolicy(_)
        | Command::ReassignLeads(_)
        | Command::PutMaterial(_)
        | Command::ApproveMaterial(_)
        | Command::RetireMaterial(_) => Ok(()),
        Command::Submit(r) | Command::Approve(r) | Command::Reject(r) => {
            let Some(v) = version(l, r.version) else {
                return Err(format!("campaign `{id}` has no version {}", r.version));
            };
            match cmd {
                Command::Submit(_) if v.status() != V::Draft => {
                    Err(format!("version {} of `{id}` is not a draft", r.version))
                }
                Command::Approve(_) | Command::Reject(_) if v.status() != V::PendingApproval => {
                    Err(format!(
                        "version {} of `{id}` is not awaiting approval",
                        r.version
                    ))
                }
                Command::Approve(_) | Command::Reject(_) if v.author == command.actor => {
                    Err(format!(
                        "`{}` wrote version {} of `{id}` and cannot review it: another person must",
                        command.actor, r.version
                    ))
                }
                Command::Reject(_) if command.reason.trim().is_empty() => {
                    Err("field `reason`: required to reject".into())
                }
                Command::Approve(_) => sendable(catalog, id, r.version),
                _ => Ok(()),
            }
        }
        Command::Launch(_) => {
            need(!matches!(status, S::Stopped | S::Completed), "launch")?;
            match newest_approved(l) {
                Some(v) => sendable(catalog, id, v),
                None => Err(format!("campaign `{id}` has no approved version to launch")),
            }
        }
        Command::Pause(_) => need(status == S::Running, "pause"),
        Command::Resume(_) => need(status == S::Paused, "resume"),
        Command::Complete(_) => need(matches!(status, S::Running | S::Paused), "complete"),
        Command::Stop(_) => need(
            matches!(status, S::Running | S::Paused | S::Completed),
            "stop",
        ),
    }
}

/// Whether version `v` of campaign `id` has an approved version of every material it
/// names, and none retired (approval and launch).
fn sendable(catalog: &Catalog, id: &str, v: u32) -> Result<(), String> {
    let Some(spec) = catalog.get(id, v).map(|c| &c.spec) else {
        return Ok(());
    };
    let problems = materials::spec_problems(spec, catalog.materials(), true);
    if problems.is_empty() {
        return Ok(());
    }
    let problems: Vec<String> = problems.iter().map(ToString::to_string).collect();
    Err(format!("campaign `{id}` v{v}: {}", problems.join("; ")))
}

/// The campaign a command is about.
#[must_use]
pub fn campaign_of(cmd: &Command) -> &str {
    match cmd {
        Command::PutSpec(s) => &s.id,
        Command::Submit(r) | Command::Approve(r) | Command::Reject(r) => &r.campaign_id,
        Command::Launch(id)
        | Command::Pause(id)
        | Command::Resume(id)
        | Command::Complete(id)
        | Command::Stop(id) => id,
        Command::ReassignLeads(r) => &r.campaign_id,
        // Not about one campaign.
        Command::SetPolicy(_)
        | Command::PutMaterial(_)
        | Command::ApproveMaterial(_)
        | Command::RetireMaterial(_) => "",
    }
}

/// Carries out an accepted command on the campaign's lifecycle record (created for a new
/// campaign) and on the catalog.
pub fn apply(
    command: &v1::CampaignCommand,
    lifecycle: &mut v1::CampaignLifecycle,
    catalog: &mut Catalog,
    now: UnixMillis,
) -> FollowUp {
    let Some(cmd) = &command.command else {
        return None;
    };
    if let Command::SetPolicy(policy) = cmd {
        if let Ok(p) = crate::policy::compile(policy) {
            catalog.set_policy(p);
        }
        return None;
    }
    if let Command::ReassignLeads(r) = cmd {
        return Some(Kind::ReassignLeads(r.clone()));
    }
    if materials::command_target(cmd).is_some() {
        let mut all = catalog.materials().clone();
        if let Some(m) = materials::apply(command, &mut all, now) {
            catalog.put_material(m);
        }
        return None;
    }
    let id = campaign_of(cmd).to_string();
    lifecycle.campaign_id.clone_from(&id);
    let set_version = |l: &mut v1::CampaignLifecycle, v: u32, status: V, reviewer: Option<&str>| {
        if let Some(x) = l.versions.iter_mut().find(|x| x.version == v) {
            x.set_status(status);
            if let Some(r) = reviewer {
                x.reviewer = r.to_string();
            }
        }
    };
    let (change, follow) = match cmd {
        Command::PutSpec(spec) => {
            // Accepted under the limits in force: compiled as stored, it stays valid later.
            if let Ok(c) = compile_stored(spec) {
                let _ = catalog.insert(c);
            }
            if lifecycle.status() == S::Unspecified {
                lifecycle.set_status(S::Draft);
            }
            lifecycle.versions.push(v1::VersionLifecycle {
                version: spec.version,
                status: V::Draft as i32,
                author: command.actor.clone(),
                reviewer: String::new(),
            });
            (format!("put v{}", spec.version), None)
        }
        Command::Submit(r) => {
            set_version(lifecycle, r.version, V::PendingApproval, None);
            if matches!(lifecycle.status(), S::Draft | S::Approved) {
                lifecycle.set_status(S::PendingApproval);
            }
            (format!("submit v{}", r.version), None)
        }
        Command::Approve(r) => {
            set_version(lifecycle, r.version, V::Approved, Some(&command.actor));
            if lifecycle.status() == S::PendingApproval {
                lifecycle.set_status(S::Approved);
            }
            (format!("approve v{}", r.version), None)
        }
        Command::Reject(r) => {
            set_version(lifecycle, r.version, V::Rejected, Some(&command.actor));
            if lifecycle.status() == S::PendingApproval {
                lifecycle.set_status(S::Draft);
            }
            (format!("reject v{}", r.version), None)
        }
        Command::Launch(_) => {
            let v = newest_approved(lifecycle).unwrap_or(0);
            let first = lifecycle.active_version == 0;
            if !first {
                let old = lifecycle.active_version;
                set_version(lifecycle, old, V::Retired, None);
            }
            set_version(lifecycle, v, V::Active, None);
            lifecycle.active_version = v;
            catalog.activate(&id, v);
            if !matches!(lifecycle.status(), S::Running | S::Paused) {
                lifecycle.set_status(S::Running);
            }
            let follow = if first {
                Some(Kind::Launch(id.clone()))
            } else {
                Some(Kind::Migrate(id.clone()))
            };
            (format!("launch v{v}"), follow)
        }
        Command::Pause(_) => {
            lifecycle.set_status(S::Paused);
            ("pause".to_string(), None)
        }
        Command::Resume(_) => {
            lifecycle.set_status(S::Running);
            ("resume".to_string(), Some(Kind::Resume(id.clone())))
        }
        Command::Complete(_) => {
            lifecycle.set_status(S::Completed);
            ("complete".to_string(), None)
        }
        Command::Stop(_) => {
            lifecycle.set_status(S::Stopped);
            ("stop".to_string(), Some(Kind::Stop(id.clone())))
        }
        // Applied above, before any campaign's record.
        Command::SetPolicy(_)
        | Command::PutMaterial(_)
        | Command::ApproveMaterial(_)
        | Command::RetireMaterial(_) => return None,
        Command::ReassignLeads(r) => return Some(Kind::ReassignLeads(r.clone())),
    };
    catalog.set_status(&id, lifecycle.status());
    lifecycle.history.push(v1::LifecycleChange {
        at: Some(now.to_proto()),
        actor: command.actor.clone(),
        reason: command.reason.clone(),
        change,
        status: lifecycle.status,
    });
    follow
}

/// Rebuilds a catalog from stored specs and lifecycles.
pub fn catalog_from(
    specs: &[v1::CampaignSpec],
    lifecycles: &[v1::CampaignLifecycle],
) -> Result<Catalog, crate::SpecErrors> {
    let mut catalog = Catalog::new();
    for spec in specs {
        let _ = catalog.insert(compile_stored(spec)?);
    }
    for l in lifecycles {
        catalog.set_status(&l.campaign_id, l.status());
        if l.active_version != 0 {
            catalog.activate(&l.campaign_id, l.active_version);
        }
    }
    Ok(catalog)
}

/// The actor of the history entries the engine writes itself.
pub const ENGINE_ACTOR: &str = "engine";

/// The history entry that says a campaign's budget ran out (the first cost-bearing action
/// withheld, `kind`), in the partition `share`: of its allotment when the budget is split.
/// Its status is the campaign's, set by the caller.
#[must_use]
pub fn budget_exhausted(
    kind: v1::ActionKind,
    spent: Decimal,
    allotment: Decimal,
    share: crate::partition::Share,
    now: UnixMillis,
) -> v1::LifecycleChange {
    let kind = crate::validate::kind_name(kind);
    let reason = if share.count > 1 {
        format!(
            "partition {} spent {spent} of its allotment {allotment} of the budget; a {kind} action and every cost-bearing action after it in this partition is withheld",
            share.index
        )
    } else {
        format!(
            "spent {spent} of {allotment}; a {kind} action and every cost-bearing action after it is withheld"
        )
    };
    v1::LifecycleChange {
        at: Some(now.to_proto()),
        actor: ENGINE_ACTOR.to_string(),
        reason,
        change: "budget exhausted".to_string(),
        status: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reassign(from: &str, to: &str) -> v1::CampaignCommand {
        v1::CampaignCommand {
            actor: "ops".into(),
            reason: String::new(),
            command: Some(Command::ReassignLeads(v1::LeadReassignment {
                from_owner: from.into(),
                to_owner: to.into(),
                campaign_id: String::new(),
            })),
        }
    }

    #[test]
    fn a_lead_reassignment_names_the_owner_leaving() {
        let catalog = Catalog::new();
        assert_eq!(check(&reassign("alice", "bob"), None, &catalog), Ok(()));
        assert_eq!(
            check(&reassign("", "bob"), None, &catalog),
            Err("field `fromOwner`: required".into())
        );
        // No new owner: the assignment rules choose one for each lead.
        assert_eq!(check(&reassign("alice", " "), None, &catalog), Ok(()));
        assert_eq!(
            check(&reassign("bob", "bob"), None, &catalog),
            Err("`bob` would take over their own leads".into())
        );
    }

    #[test]
    fn rules_must_name_teams_the_policy_has_and_a_policy_keeps_them() {
        let routed: v1::CampaignSpec = canvass_proto::json::from_str(
            r#"{"id": "routed", "version": 1, "initialState": "a", "states": [{"id": "a", "terminal": true}],
                "assignment": {"rules": [{"name": "r", "team": "north"}]}}"#,
        )
        .unwrap();
        let command = |c: Command| v1::CampaignCommand {
            actor: "ops".into(),
            reason: String::new(),
            command: Some(c),
        };
        let mut catalog = Catalog::new();
        assert_eq!(
            check(&command(Command::PutSpec(routed.clone())), None, &catalog),
            Err("campaign `routed`: assignment.rules[0].team: team `north` is not in the policy (teams)".into())
        );
        let staffed = v1::Policy {
            teams: vec![v1::Team {
                name: "north".into(),
                members: vec!["ann".into()],
            }],
            ..Default::default()
        };
        catalog.set_policy(crate::policy::compile(&staffed).unwrap());
        assert_eq!(
            check(&command(Command::PutSpec(routed.clone())), None, &catalog),
            Ok(())
        );
        catalog.insert(compile_stored(&routed).unwrap()).unwrap();
        assert_eq!(
            check(&command(Command::SetPolicy(v1::Policy::default())), None, &catalog),
            Err("the policy would drop teams campaigns name: campaign `routed` v1: assignment.rules[0].team: team `north` is not in the policy (teams)".into())
        );
    }

    #[test]
    fn a_material_must_be_approved_to_send_and_may_not_be_retired_from_under_a_campaign() {
        let command = |actor: &str, c: Command| v1::CampaignCommand {
            actor: actor.into(),
            reason: String::new(),
            command: Some(c),
        };
        let mut catalog = Catalog::new();
        let apply_ok = |catalog: &mut Catalog, actor: &str, c: Command| {
            let cmd = command(actor, c);
            assert_eq!(check(&cmd, None, catalog), Ok(()), "{cmd:?}");
            apply(
                &cmd,
                &mut v1::CampaignLifecycle::default(),
                catalog,
                UnixMillis(0),
            );
        };
        let reference = |version: u32| v1::MaterialRef {
            material_id: "mail".into(),
            version,
        };
        apply_ok(
            &mut catalog,
            "designer",
            Command::PutMaterial(v1::MaterialDraft {
                material_id: "mail".into(),
                version: 1,
                channel: v1::ActionKind::Email as i32,
                content_ref: "cms://mail/1".into(),
                description: String::new(),
            }),
        );
        // A draft: a campaign may name it, not be approved with it.
        let spec: v1::CampaignSpec = canvass_proto::json::from_str(
            r#"{"id": "news", "version": 1, "initialState": "a",
                "states": [{"id": "a", "terminal": true,
                  "actions": [{"kind": "ACTION_KIND_EMAIL", "material": "mail"}]}]}"#,
        )
        .unwrap();
        assert_eq!(
            check(
                &command("m", Command::PutSpec(spec.clone())),
                None,
                &catalog
            ),
            Ok(())
        );
        catalog.insert(compile_stored(&spec).unwrap()).unwrap();
        assert_eq!(
            sendable(&catalog, "news", 1),
            Err("campaign `news` v1: states[0].actions[0].material: material `mail` has no approved version yet".into())
        );
        apply_ok(
            &mut catalog,
            "manager",
            Command::ApproveMaterial(reference(1)),
        );
        assert_eq!(sendable(&catalog, "news", 1), Ok(()));
        // Running with only v1 approved: v1 may not be retired.
        catalog.set_status("news", S::Running);
        let retire = command("manager", Command::RetireMaterial(reference(1)));
        let refused = check(&retire, None, &catalog).unwrap_err();
        assert!(
            refused.contains("campaign `news` v1 still sends it"),
            "{refused}"
        );
        // Completed, it still drains: contacts inside still receive its actions.
        catalog.set_status("news", S::Completed);
        assert!(check(&retire, None, &catalog).is_err());
        // Once the campaign is stopped it may.
        catalog.set_status("news", S::Stopped);
        assert_eq!(check(&retire, None, &catalog), Ok(()));
        // One channel per material: a version for SMS is refused.
        let sms_version = command(
            "designer",
            Command::PutMaterial(v1::MaterialDraft {
                material_id: "mail".into(),
                version: 2,
                channel: v1::ActionKind::Sms as i32,
                content_ref: "cms://mail/2".into(),
                description: String::new(),
            }),
        );
        let refused = check(&sms_version, None, &catalog).unwrap_err();
        assert!(refused.contains("needs a material of its own"), "{refused}");
        // Made for another channel: refused.
        let mut sms = spec.clone();
        sms.id = "sms".into();
        sms.states[0].actions[0].kind = v1::ActionKind::Sms as i32;
        let refused = check(&command("m", Command::PutSpec(sms)), None, &catalog).unwrap_err();
        assert!(refused.contains("is made for EMAIL, not SMS"), "{refused}");
    }
}
