use clap::Parser;

// Many small allocations per request (gRPC, Raft, serde): glibc's malloc
// showed up at ~10% of CPU under load.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = strongbox_api::cli::Cli::parse();
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    // Known before the runtime starts: a node's config may set its workers.
    if let Some(n) = cli.worker_threads() {
        rt.worker_threads(n);
    }
    let rt = rt.enable_all().build().expect("tokio runtime");
    match rt.block_on(strongbox_api::cli::run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
