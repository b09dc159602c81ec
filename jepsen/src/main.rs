//! `jepsen`: runs the real strongbox cluster in network namespaces under a
//! workload and a nemesis, records the history and checks it.
//!
//!   sudo target/debug/jepsen --workload register,bank --nemesis partition,kill --time-limit 60

mod run;

use std::path::PathBuf;

use clap::Parser;

#[derive(Parser, Debug, Clone)]
#[command(name = "jepsen", about = "Consistency harness for strongbox (needs root: network namespaces)")]
pub struct Args {
    /// Comma-separated: register, bank, set, revocation. Clients are shared
    /// out round-robin.
    #[arg(long, default_value = "register")]
    pub workload: String,
    /// Comma-separated: partition, kill, pause, membership; or none.
    #[arg(long, default_value = "partition,kill,pause")]
    pub nemesis: String,
    /// Seconds of workload (the heal, recovery and checks come after).
    #[arg(long, default_value_t = 60)]
    pub time_limit: u64,
    #[arg(long, default_value_t = 3)]
    pub nodes: u64,
    /// Concurrent clients, each pinned to one node.
    #[arg(long, default_value_t = 10)]
    pub concurrency: u64,
    /// Mean seconds of each quiet and each faulty period.
    #[arg(long, default_value_t = 5)]
    pub nemesis_interval: u64,
    /// Pause between a client's ops, in milliseconds.
    #[arg(long, default_value_t = 10)]
    pub op_delay_ms: u64,
    /// Seconds the healed cluster gets to converge and serve on every node.
    #[arg(long, default_value_t = 60)]
    pub recovery_limit: u64,
    /// Time the linearizability search may spend on one key, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    pub key_budget_ms: u64,
    /// Where the run's files go (default: jepsen-results/<time>-<workload>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The strongbox binary (default: next to this one).
    #[arg(long, env = "STRONGBOX_BIN")]
    pub strongbox: Option<PathBuf>,
    /// Start the nodes with --unsafe-stale-reads (to check the checker).
    #[arg(long)]
    pub unsafe_stale_reads: bool,
    /// Succeed only if some checker finds the history invalid.
    #[arg(long)]
    pub expect_invalid: bool,
    /// Seed for the generators and the nemesis schedule (default: random).
    #[arg(long)]
    pub seed: Option<u64>,
}

fn main() {
    let args = Args::parse();
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let code = rt.block_on(async {
        tokio::select! {
            r = run::run(args) => match r {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("jepsen: {e:#}");
                    2
                }
            },
            _ = tokio::signal::ctrl_c() => {
                eprintln!("jepsen: interrupted; stopping nodes and removing namespaces");
                130
            }
        }
    });
    // Dropping the runtime drops the run: nodes are killed (kill_on_drop)
    // and the namespaces and rules removed (Net's Drop); make sure of the
    // latter even if the run future was never polled to its setup.
    drop(rt);
    run::net::teardown_if_idle();
    std::process::exit(code);
}
