//! A throwaway PostgreSQL cluster: `initdb` and `pg_ctl` on 127.0.0.1, a
//! free port, a temporary directory; stopped by its PID when dropped.
//!
//! The server binaries are looked up in `PACS_PG_BINDIR`, else in the
//! newest `/usr/lib/postgresql/<version>/bin` (Debian's `postgresql` package
//! does not put them on PATH). PostgreSQL refuses to run as root, so as
//! root the cluster belongs to the `postgres` user (or `nobody`) and its
//! commands run through `runuser`. A missing PostgreSQL follows the peers
//! policy ([`crate::peers::missing`]).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A running cluster. Connect with [`TestPostgres::url`]; databases made
/// with [`TestPostgres::create_database`].
pub struct TestPostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    pid: u32,
    run_as: Option<String>,
}

/// The directory of `initdb`, `pg_ctl` and `createdb`, if PostgreSQL is
/// installed.
pub fn bindir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("PACS_PG_BINDIR") {
        return Some(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn id_of(user: &str, flag: &str) -> Option<u32> {
    let out = Command::new("id").args([flag, user]).output().ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

impl TestPostgres {
    /// Starts a cluster, or returns `None` after [`crate::peers::missing`]
    /// when PostgreSQL is not installed. Panics if it cannot start.
    pub fn start() -> Option<TestPostgres> {
        Self::start_with(None)
    }

    /// [`TestPostgres::start`] with TLS on (`ssl=on`), serving the PEM
    /// certificate chain `cert` with its key `key`; plain connections are
    /// still accepted.
    pub fn start_tls(cert: &Path, key: &Path) -> Option<TestPostgres> {
        Self::start_with(Some((cert, key)))
    }

    fn start_with(tls: Option<(&Path, &Path)>) -> Option<TestPostgres> {
        let Some(bin) = bindir() else {
            return crate::peers::missing(
                "PostgreSQL is not installed (apt-get install postgresql)",
            );
        };
        let run_as = if is_root() {
            ["postgres", "nobody"]
                .into_iter()
                .find(|u| id_of(u, "-u").is_some())
                .map(str::to_owned)
        } else {
            None
        };
        let dir = tempfile::Builder::new()
            .prefix("pacs-pg-")
            .tempdir()
            .expect("temporary directory");
        if let Some(user) = &run_as {
            let uid = id_of(user, "-u");
            let gid = id_of(user, "-g");
            std::os::unix::fs::chown(dir.path(), uid, gid).expect("chown the cluster directory");
        }
        let port = crate::net::free_port();
        let mut pg = TestPostgres {
            dir,
            bin,
            port,
            pid: 0,
            run_as,
        };
        let data = pg.data_dir();
        pg.run(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "pacs",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
        );
        let mut options = format!(
            "-c listen_addresses=127.0.0.1 -p {port} -k {} -c fsync=off -c max_connections=200",
            pg.dir.path().display()
        );
        if let Some((cert, key)) = tls {
            // The server reads them as the cluster's owner, the key private.
            for (from, name) in [(cert, "server.crt"), (key, "server.key")] {
                let to = Path::new(&data).join(name);
                std::fs::copy(from, &to).expect("copy the server's certificate");
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600))
                    .expect("chmod the server's key");
                if let Some(user) = &pg.run_as {
                    std::os::unix::fs::chown(&to, id_of(user, "-u"), id_of(user, "-g"))
                        .expect("chown the server's certificate");
                }
            }
            options.push_str(" -c ssl=on");
        }
        let log = pg.dir.path().join("server.log").display().to_string();
        pg.run(
            "pg_ctl",
            &[
                "-D", &data, "-l", &log, "-o", &options, "-w", "-t", "60", "start",
            ],
        );
        let pidfile = std::fs::read_to_string(Path::new(&data).join("postmaster.pid"))
            .expect("postmaster.pid");
        pg.pid = pidfile
            .lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
            .expect("the postmaster's PID");
        Some(pg)
    }

    fn data_dir(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    /// Runs one of the server's tools (as the cluster's owner), panicking
    /// with its output if it fails.
    fn run(&self, tool: &str, args: &[&str]) {
        let exe = self.bin.join(tool);
        let mut cmd = match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        let out = cmd
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", exe.display()));
        assert!(
            out.status.success(),
            "{tool} failed: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
        );
    }

    /// The output of `psql -At -c sql` on database `db` (as `pacs`).
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "pacs",
                "-d",
                db,
            ])
            .args(["-At", "-c", sql])
            .output()
            .unwrap_or_else(|e| panic!("cannot run psql: {e}"));
        assert!(
            out.status.success(),
            "psql failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of database `db` on this cluster (user `pacs`, no password).
    pub fn url_of(&self, db: &str) -> String {
        format!("postgres://pacs@127.0.0.1:{}/{db}", self.port)
    }

    /// The URL of the default database.
    pub fn url(&self) -> String {
        self.url_of("postgres")
    }

    /// Creates database `name` (letters, digits and `_`) and returns its
    /// URL.
    pub fn create_database(&self, name: &str) -> String {
        assert!(name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
        let port = self.port.to_string();
        self.run(
            "createdb",
            &["-h", "127.0.0.1", "-p", &port, "-U", "pacs", name],
        );
        self.url_of(name)
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        if self.pid == 0 {
            return;
        }
        // SIGINT: PostgreSQL's fast shutdown.
        let pid = self.pid.to_string();
        let _ = Command::new("kill").args(["-INT", &pid]).status();
        let proc_dir = PathBuf::from(format!("/proc/{pid}"));
        for _ in 0..200 {
            if !proc_dir.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = Command::new("kill").args(["-KILL", &pid]).status();
    }
}
