//! Test support: a throwaway PostgreSQL server.
//!
//! The store conformance suite and the end-to-end tests (which start real
//! node processes) need a real PostgreSQL. [`TempPostgres::start`] gives them
//! one: a fresh cluster in a temporary directory, on a free loopback port,
//! with trust authentication for the `postgres` user, removed again on drop.
//! Each test then takes its own database with
//! [`TempPostgres::fresh_database`].
//!
//! If the environment variable [`URL_ENV`] (`SIGIL_TEST_POSTGRES_URL`) is set,
//! for example to `postgres://postgres@127.0.0.1:5432`, that server is used
//! instead: no process is started and nothing is stopped on drop.
//!
//! Otherwise `initdb`, `pg_ctl` and `psql` are looked up on `PATH` and then
//! under `/usr/lib/postgresql/*/bin` (newest version first); Debian's
//! `postgresql` package provides them (`apt-get install postgresql`). When the
//! tests run as root, the cluster is owned by and run as the `postgres` user
//! (via `runuser`, or `su` if `runuser` is missing), since `initdb` refuses
//! to run as root.
//!
//! This module is for tests only; nothing in it is meant for production.
//!
//! ```no_run
//! # fn main() -> std::io::Result<()> {
//! let pg = sigil_store::testing::TempPostgres::start()?;
//! let url = pg.fresh_database("conformance")?; // postgres://postgres@127.0.0.1:PORT/conformance_1a2b3c4d
//! # let _ = url;
//! # Ok(())
//! # }
//! ```

use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The environment variable naming an existing PostgreSQL server to use
/// instead of starting a throwaway one, e.g. `postgres://postgres@127.0.0.1:5432`.
pub const URL_ENV: &str = "SIGIL_TEST_POSTGRES_URL";

const INSTALL_HINT: &str = "PostgreSQL not installed (apt-get install postgresql)";

/// Where the PostgreSQL binaries are looked for, for messages.
const BIN_DIRS: &str = "PATH or under /usr/lib/postgresql/*/bin";

/// Options the server is started with; `-p` and `-k` are added per cluster.
const SERVER_OPTIONS: &str = "-c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200";

/// How many free ports to try when the first one is taken before the server binds it.
const START_ATTEMPTS: usize = 3;

/// A PostgreSQL server for tests: a throwaway cluster that lives as long as
/// this value, or the external server named by [`URL_ENV`].
///
/// Dropping it stops the throwaway server (`pg_ctl -m immediate stop`) and
/// removes its directory; an external server is left alone.
#[derive(Debug)]
pub struct TempPostgres {
    psql: PathBuf,
    server: Server,
}

#[derive(Debug)]
enum Server {
    /// An existing server: its URL without a database path.
    External(String),
    /// A cluster this value created and owns.
    Local(Local),
}

/// A throwaway cluster: `root/data` (data dir), `root/sock` (Unix socket
/// dir), `root/server.log`.
#[derive(Debug)]
struct Local {
    root: PathBuf,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
}

impl TempPostgres {
    /// Starts a throwaway PostgreSQL cluster, or uses the server named by
    /// [`URL_ENV`] if that is set. Blocks until the server accepts connections.
    ///
    /// # Errors
    /// PostgreSQL is not installed, or a step (`chown`, `initdb`, `pg_ctl
    /// start`) failed; the error names the command and carries its output and
    /// the tail of the server log.
    pub fn start() -> io::Result<Self> {
        if let Some(url) = std::env::var(URL_ENV).ok().filter(|u| !u.trim().is_empty()) {
            return Ok(Self {
                psql: find_psql()?,
                server: Server::External(server_url(&url)),
            });
        }
        let bin = find_bin_dir()?;
        let bundled = bin.join("psql");
        let psql = if bundled.is_file() { bundled } else { find_psql()? };
        let name = format!("sigil-pg-{:016x}", rand::random::<u64>());
        let root = std::env::temp_dir().join(name);
        let what = format!("cannot create {}", root.display());
        std::fs::create_dir(&root).map_err(|e| context(e, &what))?;
        let local = Local {
            root,
            bin,
            port: 0,
            as_postgres: running_as_root(),
        };
        // From here on, dropping `pg` (also on error) removes the directory.
        let mut pg = Self {
            psql,
            server: Server::Local(local),
        };
        pg.local()?.init()?;
        pg.first_start()?;
        Ok(pg)
    }

