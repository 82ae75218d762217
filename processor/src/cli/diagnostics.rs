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
    /// folder only the owner can read: `<n>-<request_id>.wav` and `.json`
    /// (the decision, and when the record was kept and expires).
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
        create_private_dir(&self.out)?;
        let registry = Registry::new();
        for (n, record) in records.iter().enumerate() {
            // Numbered, then the id's safe characters (at most 64): distinct
            // ids never share a file, and no id leaves the folder.
            let id: String = record
                .request_id
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                .take(64)
                .collect();
            let name = format!("{n:04}-{id}");
            let decision: Option<Decision> = registry.decode(&record.decision).ok();
            let meta = serde_json::json!({
                "request_id": record.request_id,
                "job": record.job,
                "kept_at": timbre::domain::utc_rfc3339(record.at),
                "expires_at": timbre::domain::utc_rfc3339(record.expires_at),
                "decision": decision,
            });
            write_private(&self.out.join(format!("{name}.wav")), &record.wav)?;
            write_private(
                &self.out.join(format!("{name}.json")),
                &serde_json::to_vec_pretty(&meta)?,
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

/// A folder only its owner can read: the recordings are biometric data.
fn create_private_dir(dir: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("create {}", dir.display()))
}

/// Writes a file only its owner can read.
fn write_private(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("write {}", path.display()))?;
    file.write_all(bytes)?;
    Ok(())
}
