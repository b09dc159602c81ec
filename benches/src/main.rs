//! Write load generator: acknowledged writes/s and latency percentiles at a
//! given client concurrency, against strongbox or etcd, same load for both.
//!
//! Each client runs closed-loop (one request in flight). `puts` writes
//! unique keys with a fixed-size value; `transfers` moves value between
//! accounts (see `ledger.rs`); `reads` writes one key per client, then reads
//! it over and over (linearizable on both systems). Clients are spread over
//! the given endpoints, or with `--route leader` sent to the leader.

mod ledger;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use strongbox_proto::leader::LeaderRouted;
use strongbox_proto::v1::secrets_client::SecretsClient;
use strongbox_proto::v1::{GetSecretRequest, PutSecretRequest, WriteOptions};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq)]
enum Target {
    Strongbox,
    Etcd,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq)]
enum Workload {
    Puts,
    Transfers,
    Reads,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq)]
enum Route {
    /// Client i sends everything to endpoint i mod n (a follower forwards).
    Spread,
    /// Client i starts at endpoint i mod n and follows the leader: strongbox
    /// clients by the nodes' leader hints (`strongbox_proto::leader`), as
    /// strongbox's own client does; etcd clients are sent to the endpoint
    /// whose Status names itself leader (etcd's client does not route).
    Leader,
}

#[derive(Parser, Debug)]
struct Args {
    #[arg(long, value_enum)]
    target: Target,
    #[arg(long, value_enum, default_value = "puts")]
    workload: Workload,
    /// Transfers per request (strongbox; etcd does one transfer per Txn).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// host:port, comma separated.
    #[arg(long, value_delimiter = ',')]
    endpoints: Vec<String>,
    /// CA certificate (strongbox TLS).
    #[arg(long)]
    ca: Option<std::path::PathBuf>,
    /// Concurrency levels to run, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    clients: Vec<usize>,
    /// Connections the clients share, spread over the endpoints (each a
    /// multiplexed HTTP/2 channel, as one gRPC channel per server is usually
    /// used); 0: one connection per client.
    #[arg(long, default_value_t = 0)]
    connections: usize,
    #[arg(long, value_enum, default_value = "spread")]
    route: Route,
    #[arg(long, default_value_t = 10)]
    duration_s: u64,
    #[arg(long, default_value_t = 2)]
    warmup_s: u64,
    #[arg(long, default_value_t = 256)]
    value_bytes: usize,
    /// Print markdown table rows.
    #[arg(long)]
    markdown: bool,
    /// File holding a strongbox access token (e.g. the one `strongbox dev`
    /// saves next to the client profile); else $STRONGBOX_TOKEN.
    #[arg(long)]
    token_file: Option<std::path::PathBuf>,
}

