//! `pulsebeam-cli`: the same program as `pulsebeam`, under the original CLI's name, so that
//! scripts written for the original (`pulsebeam-cli --api-key K --api-secret S create-token …`)
//! run unchanged.

/// The same allocator as the `pulsebeam` binary.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    pulsebeam_cli::main()
}
