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

/// Memberships are kept in the key file itself: they survive whatever survives the key (a wipe
/// of everything else in the data directory) and vanish with it (a new key is a new node).
#[test]
fn memberships_live_in_the_key_file() {
    use flotilla_net::{load_memberships, record_membership};
    let dir = tempfile::tempdir().unwrap();
    let key = load_or_create_keypair(dir.path()).unwrap();
    let me = key.public().to_peer_id();
    let path = dir.path().join(KEY_FILE);
    let v1 = std::fs::read(&path).unwrap();
    assert_eq!(load_memberships(dir.path(), &me).unwrap(), Some(Default::default()), "a version-1 file has none");

    assert!(record_membership(dir.path(), &me, "default", "12D3Koo/0000000000000001").unwrap());
    assert!(!record_membership(dir.path(), &me, "default", "12D3Koo/0000000000000001").unwrap(), "unchanged");
    assert!(record_membership(dir.path(), &me, "other", "X/2").unwrap());
    // Everything but the key file goes.
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() != KEY_FILE {
            std::fs::remove_file(entry.path()).unwrap();
        }
    }
    let kept = load_memberships(dir.path(), &me).unwrap().expect("the key file holds this identity");
    assert_eq!(kept.get("default").map(String::as_str), Some("12D3Koo/0000000000000001"));
    assert_eq!(kept.get("other").map(String::as_str), Some("X/2"));
    // The identity is unchanged, the file stays private and no temporary file is left.
    let again = load_or_create_keypair(dir.path()).unwrap();
    assert_eq!(again.public().to_peer_id(), me);
    assert_ne!(std::fs::read(&path).unwrap(), v1, "the file now has the version-2 format");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }
    assert!(!dir.path().join(format!("{KEY_FILE}.tmp")).exists());

    // Another identity's file says nothing about this one, and cannot be written for it.
    let stranger = libp2p::identity::Keypair::generate_ed25519().public().to_peer_id();
    assert_eq!(load_memberships(dir.path(), &stranger).unwrap(), None);
    assert!(record_membership(dir.path(), &stranger, "default", "Y/1").is_err());
    // Without a key file there is nothing to read or write.
    let empty = tempfile::tempdir().unwrap();
    assert_eq!(load_memberships(empty.path(), &me).unwrap(), None);
    assert!(record_membership(empty.path(), &me, "default", "Y/1").is_err());
    // A damaged version-2 file is refused and kept, like a damaged key.
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    assert!(matches!(load_or_create_keypair(dir.path()), Err(NetError::KeyFile { .. })));
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
}

/// A membership the identity left is forgotten in the key file, durably, leaving the key and
/// the other memberships as they were.
#[test]
fn a_left_membership_is_forgotten() {
    use flotilla_net::{forget_membership, load_memberships, record_membership};
    let dir = tempfile::tempdir().unwrap();
    let me = load_or_create_keypair(dir.path()).unwrap().public().to_peer_id();
    assert!(!forget_membership(dir.path(), &me, "default").unwrap(), "nothing recorded");
    record_membership(dir.path(), &me, "default", "X/1").unwrap();
    record_membership(dir.path(), &me, "other", "Y/2").unwrap();
    assert!(forget_membership(dir.path(), &me, "default").unwrap());
    assert!(!forget_membership(dir.path(), &me, "default").unwrap(), "already forgotten");
    let kept = load_memberships(dir.path(), &me).unwrap().expect("memberships");
    assert_eq!(kept.keys().collect::<Vec<_>>(), ["other"]);
    assert_eq!(load_or_create_keypair(dir.path()).unwrap().public().to_peer_id(), me, "same identity");
    let stranger = libp2p::identity::Keypair::generate_ed25519().public().to_peer_id();
    assert!(forget_membership(dir.path(), &stranger, "other").is_err(), "another identity's file");
    let empty = tempfile::tempdir().unwrap();
    assert!(!forget_membership(empty.path(), &me, "other").unwrap(), "no key file: nothing to forget");
}

/// Many membership changes go to disk in one rewrite of the key file, applied in order; a
/// change the file cannot take is refused alone.
#[test]
fn membership_changes_are_applied_in_one_write() {
    use flotilla_net::{apply_memberships, load_memberships, MembershipChange};
    let dir = tempfile::tempdir().unwrap();
    let me = load_or_create_keypair(dir.path()).unwrap().public().to_peer_id();
    let record = |ns: &str, c: &str| MembershipChange::Record { namespace: ns.into(), cluster: c.into() };
    let mut changes: Vec<MembershipChange> = (0..100).map(|i| record(&format!("ns{i}"), "X/1")).collect();
    changes.push(MembershipChange::Forget { namespace: "ns7".into() });
    changes.push(record("", "X/1"));
    let applied = apply_memberships(dir.path(), &me, &changes).unwrap();
    assert_eq!(applied.refused.len(), changes.len());
    assert!(applied.refused[..101].iter().all(Option::is_none));
    assert!(applied.refused[101].is_some(), "an empty namespace name is refused");
    let kept = load_memberships(dir.path(), &me).unwrap().expect("memberships");
    assert_eq!(kept, applied.memberships, "what it returns is what is on disk");
    assert_eq!(kept.len(), 99);
    assert!(!kept.contains_key("ns7"), "the forget came after the record");
    // Nothing changes: the file is not rewritten.
    let before = std::fs::metadata(dir.path().join(KEY_FILE)).unwrap().modified().unwrap();
    let again = apply_memberships(dir.path(), &me, &changes[..3]).unwrap();
    assert_eq!(again.memberships.len(), 99);
    assert_eq!(std::fs::metadata(dir.path().join(KEY_FILE)).unwrap().modified().unwrap(), before);
    let stranger = libp2p::identity::Keypair::generate_ed25519().public().to_peer_id();
    assert!(apply_memberships(dir.path(), &stranger, &changes).is_err(), "another identity's file");
}
