use super::*;

fn kv(key: &str, value: &str, create: u64, modified: u64, version: u64) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: value.into(),
        create_revision: create,
        mod_revision: modified,
        version,
        lease: 0,
    }
}

fn request(limit: i64, order: SortOrder, target: SortTarget) -> EtcdRange {
    EtcdRange {
        key: b"a".to_vec(),
        range_end: vec![0],
        limit,
        sort_order: order as i32,
        sort_target: target as i32,
        ..EtcdRange::default()
    }
}

fn keys(answer: &RangeAnswer) -> Vec<String> {
    answer.kvs.iter().map(|kv| String::from_utf8_lossy(&kv.key).into_owned()).collect()
}

/// A key, a range end, and the interval (or the refusal's code) they name.
type IntervalCase = (&'static [u8], &'static [u8], Result<RangeEnd, Code>);

#[test]
fn intervals() {
    let cases: Vec<IntervalCase> = vec![
        (b"k", b"", Ok(RangeEnd::Key)),
        (b"k", b"\0", Ok(RangeEnd::All)),
        (b"\0", b"\0", Ok(RangeEnd::All)),
        (b"k/", b"k0", Ok(RangeEnd::Before(b"k0".to_vec()))),
        (b"", b"", Err(Code::InvalidArgument)),
        (b"", b"z", Err(Code::InvalidArgument)),
    ];
    for (key, end, expected) in cases {
        assert_eq!(interval(key, end).map_err(|s| s.code()), expected, "{key:?} {end:?}");
    }
}

#[test]
fn orderings_follow_etcd() {
    use SortOrder::*;
    use SortTarget::*;
    let cases = [
        (None, Key, Ok(Option::None)),
        (Ascend, Key, Ok(Option::None)),
        (Descend, Key, Ok(Some((Key, true)))),
        (None, Mod, Ok(Some((Mod, false)))),
        (Ascend, Value, Ok(Some((Value, false)))),
        (Descend, Create, Ok(Some((Create, true)))),
    ];
    for (order, target, expected) in cases {
        assert_eq!(ordering(order as i32, target as i32).map_err(|s| s.code()), expected, "{order:?} {target:?}");
    }
    assert_eq!(ordering(7, 0).unwrap_err().message(), INVALID_SORT);
    assert_eq!(ordering(0, 9).unwrap_err().message(), INVALID_SORT);
}

#[test]
fn answers_filter_sort_then_limit() {
    let read = || vec![kv("a", "3", 2, 9, 4), kv("b", "1", 3, 5, 1), kv("c", "2", 4, 7, 2)];
    let q = |r: EtcdRange| Query::of(&r).unwrap();

    let plain = q(request(2, SortOrder::None, SortTarget::Key)).answer(read(), 3, false);
    assert_eq!((keys(&plain), plain.more, plain.count), (vec!["a".into(), "b".into()], true, 3));

    let by_mod = q(request(0, SortOrder::Descend, SortTarget::Mod)).answer(read(), 3, false);
    assert_eq!(keys(&by_mod), vec!["a", "c", "b"]);

    let by_value = q(request(1, SortOrder::Ascend, SortTarget::Value)).answer(read(), 3, false);
    assert_eq!((keys(&by_value), by_value.more), (vec!["b".into()], true));

    let filtered =
        EtcdRange { min_mod_revision: 6, max_create_revision: 3, ..request(0, SortOrder::None, SortTarget::Key) };
    let filtered = q(filtered).answer(read(), 3, false);
    assert_eq!((keys(&filtered), filtered.count), (vec!["a".into()], 3), "count ignores the filters, as etcd's");

    let counted =
        q(EtcdRange { count_only: true, ..request(1, SortOrder::None, SortTarget::Key) }).answer(read(), 3, false);
    assert_eq!((counted.kvs.len(), counted.more, counted.count), (0, false, 3));
}

#[test]
fn wanted_keys() {
    let q = |r: EtcdRange| Query::of(&r).unwrap().wanted();
    assert_eq!(q(request(0, SortOrder::None, SortTarget::Key)), Option::None, "no limit: every key");
    assert_eq!(q(request(5, SortOrder::Ascend, SortTarget::Key)), Some(6), "one past the limit tells more");
    assert_eq!(q(request(5, SortOrder::Descend, SortTarget::Key)), Option::None, "a sort needs every key");
    let filtered = EtcdRange { max_mod_revision: 3, ..request(5, SortOrder::None, SortTarget::Key) };
    assert_eq!(q(filtered), Option::None, "a filter needs every key");
    assert_eq!(q(EtcdRange { count_only: true, ..request(5, SortOrder::None, SortTarget::Key) }), Some(0));
}
