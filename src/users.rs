//! `pacs user` and `pacs token`: local users and machine tokens, kept in
//! the index's database. On the sled index they work on the data dir while
//! `pacs serve` is stopped (the database admits one process; while it runs,
//! the admin page and `/api/v1/users` do the same); on PostgreSQL they
//! change the store every node shares, at any time.

use std::io::BufRead;
use std::process::ExitCode;

use access::accounts::now_secs;
use access::{Accounts, PasswordHashing};
use anyhow::{anyhow, bail, Context, Result};
use clap::Subcommand;
use pacs_core::Role;

use crate::config::Config;

#[derive(Subcommand)]
pub enum UserCommand {
    /// Add a user.
    Add {
        name: String,
        /// admin, radiologist, technologist, referrer, auditor or partner.
        #[arg(long)]
        role: String,
        /// Read the password from the first line of standard input
        /// (otherwise it is asked for on the terminal).
        #[arg(long)]
        password_stdin: bool,
    },
    /// List the users.
    List,
    /// Set a user's password.
    Passwd {
        name: String,
        #[arg(long)]
        password_stdin: bool,
    },
    /// Disable a user (they can no longer sign in).
    Disable { name: String },
    /// Enable a disabled user.
    Enable { name: String },
    /// Remove a user.
    Remove { name: String },
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Create a machine token; it is printed once and kept only as a hash.
    Create {
        /// What it is for, e.g. emr.
        #[arg(long)]
        name: String,
        #[arg(long)]
        role: String,
        /// Days until it expires (default: never).
        #[arg(long)]
        expires: Option<u32>,
    },
    /// List the tokens (never their secrets).
    List,
    /// Revoke a token by its id.
    Revoke { id: String },
}

async fn open(config: &Config) -> Result<Accounts> {
    let store = crate::commands::open_credentials(config).await?;
    let min_len = usize::try_from(config.auth.min_password_length).unwrap_or(usize::MAX);
    Ok(Accounts::new(store, PasswordHashing::new(1), min_len))
}

fn role(s: &str) -> Result<Role> {
    Role::parse(s).ok_or_else(|| {
        anyhow!("unknown role {s:?}; roles: admin, radiologist, technologist, referrer, auditor, partner")
    })
}

fn read_password(from_stdin: bool) -> Result<String> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("cannot read the password from standard input")?;
        let p = line.trim_end_matches(['\r', '\n']).to_owned();
        if p.is_empty() {
            bail!("no password on standard input");
        }
        return Ok(p);
    }
    let p = rpassword::prompt_password("Password: ").context("cannot read the password")?;
    let again = rpassword::prompt_password("Again: ").context("cannot read the password")?;
    if p != again {
        bail!("the two passwords differ");
    }
    Ok(p)
}

pub(crate) fn date(secs: Option<u64>) -> String {
    match secs {
        None => "-".into(),
        Some(s) if s <= now_secs() => format!("{}d ago", (now_secs() - s) / 86_400),
        Some(s) => format!("in {}d", (s - now_secs()).div_ceil(86_400)),
    }
}

pub async fn user(config: &Config, cmd: UserCommand) -> Result<ExitCode> {
    let (store, sessions) = crate::commands::open_credentials_and_sessions(config).await?;
    let min_len = usize::try_from(config.auth.min_password_length).unwrap_or(usize::MAX);
    let accounts = Accounts::new(store, PasswordHashing::new(1), min_len);
    // On PostgreSQL the running nodes' sessions are in reach: a changed
    // password, a disabled or removed user signs that user out everywhere.
    let sign_out = |name: String| {
        let sessions = sessions.clone();
        async move {
            match sessions {
                Some(s) => s.end_user(&name).await.map_err(anyhow::Error::from),
                None => Ok(()),
            }
        }
    };
    match cmd {
        UserCommand::Add {
            name,
            role: r,
            password_stdin,
        } => {
            let r = role(&r)?;
            let password = read_password(password_stdin)?;
            accounts.add_user(&name, r, &password).await?;
            println!("user {name} added as {r}; sign-in is now required");
        }
        UserCommand::List => {
            println!("{:<24} {:<13} {:<9} created", "name", "role", "state");
            for u in accounts.users().await? {
                let state = if u.disabled { "disabled" } else { "active" };
                println!(
                    "{:<24} {:<13} {:<9} {}",
                    u.name,
                    u.role.as_str(),
                    state,
                    date(Some(u.created))
                );
            }
        }
        UserCommand::Passwd {
            name,
            password_stdin,
        } => {
            let password = read_password(password_stdin)?;
            accounts.set_password(&name, &password).await?;
            sign_out(name.clone()).await?;
            println!("password of {name} changed");
        }
        UserCommand::Disable { name } => {
            accounts.set_disabled(&name, true).await?;
            sign_out(name.clone()).await?;
            println!("user {name} disabled");
        }
        UserCommand::Enable { name } => {
            accounts.set_disabled(&name, false).await?;
            println!("user {name} enabled");
        }
        UserCommand::Remove { name } => {
            accounts.remove_user(&name).await?;
            sign_out(name.clone()).await?;
            println!("user {name} removed");
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn token(config: &Config, cmd: TokenCommand) -> Result<ExitCode> {
    let accounts = open(config).await?;
    match cmd {
        TokenCommand::Create {
            name,
            role: r,
            expires,
        } => {
            let (t, secret) = accounts.create_token(&name, role(&r)?, expires).await?;
            eprintln!(
                "token {} ({name}, {}) created; it is shown only now:",
                t.id, t.role
            );
            println!("{secret}");
        }
        TokenCommand::List => {
            println!(
                "{:<12} {:<24} {:<13} {:<10} {:<10} revoked",
                "id", "name", "role", "created", "expires"
            );
            for t in accounts.tokens().await? {
                println!(
                    "{:<12} {:<24} {:<13} {:<10} {:<10} {}",
                    t.id,
                    t.name,
                    t.role.as_str(),
                    date(Some(t.created)),
                    date(t.expires),
                    date(t.revoked)
                );
            }
        }
        TokenCommand::Revoke { id } => {
            accounts.revoke_token(&id).await?;
            println!("token {id} revoked");
        }
    }
    Ok(ExitCode::SUCCESS)
}
