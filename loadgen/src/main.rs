//! The `loadgen` command line. Exit status: 0 the run passed, 1 it could not
//! run (bad options, unreachable target, nobody enrolled), 2 it ran but
//! failed (a decision missing, or an error other than an audio refusal).

use std::process::ExitCode;

use clap::Parser;
use timbre_loadgen::{Options, run};

/// Same allocator as `timbre`: the embedded target runs the model in this process.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    single_threaded_kernels();
    let opts = Options::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&opts)) {
        Ok(report) => {
            if opts.json {
                println!(
                    "{}",
                    serde_json::to_string(&report).expect("a report serialises")
                );
            } else {
                print!("{}", report.table());
            }
            ExitCode::from(report.exit_code())
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// As in `timbre`: the engine runs one utterance per worker thread, so
/// candle's matrix products stay on that thread unless the operator chose
/// otherwise.
#[allow(unsafe_code)]
fn single_threaded_kernels() {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        // SAFETY: called first thing in `main`, before any thread exists.
        unsafe { std::env::set_var("RAYON_NUM_THREADS", "1") };
    }
}
