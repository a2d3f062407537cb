//! A replicated counter: a custom typed state machine on three real nodes in one process
//! (libp2p on loopback, stores in temporary directories). Increments go through every node
//! (followers forward them to the leader); each node then reads the final value linearizably
//! and the example prints it and exits 0. If the cluster does not form within 60 s it exits
//! 1 and says so.
//!
//! ```sh
//! cargo run -p flotilla --example replicated_counter
//! ```

use std::io;
use std::ops::Bound;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use flotilla::{
    ApplyContext, Consistency, IdempotencyKey, MemberRole, Node, ProposeError, RunningNode, Scan, StateMachine,
    StateMachineFactory, StateTable, StateView, Typed, TypedStateMachine,
};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// The namespace the counter lives in.
const NS: &str = "counter";
/// The counter's one row in the namespace's table.
const KEY: &[u8] = b"value";
/// How long the three nodes get to form the cluster (and each increment to go through).
const PATIENCE: Duration = Duration::from_secs(60);
/// Increments sent through each node.
const ROUNDS: u64 = 5;

/// The state machine: one counter, stored as 8 big-endian bytes under [`KEY`].
struct Counter;

/// What a proposal asks of the counter.
#[derive(Debug, Serialize, Deserialize)]
enum CounterCommand {
    /// Add this much.
    Add(u64),
}

/// Why the counter refuses a command.
#[derive(Debug, Serialize, Deserialize, thiserror::Error)]
enum CounterError {
    #[error("the counter would overflow")]
    Overflow,
}

impl TypedStateMachine for Counter {
    type Command = CounterCommand;
    type Reply = u64;
    type Error = CounterError;

    fn apply(
        &self,
        _context: &ApplyContext,
        table: &mut dyn StateTable,
        command: CounterCommand,
    ) -> io::Result<Result<u64, CounterError>> {
        let CounterCommand::Add(by) = command;
        let Some(next) = read_counter(table)?.checked_add(by) else { return Ok(Err(CounterError::Overflow)) };
        table.put(KEY, &next.to_be_bytes())?;
        Ok(Ok(next))
    }
}

/// The counter's value in `view` (0 before the first increment).
fn read_counter(view: &dyn StateView) -> io::Result<u64> {
    match view.get(KEY)? {
        None => Ok(0),
        Some(bytes) => {
            let bytes: [u8; 8] = bytes.try_into().map_err(|_| io::Error::other("the counter row is not 8 bytes"))?;
            Ok(u64::from_be_bytes(bytes))
        }
    }
}

/// The rows of the table, to show what `apply` wrote (a range scan).
fn rows(view: &dyn StateView) -> io::Result<usize> {
    let mut count = 0;
    view.scan(Bound::Unbounded, Bound::Unbounded, &mut |_, _| {
        count += 1;
        Ok(Scan::Continue)
    })?;
    Ok(count)
}

type Failure = Box<dyn std::error::Error>;

#[tokio::main]
async fn main() -> ExitCode {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "error".into()))
        .try_init();
    match run().await {
        Ok(value) => {
            println!("final value: {value}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("replicated_counter: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<u64, Failure> {
    let dirs = [tempfile::tempdir()?, tempfile::tempdir()?, tempfile::tempdir()?];
    let machine: Arc<dyn StateMachine> = Arc::new(Typed::new(Counter));
    let factory: StateMachineFactory = Arc::new(move |_| machine.clone());
    // The first node founds the cluster; the others find it through its address and join.
    let first = start(dirs[0].path(), &factory, None).await?;
    let contact = first.addrs().into_iter().next().ok_or("the first node listens nowhere")?;
    let second = start(dirs[1].path(), &factory, Some(&contact)).await?;
    let third = start(dirs[2].path(), &factory, Some(&contact)).await?;
    let nodes = [first, second, third];
    let outcome = count(&nodes).await;
    for node in nodes {
        node.shutdown().await;
    }
    outcome
}

/// Start a node on loopback, joining `contact` if given, else founding.
async fn start(
    dir: &std::path::Path,
    factory: &StateMachineFactory,
    contact: Option<&str>,
) -> Result<RunningNode, Failure> {
    let mut builder =
        Node::builder(dir).namespace(NS).listen("/ip4/127.0.0.1/tcp/0").no_mdns().state_machines(factory.clone());
    builder = match contact {
        Some(address) => builder.bootstrap(address),
        None => builder.configure(|c| c.force_bootstrap = true),
    };
    Ok(builder.start().await?)
}

/// Wait for three voters, increment through every node, and read the value back from each.
async fn count(nodes: &[RunningNode]) -> Result<u64, Failure> {
    wait_formed(nodes).await?;
    for round in 0..ROUNDS {
        for (i, node) in nodes.iter().enumerate() {
            let value = increment(node, &format!("node-{i}-round-{round}")).await?;
            println!("node {i} added 1: counter = {value}");
        }
    }
    let mut value = 0;
    for (i, node) in nodes.iter().enumerate() {
        let cluster = node.cluster(NS)?;
        let read = cluster.typed::<Counter>().query(Consistency::Linearizable, |view| read_counter(view)).await?;
        let row_count = cluster.query(Consistency::Stale, rows).await?.value;
        println!("node {i} reads {} at index {} ({row_count} row)", read.value, read.index);
        value = read.value;
    }
    let expected = ROUNDS * nodes.len() as u64;
    if value != expected {
        return Err(format!("the counter is {value}, expected {expected}").into());
    }
    Ok(value)
}

/// Wait until every node knows a leader whose configuration has every node as a voter.
async fn wait_formed(nodes: &[RunningNode]) -> Result<(), Failure> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let states = nodes.iter().map(|n| n.cluster(NS).map(|c| c.state())).collect::<Result<Vec<_>, _>>()?;
        let voters = |s: &flotilla::GroupStatus| s.members.iter().filter(|m| m.role == MemberRole::Voter).count();
        if states.iter().all(|s| s.leader.is_some() && voters(s) == nodes.len() && !s.membership_changing) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let seen: Vec<String> = states.iter().map(|s| format!("{:?} with {} voters", s.role, voters(s))).collect();
            return Err(format!("the cluster did not form within {} s: {}", PATIENCE.as_secs(), seen.join(", ")).into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Add 1 through `node`, retrying what may clear by itself (a leader change); the idempotency
/// key makes a retry of an increment that did apply answer its first reply, not count twice.
async fn increment(node: &RunningNode, key: &str) -> Result<u64, Failure> {
    let counter = node.cluster(NS)?.typed::<Counter>();
    let key = IdempotencyKey::new(key)?;
    let deadline = Instant::now() + PATIENCE;
    loop {
        match counter.propose_idempotent(&CounterCommand::Add(1), &key).await {
            Ok(applied) => return Ok(applied.reply),
            Err(ProposeError::Api(e)) if e.is_retryable() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}
