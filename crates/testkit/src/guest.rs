//! A real Debian guest under QEMU, as a user boots one: the image built
//! from Debian's packages (`scripts/guest-image`, cached per machine),
//! booted through a fresh overlay so every boot is a first boot, under TCG
//! (KVM is not usable on these machines), on a bridge inside a namespace
//! the test creates, with DHCP from dnsmasq (option 121 routing
//! 169.254.169.254 to the bridge's address, as Neutron's DHCP does). The
//! test runs the metadata server in the same namespace. Everything is
//! stopped by the pid this helper started.

use crate::{run_tool, wait_until, Netns, Process};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

/// The bridge's address: the guests' gateway and DHCP server.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 0, 9, 1);
/// Where the guests' metadata server listens (on the bridge).
pub const METADATA: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
/// Addresses DHCP hands out: the guests' are not known in advance.
const DHCP_RANGE: &str = "10.0.9.50,10.0.9.99,255.255.255.0,1h";
/// Guest memory: cloud-init's boot uses about 60 MiB.
const GUEST_MIB: &str = "512";
/// QEMU's translation cache: the default costs 1 GiB of RSS.
const TCG: &str = "tcg,tb-size=256";
/// The line cloud-init prints on the console when its last stage ends.
const FINISHED: &str = "finished at";
/// Longest wait for the guest's SSH server once cloud-init finished.
const SSH_WAIT: Duration = Duration::from_secs(60);

/// The image directory (root.ext4, vmlinuz, initrd.img), built once per
/// machine; the first caller in a process builds or finds it.
pub fn image() -> &'static Path {
    static IMAGE: OnceLock<PathBuf> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/guest-image");
        let out = Command::new(&script)
            .output()
            .unwrap_or_else(|e| panic!("{}: {e}", script.display()));
        assert!(
            out.status.success(),
            "scripts/guest-image failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The last line names the directory.
        let stdout = String::from_utf8_lossy(&out.stdout);
        PathBuf::from(stdout.lines().last().unwrap_or_default().trim())
    })
}

/// A bridge in a namespace of its own, with DHCP.
pub struct Lan {
    pub ns: Netns,
    pub bridge: String,
    leases: PathBuf,
    _dnsmasq: Process,
}

impl Lan {
    pub fn new(tag: &str, dir: &Path) -> Lan {
        let ns = Netns::new(tag);
        let bridge = "br0".to_string();
        ns.ip(&["link", "add", &bridge, "type", "bridge"]);
        ns.ip(&["addr", "add", &format!("{GATEWAY}/24"), "dev", &bridge]);
        ns.ip(&["addr", "add", &format!("{METADATA}/32"), "dev", &bridge]);
        ns.ip(&["link", "set", &bridge, "up"]);
        let leases = dir.join(format!("{tag}.leases"));
        let mut dnsmasq = ns.command("dnsmasq");
        dnsmasq.args([
            "--keep-in-foreground",
            "--no-resolv",
            "--no-hosts",
            "--conf-file=/dev/null",
            "--port=0",
            "--bind-interfaces",
            &format!("--interface={bridge}"),
            &format!("--dhcp-range={DHCP_RANGE}"),
            &format!("--dhcp-option=option:router,{GATEWAY}"),
            &format!(
                "--dhcp-option=option:classless-static-route,{METADATA}/32,{GATEWAY},0.0.0.0/0,{GATEWAY}"
            ),
            &format!("--dhcp-leasefile={}", leases.display()),
            "--pid-file=",
            "--log-dhcp",
        ]);
        let dnsmasq = Process::start(&format!("{tag}-dnsmasq"), dnsmasq, dir);
        Lan {
            ns,
            bridge,
            leases,
            _dnsmasq: dnsmasq,
        }
    }

    /// The address DHCP gave `mac`, if any yet.
    pub fn address_of(&self, mac: &str) -> Option<Ipv4Addr> {
        let leases = std::fs::read_to_string(&self.leases).ok()?;
        leases.lines().find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.get(1)?.eq_ignore_ascii_case(mac))
                .then(|| fields.get(2)?.parse().ok())
                .flatten()
        })
    }
}

/// How a guest boots.
pub struct Boot<'a> {
    pub name: &'a str,
    pub mac: &'a str,
    /// `-smbios type=1,...` fields: `serial=ds=nocloud-net;s=...`, `product=OpenStack Nova`.
    pub smbios: Option<String>,
    /// A seed image attached as a second disk (a `cidata` volume).
    pub seed: Option<&'a Path>,
}

/// A running guest.
pub struct Guest {
    pub console: PathBuf,
    pub mac: String,
    overlay: PathBuf,
    qemu: Process,
}

