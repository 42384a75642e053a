//! `axion-push`: the command line over the library (see `axion_push::cli`).

/// mimalloc rather than glibc's malloc: the daemon's CPU per send (see
/// Cargo.toml and the README's Performance section).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    axion_push::cli::main()
}
