use super::*;
use crate::pb::etcdserverpb::RangeRequest as EtcdRange;
use flotilla_core::kv::RangeEnd;

fn cmp(result: CompareResult, target: EtcdTarget, union: Option<TargetUnion>) -> EtcdCompare {
    EtcdCompare {
        result: result as i32,
        target: target as i32,
        key: b"k".to_vec(),
        target_union: union,
        range_end: Vec::new(),
    }
}

fn txn_of(compare: Vec<EtcdCompare>, success: Vec<Request>) -> TxnRequest {
    TxnRequest {
        compare,
        success: success.into_iter().map(|r| RequestOp { request: Some(r) }).collect(),
        failure: Vec::new(),
    }
}

#[test]
fn compares_convert_every_target_and_operator() {
    let cases = [
        (
            cmp(CompareResult::Equal, EtcdTarget::Mod, Some(TargetUnion::ModRevision(0))),
            CompareOp::Equal,
            CompareTarget::ModRevision(0),
        ),
        (
            cmp(CompareResult::NotEqual, EtcdTarget::Version, Some(TargetUnion::Version(3))),
            CompareOp::NotEqual,
            CompareTarget::Version(3),
        ),
        (
            cmp(CompareResult::Greater, EtcdTarget::Create, Some(TargetUnion::CreateRevision(5))),
            CompareOp::Greater,
            CompareTarget::CreateRevision(5),
        ),
        (
            cmp(CompareResult::Less, EtcdTarget::Lease, Some(TargetUnion::Lease(9))),
            CompareOp::Less,
            CompareTarget::Lease(9),
        ),
        (
            cmp(CompareResult::Equal, EtcdTarget::Value, Some(TargetUnion::Value(b"v".to_vec()))),
            CompareOp::Equal,
            CompareTarget::Value(b"v".to_vec()),
        ),
        // Without the union's value (or with one of another kind), etcd compares against zero.
        (cmp(CompareResult::Equal, EtcdTarget::Version, None), CompareOp::Equal, CompareTarget::Version(0)),
        (
            cmp(CompareResult::Equal, EtcdTarget::Mod, Some(TargetUnion::Version(4))),
            CompareOp::Equal,
            CompareTarget::ModRevision(0),
        ),
    ];
    for (etcd, op, target) in cases {
        let converted = convert(&txn_of(vec![etcd.clone()], Vec::new())).unwrap();
        assert_eq!(converted.txn.compares, vec![Compare { key: b"k".to_vec(), op, target }], "{etcd:?}");
    }
}

#[test]
fn refusals() {
    let mut deep = TxnRequest::default();
    for _ in 0..kv::MAX_TXN_DEPTH {
        deep = txn_of(Vec::new(), vec![Request::RequestTxn(deep)]);
    }
    assert_eq!(convert(&deep).unwrap_err().code(), Code::InvalidArgument, "too deep");
    let ranged = EtcdCompare { range_end: b"z".to_vec(), ..cmp(CompareResult::Equal, EtcdTarget::Version, None) };
    assert_eq!(convert(&txn_of(vec![ranged], Vec::new())).unwrap_err().code(), Code::Unimplemented);
    let negative = cmp(CompareResult::Greater, EtcdTarget::Version, Some(TargetUnion::Version(-1)));
    assert_eq!(convert(&txn_of(vec![negative], Vec::new())).unwrap_err().code(), Code::InvalidArgument);
    let ignoring = PutRequest { key: b"k".to_vec(), ignore_value: true, ..PutRequest::default() };
    assert_eq!(
        convert(&txn_of(Vec::new(), vec![Request::RequestPut(ignoring)])).unwrap_err().code(),
        Code::Unimplemented
    );
    let empty = PutRequest::default();
    assert_eq!(convert(&txn_of(Vec::new(), vec![Request::RequestPut(empty)])).unwrap_err().message(), EMPTY_KEY);
    let many =
        vec![Request::RequestRange(EtcdRange { key: b"k".to_vec(), ..EtcdRange::default() }); kv::MAX_TXN_OPS + 1];
    assert_eq!(convert(&txn_of(Vec::new(), many)).unwrap_err().message(), TOO_MANY_OPS);
}

#[test]
fn operations_convert() {
    let put = PutRequest { key: b"k".to_vec(), value: b"v".to_vec(), lease: 7, prev_kv: true, ..PutRequest::default() };
    let delete = DeleteRangeRequest { key: b"a".to_vec(), range_end: b"b".to_vec(), prev_kv: true };
    let converted =
        convert(&txn_of(Vec::new(), vec![Request::RequestPut(put), Request::RequestDeleteRange(delete)])).unwrap();
    assert_eq!(
        converted.txn.success,
        vec![
            TxnOp::Put { key: b"k".to_vec(), value: b"v".to_vec(), lease: 7, prev_kv: true },
            TxnOp::Delete { key: b"a".to_vec(), end: RangeEnd::Before(b"b".to_vec()), prev_kv: true },
        ]
    );
}

/// A nested transaction converts to Flotilla's, and its results come back as etcd's nested
/// `ResponseTxn`, with the responses of the branch that ran.
#[test]
fn nested_transactions_convert_and_answer_as_etcd() {
    let put = |key: &str| Request::RequestPut(PutRequest { key: key.into(), ..PutRequest::default() });
    let inner = txn_of(vec![cmp(CompareResult::Equal, EtcdTarget::Version, None)], vec![put("a")]);
    let inner = TxnRequest { failure: vec![RequestOp { request: Some(put("b")) }], ..inner };
    let outer = txn_of(Vec::new(), vec![Request::RequestTxn(inner), put("c")]);
    let converted = convert(&outer).unwrap();
    let TxnOp::Txn(nested) = &converted.txn.success[0] else { panic!("{:?}", converted.txn) };
    assert_eq!((nested.success.len(), nested.failure.len(), nested.compares.len()), (1, 1, 1));
    let reply = TxnReply {
        succeeded: true,
        revision: 9,
        results: vec![
            OpResult::Txn { succeeded: false, results: vec![OpResult::Put { prev: None, existed: false }] },
            OpResult::Put { prev: None, existed: false },
        ],
    };
    let header = ResponseHeader { revision: 9, member_id: 5, ..ResponseHeader::default() };
    let responses = converted.responses(reply, &header);
    let Some(Response::ResponseTxn(nested)) = &responses[0].response else { panic!("{responses:?}") };
    assert!(!nested.succeeded);
    assert_eq!(nested.header.map(|h| (h.revision, h.member_id)), Some((9, 0)), "only the revision, as etcd");
    assert!(matches!(nested.responses[0].response, Some(Response::ResponsePut(_))));
    assert!(matches!(responses[1].response, Some(Response::ResponsePut(_))));
}
