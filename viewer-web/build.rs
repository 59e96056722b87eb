//! Builds the browser viewer (`app/`, TypeScript + Vite) and embeds it.
//!
//! 1. Unless `SEN_PACS_VIEWER_DIST` names a prebuilt `dist` directory, runs
//!    `npm ci` in `app/` (only when `node_modules` is missing or
//!    `package-lock.json` changed since the last install: a copy of the lock
//!    file is kept in `node_modules/.sen-pacs-lock`) and then `vite build`
//!    into `OUT_DIR/dist`. Both steps hold an exclusive lock on
//!    `app/.build.lock`, so cargo building two profiles at once does not run
//!    two installs into the same `node_modules`.
//! 2. Compresses the text and WebAssembly files with gzip (kept only when
//!    smaller) and writes `OUT_DIR/assets.rs`: a table of every file with its
//!    URL path, MIME type, ETag and `include_bytes!` bodies.
//!
//! The repository keeps no build output; see ARCHITECTURE.md ("Viewer").

use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn main() {
    if let Err(e) = run() {
        // A panic would print a backtrace hint; an error line and exit 1 read better.
        eprintln!("\nerror: building the Sen PACS viewer failed: {e}\n");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let manifest_dir = PathBuf::from(env_var("CARGO_MANIFEST_DIR")?);
    let out_dir = PathBuf::from(env_var("OUT_DIR")?);
    let app = manifest_dir.join("app");

    println!("cargo:rerun-if-env-changed=SEN_PACS_VIEWER_DIST");
    let dist = match std::env::var_os("SEN_PACS_VIEWER_DIST") {
        Some(d) if !d.is_empty() => {
            let d = PathBuf::from(d);
            if !d.join("index.html").is_file() {
                return Err(format!(
                    "SEN_PACS_VIEWER_DIST={} has no index.html: point it at the output of \
                     `npm ci && npm run build` in viewer-web/app (its dist/ directory)",
                    d.display()
                )
                .into());
            }
            // include_bytes! resolves relative paths against the including file.
            let d = fs::canonicalize(&d)?;
            println!("cargo:rerun-if-changed={}", d.display());
            d
        }
        _ => {
            for p in [
                "src",
                "public",
                "index.html",
                "package.json",
                "package-lock.json",
                "vite.config.ts",
                "vite-viewer-page.ts",
                "tsconfig.json",
            ] {
                println!("cargo:rerun-if-changed={}", app.join(p).display());
            }
            let dist = out_dir.join("dist");
            build_app(&app, &dist)?;
            dist
        }
    };
    write_table(&dist, &out_dir)
}

fn env_var(name: &str) -> Result<String> {
    std::env::var(name).map_err(|_| format!("{name} is not set (run through cargo)").into())
}

fn npm() -> &'static str {
    if cfg!(windows) {
        "npm.cmd"
    } else {
        "npm"
    }
}

fn build_app(app: &Path, dist: &Path) -> Result<()> {
    let found = Command::new(npm()).arg("--version").output();
    match found {
        Ok(o) if o.status.success() => {}
        _ => {
            return Err(
                "`npm` was not found. The viewer is a TypeScript app built with npm \
                 at compile time: install Node.js 20 or newer with npm \
                 (e.g. `apt-get install nodejs npm`, or from https://nodejs.org), \
                 or set SEN_PACS_VIEWER_DIST to a prebuilt viewer-web/app/dist directory"
                    .into(),
            )
        }
    }

    // Vite 8 needs Node.js 20.19+; an older node fails later with an obscure error.
    let node = Command::new("node")
        .arg("--version")
        .output()
        .map_err(|e| format!("`node` was not found ({e}): install Node.js 20 or newer"))?;
    let version = String::from_utf8_lossy(&node.stdout).trim().to_owned();
    let major: u32 = version
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    if major < 20 {
        return Err(format!(
            "node {version} is too old to build the viewer: install Node.js 20 or newer \
             (or set SEN_PACS_VIEWER_DIST to a prebuilt viewer-web/app/dist directory)"
        )
        .into());
    }

    let lock_file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(app.join(".build.lock"))?;
    fs2::FileExt::lock_exclusive(&lock_file)?;

    let lock = fs::read(app.join("package-lock.json"))?;
    let stamp = app.join("node_modules/.sen-pacs-lock");
    let installed = fs::read(&stamp).ok();
    if installed.as_deref() != Some(lock.as_slice()) {
        eprintln!("viewer-web: npm ci");
        run_cmd(
            Command::new(npm())
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(app),
            "npm ci",
        )?;
        fs::write(&stamp, &lock)?;
    }

    let vite = app.join("node_modules/vite/bin/vite.js");
    run_cmd(
        Command::new("node")
            .arg(&vite)
            .args(["build", "--logLevel", "warn"])
            .env("VIEWER_OUT_DIR", dist)
            .current_dir(app),
        "vite build",
    )?;
    fs2::FileExt::unlock(&lock_file)?;
    Ok(())
}

