//! `pacs grant`: partner-hospital grants, kept in the index's database.
//! Like `pacs token`, it works on the data dir while `pacs serve` is
//! stopped; while it runs, `POST /api/v1/shares` with `"partner"`,
//! `GET /api/v1/grants` and `DELETE /api/v1/grants/{id}` do the same.
//! Creation and revocation are audited in the data dir's audit trail.

use std::process::ExitCode;

use access::grants::{self, GrantSpec};
use anyhow::{anyhow, Result};
use clap::Subcommand;
use pacs_core::access::{PrincipalKind, StudyScope};
use pacs_core::{Principal, Role};

use crate::config::Config;

#[derive(Subcommand)]
pub enum GrantCommand {
    /// Give a partner (a user, token or OIDC client of role partner, by
    /// name) DICOMweb read access to one study or to one patient's studies.
    Add {
        /// The partner principal's name.
        #[arg(long)]
        partner: String,
        /// Study Instance UID.
        #[arg(long, conflicts_with = "patient", required_unless_present = "patient")]
        study: Option<String>,
        /// Patient ID (every study of the patient held now).
        #[arg(long)]
        patient: Option<String>,
        /// Days until it expires (default: 30, at most [auth] share_max_days).
        #[arg(long)]
        days: Option<u64>,
    },
    /// List the grants.
    List,
    /// Revoke a grant by its id.
    Revoke { id: String },
}

/// The operator at the console, as named in the audit trail.
fn operator() -> Principal {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    Principal {
        kind: PrincipalKind::User,
        name: format!("console:{user}"),
        role: Some(Role::Admin),
        address: None,
        scope: StudyScope::All,
    }
}

pub async fn grant(config: &Config, cmd: GrantCommand) -> Result<ExitCode> {
    let archive = crate::commands::open_archive(config).await?;
    crate::audit::open(config, &archive)?;
    let who = operator();
    let result = match cmd {
        GrantCommand::Add {
            partner,
            study,
            patient,
            days,
        } => {
            let spec = GrantSpec {
                partner,
                study,
                patient,
                days: days.unwrap_or(
                    access::ShareConfig::default()
                        .default_days
                        .min(config.auth.share_max_days),
                ),
            };
            grants::create(&archive, &who, spec, config.auth.share_max_days)
                .await
                .map(|g| {
                    println!(
                        "grant {} made: partner {} reads {} stud{} for {} days",
                        g.id,
                        g.partner,
                        g.studies.len(),
                        if g.studies.len() == 1 { "y" } else { "ies" },
                        g.expires.saturating_sub(g.created) / 86_400
                    );
                })
        }
        GrantCommand::List => grants::list(&archive, &who).await.map(|all| {
            println!(
                "{:<14} {:<24} {:<8} {:<11} {:<11} {:<6} creator",
                "id", "partner", "studies", "expires", "revoked", "uses"
            );
            for g in all {
                println!(
                    "{:<14} {:<24} {:<8} {:<11} {:<11} {:<6} {}",
                    g.id,
                    g.partner,
                    g.studies.len(),
                    crate::users::date(Some(g.expires)),
                    crate::users::date(g.revoked),
                    g.uses,
                    g.creator
                );
            }
        }),
        GrantCommand::Revoke { id } => grants::revoke(&archive, &who, &id)
            .await
            .map(|()| println!("grant {id} revoked")),
    };
    archive.close().await?;
    result.map_err(|e| anyhow!(e))?;
    Ok(ExitCode::SUCCESS)
}
