//! The `pulsebeam` binary: parse the command line, run it, exit with a documented code.

/// jemalloc keeps the server's memory per idle connection low (see BENCHMARKS.md).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::io;
use std::process::ExitCode;

use clap::Parser as _;
use pulsebeam_cli::{Cli, Context, Status};
use pulsebeam_token::SystemClock;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // `--help` and `--version` go to stdout and succeed; usage errors go to stderr. A
            // closed pipe while printing help is not worth reporting.
            let _ = e.print();
            let status = if e.use_stderr() {
                Status::Failure
            } else {
                Status::Success
            };
            return ExitCode::from(status.code());
        }
    };
    let env = |name: &str| std::env::var_os(name);
    // Unlocked handles: `serve` logs from worker threads, which must not wait on a lock that
    // the main thread holds for the whole run.
    let mut stdin = io::stdin();
    let mut stdout = io::stdout();
    let mut stderr = io::stderr();
    let mut ctx = Context {
        stdin: &mut stdin,
        stdout: &mut stdout,
        stderr: &mut stderr,
        env: &env,
        clock: &SystemClock,
    };
    ExitCode::from(pulsebeam_cli::run(cli, &mut ctx).code())
}
