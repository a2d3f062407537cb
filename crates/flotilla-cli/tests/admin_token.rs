//! `flotilla agent` refuses an exposed HTTP API without an admin token and a token file others
//! can read; the CLI's admin commands send the token given by `--admin-token-file` or
//! `FLOTILLA_ADMIN_TOKEN_FILE`, and key/value commands need none.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use flotilla_http::Client;
use support::{flotilla, free_port, refused_start};

const TOKEN: &str = "dGhlLWFkbWluLXRva2VuLW9mLXRoZS1jbGktdGVzdA==";

fn token_file(dir: &Path, name: &str, mode: u32) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("{TOKEN}\n")).expect("write token");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    path
}

fn agent_refusal(dir: &Path, args: &[&str]) -> String {
    refused_start(&dir.join("data"), &[&["--listen", "/ip4/127.0.0.1/tcp/0"][..], args].concat())
}

#[test]
fn the_agent_refuses_an_exposed_api_without_a_usable_token() {
    let dir = tempfile::tempdir().unwrap();
    let err = agent_refusal(dir.path(), &["--http", "0.0.0.0:0"]);
    assert!(err.contains("--admin-token-file") && err.contains("not a loopback address"), "{err}");

    let open = token_file(dir.path(), "open.token", 0o644);
    let err = agent_refusal(dir.path(), &["--http", "0.0.0.0:0", "--admin-token-file", open.to_str().unwrap()]);
    assert!(err.contains("group or others") && err.contains("chmod 600"), "{err}");
    assert!(!err.contains(TOKEN), "the token never shows: {err}");

    let missing = dir.path().join("missing.token");
    let err = agent_refusal(dir.path(), &["--admin-token-file", missing.to_str().unwrap()]);
    assert!(err.contains("cannot read the admin token file"), "{err}");
    assert!(!dir.path().join("data").join("node.key").exists(), "refused before anything was created");
}

struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Run a CLI command against `http`; returns (success, stdout + stderr).
fn cli(http: &str, args: &[&str], env_token: Option<&Path>) -> (bool, String) {
    let mut cmd = flotilla();
    cmd.args(args).args(["--addr", http]);
    if let Some(path) = env_token {
        cmd.env("FLOTILLA_ADMIN_TOKEN_FILE", path);
    }
    let out = cmd.output().expect("cli runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_commands_send_the_token_and_kv_commands_need_none() {
    let dir = tempfile::tempdir().unwrap();
    let token = token_file(dir.path(), "admin.token", 0o600);
    let http = format!("127.0.0.1:{}", free_port());
    let log = std::fs::File::create(dir.path().join("agent.log")).unwrap();
    let _agent = Agent(
        flotilla()
            .args(["agent", "--no-mdns", "--force-bootstrap", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--listen", &format!("/ip4/127.0.0.1/tcp/{}", free_port()), "--http", &http])
            .arg("--admin-token-file")
            .arg(&token)
            .env("RUST_LOG", "info,openraft=warn")
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("agent starts"),
    );
    let client = Client::new(&http, Duration::from_secs(2));
    let deadline = Instant::now() + Duration::from_secs(60);
    let me = loop {
        if let Ok(s) = client.get_json("/v1/ns/default/status").await {
            if s["role"] == "leader" {
                break s["node_id"].as_str().or(s["leader"].as_str()).expect("own id").to_string();
            }
        }
        assert!(Instant::now() < deadline, "the agent did not lead within 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let token_arg = token.to_str().unwrap();

    let (ok, out) = cli(&http, &["kv", "put", "k", "v"], None);
    assert!(ok, "kv needs no token: {out}");
    let (ok, out) = cli(&http, &["kv", "get", "k"], None);
    assert!(ok && out.starts_with('v'), "{out}");

    let transfer = ["leader", "transfer", "--to", me.as_str()];
    let (ok, out) = cli(&http, &transfer, None);
    assert!(!ok && out.contains("401") && out.contains("unauthorized"), "{out}");
    let (ok, out) = cli(&http, &[&transfer[..], &["--admin-token-file", token_arg]].concat(), None);
    assert!(ok, "with --admin-token-file: {out}");
    let (ok, out) = cli(&http, &transfer, Some(&token));
    assert!(ok, "with FLOTILLA_ADMIN_TOKEN_FILE: {out}");

    let add = ["members", "add", me.as_str(), "--learner"];
    let (ok, out) = cli(&http, &add, None);
    assert!(!ok && out.contains("401"), "{out}");
    let (ok, out) = cli(&http, &[&add[..], &["--admin-token-file", token_arg]].concat(), None);
    assert!(ok, "already a member: {out}");

    // Past the token check, the handlers answer as usual.
    let (ok, out) = cli(&http, &["members", "remove", me.as_str()], None);
    assert!(!ok && out.contains("401"), "{out}");
    let (ok, out) = cli(&http, &["members", "remove", me.as_str()], Some(&token));
    assert!(!ok && out.contains("400") && !out.contains("401"), "the last voter stays: {out}");
    let (ok, out) = cli(&http, &["ns", "dissolve", "-n", "nope"], None);
    assert!(!ok && out.contains("401"), "{out}");
    let (ok, out) = cli(&http, &["ns", "dissolve", "-n", "nope", "--admin-token-file", token_arg], None);
    assert!(!ok && out.contains("unknown_namespace"), "{out}");

    // Read-only commands work without a token.
    let (ok, out) = cli(&http, &["members", "list"], None);
    assert!(ok, "{out}");
    let (ok, out) = cli(&http, &["ns", "status"], None);
    assert!(ok, "{out}");
}