fn run_cmd(cmd: &mut Command, what: &str) -> Result<()> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {what}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{what} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    // Warnings (e.g. large chunks) stay visible with `cargo build -vv`.
    std::io::stderr().write_all(&out.stderr)?;
    Ok(())
}

fn mime(path: &str) -> &'static str {
    let ext = path.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
    match ext.to_ascii_lowercase().as_str() {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "wasm" => "application/wasm",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "woff" => "font/woff",
        "txt" => "text/plain; charset=utf-8",
        "webmanifest" => "application/manifest+json",
        _ => "application/octet-stream",
    }
}

fn compressible(mime: &str) -> bool {
    mime.starts_with("text/")
        || mime == "application/wasm"
        || mime == "application/json"
        || mime == "image/svg+xml"
        || mime == "application/manifest+json"
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for e in fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            walk(&p, out)?;
        } else {
            out.push(p);
        }
    }
    Ok(())
}

fn write_table(dist: &Path, out_dir: &Path) -> Result<()> {
    let mut paths = Vec::new();
    walk(dist, &mut paths)?;
    let mut files = Vec::new();
    for f in paths {
        let rel = f
            .strip_prefix(dist)?
            .to_str()
            .ok_or("non-UTF-8 file name in the viewer build")?
            .replace('\\', "/");
        files.push((format!("/{rel}"), f));
    }
    // Sorted by URL path: the server looks files up by binary search.
    files.sort();
    let gz_dir = out_dir.join("gz");
    // Files of earlier builds (other content hashes) must not pile up.
    if gz_dir.exists() {
        fs::remove_dir_all(&gz_dir)?;
    }
    let mut table = String::from("pub static ASSETS: &[Asset] = &[\n");
    let mut total = 0u64;
    let mut total_gz = 0u64;
    for (url, f) in &files {
        let body = fs::read(f)?;
        let mime = mime(url);
        let etag = hex(&Sha256::digest(&body)[..12]);
        let mut gzip = "None".to_owned();
        let mut sent = body.len() as u64;
        if compressible(mime) && body.len() > 512 {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            enc.write_all(&body)?;
            let gz = enc.finish()?;
            if gz.len() + 64 < body.len() {
                let gz_path = gz_dir.join(format!("{}.gz", &url[1..]));
                if let Some(parent) = gz_path.parent() {
                    fs::create_dir_all(parent)?;
                }
                fs::write(&gz_path, &gz)?;
                sent = gz.len() as u64;
                gzip = format!("Some(include_bytes!({:?}))", path_str(&gz_path)?);
            }
        }
        total += body.len() as u64;
        total_gz += sent;
        writeln!(
            table,
            "    Asset {{ path: {:?}, mime: {:?}, etag: {:?}, body: include_bytes!({:?}), gzip: {gzip} }},",
            url,
            mime,
            format!("\"{etag}\""),
            path_str(f)?,
        )?;
    }
    table.push_str("];\n");
    writeln!(
        table,
        "/// Bytes of the viewer build, and bytes sent when every compressible file goes gzipped.\n\
         pub const BUNDLE_BYTES: u64 = {total};\npub const BUNDLE_GZIP_BYTES: u64 = {total_gz};"
    )?;
    fs::write(out_dir.join("assets.rs"), table)?;
    Ok(())
}

fn path_str(p: &Path) -> Result<&str> {
    p.to_str()
        .ok_or_else(|| format!("non-UTF-8 path {}", p.display()).into())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}
