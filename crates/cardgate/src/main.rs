//! The `cardgate` binary: `serve`, `import`, and the admin verbs (clients, keys, audit).

#![forbid(unsafe_code)]

mod cli;
mod ops;

use clap::Parser;
use std::process::ExitCode;

/// mimalloc: the request path allocates many small short-lived buffers across threads,
/// where glibc malloc spent a sixth of the server's CPU (see README, Performance).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let args = cli::Cli::parse();
    cli::init_logging(&args.common);
    match cli::run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}
