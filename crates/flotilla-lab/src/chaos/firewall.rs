//! Network faults as nftables rules on the lab's bridge.
//!
//! The switch namespace of a [`crate::Lab`] holds the bridge `br0` with one port `p<i>` per host
//! (and the port `probe` the driver talks through). A `bridge` table in that namespace sees every
//! frame the bridge forwards, with the ingress and egress port: dropping frames between two sets
//! of ports is a partition, dropping only IPv4 frames in one direction is a one-way cut (ARP
//! still answers, so the other direction keeps working at the link layer), and
//! `numgen random mod 100 < P` drops a share of frames at random. Rules only ever name host
//! ports, so the driver's path to every agent's HTTP API (through `probe`) is never cut.
//!
//! All rules live in one table, [`TABLE`], replaced atomically (one `nft -f` transaction) on
//! every change and deleted to heal. Deleting the lab's switch namespace deletes the table too,
//! so nothing outlives a lab even if [`Firewall::clear`] never runs.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use anyhow::{bail, Context, Result};

/// Name of the table holding the fault rules, in the switch namespace.
pub const TABLE: &str = "flotilla_chaos";

/// Why nftables cannot be used here (`nft` missing or not working), if it cannot. Computed once
/// per process.
pub fn nft_unavailable() -> Option<String> {
    static REASON: OnceLock<Option<String>> = OnceLock::new();
    REASON
        .get_or_init(|| match Command::new("nft").arg("--version").stdin(Stdio::null()).output() {
            Ok(out) if out.status.success() => None,
            Ok(out) => Some(format!("`nft --version` failed: {}", String::from_utf8_lossy(&out.stderr).trim())),
            Err(e) => Some(format!("`nft` (nftables) is not installed ({e}): apt-get install nftables")),
        })
        .clone()
}

/// One drop rule between host ports of the bridge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Rule {
    /// Drop every frame from a port of `from` to a port of `to`; with `ip_only`, only IPv4
    /// frames (a one-way cut: ARP still works, so the reverse direction is unaffected).
    Drop {
        /// Ingress hosts.
        from: Vec<usize>,
        /// Egress hosts.
        to: Vec<usize>,
        /// Match `ether type ip` only.
        ip_only: bool,
    },
    /// Drop `percent` % of the frames between any two of `hosts`, at random.
    Loss {
        /// Hosts whose traffic among each other is affected.
        hosts: Vec<usize>,
        /// Share of frames dropped, 0 to 100.
        percent: u32,
    },
}

impl Rule {
    /// The rule in nft syntax.
    fn render(&self) -> String {
        match self {
            Rule::Drop { from, to, ip_only } => {
                let ip = if *ip_only { " ether type ip" } else { "" };
                format!("iifname {} oifname {}{ip} drop", ports(from), ports(to))
            }
            Rule::Loss { hosts, percent } => {
                format!("iifname {0} oifname {0} numgen random mod 100 < {percent} drop", ports(hosts))
            }
        }
    }
}

/// `{ "p0", "p2" }`: an anonymous set of bridge port names.
fn ports(hosts: &[usize]) -> String {
    let names: Vec<String> = hosts.iter().map(|h| format!("\"p{h}\"")).collect();
    format!("{{ {} }}", names.join(", "))
}

/// The fault rules of one lab's bridge. Dropping it deletes the table (best effort).
#[derive(Debug)]
pub(crate) struct Firewall {
    /// The lab's switch namespace.
    netns: String,
    /// Rules in force.
    rules: Vec<Rule>,
    /// Whether the table may exist.
    dirty: bool,
}

impl Firewall {
    /// Rules for the bridge in the switch namespace `netns`; none in force yet.
    pub(crate) fn new(netns: &str) -> Firewall {
        Firewall { netns: netns.to_string(), rules: Vec::new(), dirty: false }
    }

    /// The rules in force.
    pub(crate) fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Add `rule` to those in force.
    pub(crate) fn add(&mut self, rule: Rule) -> Result<()> {
        if let Some(reason) = nft_unavailable() {
            bail!("network faults need nftables: {reason}");
        }
        self.rules.push(rule);
        self.dirty = true;
        let body: String = self.rules.iter().map(|r| format!("    {}\n", r.render())).collect();
        // Create-then-delete makes the delete succeed whether or not the table exists; all of
        // it is one transaction, so the bridge never runs without the rules still in force.
        let script = format!(
            "table bridge {TABLE}\ndelete table bridge {TABLE}\ntable bridge {TABLE} {{\n  chain forward {{\n    \
             type filter hook forward priority 0; policy accept;\n{body}  }}\n}}\n"
        );
        self.nft(&script)
    }

    /// Remove every rule (delete the table).
    pub(crate) fn clear(&mut self) -> Result<()> {
        self.rules.clear();
        if !self.dirty {
            return Ok(());
        }
        self.nft(&format!("table bridge {TABLE}\ndelete table bridge {TABLE}\n"))?;
        self.dirty = false;
        Ok(())
    }

    /// Run `ip netns exec <switch> nft -f -` with `script` on stdin.
    fn nft(&self, script: &str) -> Result<()> {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.netns, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("running `ip netns exec ... nft`")?;
        child.stdin.take().expect("piped stdin").write_all(script.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!("nft in {} failed: {}\nscript:\n{script}", self.netns, String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(())
    }
}

impl Drop for Firewall {
    fn drop(&mut self) {
        if let Err(e) = self.clear() {
            eprintln!("flotilla-lab chaos: removing the nft table failed: {e:#}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_render_as_nft_syntax() {
        let partition = Rule::Drop { from: vec![0, 1], to: vec![2], ip_only: false };
        assert_eq!(partition.render(), r#"iifname { "p0", "p1" } oifname { "p2" } drop"#);
        let one_way = Rule::Drop { from: vec![2], to: vec![0], ip_only: true };
        assert_eq!(one_way.render(), r#"iifname { "p2" } oifname { "p0" } ether type ip drop"#);
        let loss = Rule::Loss { hosts: vec![0, 1, 2], percent: 20 };
        assert_eq!(
            loss.render(),
            r#"iifname { "p0", "p1", "p2" } oifname { "p0", "p1", "p2" } numgen random mod 100 < 20 drop"#
        );
    }
}
