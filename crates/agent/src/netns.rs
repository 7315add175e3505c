//! Network namespaces, managed the way `ip netns` does (a bind mount of a
//! thread's namespace on `/run/netns/<name>`), so `ip netns exec` and
//! Neutron's tools see ours and we adopt theirs. Work inside a namespace
//! runs on a short-lived thread that entered it: namespaces are per
//! thread, and the runtime's own threads never change theirs.

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

/// Where named namespaces live.
pub const NETNS_DIR: &str = "/run/netns";

pub fn path_of(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

pub fn exists(name: &str) -> bool {
    path_of(name).exists()
}

/// Names of existing namespaces starting with `prefix`.
pub fn list(prefix: &str) -> io::Result<Vec<String>> {
    let mut out = Vec::new();
    match std::fs::read_dir(NETNS_DIR) {
        Ok(entries) => {
            for entry in entries {
                let name = entry?.file_name().to_string_lossy().into_owned();
                if name.starts_with(prefix) {
                    out.push(name);
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    out.sort();
    Ok(out)
}

fn nix_io(e: nix::Error) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// Create a namespace (no-op if it exists); whether it was created.
pub fn create(name: &str) -> io::Result<bool> {
    let path = path_of(name);
    if path.exists() {
        return Ok(false);
    }
    std::fs::create_dir_all(NETNS_DIR)?;
    File::create(&path)?;
    let target = path.clone();
    let result = std::thread::spawn(move || -> io::Result<()> {
        unshare(CloneFlags::CLONE_NEWNET).map_err(nix_io)?;
        mount(
            Some("/proc/thread-self/ns/net"),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(nix_io)
    })
    .join()
    .map_err(|_| io::Error::other("namespace thread panicked"))?;
    if let Err(e) = result {
        let _ = std::fs::remove_file(&path);
        return Err(e);
    }
    Ok(true)
}

/// Delete a namespace; its devices go with it.
pub fn delete(name: &str) -> io::Result<()> {
    let path = path_of(name);
    if !path.exists() {
        return Ok(());
    }
    match umount2(&path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::Error::EINVAL) => {}
        Err(e) => return Err(nix_io(e)),
    }
    std::fs::remove_file(&path)
}

/// Run `work` on a thread inside namespace `name`.
pub fn run_in<T: Send + 'static>(
    name: &str,
    work: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    let file = File::open(path_of(name))
        .map_err(|e| io::Error::new(e.kind(), format!("namespace {name}: {e}")))?;
    std::thread::spawn(move || {
        setns(&file, CloneFlags::CLONE_NEWNET).map_err(nix_io)?;
        work()
    })
    .join()
    .map_err(|_| io::Error::other("namespace thread panicked"))?
}

/// An open handle on a namespace, for moving devices into it.
pub fn open(name: &str) -> io::Result<File> {
    File::open(path_of(name))
}
