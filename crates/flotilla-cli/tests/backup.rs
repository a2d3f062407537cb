//! `flotilla backup save` and `inspect` against a real agent (the admin token sent as for
//! every admin command, a damaged file refused with a non-zero exit), and the agent's
//! scheduled backups with their retention.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use flotilla_http::Client;
use serde_json::Value;
use support::{cli, until_or_log, LocalAgent};

const TOKEN: &str = "YmFja3VwLXRlc3QtYWRtaW4tdG9rZW4tb2YtdGhlLWNsaQ==";

fn token_file(dir: &Path) -> PathBuf {
    let path = dir.join("admin.token");
    std::fs::write(&path, format!("{TOKEN}\n")).expect("write token");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    path
}

/// Write `n` keys through `client` once the agent takes writes; returns the last write's index.
async fn write_keys(agent: &LocalAgent, client: &Client, n: usize) -> u64 {
    until_or_log("the agent to take writes", &agent.log, || async {
        client.put("default", "k0", b"v".to_vec()).await.ok()
    })
    .await;
    let mut last = 0;
    for i in 1..n {
        last = client.put("default", &format!("k{i}"), vec![b'v'; 100]).await.expect("put");
    }
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn save_and_inspect_a_backup_over_the_admin_route() {
    let dir = tempfile::tempdir().unwrap();
    let token = token_file(dir.path());
    let agent = LocalAgent::start(dir.path(), &["--admin-token-file", token.to_str().unwrap()]).await;
    let client = Client::new(&agent.http, Duration::from_secs(10));
    let last = write_keys(&agent, &client, 50).await;

    let file = dir.path().join("default.flbk");
    let file_arg = file.to_str().unwrap();
    let (ok, _, err) = cli(&agent.http, &["backup", "save", file_arg, "-n", "default"], None);
    assert!(!ok && err.contains("401") && err.contains("unauthorized"), "{err}");
    assert!(!file.exists(), "nothing is left behind by a refused backup");

    let (ok, out, err) = cli(&agent.http, &["backup", "save", file_arg, "-n", "default"], Some(&token));
    assert!(ok, "{err}");
    let saved: Value = serde_json::from_str(&out).expect("JSON");
    assert!(saved["index"].as_u64().unwrap() >= last, "{saved}");
    assert!(saved["revision"].as_u64().unwrap() >= 50, "{saved}");
    assert_eq!(saved["namespace"], "default");

    let (ok, out, err) = cli(&agent.http, &["backup", "inspect", file_arg], None);
    assert!(ok, "{err}");
    let inspected: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(inspected, saved, "inspect reads back what save wrote");
    assert!(!inspected["cluster_id"].as_str().unwrap().is_empty());

    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    let damaged = dir.path().join("damaged.flbk");
    std::fs::write(&damaged, &bytes).unwrap();
    let (ok, _, err) = cli(&agent.http, &["backup", "inspect", damaged.to_str().unwrap()], None);
    assert!(!ok && err.contains("damaged"), "{err}");

    let all = dir.path().join("all");
    let (ok, out, err) = cli(&agent.http, &["backup", "save", all.to_str().unwrap(), "--all"], Some(&token));
    assert!(ok, "{err}");
    let listed: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    let (ok, _, err) = cli(&agent.http, &["backup", "inspect", all.join("default.flbk").to_str().unwrap()], None);
    assert!(ok, "{err}");
}

/// The scheduled backups in `dir`, oldest first.
fn scheduled(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| entries.flatten().filter_map(|e| e.file_name().into_string().ok()).collect())
        .unwrap_or_default();
    names.retain(|n| n.starts_with("default-") && n.ends_with(".flbk"));
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_backs_up_on_schedule_and_keeps_the_newest() {
    let dir = tempfile::tempdir().unwrap();
    let backups = dir.path().join("backups");
    let args = ["--backup-dir", backups.to_str().unwrap(), "--backup-every", "1s", "--backup-keep", "2"];
    let agent = LocalAgent::start(dir.path(), &args).await;
    let client = Client::new(&agent.http, Duration::from_secs(10));
    let last = write_keys(&agent, &client, 20).await;

    let first =
        until_or_log("a first scheduled backup", &agent.log, || async { scheduled(&backups).first().cloned() }).await;
    // Retention: the first backup goes once two newer ones exist. A new file is written before
    // the old ones are pruned, so at most keep + 1 exist at any moment.
    until_or_log("the first backup to be pruned", &agent.log, || async {
        let names = scheduled(&backups);
        assert!(names.len() <= 3, "{names:?}");
        (!names.contains(&first) && names.len() >= 2).then_some(())
    })
    .await;
    let newest = until_or_log("a backup holding the writes", &agent.log, || async {
        let newest = backups.join(scheduled(&backups).last()?);
        let (ok, out, _) = cli(&agent.http, &["backup", "inspect", newest.to_str()?], None);
        let summary: Value = serde_json::from_str(&out).ok()?;
        (ok && summary["index"].as_u64()? >= last).then_some(summary)
    })
    .await;
    assert_eq!(newest["namespace"], "default");
    let leftovers: Vec<_> = std::fs::read_dir(&backups)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".flbk") && !n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
