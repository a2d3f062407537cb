//! The pure parts of etcd's Watch: events and their filters, the watch id a create gets, and
//! the revision a progress request may answer.

use flotilla_core::kv::{EventKind, WatchEvent};

use crate::pb::etcdserverpb::watch_create_request::FilterType;
use crate::pb::mvccpb::{event::EventType, Event};
use crate::range::to_etcd_kv;

/// Which kinds of events a watcher does not want (etcd's `NOPUT`, `NODELETE`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct EventFilters {
    no_put: bool,
    no_delete: bool,
}

impl EventFilters {
    /// The filters of a create request (unknown values are ignored, as etcd ignores them).
    pub(crate) fn of(filters: &[i32]) -> Self {
        let has = |wanted: FilterType| filters.iter().any(|f| FilterType::try_from(*f) == Ok(wanted));
        Self { no_put: has(FilterType::Noput), no_delete: has(FilterType::Nodelete) }
    }

    fn keeps(&self, kind: EventKind) -> bool {
        match kind {
            EventKind::Put => !self.no_put,
            EventKind::Delete => !self.no_delete,
        }
    }
}

/// etcd's events of one revision's changes, without the filtered kinds.
pub(crate) fn events_of(changes: Vec<WatchEvent>, filters: EventFilters) -> Vec<Event> {
    changes
        .into_iter()
        .filter(|e| filters.keeps(e.kind))
        .map(|e| Event {
            r#type: match e.kind {
                EventKind::Put => EventType::Put as i32,
                EventKind::Delete => EventType::Delete as i32,
            },
            kv: Some(to_etcd_kv(e.kv)),
            prev_kv: e.prev.map(to_etcd_kv),
        })
        .collect()
}

/// The revision a progress request can be answered with, or `None` to wait: the least
/// revision every watcher of the stream has delivered (or knows unchanged), provided it is not
/// below a revision the stream has already sent (`sent`), so no watcher sees progress go back
/// and none is told of a revision whose events it has not delivered. `progress` holds one
/// entry per watcher; without watchers the caller answers the current revision.
pub(crate) fn progress_answer(progress: &[u64], sent: u64) -> Option<u64> {
    let least = progress.iter().copied().min()?;
    (least >= sent).then_some(least)
}

/// The id a create gets: the one asked for (`asked` > 0), refused with `None` when taken, or
/// else the first free one from `next` on (etcd's automatic ids start at 0). Returns the id and
/// the next automatic candidate.
pub(crate) fn watch_id(asked: i64, next: i64, taken: impl Fn(i64) -> bool) -> Option<(i64, i64)> {
    if asked > 0 {
        return (!taken(asked)).then_some((asked, next));
    }
    let mut id = next.max(0);
    // Bounded: at most one id per watcher of the stream is taken.
    while taken(id) {
        id += 1;
    }
    Some((id, id + 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_core::kv::KeyValue;

    fn change(kind: EventKind, key: &str) -> WatchEvent {
        let kv =
            KeyValue { key: key.into(), value: Vec::new(), create_revision: 1, mod_revision: 2, version: 1, lease: 0 };
        WatchEvent { kind, kv: kv.clone(), prev: Some(kv) }
    }

    #[test]
    fn filters_drop_the_kinds_named() {
        let changes = || vec![change(EventKind::Put, "a"), change(EventKind::Delete, "b")];
        let kinds = |f: &[i32]| events_of(changes(), EventFilters::of(f)).iter().map(|e| e.r#type).collect::<Vec<_>>();
        let (put, delete) = (EventType::Put as i32, EventType::Delete as i32);
        assert_eq!(kinds(&[]), vec![put, delete]);
        assert_eq!(kinds(&[FilterType::Noput as i32]), vec![delete]);
        assert_eq!(kinds(&[FilterType::Nodelete as i32]), vec![put]);
        assert_eq!(kinds(&[FilterType::Noput as i32, FilterType::Nodelete as i32]), Vec::<i32>::new());
        assert_eq!(kinds(&[9]), vec![put, delete], "unknown filters are ignored");
        let event = &events_of(changes(), EventFilters::default())[0];
        assert!(event.prev_kv.is_some() && event.kv.as_ref().unwrap().key == b"a");
    }

    #[test]
    fn progress_answers() {
        let cases: [(&[u64], u64, Option<u64>); 5] =
            [(&[], 0, None), (&[7, 7], 7, Some(7)), (&[9, 7], 7, Some(7)), (&[9, 7], 8, None), (&[12], 3, Some(12))];
        for (progress, sent, expected) in cases {
            assert_eq!(progress_answer(progress, sent), expected, "{progress:?} {sent}");
        }
    }

    #[test]
    fn watch_ids() {
        let taken = |ids: &'static [i64]| move |id| ids.contains(&id);
        assert_eq!(watch_id(0, 0, taken(&[])), Some((0, 1)), "automatic ids start at 0");
        assert_eq!(watch_id(0, 0, taken(&[0, 1])), Some((2, 3)));
        assert_eq!(watch_id(5, 2, taken(&[])), Some((5, 2)));
        assert_eq!(watch_id(5, 2, taken(&[5])), None, "a taken id is refused");
        assert_eq!(watch_id(-3, 4, taken(&[])), Some((4, 5)));
    }
}
