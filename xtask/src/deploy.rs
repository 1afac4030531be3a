//! `cargo xtask validate-deploy [--write]`: offline validation of `deploy/`
//! and `RUNBOOK.md`, also run by `cargo xtask test` (so by CI).
//!
//! The checks live in `scripts/validate-deploy.py` (see its docstring): the
//! Dockerfile, the server config, every kustomize build rendered with
//! `kubectl kustomize` and schema-checked for Kubernetes 1.27 and the newest
//! bundled version (kubernetes-validate, strict) plus the Prometheus Operator
//! CRDs, the alert rules (`promtool check rules` and `promtool test rules`),
//! the Grafana dashboard, and the runbook's commands against the CLI and the
//! protos. `scripts/bootstrap-deploy.sh` installs the validators first
//! (promtool from Debian, a venv in `.tools/deploy-py`, npm packages in
//! `.tools/deploy-node`); it is quiet and fast once they are present.
//!
//! `--write` regenerates `deploy/k8s/components/monitoring/prometheusrule.yaml`
//! from `deploy/prometheus/alerts.yaml` (the single source of the rules)
//! before validating.

use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Result};

use crate::{root, run};

/// Entry point of the `validate-deploy` task.
pub fn main(args: &[String]) -> Result<()> {
    match args {
        [] => validate(),
        [flag] if flag == "--write" => {
            bootstrap_deploy()?;
            check(&["--write"])
        }
        _ => bail!("usage: cargo xtask validate-deploy [--write]"),
    }
}

/// Installs the validators if needed, then validates everything under
/// `deploy/` and `RUNBOOK.md`. Fails on the first broken check group with
/// every error listed.
pub fn validate() -> Result<()> {
    bootstrap_deploy()?;
    check(&[])
}

fn bootstrap_deploy() -> Result<()> {
    run(Command::new("bash").arg(root().join("scripts/bootstrap-deploy.sh")))
}

fn check(extra: &[&str]) -> Result<()> {
    let start = Instant::now();
    run(Command::new(root().join(".tools/deploy-py/bin/python"))
        .arg(root().join("scripts/validate-deploy.py"))
        .args(extra)
        .current_dir(root()))?;
    eprintln!(
        "xtask: deploy validation passed in {:.1}s",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