impl Guest {
    pub fn boot(lan: &Lan, boot: &Boot<'_>, dir: &Path) -> Guest {
        let image = image();
        let overlay = dir.join(format!("{}.qcow2", boot.name));
        run_tool(
            "qemu-img",
            &[
                "create",
                "-q",
                "-f",
                "qcow2",
                "-F",
                "raw",
                "-b",
                &image.join("root.ext4").to_string_lossy(),
                &overlay.to_string_lossy(),
            ],
        );
        let tap = format!("tap-{}", boot.name.chars().take(10).collect::<String>());
        lan.ns.ip(&["tuntap", "add", "dev", &tap, "mode", "tap"]);
        lan.ns
            .ip(&["link", "set", &tap, "master", &lan.bridge, "up"]);
        let console = dir.join(format!("{}.console", boot.name));
        let mut qemu = lan.ns.command("qemu-system-x86_64");
        qemu.args(["-accel", TCG, "-m", GUEST_MIB, "-smp", "1"])
            .args(["-nodefaults", "-display", "none", "-no-reboot"])
            .arg("-kernel")
            .arg(image.join("vmlinuz"))
            .arg("-initrd")
            .arg(image.join("initrd.img"))
            .args([
                "-append",
                "console=ttyS0 root=LABEL=m169root rw net.ifnames=0",
            ])
            .arg("-drive")
            .arg(format!("file={},if=virtio,format=qcow2", overlay.display()))
            .args([
                "-netdev",
                &format!("tap,id=n0,ifname={tap},script=no,downscript=no"),
                "-device",
                &format!("virtio-net-pci,netdev=n0,mac={}", boot.mac),
            ])
            .arg("-serial")
            .arg(format!("file:{}", console.display()));
        if let Some(smbios) = &boot.smbios {
            qemu.args(["-smbios", &format!("type=1,{smbios}")]);
        }
        if let Some(seed) = boot.seed {
            qemu.arg("-drive").arg(format!(
                "file={},if=virtio,format=raw,readonly=on",
                seed.display()
            ));
        }
        let qemu = Process::start(&format!("{}-qemu", boot.name), qemu, dir);
        Guest {
            console,
            mac: boot.mac.to_string(),
            overlay,
            qemu,
        }
    }

    /// The serial console so far.
    pub fn console_text(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.console).unwrap_or_default()).into_owned()
    }

    /// Wait until cloud-init's last stage reports on the console; false
    /// on timeout or when QEMU ended.
    pub fn wait_cloud_init(&mut self, timeout: Duration) -> bool {
        wait_until(timeout, || {
            self.qemu.exited().is_none()
                && self
                    .console_text()
                    .lines()
                    .any(|l| l.contains("Cloud-init v.") && l.contains(FINISHED))
        })
    }

    /// Run `command` as root over SSH with `key`: (success, stdout).
    /// Retried until the guest's SSH server answers (bounded).
    pub fn ssh(&self, lan: &Lan, key: &Path, command: &str) -> (bool, String) {
        let Some(address) = lan.address_of(&self.mac) else {
            return (false, format!("no DHCP lease for {}", self.mac));
        };
        let mut last = (false, String::new());
        wait_until(SSH_WAIT, || {
            let out = lan
                .ns
                .command("ssh")
                .arg("-i")
                .arg(key)
                .args([
                    "-o",
                    "StrictHostKeyChecking=no",
                    "-o",
                    "UserKnownHostsFile=/dev/null",
                    "-o",
                    "BatchMode=yes",
                    "-o",
                    "ConnectTimeout=10",
                    "-o",
                    "LogLevel=ERROR",
                    &format!("root@{address}"),
                    command,
                ])
                .output();
            last = match out {
                Ok(out) => (
                    out.status.success(),
                    format!(
                        "{}{}",
                        String::from_utf8_lossy(&out.stdout),
                        String::from_utf8_lossy(&out.stderr)
                    ),
                ),
                Err(e) => (false, e.to_string()),
            };
            last.0
        });
        last
    }

    /// Power the guest off (QEMU stopped by its pid).
    pub fn stop(&mut self) {
        self.qemu.stop();
    }

    /// A file of the stopped guest's disk (its cloud-init log, when SSH
    /// is not possible), read with debugfs from a raw copy; "" if absent.
    pub fn read_file(&self, path: &str) -> String {
        let raw = self.overlay.with_extension("raw");
        let converted = Command::new("qemu-img")
            .args(["convert", "-O", "raw"])
            .arg(&self.overlay)
            .arg(&raw)
            .status()
            .is_ok_and(|s| s.success());
        if !converted {
            return String::new();
        }
        let out = Command::new("debugfs")
            .args(["-R", &format!("cat {path}")])
            .arg(&raw)
            .output();
        let _ = std::fs::remove_file(&raw);
        out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }
}

/// A fresh ed25519 key pair in `dir`: (private key path, public key text).
pub fn ssh_key(dir: &Path) -> (PathBuf, String) {
    let key = dir.join("guest_key");
    let _ = std::fs::remove_file(&key);
    run_tool(
        "ssh-keygen",
        &[
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "meta169-test",
            "-f",
            &key.to_string_lossy(),
        ],
    );
    let public = std::fs::read_to_string(dir.join("guest_key.pub")).unwrap_or_default();
    (key, public.trim().to_string())
}
