//! One harness run: network, cluster, workload setup, clients and nemesis
//! for the time limit, the final heal, recovery, final reads, then the
//! checkers and the report.

mod check;
mod cluster;
mod nemesis;
pub mod net;
mod recorder;
mod workload;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use indicatif::{ProgressBar, ProgressStyle};
use jepsen::results::Validity;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::Args;
use cluster::Cluster;
use nemesis::{Fault, Nemesis};
use net::Net;
use recorder::Recorder;
use workload::{Client, Ctx, Workload, PROCESS_STRIDE};

/// Process ids of the final reads, past any client's.
const FINAL_PROCESS: u64 = 1 << 40;

pub async fn run(args: Args) -> anyhow::Result<i32> {
    let workloads: Vec<Arc<Workload>> = args
        .workload
        .split(',')
        .map(|w| Workload::parse(w.trim()).map(Arc::new))
        .collect::<Result<_, _>>()?;
    let faults = Fault::parse_list(&args.nemesis)?;
    anyhow::ensure!(
        args.concurrency >= 1 && args.concurrency < PROCESS_STRIDE,
        "concurrency: 1..{PROCESS_STRIDE}"
    );
    let seed = args.seed.unwrap_or_else(rand::random);
    let exe = strongbox_exe(&args)?;
    let names: Vec<&str> = workloads.iter().map(|w| w.name()).collect();
    let out = args.out.clone().unwrap_or_else(|| default_out(&names.join("+")));
    std::fs::create_dir_all(&out)?;
    let out = out.canonicalize()?;
    println!(
        "jepsen: {} with nemesis {} for {} s, seed {seed}; results in {}",
        names.join(","),
        args.nemesis,
        args.time_limit,
        out.display()
    );

    let net = Arc::new(Net::setup(args.nodes)?);
    let mut cluster = Cluster::prepare(&out.join("nodes"), args.nodes, exe, args.unsafe_stale_reads)?;
    for id in cluster.ids() {
        cluster.start(id)?;
    }
    let admin_token = strongbox_api::dev::login_admin(
        &cluster.profile,
        &cluster.admin_password,
        24 * 3600,
        Duration::from_secs(60),
        None,
    )
    .await?;
    strongbox_api::dev::wait_for_leader(&cluster.profile, &admin_token, Duration::from_secs(30)).await?;
    let channels = cluster.ids().into_iter().map(|id| cluster.channel(id)).collect::<Result<Vec<_>, _>>()?;
    let rec = Arc::new(Recorder::new());
    let ctx = Arc::new(Ctx {
        rec: rec.clone(),
        channels,
        admin_token: admin_token.clone(),
        admin_password: cluster.admin_password.clone(),
    });
    for w in &workloads {
        w.setup(&ctx).await?;
    }
    let cluster = Arc::new(Mutex::new(cluster));

    // The workload and the nemesis, side by side until the time limit.
    let until = Instant::now() + Duration::from_secs(args.time_limit);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut clients = Vec::new();
    for slot in 0..args.concurrency {
        let workload = workloads[(slot as usize) % workloads.len()].clone();
        let client = new_client(slot, slot % args.nodes + 1, rng.random());
        clients.push(tokio::spawn(client_loop(ctx.clone(), workload, client, until, args.op_delay_ms)));
    }
    let now = Arc::new(std::sync::Mutex::new("none".to_string()));
    let nemesis = Nemesis {
        faults,
        cluster: cluster.clone(),
        net: net.clone(),
        ctx: ctx.clone(),
        rng: StdRng::seed_from_u64(rng.random()),
        now: now.clone(),
    };
    let nemesis = tokio::spawn(nemesis.run(Duration::from_secs(args.nemesis_interval), until));
    let progress = tokio::spawn(progress(rec.clone(), now, args.time_limit, until));
    for c in clients {
        c.await?;
    }
    nemesis.await?;
    progress.abort();

    // Recovery: every node must converge and serve.
    let recovery = check::recovery(&cluster, &ctx, Duration::from_secs(args.recovery_limit)).await;
    println!("jepsen: recovery: {}", recovery.summary());
    for (i, w) in workloads.iter().enumerate() {
        let mut client = new_client(FINAL_PROCESS + i as u64, 1, rng.random());
        w.final_reads(&ctx, &mut client).await;
    }
    let replicas = check::replicas(&cluster, &ctx, Duration::from_secs(args.recovery_limit)).await;
    let crashed = cluster.lock().await.crashed();
    cluster.lock().await.stop_all().await;
    drop(net);

    let ops = rec.ops();
    jepsen::history::save(&out.join("history.jsonl"), &ops)?;
    let fault_names: Vec<&str> = Fault::parse_list(&args.nemesis)?.into_iter().map(Fault::name).collect();
    let results =
        check::all(&ops, &workloads, recovery, replicas, crashed, args.key_budget_ms, &fault_names)?;
    results.save(&out.join("results.json"))?;
    let command: Vec<String> = std::env::args().collect();
    let title = format!("{} · nemesis {} · {} s", names.join(","), args.nemesis, args.time_limit);
    let summary = vec![
        ("nodes".to_string(), args.nodes.to_string()),
        ("clients".to_string(), args.concurrency.to_string()),
        ("seed".to_string(), seed.to_string()),
        ("unsafe stale reads".to_string(), args.unsafe_stale_reads.to_string()),
    ];
    let input = jepsen::report::ReportInput {
        title: &title,
        command: &command.join(" "),
        ops: &ops,
        results: &results,
        nodes_summary: summary,
    };
    if let Err(e) = jepsen::report::write(&out, &input) {
        eprintln!("jepsen: report not written: {e:#}");
    }
    link_latest(&out);

    for (name, r) in results.checkers() {
        println!("  {name:<12} {:<8} {}", validity(r.valid), serde_json::to_string(&r.counts)?);
    }
    let valid = results.valid();
    println!("jepsen: {} ({} ops); see {}/index.html", validity(valid), ops.len(), out.display());
    Ok(exit_code(&results, args.expect_invalid))
}

