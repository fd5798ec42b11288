use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = syncbridge::cli::Cli::parse();
    syncbridge::app::release_large_buffers();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("syncbridge: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(syncbridge::cli::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("syncbridge: {e:#}");
            ExitCode::FAILURE
        }
    }
}
