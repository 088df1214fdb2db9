//! The catalog of marketing materials (seed 002): templates in versions, each put as a
//! draft by its author, approved by someone else, retired when withdrawn. Campaigns name a
//! material in an action (`material`); the rules here say when a command or a campaign
//! naming one may be accepted, and which version an action sends.

use std::collections::BTreeMap;

use canvass_proto::v1::{self, MaterialStatus as M};

use crate::{UnixMillis, validate::Issue, validate::id_problem, validate::kind_name};

/// Materials by id.
pub type Materials = BTreeMap<String, v1::Material>;

/// The key a material's figures are counted under: `id@vN` for a catalog material's
/// version, the template itself otherwise.
#[must_use]
pub fn counted_as(action: &v1::Action) -> String {
    if action.material_version > 0 {
        format!("{}@v{}", action.template, action.material_version)
    } else {
        action.template.clone()
    }
}

/// A counted key as (template, version): the inverse of [`counted_as`].
#[must_use]
pub fn parse_counted(key: &str) -> (&str, Option<u32>) {
    match key.rsplit_once("@v") {
        Some((template, v)) if !template.is_empty() => match v.parse::<u32>() {
            Ok(version) if version > 0 => (template, Some(version)),
            _ => (key, None),
        },
        _ => (key, None),
    }
}

fn version<'a>(materials: &'a Materials, id: &str, v: u32) -> Option<&'a v1::MaterialVersion> {
    materials.get(id)?.versions.iter().find(|x| x.version == v)
}

/// The version an action naming `id` (pinned to `pinned`, 0: none) sends now: the pinned
/// one if approved, else the newest approved.
#[must_use]
pub fn sendable(materials: &Materials, id: &str, pinned: u32) -> Option<u32> {
    let m = materials.get(id)?;
    m.versions
        .iter()
        .filter(|v| v.status() == M::Approved && (pinned == 0 || v.version == pinned))
        .map(|v| v.version)
        .max()
}

/// The materials a spec's actions name: (path, action kind, id, pinned version).
fn references(spec: &v1::CampaignSpec) -> Vec<(String, v1::ActionKind, &str, u32)> {
    let mut out = Vec::new();
    for (s, state) in spec.states.iter().enumerate() {
        for (a, action) in state.actions.iter().enumerate() {
            if !action.material.is_empty() {
                out.push((
                    format!("states[{s}].actions[{a}].material"),
                    action.kind(),
                    action.material.as_str(),
                    action.material_version,
                ));
            }
        }
    }
    out
}

/// What keeps `spec` from naming its materials: a material missing, retired or made for
/// another channel; with `to_send`, one without an approved version to send (approval and
/// launch need one).
#[must_use]
pub fn spec_problems(spec: &v1::CampaignSpec, materials: &Materials, to_send: bool) -> Vec<Issue> {
    let mut issues = Vec::new();
    for (path, kind, id, pinned) in references(spec) {
        let mut report = |reason: String| {
            issues.push(Issue {
                path: path.clone(),
                reason,
            });
        };
        let Some(m) = materials.get(id) else {
            report(format!("material `{id}` is not in the catalog"));
            continue;
        };
        let named: Vec<&v1::MaterialVersion> = m
            .versions
            .iter()
            .filter(|v| pinned == 0 || v.version == pinned)
            .collect();
        if pinned > 0 && named.is_empty() {
            report(format!("material `{id}` has no version {pinned}"));
            continue;
        }
        if named.iter().all(|v| v.status() == M::Retired) {
            report(format!("material `{id}` is retired"));
            continue;
        }
        if let Some(v) = named.iter().find(|v| v.channel() != kind) {
            report(format!(
                "material `{id}` v{} is made for {}, not {}",
                v.version,
                kind_name(v.channel()),
                kind_name(kind)
            ));
            continue;
        }
        if to_send && sendable(materials, id, pinned).is_none() {
            report(format!(
                "material `{id}`{} has no approved version yet",
                if pinned > 0 {
                    format!(" v{pinned}")
                } else {
                    String::new()
                }
            ));
        }
    }
    issues
}

/// The command's material id and version, if it is a material command.
#[must_use]
pub fn command_target(cmd: &v1::campaign_command::Command) -> Option<(&str, u32)> {
    use v1::campaign_command::Command;
    match cmd {
        Command::PutMaterial(d) => Some((&d.material_id, d.version)),
        Command::ApproveMaterial(r) | Command::RetireMaterial(r) => {
            Some((&r.material_id, r.version))
        }
        _ => None,
    }
}

