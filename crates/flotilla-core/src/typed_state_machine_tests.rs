//! The typed adapter against an in-memory table: round trip, a malformed payload refused,
//! a typed refusal that travels and leaves the table unchanged.

use serde::{Deserialize, Serialize};

use super::*;
use crate::map_table::MapTable;

/// Appends names to a list; refuses a name already listed, after writing it (to show the
/// write is dropped).
struct Guests;

#[derive(Debug, Serialize, Deserialize)]
struct Arrive(String);

#[derive(Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
enum GuestError {
    #[error("{0} is already here")]
    AlreadyHere(String),
}

impl TypedStateMachine for Guests {
    type Command = Arrive;
    type Reply = u64;
    type Error = GuestError;

    fn apply(
        &self,
        context: &ApplyContext,
        table: &mut dyn StateTable,
        command: Arrive,
    ) -> io::Result<Result<u64, GuestError>> {
        let existed = table.get(command.0.as_bytes())?.is_some();
        table.put(command.0.as_bytes(), &context.index.to_be_bytes())?;
        if existed {
            return Ok(Err(GuestError::AlreadyHere(command.0)));
        }
        Ok(Ok(context.index))
    }
}

fn apply(table: &mut MapTable, index: u64, payload: &[u8]) -> Result<Vec<u8>, String> {
    Typed::new(Guests).apply(&ApplyContext { index }, table, payload).expect("no storage failure")
}

#[test]
fn a_command_round_trips_to_its_typed_reply() {
    let mut table = MapTable::default();
    let payload = encode_typed_command::<Guests>(&Arrive("ada".into())).unwrap();
    let reply = apply(&mut table, 7, &payload).expect("accepted");
    assert_eq!(decode_typed_reply::<Guests>(&reply).unwrap(), Ok(7));
    assert_eq!(table.0.get(&b"ada"[..]), Some(&7u64.to_be_bytes().to_vec()));
}

#[test]
fn a_typed_refusal_travels_and_drops_the_commands_writes() {
    let mut table = MapTable::default();
    let payload = encode_typed_command::<Guests>(&Arrive("ada".into())).unwrap();
    apply(&mut table, 1, &payload).expect("accepted");
    let before = table.0.clone();
    let reply = apply(&mut table, 2, &payload).expect("the refusal is a reply");
    assert_eq!(decode_typed_reply::<Guests>(&reply).unwrap(), Err(GuestError::AlreadyHere("ada".into())));
    assert_eq!(table.0, before, "the refused command's write was dropped");
}

#[test]
fn a_malformed_payload_is_refused_the_same_way_every_time() {
    // Truncated, empty, and a length prefix far beyond the payload.
    let good = encode_typed_command::<Guests>(&Arrive("ada".into())).unwrap();
    for payload in [&good[..good.len() - 1], &[][..], &[0xff; 8][..]] {
        let mut table = MapTable::default();
        let first = apply(&mut table, 1, payload).expect_err("refused");
        assert!(first.starts_with("malformed command: "), "{first}");
        assert_eq!(apply(&mut table, 1, payload), Err(first), "deterministic");
        assert!(table.0.is_empty(), "nothing written");
    }
}
