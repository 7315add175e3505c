//! The one place meta169's tests start real components: processes (our own
//! binary, Python with cloud-init), network namespaces. Every component is
//! started here, the same way for every test, and stopped by the process id
//! or name this helper created — never by a name search.

pub mod agent_slot;
pub mod guest;
pub mod ovn;
pub mod postgres;
pub mod sb;
pub mod spoof;

pub use agent_slot::{agent_slot, AgentSlot};

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Debian's Python, which sees Debian's cloud-init package.
pub const SYSTEM_PYTHON: &str = "/usr/bin/python3";

/// A started process, stopped (SIGTERM, then SIGKILL) by its pid on drop.
pub struct Process {
    child: Option<Child>,
    name: String,
}

impl Process {
    /// Start `command` with stdout/stderr captured to files in `log_dir`.
    pub fn start(name: &str, mut command: Command, log_dir: &Path) -> Process {
        let out =
            std::fs::File::create(log_dir.join(format!("{name}.log"))).expect("create log file");
        let err = out.try_clone().expect("clone log file");
        command.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({command:?}): {e}"));
        Process {
            child: Some(child),
            name: name.to_string(),
        }
    }

    /// The process id, while the process has not been stopped or killed.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Send `signal` to the process; false if it is already stopped. Never
    /// signals pid 0 (which would reach the whole process group).
    pub fn signal(&self, signal: i32) -> bool {
        let Some(pid) = self
            .pid()
            .and_then(|p| i32::try_from(p).ok())
            .filter(|p| *p > 0)
        else {
            return false;
        };
        // SAFETY: kill(2) on the pid of a child we started and have not reaped.
        unsafe { libc::kill(pid, signal) == 0 }
    }