/// Whether a material command may be accepted: `in_use` are the specs of campaigns still
/// sending (running, paused or completed), which a retirement must leave a version to send.
///
/// # Errors
/// Why not, naming the field.
pub fn check(
    command: &v1::CampaignCommand,
    materials: &Materials,
    in_use: &[&v1::CampaignSpec],
) -> Result<(), String> {
    use v1::campaign_command::Command;
    let Some(cmd) = &command.command else {
        return Err("the command is empty".into());
    };
    match cmd {
        Command::PutMaterial(d) => {
            if let Some(p) = id_problem(&d.material_id) {
                return Err(format!("field `materialId`: {p}"));
            }
            if d.version == 0 {
                return Err("field `version`: must be at least 1".into());
            }
            if d.channel() == v1::ActionKind::Unspecified {
                return Err("field `channel`: required (the action kind it is made for)".into());
            }
            if d.content_ref.trim().is_empty() {
                return Err("field `contentRef`: required (where its content lives)".into());
            }
            let existing = materials.get(&d.material_id);
            // One channel per material: an action naming it unpinned sends the newest version.
            if let Some(other) = existing
                .and_then(|m| m.versions.first())
                .filter(|v| v.channel != d.channel)
            {
                return Err(format!(
                    "field `channel`: material `{}` is made for {}; a version for {} needs a material of its own",
                    d.material_id,
                    kind_name(other.channel()),
                    kind_name(d.channel())
                ));
            }
            let newest = existing.and_then(|m| m.versions.iter().map(|v| v.version).max());
            if let Some(newest) = newest.filter(|n| d.version <= *n) {
                return Err(format!(
                    "material `{}` already has version {newest}: a new version must be higher",
                    d.material_id
                ));
            }
            Ok(())
        }
        Command::ApproveMaterial(r) | Command::RetireMaterial(r) => {
            let Some(v) = version(materials, &r.material_id, r.version) else {
                return Err(match materials.get(&r.material_id) {
                    None => format!("material `{}` is not in the catalog", r.material_id),
                    Some(_) => format!("material `{}` has no version {}", r.material_id, r.version),
                });
            };
            if let Command::ApproveMaterial(_) = cmd {
                if v.status() != M::Draft {
                    return Err(format!(
                        "version {} of material `{}` is not a draft",
                        r.version, r.material_id
                    ));
                }
                if v.author == command.actor {
                    return Err(format!(
                        "`{}` wrote version {} of material `{}` and cannot approve it: another person must",
                        command.actor, r.version, r.material_id
                    ));
                }
                return Ok(());
            }
            if v.status() == M::Retired {
                return Err(format!(
                    "version {} of material `{}` is already retired",
                    r.version, r.material_id
                ));
            }
            let mut after = materials.clone();
            retire(
                &mut after,
                &r.material_id,
                r.version,
                &command.actor,
                UnixMillis(0),
            );
            for spec in in_use {
                let stranded = spec_problems(spec, &after, true);
                if let Some(issue) = stranded
                    .iter()
                    .find(|i| i.reason.contains(&format!("`{}`", r.material_id)))
                {
                    return Err(format!(
                        "campaign `{}` v{} still sends it ({issue}): approve another version or end the campaign first",
                        spec.id, spec.version
                    ));
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

fn retire(materials: &mut Materials, id: &str, v: u32, _actor: &str, now: UnixMillis) {
    if let Some(x) = materials
        .get_mut(id)
        .and_then(|m| m.versions.iter_mut().find(|x| x.version == v))
    {
        x.set_status(M::Retired);
        x.retired_at = Some(now.to_proto());
    }
}

/// Carries out an accepted material command on the catalog; returns the material changed.
pub fn apply(
    command: &v1::CampaignCommand,
    materials: &mut Materials,
    now: UnixMillis,
) -> Option<v1::Material> {
    use v1::campaign_command::Command;
    let cmd = command.command.as_ref()?;
    let (id, _) = command_target(cmd)?;
    let id = id.to_string();
    match cmd {
        Command::PutMaterial(d) => {
            let m = materials.entry(id.clone()).or_insert_with(|| v1::Material {
                id: id.clone(),
                versions: Vec::new(),
            });
            m.versions.push(v1::MaterialVersion {
                version: d.version,
                channel: d.channel,
                content_ref: d.content_ref.clone(),
                description: d.description.clone(),
                status: M::Draft as i32,
                author: command.actor.clone(),
                approver: String::new(),
                created_at: Some(now.to_proto()),
                approved_at: None,
                retired_at: None,
            });
        }
        Command::ApproveMaterial(r) => {
            if let Some(x) = materials
                .get_mut(&id)
                .and_then(|m| m.versions.iter_mut().find(|x| x.version == r.version))
            {
                x.set_status(M::Approved);
                x.approver.clone_from(&command.actor);
                x.approved_at = Some(now.to_proto());
            }
        }
        Command::RetireMaterial(r) => retire(materials, &id, r.version, &command.actor, now),
        _ => return None,
    }
    materials.get(&id).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counted_key_names_its_template_and_version() {
        let action = v1::Action {
            template: "spring-mail".into(),
            material_version: 2,
            ..Default::default()
        };
        assert_eq!(counted_as(&action), "spring-mail@v2");
        assert_eq!(parse_counted("spring-mail@v2"), ("spring-mail", Some(2)));
        assert_eq!(parse_counted("plain"), ("plain", None));
        assert_eq!(parse_counted("odd@vx"), ("odd@vx", None));
    }
}
