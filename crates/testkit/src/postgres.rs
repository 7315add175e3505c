//! A real PostgreSQL server for a test: a cluster made by `initdb` in a
//! directory of its own, the `postgres` server started in the foreground
//! on a free loopback port (so its pid is the one this helper holds),
//! stopped by that pid. As root (CI), the server runs as Debian's
//! `postgres` user, since PostgreSQL refuses to run as root.

use crate::{free_port, is_root, wait_until, Process};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The superuser the tests connect as, with a password so the URL form
/// with credentials is what is exercised.
pub const USER: &str = "meta169";
pub const PASSWORD: &str = "meta169-test-password";

/// How long a fresh server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Options for [`Postgres::start_with`].
#[derive(Default)]
pub struct Options {
    /// Server certificate and key (PEM): TLS on, and only TLS connections
    /// accepted over TCP.
    pub tls: Option<(PathBuf, PathBuf)>,
}

/// A running PostgreSQL cluster.
pub struct Postgres {
    process: Option<Process>,
    /// The cluster's directory (data, socket, log), owned by the server's user.
    root: tempfile::TempDir,
    port: u16,
    bin: PathBuf,
}

/// The newest installed server's `bin` directory (Debian:
/// /usr/lib/postgresql/<major>/bin).
pub fn server_bin() -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").exists().then_some((major, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

/// Is a PostgreSQL server installed? (scripts/test installs Debian's.)
pub fn installed() -> bool {
    server_bin().is_some()
}

fn as_server_user(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
            "--",
        ])
        .arg(program);
        c
    } else {
        Command::new(program)
    }
}

impl Postgres {
    pub fn start() -> Postgres {
        Self::start_with(Options::default())
    }

    pub fn start_with(options: Options) -> Postgres {
        let bin = server_bin().expect(
            "PostgreSQL is not installed: scripts/test installs Debian's postgresql package",
        );
        let root = tempfile::Builder::new()
            .prefix("meta169-pg-")
            .tempdir()
            .expect("temp dir");
        let data = root.path().join("data");
        let pwfile = root.path().join("pwfile");
        std::fs::write(&pwfile, PASSWORD).expect("write pwfile");
        if is_root() {
            chown_to_server_user(root.path());
        }
        let out = as_server_user(&bin.join("initdb"))
            .args(["-D"])
            .arg(&data)
            .args([
                "-U",
                USER,
                "--pwfile",
                pwfile.to_str().expect("utf-8 path"),
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let mut hba = String::from("local all all trust\n");
        let mut conf = String::new();
        match &options.tls {
            Some((cert, key)) => {
                let (cert_copy, key_copy) = (data.join("server.crt"), data.join("server.key"));
                std::fs::copy(cert, &cert_copy).expect("copy server certificate");
                std::fs::copy(key, &key_copy).expect("copy server key");
                set_mode(&key_copy, 0o600);
                if is_root() {
                    chown_to_server_user(&cert_copy);
                    chown_to_server_user(&key_copy);
                }
                conf.push_str(
                    "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n",
                );
                hba.push_str("hostssl all all 127.0.0.1/32 scram-sha-256\n");
            }
            None => hba.push_str("host all all 127.0.0.1/32 scram-sha-256\n"),
        }
        std::fs::write(data.join("pg_hba.conf"), hba).expect("write pg_hba.conf");
        let mut postgres = Postgres {
            process: None,
            root,
            port: free_port(),
            bin,
        };
        let mut auto = std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .expect("open postgresql.conf");
        std::io::Write::write_all(&mut auto, conf.as_bytes()).expect("write postgresql.conf");
        postgres.launch();
        postgres
    }

    fn launch(&mut self) {
        let mut command = as_server_user(&self.bin.join("postgres"));
        self.server_args(&mut command);
        let deadline = std::time::Instant::now() + START_TIMEOUT;
        loop {
            // The log goes next to the cluster, readable by the test (root).
            let mut process = Process::start("postgres", command, self.root.path());
            let ready = wait_until(
                deadline.saturating_duration_since(std::time::Instant::now()),
                || process.exited().is_some() || self.try_psql("postgres", "SELECT 1").is_ok(),
            );
            if ready && process.exited().is_none() {
                self.process = Some(process);
                return;
            }
            // Backends of a killed server may hold its shared memory for a
            // moment; the new server refuses to start until they are gone.
            assert!(
                std::time::Instant::now() < deadline,
                "PostgreSQL did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
            command = as_server_user(&self.bin.join("postgres"));
            self.server_args(&mut command);
        }
    }

    fn server_args(&self, command: &mut Command) {
        command
            .arg("-D")
            .arg(self.root.path().join("data"))
            .args(["-p", &self.port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!(
                "unix_socket_directories={}",
                self.root.path().display()
            ))
            // A killed test server loses nothing it acknowledged to a live
            // OS; skipping fsync keeps the suite fast.
            .args(["-c", "fsync=off", "-c", "full_page_writes=off"])
            .args(["-c", "max_connections=200"]);
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().and_then(Process::pid)
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        crate::read_log(&self.root.path().join("postgres.log"))
    }

    /// A URL for `database` with the test credentials over TCP.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://{USER}:{PASSWORD}@127.0.0.1:{}/{database}",
            self.port
        )
    }

    /// Create a database; its URL.
    pub fn create_database(&self, name: &str) -> String {
        self.psql("postgres", &format!("CREATE DATABASE \"{name}\""));
        self.url(name)
    }

    /// Run SQL through psql over the cluster's UNIX socket; its output.
    pub fn psql(&self, database: &str, sql: &str) -> String {
        self.try_psql(database, sql)
            .unwrap_or_else(|e| panic!("psql {sql:?}: {e}"))
    }

    fn try_psql(&self, database: &str, sql: &str) -> Result<String, String> {
        let psql = self.bin.join("psql");
        let out = Command::new(if psql.exists() {
            psql
        } else {
            PathBuf::from("psql")
        })
        .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"])
        .arg(self.root.path())
        .args([
            "-p",
            &self.port.to_string(),
            "-U",
            USER,
            "-d",
            database,
            "-c",
            sql,
        ])
        .output()
        .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Fast shutdown (SIGINT): clients are disconnected, the server exits.
    pub fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.signal(libc::SIGINT);
            let exited = wait_until(Duration::from_secs(10), || process.exited().is_some());
            if !exited {
                process.kill_hard();
            }
        }
    }

    /// SIGKILL: the server vanishes as in a crash (it recovers on start).
    pub fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill_hard();
        }
    }

    /// Start again on the same port and data after [`stop`](Self::stop)
    /// or [`kill`](Self::kill).
    pub fn start_again(&mut self) {
        assert!(self.process.is_none(), "the server is still running");
        // A killed postmaster leaves its pid file; the new one checks it.
        self.launch();
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

fn chown_to_server_user(path: &Path) {
    let out = Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(path)
        .output()
        .expect("run chown");
    assert!(
        out.status.success(),
        "chown {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}
