//! Helpers shared by the end-to-end tests: building and running the real `canvass` binary.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::OnceLock,
};

/// The repository root.
#[must_use]
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// A file of the reference example.
#[must_use]
pub fn example(name: &str) -> PathBuf {
    repo_root().join("examples/reference").join(name)
}

/// Path of the `canvass` binary, built once per test process with the same profile as the
/// tests, so that a test never runs a stale binary.
///
/// # Panics
/// If the build fails: the tests cannot run without the binary.
pub fn canvass_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let release = std::env::current_exe()
            .is_ok_and(|p| p.components().any(|c| c.as_os_str() == "release"));
        let mut cmd = Command::new(cargo);
        cmd.current_dir(repo_root()).args([
            "build",
            "--quiet",
            "-p",
            "canvass",
            "--bin",
            "canvass",
            "--message-format=json",
        ]);
        if release {
            cmd.arg("--release");
        }
        let out = cmd.output().expect("cargo runs");
        assert!(
            out.status.success(),
            "building canvass failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|m| m["target"]["name"] == "canvass")
            .find_map(|m| m["executable"].as_str().map(PathBuf::from))
            .expect("cargo reports the canvass executable")
    })
}

/// Runs `canvass` with these arguments from the repository root.
///
/// # Panics
/// If the binary cannot be started.
#[must_use]
pub fn canvass(args: &[&str]) -> Output {
    Command::new(canvass_bin())
        .current_dir(repo_root())
        .args(args)
        .output()
        .expect("canvass starts")
}

/// Standard output as text.
#[must_use]
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Standard error as text.
#[must_use]
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