/// Adds the bearer token to every strongbox call.
#[derive(Clone)]
pub struct Bearer(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

fn bearer(args: &Args) -> anyhow::Result<Bearer> {
    let token = match &args.token_file {
        Some(p) => Some(std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?),
        None => std::env::var("STRONGBOX_TOKEN").ok(),
    };
    let value = token.map(|t| format!("Bearer {}", t.trim()).parse()).transpose()?;
    Ok(Bearer(value))
}

struct Outcome {
    ok: u64,
    errors: u64,
    hist: Histogram<u64>,
}

#[derive(Clone)]
enum Client {
    Strongbox(SecretsClient<InterceptedService<LeaderRouted, Bearer>>),
    Ledger(strongbox_proto::v1::ledger_client::LedgerClient<InterceptedService<LeaderRouted, Bearer>>),
    Etcd(etcd_client::KvClient),
}

impl Client {
    /// One request; Ok(writes it acknowledged: puts or transfers).
    async fn op(
        &mut self,
        args: &Args,
        run_id: u64,
        key: String,
        value: Vec<u8>,
        seed: u64,
    ) -> anyhow::Result<u64> {
        match (self, args.workload) {
            (Client::Ledger(c), _) => ledger::strongbox_batch(c, run_id, args.batch).await,
            (Client::Etcd(c), Workload::Transfers) => ledger::etcd_transfer(c, seed).await,
            (c, Workload::Puts) => c.put(key, value).await.map(|_| 1),
            (c, Workload::Reads) => c.get(key).await.map(|_| 1),
            (Client::Strongbox(_), Workload::Transfers) => unreachable!("transfers use the ledger client"),
        }
    }

    /// A linearizable read (strongbox's default; etcd's too).
    async fn get(&mut self, key: String) -> anyhow::Result<()> {
        match self {
            Client::Ledger(_) => unreachable!("reads use the secrets client"),
            Client::Strongbox(c) => {
                c.get(GetSecretRequest { options: None, path: key, version: 0 }).await?;
            }
            Client::Etcd(c) => {
                anyhow::ensure!(!c.get(key, None).await?.kvs().is_empty(), "the key was not found");
            }
        }
        Ok(())
    }

    async fn put(&mut self, key: String, value: Vec<u8>) -> anyhow::Result<()> {
        match self {
            Client::Ledger(_) => unreachable!("puts use the secrets client"),
            Client::Strongbox(c) => {
                c.put(PutSecretRequest {
                    options: Some(WriteOptions { request_id: key.clone() }),
                    path: key,
                    value,
                    cas: None,
                    max_versions: None,
                })
                .await?;
            }
            Client::Etcd(c) => {
                c.put(key, value, None).await?;
            }
        }
        Ok(())
    }
}

fn endpoint(args: &Args, ep: &str) -> anyhow::Result<Endpoint> {
    Ok(match &args.ca {
        Some(ca) => {
            let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
            Endpoint::from_shared(format!("https://{ep}"))?
                .tcp_nodelay(true)
                .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)))?
        }
        None => Endpoint::from_shared(format!("http://{ep}"))?.tcp_nodelay(true),
    })
}

/// The etcd endpoint whose member leads, by asking each one's Status.
async fn etcd_leader(endpoints: &[String]) -> anyhow::Result<String> {
    for ep in endpoints {
        let Ok(mut c) = etcd_client::Client::connect([ep.as_str()], None).await else { continue };
        let Ok(s) = c.status().await else { continue };
        if s.header().is_some_and(|h| h.member_id() == s.leader()) {
            return Ok(ep.clone());
        }
    }
    anyhow::bail!("no etcd endpoint says it leads")
}

async fn connect(args: &Args, i: usize, etcd_leader_ep: Option<&str>) -> anyhow::Result<Client> {
    let first = i % args.endpoints.len();
    let ep = &args.endpoints[first];
    match args.target {
        Target::Strongbox => {
            let ch = match args.route {
                Route::Spread => {
                    let ch = endpoint(args, ep)?.connect().await?;
                    LeaderRouted::new(vec![(ep.clone(), ch)], 0)
                }
                Route::Leader => {
                    let mut routes = Vec::new();
                    for e in &args.endpoints {
                        routes.push((e.clone(), endpoint(args, e)?.connect_lazy()));
                    }
                    LeaderRouted::new(routes, first)
                }
            };
            Ok(match args.workload {
                Workload::Puts | Workload::Reads => {
                    Client::Strongbox(SecretsClient::with_interceptor(ch, bearer(args)?))
                }
                Workload::Transfers => Client::Ledger(
                    strongbox_proto::v1::ledger_client::LedgerClient::with_interceptor(ch, bearer(args)?)
                        .max_decoding_message_size(8 << 20)
                        .max_encoding_message_size(8 << 20),
                ),
            })
        }
        Target::Etcd => {
            let ep = etcd_leader_ep.unwrap_or(ep);
            let c = etcd_client::Client::connect([ep], None).await?;
            Ok(Client::Etcd(c.kv_client()))
        }
    }
}

