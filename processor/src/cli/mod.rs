//! Command-line entry points; each subcommand lives in its own module.

mod bench_rescore;
mod bench_seed;
mod bench_vad;
mod calibrate;
mod demo;
mod diagnostics;
mod engine;
mod eval_phrase;
mod eval_product;
mod eval_replay;
mod eval_spoof;
mod net_speech;
mod rescore;
mod speech;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Timbre: voice-biometrics stream processor.
#[derive(Parser)]
#[command(name = "timbre", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Options shared by commands that load the speaker model.
#[derive(clap::Args, Clone)]
pub struct ModelArgs {
    /// Directory holding the CAM++ weights (installed by processor/scripts/fetch-model.sh).
    #[arg(long, env = "TIMBRE_MODEL_DIR")]
    pub model_dir: Option<PathBuf>,
    /// Kernels of the network's matrix products: auto (bf16 where the CPU
    /// has avx512_bf16), f32 or bf16.
    #[arg(long, default_value = "auto")]
    pub matmul: timbre::model::Matmul,
}

#[derive(Subcommand)]
enum Command {
    /// Run the stream processor on the configured bus and store.
    Run(engine::RunCmd),
    /// Run everything (processor and HTTP API) in one process on the embedded
    /// bus and a local file store.
    Up(engine::UpCmd),
    /// Re-score a tenant's voiceprints under a new model, then cut over.
    Rescore(rescore::RescoreCmd),
    /// Run the HTTP API adapter on the configured bus and store.
    Serve(engine::ServeCmd),
    /// API key commands.
    #[command(subcommand)]
    Keys(engine::KeysCmd),
    /// Diagnostic records kept for API keys with `retain_data`.
    #[command(subcommand)]
    Diagnostics(diagnostics::DiagnosticsCmd),
    /// Create or upgrade the store schema.
    Migrate(engine::MigrateCmd),
    /// Topic catalogue commands.
    #[command(subcommand)]
    Topics(engine::TopicsCmd),
    /// Speaker-model information.
    Model(speech::ModelCmd),
    /// Print the embedding of a WAV file.
    Embed(speech::EmbedCmd),
    /// Score two WAV files against each other.
    Compare(speech::CompareCmd),
    /// Measure EER/minDCF on a corpus manifest.
    Eval(speech::EvalCmd),
    /// Build a model's score normalisation (impostor cohorts and LLR
    /// calibration) from a corpus.
    Calibrate(calibrate::CalibrateCmd),
    /// Benchmarks that print figures.
    #[command(subcommand)]
    Bench(speech::BenchCmd),
}

/// Runs the command line and maps errors to an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let result = match cli.command {
        Command::Run(cmd) => cmd.run(),
        Command::Up(cmd) => cmd.run(),
        Command::Serve(cmd) => cmd.run(),
        Command::Rescore(cmd) => cmd.run(),
        Command::Keys(cmd) => cmd.run(),
        Command::Diagnostics(cmd) => cmd.run(),
        Command::Migrate(cmd) => cmd.run(),
        Command::Topics(cmd) => cmd.run(),
        Command::Model(cmd) => cmd.run(),
        Command::Embed(cmd) => cmd.run(),
        Command::Compare(cmd) => cmd.run(),
        Command::Eval(cmd) => cmd.run(),
        Command::Bench(cmd) => cmd.run(),
        Command::Calibrate(cmd) => cmd.run(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("TIMBRE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("TIMBRE_LOG_FORMAT").is_ok_and(|v| v == "json");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