    /// The server's URL without a database, e.g. `postgres://postgres@127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        match &self.server {
            Server::External(url) => url.clone(),
            Server::Local(local) => format!("postgres://postgres@127.0.0.1:{}", local.port),
        }
    }

    /// Creates the database `name` and returns its URL, `base_url()/name`.
    ///
    /// # Errors
    /// [`io::ErrorKind::InvalidInput`] if `name` is not `[a-z0-9_]{1,48}`;
    /// otherwise `psql` failed (e.g. the database exists or the server is down).
    pub fn create_database(&self, name: &str) -> io::Result<String> {
        validate_name(name)?;
        let mut cmd = Command::new(&self.psql);
        cmd.arg("-X");
        match &self.server {
            Server::Local(local) => {
                let port = local.port.to_string();
                cmd.args(["-h", "127.0.0.1", "-p", port.as_str()]);
                cmd.args(["-U", "postgres", "-d", "postgres"]);
            }
            Server::External(url) => {
                cmd.arg("-d").arg(format!("{url}/postgres"));
            }
        }
        cmd.args(["-v", "ON_ERROR_STOP=1", "-c"]);
        cmd.arg(format!("CREATE DATABASE \"{name}\""));
        run(cmd)?;
        Ok(format!("{}/{name}", self.base_url()))
    }

    /// Creates a database named `prefix_XXXXXXXX` (a random 8-hex-digit
    /// suffix; just the suffix if `prefix` is empty), so that no two checks
    /// share a database, and returns its URL.
    ///
    /// # Errors
    /// As [`TempPostgres::create_database`]; `prefix` may be at most 39
    /// characters of `[a-z0-9_]`.
    pub fn fresh_database(&self, prefix: &str) -> io::Result<String> {
        let suffix = format!("{:08x}", rand::random::<u32>());
        let name = if prefix.is_empty() {
            suffix
        } else {
            format!("{prefix}_{suffix}")
        };
        self.create_database(&name)
    }

    /// Stops the server (`pg_ctl -m fast stop`) and waits until it is down,
    /// keeping its data; [`TempPostgres::start_server`] brings it back. Tests
    /// use this to simulate losing the database while a node runs.
    ///
    /// # Errors
    /// [`io::ErrorKind::Unsupported`] for an external server; otherwise
    /// `pg_ctl` failed (e.g. the server is not running).
    pub fn stop_server(&self) -> io::Result<()> {
        let local = self.local()?;
        let mut cmd = local.pg_ctl();
        cmd.args(["-m", "fast", "-w", "-t", "60", "stop"]);
        run(local.as_server_user(cmd)).map(drop)
    }

    /// Starts the server again on the same port and data directory, and
    /// waits until it accepts connections.
    ///
    /// # Errors
    /// [`io::ErrorKind::Unsupported`] for an external server; otherwise
    /// `pg_ctl` failed (e.g. the server is already running), with the tail of
    /// the server log.
    pub fn start_server(&self) -> io::Result<()> {
        let local = self.local()?;
        let sock = shell_quote(&local.sock_dir().to_string_lossy());
        let options = format!("-p {} -k {sock} {SERVER_OPTIONS}", local.port);
        let mut cmd = local.pg_ctl();
        cmd.arg("-l").arg(local.log_file());
        cmd.args(["-w", "-t", "60", "-o"]).arg(options).arg("start");
        match run(local.as_server_user(cmd)) {
            Ok(_) => Ok(()),
            Err(e) => Err(with_log_tail(e, &local.log_file())),
        }
    }

    /// Starts the new cluster on a free port, trying another port if the
    /// chosen one was taken in the meantime.
    fn first_start(&mut self) -> io::Result<()> {
        let mut last = io::Error::other("PostgreSQL did not start");
        for _ in 0..START_ATTEMPTS {
            if let Server::Local(local) = &mut self.server {
                local.port = free_port()?;
            }
            match self.start_server() {
                Ok(()) => return Ok(()),
                Err(e) if e.to_string().contains("already in use") => last = e,
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    fn local(&self) -> io::Result<&Local> {
        match &self.server {
            Server::Local(local) => Ok(local),
            Server::External(url) => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("the external PostgreSQL server {url} ({URL_ENV}) cannot be stopped or started"),
            )),
        }
    }
}

