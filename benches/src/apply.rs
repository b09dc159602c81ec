//! Apply cost on one node, without Raft or the network: how many µs of CPU
//! the state machine spends per transfer and per secret put. Every node of
//! a cluster applies every command, so on this 2-core machine this cost,
//! times three, bounds what a cluster can move.
//!
//! A batch here is what openraft hands `apply` at once: `--commands` log
//! entries' worth of commands, each of `--events` transfers.
//!
//!   strongbox-apply-bench --workload transfers --events 1000 --commands 1 --batches 20
//!   strongbox-apply-bench --workload transfers --events 1 --commands 64 --batches 200
//!   strongbox-apply-bench --workload puts --commands 64 --batches 200
//!
//! `--command-ms` spaces the commands' stamped times: at 20 ms, 1,500
//! batches of 64 span 32 minutes of state-machine time, so the request-id
//! dedup window (10 minutes) passes and pruning runs as on a long-lived node.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use rand::{Rng, SeedableRng};
use strongbox_store::auth::Principal;
use strongbox_store::codec::Codec;
use strongbox_store::command::{Bootstrap, CreateAccounts, CreateTransfers, IssueToken, Outcome, PutSecret};
use strongbox_store::keyring::{Keyring, MasterKey};
use strongbox_store::ledger::model::{Account, Transfer};
use strongbox_store::ledger::results::{CreateAccountResult as AR, CreateTransferResult as TR};
use strongbox_store::{Actor, Command, Db, Op, StateMachine};

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq)]
enum Workload {
    Transfers,
    Puts,
}

#[derive(Parser, Debug)]
struct Args {
    #[arg(long, value_enum, default_value = "transfers")]
    workload: Workload,
    /// Transfers per command (ignored for puts).
    #[arg(long, default_value_t = 1000)]
    events: usize,
    /// Commands per apply batch.
    #[arg(long, default_value_t = 1)]
    commands: usize,
    /// Apply batches measured (after as many again to warm up).
    #[arg(long, default_value_t = 20)]
    batches: usize,
    #[arg(long, default_value_t = 10_000)]
    accounts: u128,
    /// State-machine milliseconds between two commands' stamped times.
    #[arg(long, default_value_t = 1)]
    command_ms: u64,
    /// Plaintext codec (as `--insecure-no-encryption`).
    #[arg(long)]
    plaintext: bool,
}

