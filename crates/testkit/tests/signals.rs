//! A helper that has stopped a process never signals "pid 0": kill(2) on
//! pid 0 reaches every process of the test's own process group.

use meta169_testkit::{temp_dir, OvsdbServer, Process, OVN_SB_SCHEMA};
use std::sync::atomic::{AtomicUsize, Ordering};

static CONTINUED: AtomicUsize = AtomicUsize::new(0);

extern "C" fn count_sigcont(_: libc::c_int) {
    CONTINUED.fetch_add(1, Ordering::SeqCst);
}

#[test]
fn stopped_processes_are_not_signalled_through_pid_zero() {
    // SAFETY: installs a handler that only touches an atomic.
    unsafe {
        libc::signal(
            libc::SIGCONT,
            count_sigcont as *const () as libc::sighandler_t,
        );
    }
    let dir = temp_dir();
    let mut sleeper = Process::start(
        "sleep",
        {
            let mut c = std::process::Command::new("sleep");
            c.arg("30");
            c
        },
        dir.path(),
    );
    assert!(sleeper.pid().is_some());
    sleeper.kill_hard();
    assert_eq!(sleeper.pid(), None);
    assert!(!sleeper.signal(libc::SIGCONT));

    // The server helper thaws on drop; killed first, it must not signal.
    let mut server = OvsdbServer::start("sb", OVN_SB_SCHEMA, dir.path());
    server.kill();
    server.freeze(false);
    drop(server);
    // A signal to the group may land on another thread a moment later.
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(
        CONTINUED.load(Ordering::SeqCst),
        0,
        "SIGCONT reached the test process"
    );
}
