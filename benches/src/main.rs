//! Write load generator: acknowledged puts/s and latency percentiles at a
//! given client concurrency, against strongbox or etcd, same load for both.
//!
//! Each client runs closed-loop (one request in flight), writing unique keys
//! with a fixed-size value. Clients are spread over the given endpoints.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use strongbox_proto::v1::secrets_client::SecretsClient;
use strongbox_proto::v1::{PutSecretRequest, WriteOptions};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq)]
enum Target {
    Strongbox,
    Etcd,
}

#[derive(Parser, Debug)]
struct Args {
    #[arg(long, value_enum)]
    target: Target,
    /// host:port, comma separated.
    #[arg(long, value_delimiter = ',')]
    endpoints: Vec<String>,
    /// CA certificate (strongbox TLS).
    #[arg(long)]
    ca: Option<std::path::PathBuf>,
    /// Concurrency levels to run, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    clients: Vec<usize>,
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
struct Bearer(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

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

enum Client {
    Strongbox(SecretsClient<InterceptedService<Channel, Bearer>>),
    Etcd(etcd_client::KvClient),
}

impl Client {
    async fn put(&mut self, key: String, value: Vec<u8>) -> anyhow::Result<()> {
        match self {
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

async fn connect(args: &Args, i: usize) -> anyhow::Result<Client> {
    let ep = &args.endpoints[i % args.endpoints.len()];
    match args.target {
        Target::Strongbox => {
            let mut e = Endpoint::from_shared(format!("https://{ep}"))?.tcp_nodelay(true);
            match &args.ca {
                Some(ca) => {
                    let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
                    e = e.tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)))?;
                }
                None => e = Endpoint::from_shared(format!("http://{ep}"))?.tcp_nodelay(true),
            }
            Ok(Client::Strongbox(SecretsClient::with_interceptor(e.connect().await?, bearer(args)?)))
        }
        Target::Etcd => {
            let c = etcd_client::Client::connect([ep.as_str()], None).await?;
            Ok(Client::Etcd(c.kv_client()))
        }
    }
}

async fn run_level(args: Arc<Args>, clients: usize, run_id: u64) -> anyhow::Result<(Outcome, Duration)> {
    let mut conns = Vec::new();
    for i in 0..clients {
        conns.push(connect(&args, i).await?);
    }
    let value = vec![b'x'; args.value_bytes];
    let warmup_until = Instant::now() + Duration::from_secs(args.warmup_s);
    let measure = Duration::from_secs(args.duration_s);
    let end = warmup_until + measure;
    let mut tasks = Vec::new();
    for (i, mut c) in conns.into_iter().enumerate() {
        let value = value.clone();
        tasks.push(tokio::spawn(async move {
            let mut out =
                Outcome { ok: 0, errors: 0, hist: Histogram::new_with_bounds(1, 60_000_000, 3).unwrap() };
            let mut n = 0u64;
            loop {
                let started = Instant::now();
                if started >= end {
                    break;
                }
                let key = format!("bench/r{run_id}/c{i}/k{n}");
                n += 1;
                let res = c.put(key, value.clone()).await;
                if started >= warmup_until && Instant::now() <= end {
                    match res {
                        Ok(()) => {
                            out.ok += 1;
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
        if args.markdown {
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
                "{:?} clients={n} acked_writes_per_s={rate:.0} p50_ms={:.2} p99_ms={:.2} p999_ms={:.2} errors={}",
                args.target,
                ms(0.5),
                ms(0.99),
                ms(0.999),
                o.errors
            );
        }
    }
    Ok(())
}
