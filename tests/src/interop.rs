//! tollgate's inputs produced by a client tollgate did not write: `tests/interop/produce.py`,
//! a Python producer on confluent-kafka (librdkafka with `partitioner=murmur2_random`) whose
//! protobuf classes are generated from `proto/tollgate/v1/*.proto` when it runs.
//!
//! Its virtual environment is `target/interop-venv` under the workspace root (or
//! `TOLLGATE_INTEROP_VENV`), made by `tests/interop/setup.sh` with the pinned
//! `tests/interop/requirements.txt`, once.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::broker::{dir_from_env, run_setup_script, workspace_root};

/// The virtual environment: `TOLLGATE_INTEROP_VENV`, or `target/interop-venv`.
pub fn venv_dir() -> PathBuf {
    dir_from_env("TOLLGATE_INTEROP_VENV", "target/interop-venv")
}

/// Runs `tests/interop/setup.sh` (once per process; it returns at once when the environment
/// is complete) and returns the environment's `python`.
pub fn ensure_venv() -> PathBuf {
    static READY: OnceLock<PathBuf> = OnceLock::new();
    READY
        .get_or_init(|| {
            let venv = venv_dir();
            run_setup_script("tests/interop/setup.sh", "TOLLGATE_INTEROP_VENV", &venv, || true);
            venv.join("bin/python")
        })
        .clone()
}

/// Publishes the JSON lines of `tollgate.v1.InputRecord` in `jsonl` with the Python producer:
/// call legs to `legs_topic`, credit commands to `credits_topic`, keyed by tenant id. Returns
/// once the producer exited 0 (every record acknowledged); panics with its output otherwise.
pub fn python_produce(bootstrap: &str, legs_topic: &str, credits_topic: &str, jsonl: &Path) {
    let python = ensure_venv();
    let root = workspace_root();
    let output = Command::new(&python)
        .arg(root.join("tests/interop/produce.py"))
        .args(["--bootstrap-servers", bootstrap, "--call-legs-topic", legs_topic])
        .args(["--credit-commands-topic", credits_topic, "--proto-dir"])
        .arg(root.join("proto"))
        .arg(jsonl)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the Python producer failed ({}) on {}:\n{}{stderr}",
        output.status,
        jsonl.display(),
        String::from_utf8_lossy(&output.stdout)
    );
    eprint!("{stderr}");
}
