//! The node key survives restarts and is never silently replaced.

use flotilla_net::{load_or_create_keypair, NetError, KEY_FILE};

#[test]
fn key_persists_and_is_private() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("node"); // Created on demand.
    let first = load_or_create_keypair(&data_dir).unwrap();
    let second = load_or_create_keypair(&data_dir).unwrap();
    assert_eq!(first.public().to_peer_id(), second.public().to_peer_id());

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data_dir.join(KEY_FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    assert!(!data_dir.join(format!("{KEY_FILE}.tmp")).exists(), "no temporary file is left behind");
}

#[test]
fn corrupt_key_is_refused_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(KEY_FILE);
    for garbage in [&b""[..], b"not a key", &[0x08, 0x01, 0x12, 0x40, 1, 2, 3]] {
        std::fs::write(&path, garbage).unwrap();
        let err = load_or_create_keypair(dir.path()).unwrap_err();
        assert!(matches!(err, NetError::KeyFile { .. }), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), garbage, "the file is left as it was");
    }
}

#[cfg(unix)]
#[test]
fn unreadable_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    // A directory where the key should be cannot be read as a file, even by root.
    std::fs::create_dir(dir.path().join(KEY_FILE)).unwrap();
    let err = load_or_create_keypair(dir.path()).unwrap_err();
    assert!(matches!(err, NetError::KeyFile { .. }), "{err}");
}

#[cfg(unix)]
#[test]
fn exposed_key_is_still_used() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let key = load_or_create_keypair(dir.path()).unwrap();
    let path = dir.path().join(KEY_FILE);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    // A warning is logged; the identity is kept.
    let again = load_or_create_keypair(dir.path()).unwrap();
    assert_eq!(key.public().to_peer_id(), again.public().to_peer_id());
}
