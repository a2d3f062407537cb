//! Encryption at rest with keys derived from the cluster keyring.
//!
//! Each keyring key yields one at-rest key (HKDF with its own label, so the at-rest key and the
//! transport keys are independent) named by the keyring key's id. The store seals with the
//! sealing key's derivative and opens records under any key of the ring, which is what lets a
//! rotation retire an old key once the store no longer uses it.

use std::sync::Arc;

use flotilla_core::keyring::Keyring;
use flotilla_core::{Config, ConfigError};
use flotilla_store::{AtRestCipher, AtRestKey, LogKind, StoreOptions};

/// HKDF label of at-rest keys.
const AT_REST_LABEL: &[u8] = b"flotilla at rest v1";

/// The store options `config` asks for: its page cache (`--store-cache-mib`), where a new
/// store keeps its Raft logs (`--write-ahead-log`), and sealed at
/// rest, with keys from `keyring` (the one `config` names, loaded once by the caller), when
/// `--encrypt-at-rest` is set.
///
/// ```
/// use flotilla::{at_rest::store_options, Config};
///
/// assert!(store_options(&Config::default(), None).is_ok()); // not sealed: no key needed
/// let small = Config { store_cache_mib: 64, ..Config::default() };
/// assert_eq!(store_options(&small, None).unwrap().cache_bytes, Some(64 << 20));
/// let sealed = Config { encrypt_at_rest: true, ..Config::default() };
/// assert!(store_options(&sealed, None).is_err()); // sealing needs the cluster keyring
/// ```
pub fn store_options(config: &Config, keyring: Option<&Keyring>) -> Result<StoreOptions, ConfigError> {
    let cache_bytes = Some(config.store_cache_mib.saturating_mul(1 << 20));
    let log = if config.write_ahead_log { LogKind::Wal } else { LogKind::Tables };
    let wal_segment_bytes = Some(config.wal_segment_mib.saturating_mul(1 << 20));
    if !config.encrypt_at_rest {
        return Ok(StoreOptions { cache_bytes, log, wal_segment_bytes, ..StoreOptions::default() });
    }
    let keyring = keyring.ok_or_else(|| ConfigError("--encrypt-at-rest needs --cluster-key-file".into()))?;
    Ok(StoreOptions { at_rest: Some(Arc::new(cipher(keyring)?)), cache_bytes, log, wal_segment_bytes })
}

/// The at-rest cipher of `keyring`.
///
/// ```
/// use flotilla_core::keyring::{ClusterKey, Keyring};
///
/// let keyring = Keyring::new(vec![ClusterKey::from_bytes([7; 32])]).expect("a keyring");
/// let cipher = flotilla::at_rest::cipher(&keyring).expect("a cipher");
/// assert_eq!(cipher.current_key_id(), keyring.current().id().0); // seals under the sealing key
/// let sealed = cipher.seal(b"row context", b"value").expect("sealed");
/// assert_eq!(cipher.open(b"row context", &sealed).expect("opened"), b"value");
/// ```
pub fn cipher(keyring: &Keyring) -> Result<AtRestCipher, ConfigError> {
    let keys = keyring.keys().iter().map(|k| {
        let mut key = [0u8; 32];
        k.derive(AT_REST_LABEL, &mut key);
        AtRestKey { id: k.id().0, key }
    });
    AtRestCipher::new(keys, keyring.current().id().0).map_err(|e| ConfigError(e.to_string()))
}

/// After a key switch, rewrite the store's records under the new sealing key, so the old key
/// can be retired. Runs before the node starts (the store is quiet) and only when some record
/// is still under another key.
///
/// ```no_run
/// # async fn example(config: flotilla::Config) -> Result<(), Box<dyn std::error::Error>> {
/// use flotilla::at_rest::{reseal_if_needed, store_options};
///
/// // After putting a new key at the top of the keyring, before the node starts:
/// let keyring = config.keyring()?.ok_or("no cluster key")?;
/// let store = flotilla_store::Store::open_with(&config.data_dir, store_options(&config, Some(&keyring))?)?;
/// reseal_if_needed(&store, &keyring).await?; // nothing left under the old key
/// # Ok(()) }
/// ```
pub async fn reseal_if_needed(
    store: &flotilla_store::Store,
    keyring: &Keyring,
) -> Result<(), flotilla_store::StoreError> {
    let current = keyring.current().id().0;
    if store.at_rest_key_ids_in_use()?.iter().all(|id| *id == current) {
        return Ok(());
    }
    let report = store.reseal().await?;
    let retired: Vec<String> = report.retired_key_ids.iter().map(flotilla_store::at_rest::key_id_hex).collect();
    tracing::info!(
        records = report.records_resealed,
        snapshots = report.snapshots_resealed,
        retired = ?retired,
        "data directory resealed under the current key; the retired keys may be removed from the keyring"
    );
    Ok(())
}