/// What a run's verdicts mean for its exit code.
/// - 1: a violation (or, with `--expect-invalid`, none where one must be).
/// - 3: unknown for want of evidence (no reads, no deliveries, a fault
///   never applied): the run did not show what it claims.
/// - 0: valid, or unknown only because a search ran out of its budget
///   (`--key-budget-ms`): no violation found, none proven absent; said on
///   a WARNING line, so a slow machine does not fail CI silently.
fn exit_code(results: &jepsen::results::Results, expect_invalid: bool) -> i32 {
    let checkers = results.checkers();
    if expect_invalid {
        // The workloads' checkers must catch it, in a run that recovered:
        // a slow recovery alone is not the checker catching anything.
        let harness = ["recovery", "crashes", "nemesis"];
        let caught: Vec<&str> = checkers
            .iter()
            .filter(|(name, r)| !harness.contains(&name.as_str()) && r.valid == Validity::Invalid)
            .map(|(name, _)| name.as_str())
            .collect();
        let sound = harness.iter().all(|h| checkers.get(*h).is_none_or(|r| r.valid == Validity::Valid));
        if caught.is_empty() || !sound {
            eprintln!(
                "jepsen: expected a workload checker to find a violation in a run that recovered; caught by: {caught:?}, \
                 harness checkers valid: {sound}"
            );
            return 1;
        }
        return 0;
    }
    match results.valid() {
        Validity::Invalid => 1,
        Validity::Valid => 0,
        Validity::Unknown => {
            let unknown: Vec<(&String, &jepsen::results::CheckerResult)> =
                checkers.iter().filter(|(_, r)| r.valid == Validity::Unknown).collect();
            let gave_up = |r: &jepsen::results::CheckerResult| {
                r.count("gave_up_keys") > 0 && r.count("nothing_to_check") == 0
            };
            let names = |keep: &dyn Fn(&jepsen::results::CheckerResult) -> bool| {
                unknown
                    .iter()
                    .filter(|(_, r)| keep(r))
                    .map(|(n, _)| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            if unknown.iter().all(|(_, r)| gave_up(r)) {
                eprintln!(
                    "jepsen: WARNING: not proven valid: {} gave up (no violation found); rerun with a larger --key-budget-ms",
                    names(&gave_up)
                );
                0
            } else {
                eprintln!(
                    "jepsen: NOT SHOWN: {} had nothing to check (no reads, no deliveries, or a fault never applied); \
                     see results.json",
                    names(&|r| !gave_up(r))
                );
                3
            }
        }
    }
}

fn validity(v: Validity) -> &'static str {
    match v {
        Validity::Valid => "valid",
        Validity::Invalid => "INVALID",
        Validity::Unknown => "unknown",
    }
}

fn new_client(process: u64, node: u64, seed: u64) -> Client {
    Client {
        process,
        node,
        rng: StdRng::seed_from_u64(seed),
        seen_versions: Default::default(),
        revocation: Default::default(),
    }
}

async fn client_loop(
    ctx: Arc<Ctx>,
    workload: Arc<Workload>,
    mut client: Client,
    until: Instant,
    delay_ms: u64,
) {
    while Instant::now() < until {
        workload.step(&ctx, &mut client).await;
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
    }
}

async fn progress(rec: Arc<Recorder>, nemesis: Arc<std::sync::Mutex<String>>, secs: u64, until: Instant) {
    use std::sync::atomic::Ordering::Relaxed;
    let bar = ProgressBar::new(secs);
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} s  {msg}")
            .expect("static template")
            .progress_chars("=> "),
    );
    let mut last_line = Instant::now();
    loop {
        let left = until.saturating_duration_since(Instant::now()).as_secs();
        let nem = nemesis.lock().expect("nemesis status lock").clone();
        let msg = format!(
            "ok {} fail {} info {} | nemesis: {nem}",
            rec.ok.load(Relaxed),
            rec.fail.load(Relaxed),
            rec.info.load(Relaxed)
        );
        bar.set_position(secs - left.min(secs));
        // Without a terminal the bar is hidden: print a line every 10 s.
        if bar.is_hidden() && last_line.elapsed() >= Duration::from_secs(10) {
            println!("jepsen: {}/{} s {msg}", secs - left.min(secs), secs);
            last_line = Instant::now();
        }
        bar.set_message(msg);
        if left == 0 {
            bar.finish();
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn strongbox_exe(args: &Args) -> anyhow::Result<PathBuf> {
    let exe = match &args.strongbox {
        Some(p) => p.clone(),
        None => std::env::current_exe()?.with_file_name("strongbox"),
    };
    anyhow::ensure!(
        exe.exists(),
        "strongbox binary not found at {} (build it: cargo build --workspace --bins, or pass --strongbox)",
        exe.display()
    );
    Ok(exe.canonicalize()?)
}

fn default_out(workload: &str) -> PathBuf {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    PathBuf::from("jepsen-results").join(format!("{secs}-{workload}"))
}

/// `jepsen-results/latest` points at the newest run.
fn link_latest(out: &Path) {
    if let Some(parent) = out.parent() {
        let latest = parent.join("latest");
        let _ = std::fs::remove_file(&latest);
        let _ = std::os::unix::fs::symlink(out, latest);
    }
}