async fn run_level(args: Arc<Args>, clients: usize, run_id: u64) -> anyhow::Result<(Outcome, Duration)> {
    let shared = if args.connections == 0 { clients } else { args.connections.min(clients) };
    let etcd_leader_ep = match (args.target, args.route) {
        (Target::Etcd, Route::Leader) => Some(etcd_leader(&args.endpoints).await?),
        _ => None,
    };
    let mut channels = Vec::new();
    for i in 0..shared {
        channels.push(connect(&args, i, etcd_leader_ep.as_deref()).await?);
    }
    let mut conns: Vec<Client> = (0..clients).map(|i| channels[i % shared].clone()).collect();
    if args.workload == Workload::Transfers {
        match conns.first_mut() {
            Some(Client::Ledger(c)) => ledger::setup_strongbox(c).await?,
            Some(Client::Etcd(c)) => ledger::setup_etcd(c).await?,
            _ => {}
        }
    }
    let value = vec![b'x'; args.value_bytes];
    let warmup_until = Instant::now() + Duration::from_secs(args.warmup_s);
    let measure = Duration::from_secs(args.duration_s);
    let end = warmup_until + measure;
    let mut tasks = Vec::new();
    for (i, mut c) in conns.into_iter().enumerate() {
        let value = value.clone();
        let args = args.clone();
        tasks.push(tokio::spawn(async move {
            let mut out =
                Outcome { ok: 0, errors: 0, hist: Histogram::new_with_bounds(1, 60_000_000, 3).unwrap() };
            let mut n = 0u64;
            let read_key = format!("bench/r{run_id}/c{i}/read");
            if args.workload == Workload::Reads {
                // The key each client reads; a failed setup shows as errors.
                let _ = c.put(read_key.clone(), value.clone()).await;
            }
            loop {
                let started = Instant::now();
                if started >= end {
                    break;
                }
                let key = match args.workload {
                    Workload::Reads => read_key.clone(),
                    _ => format!("bench/r{run_id}/c{i}/k{n}"),
                };
                n += 1;
                let seed = (i as u64) << 40 | n;
                let res = c.op(&args, run_id, key, value.clone(), seed).await;
                if started >= warmup_until && Instant::now() <= end {
                    match res {
                        Ok(acked) => {
                            out.ok += acked;
                            out.hist.record(started.elapsed().as_micros().max(1) as u64).unwrap();
                        }
                        Err(_) => out.errors += 1,
                    }
                }
            }
            out
        }));
    }
    let mut total = Outcome { ok: 0, errors: 0, hist: Histogram::new_with_bounds(1, 60_000_000, 3)? };
    for t in tasks {
        let o = t.await?;
        total.ok += o.ok;
        total.errors += o.errors;
        total.hist.add(&o.hist)?;
    }
    Ok((total, measure))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Arc::new(Args::parse());
    anyhow::ensure!(!args.endpoints.is_empty(), "--endpoints is required");
    let run_id = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    for &n in &args.clients {
        let (o, d) = run_level(args.clone(), n, run_id * 1000 + n as u64).await?;
        let rate = o.ok as f64 / d.as_secs_f64();
        let ms = |q: f64| o.hist.value_at_quantile(q) as f64 / 1000.0;
        let batch = if args.target == Target::Etcd { "1 (Txn)".to_string() } else { args.batch.to_string() };
        if args.markdown && args.workload == Workload::Transfers {
            println!(
                "| {:?} | {n} | {batch} | {rate:.0} | {:.2} | {:.2} | {:.2} | {} |",
                args.target,
                ms(0.5),
                ms(0.99),
                ms(0.999),
                o.errors
            );
        } else if args.markdown {
            println!(
                "| {:?} | {n} | {rate:.0} | {:.2} | {:.2} | {:.2} | {} |",
                args.target,
                ms(0.5),
                ms(0.99),
                ms(0.999),
                o.errors
            );
        } else {
            println!(
                "{:?} {:?} clients={n} batch={batch} acked_per_s={rate:.0} p50_ms={:.2} p99_ms={:.2} p999_ms={:.2} errors={}",
                args.target,
                args.workload,
                ms(0.5),
                ms(0.99),
                ms(0.999),
                o.errors
            );
        }
    }
    Ok(())
}
