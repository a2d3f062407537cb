//! `flotilla doctor`: fetch one node's status, judge it with [`flotilla::doctor::diagnose`],
//! print the findings, and exit non-zero when any of them fails.

use std::process::ExitCode;

use anyhow::Context;
use flotilla::doctor::{diagnose, worst, Finding, Thresholds, Verdict};
use flotilla::NodeStatus;

use crate::status_table::{table, Output};
use crate::Target;

/// `flotilla doctor` arguments.
#[derive(Debug, clap::Args)]
pub struct DoctorArgs {
    /// Print the findings as a table (default) or as JSON.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Table)]
    output: Output,
}

pub async fn run(target: &Target, args: DoctorArgs) -> anyhow::Result<ExitCode> {
    let body = target.client().get_json("/v1/status").await?;
    let status: NodeStatus = serde_json::from_value(body).context("the node's status is not what this CLI reads")?;
    let findings = diagnose(&status, &Thresholds::for_status(&status));
    match args.output {
        Output::Table => print!("{}", findings_table(&status.peer_id, &findings)),
        Output::Json => println!("{}", serde_json::to_string_pretty(&findings)?),
    }
    Ok(if worst(&findings) == Verdict::Fail { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// The findings, one per line, with a last line that sums them up.
pub fn findings_table(node: &str, findings: &[Finding]) -> String {
    let rows: Vec<Vec<String>> = findings
        .iter()
        .map(|f| vec![f.verdict.name().to_uppercase(), f.check.to_string(), f.subject.clone(), f.detail.clone()])
        .collect();
    let count = |v| findings.iter().filter(|f| f.verdict == v).count();
    let mut out = format!("node {node}\n\n");
    out += &table(&["VERDICT", "CHECK", "SUBJECT", "DETAIL"], &rows);
    out += &format!(
        "\n{}: {} ok, {} warn, {} fail\n",
        worst(findings).name(),
        count(Verdict::Ok),
        count(Verdict::Warn),
        count(Verdict::Fail)
    );
    out
}
