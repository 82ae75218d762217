//! The `timbre` command line.

mod cli;

/// Inference allocates and frees multi-megabyte activations per layer; mimalloc
/// keeps those pages mapped instead of returning them to the kernel each time.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    single_threaded_kernels();
    cli::main()
}

/// Timbre parallelises across utterances (one scoring worker per core), so
/// each matrix product must stay on its worker's thread. candle sizes its
/// matmul parallelism from `RAYON_NUM_THREADS` only; default it to 1 unless
/// the operator chose otherwise.
#[allow(unsafe_code)]
fn single_threaded_kernels() {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        // SAFETY: called first thing in `main`, before any thread exists, so
        // no other thread can be reading the environment concurrently.
        unsafe { std::env::set_var("RAYON_NUM_THREADS", "1") };
    }
}
