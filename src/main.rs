//! `axion-push`: the command line over the library (see `axion_push::cli`).

fn main() -> std::process::ExitCode {
    axion_push::cli::main()
}
