//! `pacs`: the Sen PACS binary. It only parses the command line, loads the
//! configuration and wires the crates together; every behaviour lives in the
//! library crates.

mod audit;
mod bench_index;
mod commands;
mod config;
mod grants;
mod http_server;
mod orders_api;
mod patients_api;
mod proxy;
mod queue;
mod serve;
mod studies_api;
mod technologist;
mod tls;
mod users;
mod worklist_dir;

use std::path::PathBuf;

/// jemalloc, not glibc's malloc: see the `jemalloc` feature in Cargo.toml.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::{Config, Overrides};

#[derive(Parser)]
#[command(
    name = "pacs",
    version,
    about = "Sen PACS: a DICOM archive with DICOMweb and a browser viewer"
)]
struct Cli {
    /// Configuration file (TOML). Keys: ae_title, dimse_listen, http_listen,
    /// data_dir, storage_url, strict_ae, [[remote_ae]], on_duplicate,
    /// min_free_space, [limits], [auth], [audit], [s3] (README).
    #[arg(long, global = true, env = "PACS_CONFIG")]
    config: Option<PathBuf>,
    /// Where the index (and, by default, the blobs) live.
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// Object storage URL: file:///path, memory:// or s3://bucket/prefix.
    #[arg(long, global = true)]
    storage_url: Option<String>,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "PACS_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the archive: DICOMweb and the viewer over HTTP.
    Serve {
        /// Load the sample studies when the archive is empty.
        #[arg(long)]
        demo: bool,
        /// HTTP listen address (default 127.0.0.1:8080).
        #[arg(long)]
        http_listen: Option<String>,
        /// DIMSE listen address (default 0.0.0.0:11112; 127.0.0.1:11112
        /// with --demo).
        #[arg(long)]
        dimse_listen: Option<String>,
    },
    /// Import DICOM files and directories (recursively) into the archive.
    Import {
        /// Files or directories.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Write a JSON report (imported / already present / rejected with reasons).
        #[arg(long)]
        report: Option<PathBuf>,
        /// Concurrent stores.
        #[arg(long, default_value_t = 4)]
        jobs: usize,
        /// Print one line per stored object as soon as it is durable:
        /// `stored<TAB>SOPInstanceUID<TAB>SHA-256<TAB>path`.
        #[arg(long)]
        print_stored: bool,
        /// Land each object in the landing log first, as `pacs serve` does
        /// (each store returns sooner, but every byte is written twice; a
        /// bulk import is faster without, the default).
        #[arg(long)]
        landing: bool,
    },
    /// Write one stored instance, byte for byte, to a file (or stdout).
    Get {
        /// SOP Instance UID.
        sop_instance_uid: String,
        /// Output file (default: stdout).
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Rebuild the whole index from the blobs.
    Reindex,
    /// Check every blob against its checksum and the index; exit 1 on damage.
    Verify {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Rewrite the embedded (sled) index into new files holding only its
    /// live data, with the server stopped: sled keeps replaced pages, so a
    /// long-lived index takes several times its live data on disk.
    CompactIndex,
    /// Copy the embedded (sled) index into an empty PostgreSQL index and
    /// check the counts; then set `index_url` to use it.
    Migrate {
        /// The PostgreSQL index: postgres://user:password@host:port/dbname.
        #[arg(long)]
        to: String,
    },
    /// Fill an empty index with synthetic instances through the index port
    /// (no pixel data, no blobs) and measure insert rate, bytes per
    /// instance and query latency at each size: the sled index in
    /// --data-dir, or the PostgreSQL database --index-url names. Refuses an
    /// index that holds anything, and a database with other tables.
    BenchIndex {
        /// Instance counts to fill to in turn, measuring at each
        /// (e.g. 100000,1000000).
        #[arg(
            long,
            value_delimiter = ',',
            required_unless_present_any = ["instances", "measure_existing"],
            conflicts_with_all = ["instances", "measure_existing"]
        )]
        sizes: Vec<u64>,
        /// One checkpoint: fill to N instances (the same as --sizes N).
        #[arg(long)]
        instances: Option<u64>,
        /// An empty PostgreSQL database: postgres://user:password@host:port/dbname
        /// (default: the configured index).
        #[arg(long)]
        index_url: Option<String>,
        /// Seed of the synthetic data (same seed, same data).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// How the synthetic UIDs are drawn: random (`2.25.…`) or
        /// increasing (a root and a counter); sled's bytes on disk depend
        /// on it (same style to resume or measure).
        #[arg(long, value_enum, default_value_t = bench_index::UidStyle::Random)]
        uids: bench_index::UidStyle,
        /// Concurrent puts.
        #[arg(long, default_value_t = 4)]
        jobs: usize,
        /// Timed runs of each query per checkpoint.
        #[arg(long, default_value_t = 200)]
        repeat: usize,
        /// Measure the index an earlier run (same --seed) filled, without
        /// inserting: its queries and sizes at its instance count.
        #[arg(long, conflicts_with = "instances")]
        measure_existing: bool,
        /// sled: skip the fresh copy of the index that gives its live bytes
        /// (it reads and writes the whole index: long at 10 M).
        #[arg(long)]
        no_live_copy: bool,
        /// Go on filling the index an earlier run (same --seed) left,
        /// stopped or finished, up to --sizes.
        #[arg(long, conflicts_with = "measure_existing")]
        resume: bool,
        /// Put as the server's stores do: each instance marked as landing,
        /// the marks cleared once its batch is flushed.
        #[arg(long)]
        landing: bool,
    },
    /// Delete a study, a series or an instance (index entry and stored
    /// object; audited). Offline, like import.
    #[command(group(clap::ArgGroup::new("what").required(true).args(["study", "series", "instance"])))]
    Delete {
        /// Study Instance UID.
        #[arg(long)]
        study: Option<String>,
        /// Series Instance UID.
        #[arg(long)]
        series: Option<String>,
        /// SOP Instance UID.
        #[arg(long)]
        instance: Option<String>,
    },
    /// Print what the archive holds.
    Stats {
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Manage local users (while the server is stopped).
    User {
        #[command(subcommand)]
        command: users::UserCommand,
    },
    /// Manage machine tokens (while the server is stopped).
    Token {
        #[command(subcommand)]
        command: users::TokenCommand,
    },
    /// Partner-hospital grants (while the server is stopped).
    Grant {
        #[command(subcommand)]
        command: grants::GrantCommand,
    },
    /// The audit trail under DATA_DIR/audit/: check its chain, search it.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// List the earlier versions of an instance (kept when different
    /// content arrived with its SOP Instance UID), or restore one.
    #[command(args_conflicts_with_subcommands = true)]
    History {
        /// SOP Instance UID.
        sop_instance_uid: Option<String>,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
        #[command(subcommand)]
        action: Option<HistoryAction>,
    },
    /// The durable job queue (storage commitment reports...): list, retry,
    /// delete (while the server is stopped; /api/v1/queue while it runs).
    Queue {
        #[command(subcommand)]
        command: queue::QueueCommand,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check the hash chain; exit 0 when intact, 1 naming the first bad line.
    Verify {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the records that match every key given.
    Search {
        /// Patient ID.
        #[arg(long)]
        patient: Option<String>,
        /// User, token, or AE title.
        #[arg(long)]
        user: Option<String>,
        /// Study Instance UID.
        #[arg(long)]
        study: Option<String>,
        /// From this day (YYYY-MM-DD, UTC) or timestamp, inclusive.
        #[arg(long)]
        from: Option<String>,
        /// To this day (YYYY-MM-DD, UTC) or timestamp, inclusive.
        #[arg(long)]
        to: Option<String>,
        /// Stop after this many records.
        #[arg(long)]
        limit: Option<usize>,
        /// Print the records (with their audit messages) as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum HistoryAction {
    /// Make an earlier version current again (the current content is kept
    /// as a new version).
    Restore {
        /// SOP Instance UID.
        sop_instance_uid: String,
        /// The version number `pacs history UID` lists.
        version: u32,
    },
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // A log line that cannot be written (stderr to a file on a full disk)
    // is dropped. tracing's default reports it with `eprintln!`, which
    // panics when stderr itself fails: that killed whichever thread was
    // logging (the audit writer, a connection), so the server stayed
    // broken after space returned.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .log_internal_errors(false)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let mut flags = Overrides {
        data_dir: cli.data_dir.clone(),
        storage_url: cli.storage_url.clone(),
        ..Overrides::default()
    };
    if let Command::Serve {
        http_listen,
        dimse_listen,
        demo,
    } = &cli.command
    {
        flags.http_listen = http_listen.clone();
        flags.dimse_listen = dimse_listen.clone();
        flags.demo = *demo;
    }
    let config = match Config::load(cli.config.as_deref(), &flags) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve { demo, .. } => {
                serve::run(config, demo).await.map(|_| ExitCode::SUCCESS)
            }
            Command::Import {
                paths,
                report,
                jobs,
                print_stored,
                landing,
            } => {
                commands::import(
                    &config,
                    &paths,
                    report.as_deref(),
                    jobs,
                    print_stored,
                    landing,
                )
                .await
            }
            Command::Get {
                sop_instance_uid,
                output,
            } => commands::get(&config, &sop_instance_uid, output.as_deref()).await,
            Command::Reindex => commands::reindex(&config).await,
            Command::Verify { json } => commands::verify(&config, json).await,
            Command::Stats { json } => commands::stats(&config, json).await,
            Command::Migrate { to } => commands::migrate(&config, &to).await,
            Command::CompactIndex => commands::compact_index(&config),
            Command::BenchIndex {
                sizes,
                instances,
                index_url,
                seed,
                uids,
                jobs,
                repeat,
                measure_existing,
                no_live_copy,
                resume,
                landing,
            } => {
                bench_index::run(
                    &config,
                    bench_index::Options {
                        sizes: instances.map_or(sizes, |n| vec![n]),
                        index_url,
                        seed,
                        uids,
                        jobs,
                        repeat,
                        measure_existing,
                        live_copy: !no_live_copy,
                        resume,
                        landing,
                    },
                )
                .await
            }
            Command::Delete {
                study,
                series,
                instance,
            } => {
                match (study, series, instance) {
                    (Some(u), _, _) => {
                        commands::delete(&config, commands::DeleteTarget::Study(u)).await
                    }
                    (None, Some(u), _) => {
                        commands::delete(&config, commands::DeleteTarget::Series(u)).await
                    }
                    (None, None, Some(u)) => {
                        commands::delete(&config, commands::DeleteTarget::Instance(u)).await
                    }
                    (None, None, None) => Err(anyhow::anyhow!(
                        "name what to delete: --study, --series or --instance"
                    )),
                }
            }
            Command::Audit {
                command: AuditCommand::Verify { json },
            } => audit::verify(&config, json),
            Command::Audit {
                command:
                    AuditCommand::Search {
                        patient,
                        user,
                        study,
                        from,
                        to,
                        limit,
                        json,
                    },
            } => audit::search(
                &config,
                audit::SearchParams {
                    patient,
                    user,
                    study,
                    from,
                    to,
                    limit,
                },
                json,
            ),
            Command::User { command } => users::user(&config, command).await,
            Command::Token { command } => users::token(&config, command).await,
            Command::Grant { command } => grants::grant(&config, command).await,
            Command::History {
                action: Some(HistoryAction::Restore {
                    sop_instance_uid,
                    version,
                }),
                ..
            } => commands::history_restore(&config, &sop_instance_uid, version).await,
            Command::History {
                sop_instance_uid: Some(sop),
                json,
                action: None,
            } => commands::history(&config, &sop, json).await,
            Command::Queue { command } => queue::queue(&config, command).await,
            Command::History { .. } => {
                eprintln!("error: give a SOP Instance UID: pacs history UID, or pacs history restore UID VERSION");
                Ok(ExitCode::from(2))
            }
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
