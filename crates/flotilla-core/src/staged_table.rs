//! [`StagedTable`]: a command's writes held back over a [`StateTable`] until the command is
//! accepted, so a refused command leaves the table as it found it.

use std::collections::BTreeMap;
use std::io;
use std::ops::Bound;

use crate::state_machine::{Scan, ScanVisitor, StateTable, StateView};

/// Writes staged over a base table: reads see them first, [`StagedTable::commit`] writes them
/// to the base, dropping the staged table discards them.
///
/// ```
/// # use flotilla_core::{StagedTable, StateTable, StateView};
/// fn stage_then_decide(table: &mut dyn StateTable, accept: bool) -> std::io::Result<()> {
///     let mut staged = StagedTable::new(table);
///     staged.put(b"k", b"v")?;
///     assert_eq!(staged.get(b"k")?, Some(b"v".to_vec()));
///     if accept {
///         staged.commit()?;
///     }
///     Ok(())
/// }
/// ```
pub struct StagedTable<'a> {
    base: &'a mut dyn StateTable,
    /// `Some(value)` to store, `None` to delete.
    changes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl<'a> StagedTable<'a> {
    /// Stage writes over `base`.
    pub fn new(base: &'a mut dyn StateTable) -> Self {
        Self { base, changes: BTreeMap::new() }
    }

    /// Write the staged changes to the base table, in key order.
    pub fn commit(self) -> io::Result<()> {
        for (key, value) in self.changes {
            match value {
                Some(value) => self.base.put(&key, &value)?,
                None => {
                    self.base.delete(&key)?;
                }
            }
        }
        Ok(())
    }
}

impl StateView for StagedTable<'_> {
    fn get(&self, key: &[u8]) -> io::Result<Option<Vec<u8>>> {
        match self.changes.get(key) {
            Some(staged) => Ok(staged.clone()),
            None => self.base.get(key),
        }
    }

    /// Merges the staged changes into the base table's rows in key order; a staged change
    /// wins over the base row with the same key.
    fn scan(&self, start: Bound<&[u8]>, end: Bound<&[u8]>, visit: &mut ScanVisitor<'_>) -> io::Result<()> {
        if is_empty_range(start, end) {
            // BTreeMap::range panics on such a range; it holds no row anyway.
            return Ok(());
        }
        let owned = (start.map(<[u8]>::to_vec), end.map(<[u8]>::to_vec));
        let mut staged = self.changes.range::<Vec<u8>, _>(owned).peekable();
        let mut stopped = false;
        self.base.scan(start, end, &mut |key, value| {
            // Staged rows before this one come first.
            while let Some((staged_key, staged_value)) = staged.next_if(|(k, _)| k.as_slice() < key) {
                if let Some(v) = staged_value {
                    if visit(staged_key, v)? == Scan::Stop {
                        stopped = true;
                        return Ok(Scan::Stop);
                    }
                }
            }
            let row = match staged.next_if(|(k, _)| k.as_slice() == key) {
                Some((_, staged_value)) => staged_value.as_deref(),
                None => Some(value),
            };
            if let Some(v) = row {
                if visit(key, v)? == Scan::Stop {
                    stopped = true;
                    return Ok(Scan::Stop);
                }
            }
            Ok(Scan::Continue)
        })?;
        if stopped {
            return Ok(());
        }
        // Staged rows after the base's last one.
        for (key, value) in staged {
            if let Some(v) = value {
                if visit(key, v)? == Scan::Stop {
                    break;
                }
            }
        }
        Ok(())
    }
}

impl StateTable for StagedTable<'_> {
    fn put(&mut self, key: &[u8], value: &[u8]) -> io::Result<()> {
        self.changes.insert(key.to_vec(), Some(value.to_vec()));
        Ok(())
    }

    fn delete(&mut self, key: &[u8]) -> io::Result<bool> {
        let existed = self.get(key)?.is_some();
        self.changes.insert(key.to_vec(), None);
        Ok(existed)
    }
}

/// Whether no key can lie between `start` and `end` (the ranges `BTreeMap::range` refuses).
fn is_empty_range(start: Bound<&[u8]>, end: Bound<&[u8]>) -> bool {
    match (start, end) {
        (Bound::Included(s), Bound::Included(e)) => s > e,
        (Bound::Included(s) | Bound::Excluded(s), Bound::Excluded(e)) | (Bound::Excluded(s), Bound::Included(e)) => {
            s >= e
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::map_table::MapTable;

    fn rows(view: &dyn StateView, start: Bound<&[u8]>, end: Bound<&[u8]>) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out = Vec::new();
        view.scan(start, end, &mut |k, v| {
            out.push((k.to_vec(), v.to_vec()));
            Ok(Scan::Continue)
        })
        .unwrap();
        out
    }

    fn base() -> MapTable {
        let mut table = MapTable::default();
        for key in [b"a", b"c", b"e"] {
            table.put(key, b"base").unwrap();
        }
        table
    }

    #[test]
    fn reads_merge_staged_changes_over_the_base_in_key_order() {
        let mut table = base();
        let mut staged = StagedTable::new(&mut table);
        staged.put(b"b", b"new").unwrap();
        staged.put(b"c", b"changed").unwrap();
        assert!(staged.delete(b"e").unwrap());
        staged.put(b"f", b"last").unwrap();
        assert_eq!(staged.get(b"c").unwrap(), Some(b"changed".to_vec()));
        assert_eq!(staged.get(b"e").unwrap(), None);
        let seen = rows(&staged, Bound::Unbounded, Bound::Unbounded);
        let expected: Vec<(Vec<u8>, Vec<u8>)> = [("a", "base"), ("b", "new"), ("c", "changed"), ("f", "last")]
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect();
        assert_eq!(seen, expected);
        // Bounds apply to staged rows too; an inverted range holds nothing (and does not panic).
        let bounded = rows(&staged, Bound::Excluded(b"a"), Bound::Excluded(b"f"));
        assert_eq!(bounded.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(), vec![b"b".to_vec(), b"c".to_vec()]);
        assert!(rows(&staged, Bound::Included(b"z"), Bound::Excluded(b"a")).is_empty());
        assert!(rows(&staged, Bound::Excluded(b"c"), Bound::Excluded(b"c")).is_empty());
    }

    #[test]
    fn a_scan_stops_where_the_visitor_says_whichever_layer_holds_the_row() {
        let mut table = base();
        let mut staged = StagedTable::new(&mut table);
        staged.put(b"b", b"new").unwrap();
        for limit in 1..=4 {
            let mut seen = 0;
            staged
                .scan(Bound::Unbounded, Bound::Unbounded, &mut |_, _| {
                    seen += 1;
                    Ok(if seen == limit { Scan::Stop } else { Scan::Continue })
                })
                .unwrap();
            assert_eq!(seen, limit);
        }
    }

    #[test]
    fn only_a_commit_reaches_the_base() {
        let mut table = base();
        let mut dropped = StagedTable::new(&mut table);
        dropped.put(b"x", b"1").unwrap();
        dropped.delete(b"a").unwrap();
        drop(dropped);
        assert_eq!(table.get(b"x").unwrap(), None);
        assert_eq!(table.get(b"a").unwrap(), Some(b"base".to_vec()));

        let mut committed = StagedTable::new(&mut table);
        committed.put(b"x", b"1").unwrap();
        committed.delete(b"a").unwrap();
        committed.commit().unwrap();
        assert_eq!(table.get(b"x").unwrap(), Some(b"1".to_vec()));
        assert_eq!(table.get(b"a").unwrap(), None);
    }
}
