//! The `pulsebeam` binary: everything is in [`pulsebeam_cli::main`].

/// jemalloc keeps the server's memory per idle connection low (see BENCHMARKS.md).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    pulsebeam_cli::main()
}