impl Drop for TempPostgres {
    fn drop(&mut self) {
        if let Server::Local(local) = &self.server {
            if local.data_dir().join("postmaster.pid").exists() {
                let mut cmd = local.pg_ctl();
                cmd.args(["-m", "immediate", "-w", "-t", "60", "stop"]);
                let _ = run(local.as_server_user(cmd));
            }
            let _ = std::fs::remove_dir_all(&local.root);
        }
    }
}

impl Local {
    fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    fn sock_dir(&self) -> PathBuf {
        self.root.join("sock")
    }

    fn log_file(&self) -> PathBuf {
        self.root.join("server.log")
    }

    /// Creates the socket directory, hands the tree to `postgres` if we are
    /// root, and runs `initdb`.
    fn init(&self) -> io::Result<()> {
        std::fs::create_dir(self.sock_dir())?;
        if self.as_postgres {
            let mut chown = Command::new(find_program("chown").unwrap_or_else(|| PathBuf::from("chown")));
            chown.arg("-R").arg("postgres:postgres").arg(&self.root);
            run(chown)?;
        }
        let mut cmd = Command::new(self.bin.join("initdb"));
        cmd.arg("-D").arg(self.data_dir());
        cmd.args(["-A", "trust", "-U", "postgres"]);
        cmd.args(["--no-sync", "-E", "UTF8", "--locale=C"]);
        match run(self.as_server_user(cmd)) {
            Ok(_) => Ok(()),
            Err(e) if self.as_postgres => {
                let hint = format!("(the postgres user must be able to reach {})", self.root.display());
                Err(io::Error::new(e.kind(), format!("{e}\n{hint}")))
            }
            Err(e) => Err(e),
        }
    }

    /// `pg_ctl -D DATA`, for the caller to add the action to.
    fn pg_ctl(&self) -> Command {
        let mut cmd = Command::new(self.bin.join("pg_ctl"));
        cmd.arg("-D").arg(self.data_dir());
        cmd
    }

    /// `cmd`, run as the `postgres` user if we are root, from the cluster's
    /// directory (which that user can enter).
    fn as_server_user(&self, cmd: Command) -> Command {
        if !self.as_postgres {
            return cmd;
        }
        let argv: Vec<&OsStr> = std::iter::once(cmd.get_program()).chain(cmd.get_args()).collect();
        let mut wrapped = match find_program("runuser") {
            Some(runuser) => {
                let mut w = Command::new(runuser);
                w.args(["-u", "postgres", "--"]).args(&argv);
                w
            }
            None => {
                let mut w = Command::new(find_program("su").unwrap_or_else(|| PathBuf::from("su")));
                w.args(["postgres", "-s", "/bin/sh", "-c"]).arg(shell_join(&argv));
                w
            }
        };
        wrapped.current_dir(&self.root);
        wrapped
    }
}

/// Runs `cmd` to completion with no input; an error names the command and
/// carries its stderr and stdout.
fn run(mut cmd: Command) -> io::Result<Output> {
    let shown = describe(&cmd);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| context(e, &format!("cannot run `{shown}`")))?;
    if out.status.success() {
        return Ok(out);
    }
    let mut message = format!("`{shown}` failed ({})", out.status);
    for stream in [&out.stderr, &out.stdout] {
        let text = String::from_utf8_lossy(stream);
        if !text.trim().is_empty() {
            message.push('\n');
            message.push_str(text.trim_end());
        }
    }
    Err(io::Error::other(message))
}

/// `err` with `what` in front of its message, keeping its kind.
fn context(err: io::Error, what: &str) -> io::Error {
    io::Error::new(err.kind(), format!("{what}: {err}"))
}

/// `err` followed by the last lines of the server log.
fn with_log_tail(err: io::Error, log: &Path) -> io::Error {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(20);
    let tail = lines.get(start..).unwrap_or_default().join("\n");
    io::Error::new(err.kind(), format!("{err}\nserver log {}:\n{tail}", log.display()))
}

