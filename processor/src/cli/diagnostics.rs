//! `timbre diagnostics export`: the operator's read of the diagnostic
//! records kept for API keys with `retain_data` (the API serves none).

use std::path::PathBuf;

use anyhow::{Context, Result};
use timbre_schemas::{Decision, Registry};

use super::engine::{ConfigArgs, runtime};

/// `timbre diagnostics …`.
#[derive(clap::Subcommand)]
pub enum DiagnosticsCmd {
    /// Writes a user's diagnostic records (within their time to live) to a
    /// folder: `<request_id>.wav` and `<request_id>.json` (the decision and
    /// when the record was kept and expires).
    Export(ExportCmd),
}

/// `timbre diagnostics export`.
#[derive(clap::Args)]
pub struct ExportCmd {
    #[command(flatten)]
    config: ConfigArgs,
    /// Tenant of the user.
    #[arg(long)]
    tenant: String,
    /// User whose records to export.
    #[arg(long)]
    user: String,
    /// Folder to write to (created when missing).
    #[arg(long)]
    out: PathBuf,
}

impl DiagnosticsCmd {
    pub fn run(self) -> Result<()> {
        match self {
            DiagnosticsCmd::Export(cmd) => cmd.run(),
        }
    }
}

impl ExportCmd {
    fn run(self) -> Result<()> {
        let config = self.config.load()?;
        let records = runtime()?.block_on(async {
            let stores = timbre::backends::connect_store(&config.store).await?;
            anyhow::Ok(stores.state.diagnostics(&self.tenant, &self.user).await?)
        })?;
        std::fs::create_dir_all(&self.out)
            .with_context(|| format!("create {}", self.out.display()))?;
        let registry = Registry::new();
        for record in &records {
            // Request ids are the engine's or validated ids (no control
            // characters); a path separator would leave the folder.
            let name = record.request_id.replace(['/', '\\'], "_");
            let decision: Option<Decision> = registry.decode(&record.decision).ok();
            let meta = serde_json::json!({
                "request_id": record.request_id,
                "job": record.job,
                "kept_at": timbre::domain::utc_rfc3339(record.at),
                "expires_at": timbre::domain::utc_rfc3339(record.expires_at),
                "decision": decision,
            });
            std::fs::write(self.out.join(format!("{name}.wav")), &record.wav)?;
            std::fs::write(
                self.out.join(format!("{name}.json")),
                serde_json::to_vec_pretty(&meta)?,
            )?;
        }
        eprintln!(
            "{} diagnostic records of {} written to {}",
            records.len(),
            self.user,
            self.out.display()
        );
        Ok(())
    }
}
