//! `meta169-bench configdrive`: building a config drive with `meta169
//! configdrive` against the tools Nova runs (genisoimage, mkfs.vfat +
//! mcopy), in the same run: wall time and peak memory.

use crate::measure::{have, measured, meta169_binary, repeat};
use anyhow::{bail, Result};
use bytes::Bytes;
use clap::Args;
use std::time::Duration;

#[derive(Args)]
pub struct ConfigDriveBenchArgs {
    /// Builds per tool and format (the median is reported).
    #[arg(long, default_value_t = 5)]
    runs: usize,
}

pub fn run(args: ConfigDriveBenchArgs) -> Result<()> {
    use meta169_configdrive::{drive_files, DriveInput, InjectedFile, RandomSeed};
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let dir = tempfile::tempdir()?;
    let mut instance = meta169_tree::example_instance();
    let pattern = b"#cloud-config abcdefghijklmnopqrstuvwxyz\n";
    instance.user_data = Some((0..64 * 1024).map(|i| pattern[i % pattern.len()]).collect());
    let record = dir.path().join("instance.json");
    std::fs::write(&record, serde_json::to_vec(&instance)?)?;
    let mut file_args = Vec::new();
    let mut injected = Vec::new();
    for i in 0..100 {
        let path = dir.path().join(format!("file{i:03}"));
        let data: Vec<u8> = (0..4096u32)
            .map(|b| (b.wrapping_mul(31) ^ i) as u8)
            .collect();
        std::fs::write(&path, &data)?;
        file_args.push("--file".to_string());
        file_args.push(format!("/etc/injected/file{i:03}.conf={}", path.display()));
        injected.push(InjectedFile {
            guest_path: format!("/etc/injected/file{i:03}.conf"),
            data: Bytes::from(data),
        });
    }
    // The same tree, staged as files, for the baseline tools.
    let render = meta169_tree::RenderOptions::default();
    let tree = drive_files(&DriveInput {
        instance: &instance,
        render: &render,
        vendor_data2: None,
        files: injected,
        admin_pass: None,
        random_seed: RandomSeed::Derived,
    })?;
    let staging = dir.path().join("staging");
    for (path, bytes) in &tree {
        let target = staging.join(path);
        std::fs::create_dir_all(target.parent().unwrap_or(&staging))?;
        std::fs::write(target, bytes)?;
    }
    let me = meta169_binary()?;
    println!(
        "meta169 bench configdrive: 64 KiB user data, 100 injected files of 4 KiB ({} files on the drive), {} runs each, median time, peak RSS of the building process\n",
        tree.len(),
        args.runs
    );
    println!(
        "{:<8} {:<28} {:>10} {:>14}",
        "format", "tool", "time ms", "peak RSS MiB"
    );
    let show = |format: &str, tool: &str, (t, kib): (Duration, u64)| {
        println!(
            "{:<8} {:<28} {:>10.1} {:>14.1}",
            format,
            tool,
            t.as_secs_f64() * 1e3,
            kib as f64 / 1024.0
        );
    };
    for format in ["iso9660", "vfat"] {
        let out = dir.path().join(format!("meta169.{format}"));
        let ours = repeat(args.runs, || {
            measured(
                std::process::Command::new(&me)
                    .args(["configdrive", "--from-json"])
                    .arg(&record)
                    .args(["--format", format, "-o"])
                    .arg(&out)
                    .args(&file_args)
                    .env("RUST_LOG", "warn"),
            )
        })?;
        show(format, "meta169 configdrive", ours);
        let baseline = if format == "iso9660" && have("genisoimage") {
            let out = dir.path().join("genisoimage.iso");
            Some((
                "genisoimage -J -r (Nova)",
                repeat(args.runs, || {
                    measured(
                        std::process::Command::new("genisoimage")
                            .args(["-o"])
                            .arg(&out)
                            .args([
                                "-ldots",
                                "-allow-lowercase",
                                "-allow-multidot",
                                "-l",
                                "-publisher",
                                "meta169",
                                "-quiet",
                                "-J",
                                "-r",
                                "-V",
                                "config-2",
                            ])
                            .arg(&staging),
                    )
                })?,
            ))
        } else if format == "vfat" && have("mkfs.vfat") && have("mcopy") {
            let out = dir.path().join("mkfs.img");
            Some((
                "mkfs.vfat + mcopy (Nova)",
                repeat(args.runs, || {
                    let _ = std::fs::remove_file(&out);
                    let (t1, m1) = measured(
                        std::process::Command::new("mkfs.vfat")
                            .args(["-C", "-n", "config-2"])
                            .arg(&out)
                            .arg("65536"),
                    )?;
                    let (t2, m2) = measured(
                        std::process::Command::new("mcopy")
                            .args(["-s", "-i"])
                            .arg(&out)
                            .arg(staging.join("ec2"))
                            .arg(staging.join("openstack"))
                            .arg("::/"),
                    )?;
                    Ok((t1 + t2, m1.max(m2)))
                })?,
            ))
        } else {
            None
        };
        match baseline {
            Some((name, result)) => {
                show(format, name, result);
                println!(
                    "{:<8} {:<28} {:>10.2} {:>14.2}",
                    format,
                    "ratio (meta169 / baseline)",
                    ours.0.as_secs_f64() / result.0.as_secs_f64(),
                    ours.1 as f64 / result.1.max(1) as f64
                );
            }
            None => println!("{format:<8} (baseline tool not installed; install genisoimage, dosfstools and mtools for ratios)"),
        }
    }
    Ok(())
}