/// The command line as a shell would read it, for messages and for `su -c`.
fn describe(cmd: &Command) -> String {
    let argv: Vec<&OsStr> = std::iter::once(cmd.get_program()).chain(cmd.get_args()).collect();
    shell_join(&argv)
}

fn shell_join(argv: &[&OsStr]) -> String {
    let words: Vec<String> = argv.iter().map(|a| shell_quote(&a.to_string_lossy())).collect();
    words.join(" ")
}

/// `word` quoted for `/bin/sh` if it needs quoting.
fn shell_quote(word: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "-_./=:@,+".contains(c);
    let plain = !word.is_empty() && word.chars().all(safe);
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// The URL of an external server without any database path or query.
fn server_url(url: &str) -> String {
    let url = url.trim();
    let (scheme, rest) = url.split_once("://").unwrap_or(("postgres", url));
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    format!("{scheme}://{authority}")
}

fn validate_name(name: &str) -> io::Result<()> {
    let valid_char = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_';
    if (1..=48).contains(&name.len()) && name.bytes().all(valid_char) {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid database name {name:?}: want [a-z0-9_]{{1,48}}"),
        ))
    }
}

/// Whether the effective user is root, from `/proc/self/status` or `id -u`.
fn running_as_root() -> bool {
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        if let Some(line) = status.lines().find(|l| l.starts_with("Uid:")) {
            // "Uid: real effective saved filesystem"
            return line.split_whitespace().nth(2) == Some("0");
        }
    }
    Command::new("id")
        .arg("-u")
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A free loopback TCP port (free when this returns; the OS may reuse it later).
fn free_port() -> io::Result<u16> {
    Ok(std::net::TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port())
}

/// The directory holding `initdb` and `pg_ctl`: the first on `PATH`, else the
/// newest `/usr/lib/postgresql/*/bin`. Symlinks are followed, so `psql` and
/// `postgres` are found next to them.
fn find_bin_dir() -> io::Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    dirs.extend(versioned_bin_dirs());
    let has_both = |p: &PathBuf| p.is_file() && p.with_file_name("pg_ctl").is_file();
    let Some(initdb) = dirs.iter().map(|d| d.join("initdb")).find(has_both) else {
        let message = format!("{INSTALL_HINT}: no initdb and pg_ctl on {BIN_DIRS} (or set {URL_ENV})");
        return Err(io::Error::new(io::ErrorKind::NotFound, message));
    };
    let real = std::fs::canonicalize(&initdb).unwrap_or_else(|_| initdb.clone());
    let real_dir = real.parent().filter(|d| d.join("pg_ctl").is_file());
    let dir = real_dir.or_else(|| initdb.parent()).map(Path::to_path_buf);
    dir.ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, INSTALL_HINT))
}

/// `/usr/lib/postgresql/VERSION/bin`, newest version first.
fn versioned_bin_dirs() -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") else {
        return Vec::new();
    };
    let mut found: Vec<(Vec<u32>, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name();
            let parts = name.to_str()?.split('.');
            let version: Option<Vec<u32>> = parts.map(|p| p.parse().ok()).collect();
            Some((version?, entry.path().join("bin")))
        })
        .collect();
    found.sort();
    found.into_iter().rev().map(|(_, dir)| dir).collect()
}

/// `psql` on `PATH` or in the newest `/usr/lib/postgresql/*/bin`.
fn find_psql() -> io::Result<PathBuf> {
    let bundled = versioned_bin_dirs().into_iter().map(|d| d.join("psql"));
    let mut candidates = find_program("psql").into_iter().chain(bundled);
    let not_found = || io::Error::new(io::ErrorKind::NotFound, format!("{INSTALL_HINT}: no psql found"));
    candidates.find(|p| p.is_file()).ok_or_else(not_found)
}

/// `name` on `PATH`, or in the system directories (`runuser` lives in `/usr/sbin`), so a
/// test that narrows `PATH` still finds `chown`, `runuser` and `su`.
fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let system = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from);
    let dirs = std::env::split_paths(&path).chain(system);
    dirs.map(|d| d.join(name)).find(|p| p.is_file())
}
