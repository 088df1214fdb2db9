//! `canvass validate`: every problem of every spec, each with its path and reason.

use std::{path::PathBuf, process::ExitCode};

use crate::{EXIT_INVALID_INPUT, input};

pub fn run(specs: &[PathBuf]) -> anyhow::Result<ExitCode> {
    match input::load_specs(specs) {
        Err(failures) => {
            let total: usize = failures.iter().map(|f| f.problems.len()).sum();
            for f in &failures {
                for p in &f.problems {
                    eprintln!("error: {p}");
                }
            }
            let files: Vec<String> = failures
                .iter()
                .map(|f| f.file.display().to_string())
                .collect();
            eprintln!("{total} problem(s) in {}", files.join(", "));
            Ok(ExitCode::from(EXIT_INVALID_INPUT))
        }
        Ok(campaigns) => {
            let names: Vec<String> = campaigns
                .iter()
                .map(|(p, c)| format!("{} ({} v{})", p.display(), c.id(), c.version()))
                .collect();
            let catalog = input::catalog(campaigns)?;
            // A sub-campaign may be validated on its own; a missing target is only a warning here.
            for issue in catalog.dangling_references() {
                eprintln!("warning: {issue}");
            }
            for n in names {
                out!("ok: {n}");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