    /// SIGKILL, no chance to clean up: what a crash looks like.
    pub fn kill_hard(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Has it exited? Returns its status if so.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// SIGTERM, wait up to 5 s, then SIGKILL.
    pub fn stop(&mut self) {
        self.signal(libc::SIGTERM);
        let Some(mut child) = self.child.take() else {
            return;
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("{} did not stop on SIGTERM; killing", self.name);
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Wait until something accepts TCP connections on `addr`.
pub fn wait_for_tcp(addr: SocketAddr, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// One HTTP GET (`Connection: close`) on a fresh connection from `source`,
/// any local address (a namespace's, or one of loopback's 127/8): the
/// status (0 when the answer has none) and the body.
pub fn http_get_from(
    source: std::net::IpAddr,
    target: SocketAddr,
    path: &str,
    connect_timeout: Duration,
    read_timeout: Duration,
) -> std::io::Result<(u16, String)> {
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: 169.254.169.254\r\nConnection: close\r\n\r\n");
    send_from(
        Some(source),
        target,
        request.as_bytes(),
        connect_timeout,
        read_timeout,
    )
}

/// Send the raw bytes of `request` from `source` (any local address, or
/// the calling thread's namespace's when `None`) to `target` on a fresh
/// connection and read to the end: (status, body), status 0 when the
/// answer has none.
pub fn send_from(
    source: Option<std::net::IpAddr>,
    target: SocketAddr,
    request: &[u8],
    connect_timeout: Duration,
    read_timeout: Duration,
) -> std::io::Result<(u16, String)> {
    use std::io::Write;
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(target),
        socket2::Type::STREAM,
        None,
    )?;
    if let Some(source) = source {
        socket.bind(&SocketAddr::new(source, 0).into())?;
    }
    socket.connect_timeout(&target.into(), connect_timeout)?;
    let mut stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(read_timeout))?;
    stream.write_all(request)?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    let text = String::from_utf8_lossy(&answer);
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// Wait until `probe` returns true.
pub fn wait_until(timeout: Duration, mut probe: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if probe() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// A free TCP port on loopback (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}

fn run(command: &mut Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `ip <args>` in the test's own namespace; panics with ip's message on failure.
pub fn ip(args: &[&str]) -> String {
    run(Command::new("ip").args(args))
}

/// Are we root (namespaces need it)?
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

static NETNS_COUNTER: AtomicU32 = AtomicU32::new(0);

/// A network namespace created for one test and deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// Create `m169t-<pid>-<n>-<tag>` with loopback up.
    pub fn new(tag: &str) -> Netns {
        assert!(is_root(), "network namespace tests run as root (CI does)");
        let n = NETNS_COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("m169t-{}-{n}-{tag}", std::process::id());
        run(Command::new("ip").args(["netns", "add", &name]));
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        // dhclient and friends must not touch the host's resolv.conf.
        let etc = PathBuf::from("/etc/netns").join(&ns.name);
        let _ = std::fs::create_dir_all(&etc);
        let _ = std::fs::write(etc.join("resolv.conf"), "");
        ns
    }

    /// `ip <args>` inside the namespace.
    pub fn ip(&self, args: &[&str]) -> String {
        run(Command::new("ip").args(["-n", &self.name]).args(args))
    }

    /// A command that runs inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .status();
        let _ = std::fs::remove_dir_all(PathBuf::from("/etc/netns").join(&self.name));
    }
}

/// Run a Python script with Debian's Python (which has cloud-init), return stdout.
/// Panics with the script's stderr when it fails.
pub fn python(script: &Path, args: &[&str], netns: Option<&Netns>) -> String {
    assert!(
        Path::new(SYSTEM_PYTHON).exists(),
        "{SYSTEM_PYTHON} is missing: run scripts/test, which installs cloud-init"
    );
    let mut command = match netns {
        Some(ns) => ns.command(SYSTEM_PYTHON),
        None => Command::new(SYSTEM_PYTHON),
    };
    command.arg(script).args(args);
    let output = command.output().expect("run python");
    assert!(
        output.status.success(),
        "{} failed:\n{}\n{}",
        script.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Scrape a Prometheus `/metrics` URL with the Prometheus project's own
/// Python parser: the samples as (name, labels, value).
pub fn scrape(url: &str) -> Vec<(String, std::collections::BTreeMap<String, String>, f64)> {
    let out = python(&clients_dir().join("prometheus_scrape.py"), &[url], None);
    let samples: Vec<(String, std::collections::BTreeMap<String, String>, f64)> =
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("scrape of {url} is not JSON ({e}): {out}"));
    samples
}

/// The value of the sample `name` whose labels include all of `labels`
/// (summed over the others), or 0 when there is none.
pub fn sample(
    samples: &[(String, std::collections::BTreeMap<String, String>, f64)],
    name: &str,
    labels: &[(&str, &str)],
) -> f64 {
    samples
        .iter()
        .filter(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, value)| value)
        .sum()
}

/// Is Debian's cloud-init importable?
pub fn cloud_init_installed() -> bool {
    Command::new(SYSTEM_PYTHON)
        .args(["-c", "import cloudinit.sources.helpers.openstack"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Read a whole file into a string, or "" if it cannot be read (for logs).
pub fn read_log(path: &Path) -> String {
    let mut s = String::new();
    if let Ok(f) = std::fs::File::open(path) {
        let _ = BufReader::new(f).read_to_string(&mut s);
    }
    s
}

/// Lines of a log file that contain `needle`.
pub fn log_lines_with(path: &Path, needle: &str) -> Vec<String> {
    std::fs::File::open(path)
        .map(|f| {
            BufReader::new(f)
                .lines()
                .map_while(Result::ok)
                .filter(|l| l.contains(needle))
                .collect()
        })
        .unwrap_or_default()
}

/// A temporary directory for a test's files and logs.
pub fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("meta169-test-")
        .tempdir()
        .expect("temp dir")
}

/// Run a command to completion and return its stdout; panic with stderr if it fails.
pub fn run_tool(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {program} (run scripts/test, which installs it): {e}")
        });
    assert!(
        output.status.success(),
        "{program} {args:?} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `blkid -p -o export` of an image file, as key → value.
pub fn blkid(image: &Path) -> std::collections::BTreeMap<String, String> {
    run_tool("blkid", &["-p", "-o", "export", &image.to_string_lossy()])
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Extract a whole ISO 9660 image with xorriso (Rock Ridge names) into `dir`.
pub fn extract_iso(image: &Path, dir: &Path) {
    run_tool(
        "xorriso",
        &[
            "-osirrox",
            "on",
            "-indev",
            &image.to_string_lossy(),
            "-extract",
            "/",
            &dir.to_string_lossy(),
        ],
    );
}

/// Extract a whole VFAT image with mtools' mcopy into `dir`.
pub fn extract_vfat(image: &Path, dir: &Path) {
    std::fs::create_dir_all(dir).expect("create extract dir");
    run_tool(
        "mcopy",
        &[
            "-s",
            "-n",
            "-i",
            &image.to_string_lossy(),
            "::/*",
            &dir.to_string_lossy(),
        ],
    );
}

/// Every file below `dir`, as relative path → bytes.
pub fn read_tree(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    fn walk(base: &Path, dir: &Path, out: &mut std::collections::BTreeMap<String, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).expect("read dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                walk(base, &path, out);
            } else {
                let rel = path
                    .strip_prefix(base)
                    .expect("below base")
                    .to_string_lossy()
                    .into_owned();
                out.insert(rel, std::fs::read(&path).expect("read file"));
            }
        }
    }
    let mut out = std::collections::BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// OVN's Southbound schema, from Debian's ovn-common.
pub const OVN_SB_SCHEMA: &str = "/usr/share/ovn/ovn-sb.ovsschema";
/// OVN's Northbound schema.
pub const OVN_NB_SCHEMA: &str = "/usr/share/ovn/ovn-nb.ovsschema";
/// Open vSwitch's schema, from Debian's openvswitch-common.
pub const VSWITCH_SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";

/// A real `ovsdb-server` on a unix socket in a test directory, with a
/// database created from a schema file by `ovsdb-tool`. Stopped by its pid.
pub struct OvsdbServer {
    process: Option<Process>,
    pub name: String,
    pub dir: PathBuf,
    pub db_file: PathBuf,
    pub socket: PathBuf,
    /// Extra `--remote` arguments (e.g. `pssl:PORT:127.0.0.1`) and options.
    pub extra_args: Vec<String>,
}

impl OvsdbServer {
    /// Create the database (if new) and start the server.
    pub fn start(name: &str, schema: &str, dir: &Path) -> OvsdbServer {
        Self::start_with(name, schema, dir, Vec::new())
    }

    pub fn start_with(
        name: &str,
        schema: &str,
        dir: &Path,
        extra_args: Vec<String>,
    ) -> OvsdbServer {
        assert!(
            Path::new(schema).exists(),
            "{schema} is missing: run scripts/test, which installs ovn-central and openvswitch"
        );
        let db_file = dir.join(format!("{name}.db"));
        if !db_file.exists() {
            run(Command::new("ovsdb-tool")
                .arg("create")
                .arg(&db_file)
                .arg(schema));
        }
        let mut server = OvsdbServer {
            process: None,
            name: name.to_string(),
            dir: dir.to_path_buf(),
            socket: dir.join(format!("{name}.sock")),
            db_file,
            extra_args,
        };
        server.restart();
        server
    }

    /// `unix:<socket>`.
    pub fn remote(&self) -> String {
        format!("unix:{}", self.socket.display())
    }

    /// The server's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().and_then(Process::pid)
    }

    /// Stop (SIGKILL: as abrupt as a crash).
    pub fn kill(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.kill_hard();
        }
        let _ = std::fs::remove_file(&self.socket);
    }

    /// Start again on the same database file and socket.
    pub fn restart(&mut self) {
        self.kill();
        let mut command = Command::new("ovsdb-server");
        command
            .arg(&self.db_file)
            .arg(format!("--remote=punix:{}", self.socket.display()))
            .arg(format!(
                "--unixctl={}",
                self.dir.join(format!("{}.ctl", self.name)).display()
            ))
            .arg(format!(
                "--log-file={}",
                self.dir.join(format!("{}.ovsdb.log", self.name)).display()
            ))
            .arg("--no-chdir")
            .args(&self.extra_args);
        self.process = Some(Process::start(
            &format!("{}-ovsdb-server", self.name),
            command,
            &self.dir,
        ));
        let socket = self.socket.clone();
        assert!(
            wait_until(Duration::from_secs(10), || {
                std::os::unix::net::UnixStream::connect(&socket).is_ok()
            }),
            "ovsdb-server {} did not start; see {}",
            self.name,
            self.dir.display()
        );
    }

    /// A transaction through `ovsdb-client` (OVS's own client, independent
    /// of meta169's): `ops` is the operations array; returns the results.
    pub fn transact(&self, db: &str, ops: &serde_json::Value) -> serde_json::Value {
        let mut params = vec![serde_json::json!(db)];
        params.extend(ops.as_array().cloned().unwrap_or_default());
        let out = run(Command::new("ovsdb-client")
            .arg("transact")
            .arg(self.remote())
            .arg(serde_json::Value::Array(params).to_string()));
        let results: serde_json::Value =
            serde_json::from_str(&out).expect("ovsdb-client prints JSON");
        if let Some(failed) = results.as_array().and_then(|r| {
            r.iter()
                .find(|x| x.get("error").is_some_and(|e| !e.is_null()))
        }) {
            panic!("transaction failed: {failed}");
        }
        results
    }

    /// Freeze or thaw the server (SIGSTOP / SIGCONT): a server that hangs.
    /// Nothing happens once it has been killed.
    pub fn freeze(&self, frozen: bool) {
        let signal = if frozen { libc::SIGSTOP } else { libc::SIGCONT };
        if let Some(process) = &self.process {
            process.signal(signal);
        }
    }
}

impl Drop for OvsdbServer {
    fn drop(&mut self) {
        self.freeze(false);
        self.kill();
    }
}

/// The Python clients tests run (cloud-init's readers, pycdlib, hmac).
pub fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("clients")
}

/// A test PKI made with the openssl command line in `dir`: `ca.pem`/`ca.key`,
/// and for each name `NAME.pem`/`NAME.key` signed by the CA as X.509 v3.
/// `san` (for example `IP:127.0.0.1`) goes into every leaf certificate;
/// without it the leaves carry no subject names, like ovs-pki's.
pub fn make_pki(dir: &Path, names: &[&str], san: Option<&str>) {
    let sh = |script: &str| {
        let out = Command::new("sh")
            .arg("-c")
            .arg(script)
            .current_dir(dir)
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    sh("openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=testca");
    let mut ext = "basicConstraints=CA:FALSE\n".to_string();
    if let Some(san) = san {
        ext.push_str(&format!("subjectAltName={san}\n"));
    }
    std::fs::write(dir.join("v3.ext"), ext).expect("write v3.ext");
    for name in names {
        sh(&format!(
            "openssl req -newkey rsa:2048 -nodes -keyout {name}.key -out {name}.csr -subj /CN={name} && \
             openssl x509 -req -in {name}.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out {name}.pem -days 2 -extfile v3.ext"
        ));
    }
}
