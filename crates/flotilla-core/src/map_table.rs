//! [`MapTable`]: a state machine table in memory, for unit tests.

use std::collections::BTreeMap;
use std::io;
use std::ops::Bound;

use crate::state_machine::{Scan, ScanVisitor, StateTable, StateView};

/// A table in memory (the store's overlay does the same over redb).
#[derive(Default, Clone)]
pub(crate) struct MapTable(pub(crate) BTreeMap<Vec<u8>, Vec<u8>>);

impl StateView for MapTable {
    fn get(&self, key: &[u8]) -> io::Result<Option<Vec<u8>>> {
        Ok(self.0.get(key).cloned())
    }

    fn scan(&self, start: Bound<&[u8]>, end: Bound<&[u8]>, visit: &mut ScanVisitor<'_>) -> io::Result<()> {
        let range = (start.map(<[u8]>::to_vec), end.map(<[u8]>::to_vec));
        for (k, v) in self.0.range::<Vec<u8>, _>(range) {
            if visit(k, v)? == Scan::Stop {
                break;
            }
        }
        Ok(())
    }
}

impl StateTable for MapTable {
    fn put(&mut self, key: &[u8], value: &[u8]) -> io::Result<()> {
        self.0.insert(key.to_vec(), value.to_vec());
        Ok(())
    }
    fn delete(&mut self, key: &[u8]) -> io::Result<bool> {
        Ok(self.0.remove(key).is_some())
    }
}