const LEDGER: u32 = 1;
const TOKEN: [u8; 32] = [7; 32];

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let codec = if args.plaintext {
        Codec::plaintext()
    } else {
        Codec::encrypted(Arc::new(Keyring::create(dir.path(), MasterKey::generate().0)?))
    };
    let sm = StateMachine::new(Db::open(&dir.path().join("db"), codec)?);
    let mut seq = 0u64;
    let mut cmd = |actor: Actor, op: Op| {
        seq += 1;
        Command {
            request_id: format!("bench-{seq}"),
            time_ms: 1_000 + seq * args.command_ms,
            node: 1,
            actor,
            op,
        }
    };
    let boot = Bootstrap {
        username: "admin".into(),
        password_phc: "$argon2id$bench".into(),
        name_key: strongbox_store::names::NameKey::generate(),
    };
    let login = IssueToken {
        principal: Principal::User("admin".into()),
        verified_credential: "$argon2id$bench".into(),
        token_hash: TOKEN,
        expires_ms: 1 << 60,
        renew_until_ms: 1 << 60,
        scopes: None,
    };
    apply(&sm, vec![cmd(Actor::Node, Op::Bootstrap(boot)), cmd(Actor::Node, Op::IssueToken(login))])?;
    let ids: Vec<u128> = (1..=args.accounts).collect();
    for chunk in ids.chunks(8189) {
        let accounts =
            chunk.iter().map(|&id| Account { id, ledger: LEDGER, code: 1, ..Default::default() }).collect();
        apply(&sm, vec![cmd(Actor::Token(TOKEN), Op::CreateAccounts(CreateAccounts { accounts }))])?;
    }

    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut next_id = 1u128;
    let mut make = |rng: &mut rand::rngs::StdRng| -> Op {
        match args.workload {
            Workload::Transfers => Op::CreateTransfers(CreateTransfers {
                transfers: (0..args.events)
                    .map(|_| {
                        let dr = rng.random_range(1..=args.accounts);
                        let cr = (dr % args.accounts) + 1;
                        next_id += 1;
                        Transfer {
                            id: next_id,
                            debit_account_id: dr,
                            credit_account_id: cr,
                            amount: 1,
                            ledger: LEDGER,
                            code: 1,
                            ..Default::default()
                        }
                    })
                    .collect(),
            }),
            Workload::Puts => {
                next_id += 1;
                Op::PutSecret(PutSecret {
                    path: format!("bench/{}/key-{next_id}", next_id % 64),
                    value: vec![b'x'; 128],
                    cas: None,
                    max_versions: None,
                })
            }
        }
    };
    let events_per_command = if args.workload == Workload::Puts { 1 } else { args.events };
    let mut measured = Duration::ZERO;
    // CPU is read over the whole measured half (clock ticks are too coarse
    // per batch); it includes building the commands, which is small.
    let mut cpu_started = Duration::ZERO;
    for round in 0..args.batches * 2 {
        if round == args.batches {
            cpu_started = process_cpu()?;
        }
        let cmds: Vec<Command> =
            (0..args.commands).map(|_| cmd(Actor::Token(TOKEN), make(&mut rng))).collect();
        let started = Instant::now();
        apply(&sm, cmds)?;
        if round >= args.batches {
            measured += started.elapsed();
        }
    }
    let cpu_measured = process_cpu()?.saturating_sub(cpu_started);
    let events = (args.batches * args.commands * events_per_command) as f64;
    println!(
        "{:?}: {} batches x {} commands x {} events: {:.2} µs per event, {:.0} events/s (one node, one core); \
         {:.2} µs of CPU per event counting RocksDB's background threads",
        args.workload,
        args.batches,
        args.commands,
        events_per_command,
        measured.as_secs_f64() * 1e6 / events,
        events / measured.as_secs_f64(),
        cpu_measured.as_secs_f64() * 1e6 / events,
    );
    Ok(())
}

/// CPU time of the whole process (every thread: apply's and RocksDB's
/// flushes and compactions, which the wall-clock figure leaves to the other
/// core). Linux: utime + stime of /proc/self/stat, in clock ticks.
fn process_cpu() -> anyhow::Result<Duration> {
    // Linux's USER_HZ, fixed at 100 for userspace on every architecture we run on.
    const TICKS_PER_S: u64 = 100;
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // Fields after the parenthesised command name (which may hold spaces).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: indexes 11 and 12 here.
    let ticks = |i: usize| -> anyhow::Result<u64> {
        Ok(fields.get(i).ok_or_else(|| anyhow::anyhow!("short /proc/self/stat"))?.parse()?)
    };
    let t = ticks(11)? + ticks(12)?;
    Ok(Duration::from_millis(t * 1000 / TICKS_PER_S))
}

fn apply(sm: &StateMachine, cmds: Vec<Command>) -> anyhow::Result<()> {
    let mut batch = sm.begin()?;
    for c in &cmds {
        let r = batch.apply(c)?;
        match &r.result {
            Err(e) => anyhow::bail!("command refused: {e:?}"),
            Ok(Outcome::TransfersCreated { results }) => {
                anyhow::ensure!(results.iter().all(|r| *r == TR::Ok), "a transfer failed: {results:?}")
            }
            Ok(Outcome::AccountsCreated { results }) => {
                anyhow::ensure!(results.iter().all(|r| *r == AR::Ok), "an account failed: {results:?}")
            }
            Ok(_) => {}
        }
    }
    batch.commit()?;
    Ok(())
}
