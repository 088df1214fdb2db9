//! `canvass graph`: the state machine as a diagram.

use std::{path::Path, process::ExitCode};

use canvass_core::graph::{GraphFormat, render};

use crate::{GraphFormat as Arg, input};

pub fn run(spec: &Path, format: Arg) -> anyhow::Result<ExitCode> {
    let campaigns = match input::load_specs(&[spec.to_path_buf()]) {
        Ok(c) => c,
        Err(failures) => {
            for p in failures.iter().flat_map(|f| &f.problems) {
                eprintln!("error: {p}");
            }
            return Ok(ExitCode::from(crate::EXIT_INVALID_INPUT));
        }
    };
    let format = match format {
        Arg::Mermaid => GraphFormat::Mermaid,
        Arg::Dot => GraphFormat::Dot,
    };
    for (_, campaign) in &campaigns {
        out_raw!("{}", render(campaign, format));
    }
    Ok(ExitCode::SUCCESS)
}
