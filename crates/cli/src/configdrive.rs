//! `meta169 configdrive`: write an instance's config drive, from the store
//! or from a JSON record, with the same renderer the API serves from.

use crate::config::{self, files};
use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::Args;
use meta169_api::vendordata::VendorData;
use meta169_configdrive::{
    drive_files, write_image, write_labelled_image, DriveInput, Format, InjectedFile, RandomSeed,
    MAX_CONTENT_BYTES,
};
use meta169_tree::nocloud::{self, NetworkConfigVersion};
use meta169_tree::Instance;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Args)]
pub struct ConfigDriveArgs {
    /// The instance, read from the store.
    #[arg(
        long,
        conflicts_with = "from_json",
        required_unless_present = "from_json"
    )]
    instance: Option<String>,
    /// An instance record in a JSON file (no store needed).
    #[arg(long)]
    from_json: Option<PathBuf>,
    /// The image to write (replaced only once complete).
    #[arg(short, long)]
    output: PathBuf,
    /// iso9660 (a CD-ROM, Nova's default) or vfat (a 64 MiB disk): a
    /// `config-2` drive for cloud-init's ConfigDrive datasource; nocloud
    /// (ISO 9660) or nocloud-vfat: a `cidata` volume for its NoCloud
    /// datasource (meta-data, user-data, vendor-data, network-config).
    #[arg(long, default_value = "iso9660")]
    format: DriveFormat,
    /// NoCloud's network-config format: network config version 1 or 2.
    #[arg(long, default_value = "1")]
    network_config_version: NetworkConfigVersion,
    /// Inject a file: GUEST_PATH=LOCAL_FILE (repeatable).
    #[arg(long = "file", value_name = "GUEST_PATH=LOCAL_FILE")]
    files: Vec<String>,
    /// A file holding the admin password to put in meta_data.json.
    #[arg(long)]
    admin_pass_file: Option<PathBuf>,
    /// Use 512 fresh random bytes for random_seed, as Nova does; the image
    /// then differs on every run. Default: a seed derived from the record,
    /// so the same input gives the same bytes.
    #[arg(long)]
    fresh_seed: bool,
    /// Configuration file ([serve] store, dhcp_domain, vendordata) [default: /etc/meta169/meta169.toml if it exists].
    #[arg(long)]
    config: Option<PathBuf>,
    /// Store URL; overrides the configuration file.
    #[arg(long)]
    store: Option<String>,
}

/// What `--format` names: the datasource's layout and the file system.
#[derive(Clone, Copy, Debug)]
enum DriveFormat {
    ConfigDrive(Format),
    NoCloud(Format),
}

impl std::str::FromStr for DriveFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "nocloud" | "nocloud-iso9660" => Ok(DriveFormat::NoCloud(Format::Iso9660)),
            "nocloud-vfat" => Ok(DriveFormat::NoCloud(Format::Vfat)),
            other => other.parse().map(DriveFormat::ConfigDrive).map_err(|_| {
                format!("unknown format {other:?}: use iso9660, vfat, nocloud or nocloud-vfat")
            }),
        }
    }
}

fn injected(spec: &str) -> Result<InjectedFile> {
    let (guest, local) = spec
        .split_once('=')
        .with_context(|| format!("--file {spec:?} must be GUEST_PATH=LOCAL_FILE"))?;
    let data = files::read_bytes(Path::new(local), MAX_CONTENT_BYTES)
        .with_context(|| format!("cannot read {local} for --file {guest}"))?;
    Ok(InjectedFile {
        guest_path: guest.to_string(),
        data: Bytes::from(data),
    })
}

pub async fn run(args: ConfigDriveArgs) -> Result<()> {
    let started = Instant::now();
    let file = config::load(args.config.as_deref())?;
    let settings = file.serve.api_settings()?;
    let instance: Instance = match (&args.instance, &args.from_json) {
        (Some(uuid), _) => {
            let url = args.store.clone().unwrap_or(file.serve.store.clone());
            let store = config::open_store(&url).await?;
            match store.get_instance(uuid).await? {
                Some(stored) => stored.instance,
                None => bail!(
                    "no instance with uuid {uuid} in {}",
                    meta169_store::redact(&url)
                ),
            }
        }
        (None, Some(path)) => {
            let text = files::read_text(path, files::MAX_RECORD_BYTES)
                .with_context(|| format!("cannot read {}", path.display()))?;
            Instance::from_json(text.as_bytes()).with_context(|| {
                format!(
                    "{} is not a valid instance record (see `meta169 instance example`)",
                    path.display()
                )
            })?
        }
        (None, None) => bail!("give --instance UUID or --from-json FILE"),
    };
    let format = match args.format {
        DriveFormat::NoCloud(format) => {
            return write_nocloud(&args, format, &instance, &settings.render, started)
        }
        DriveFormat::ConfigDrive(format) => format,
    };
    let files = args
        .files
        .iter()
        .map(|s| injected(s))
        .collect::<Result<Vec<_>>>()?;
    let admin_pass = match &args.admin_pass_file {
        Some(path) => Some(config::read_secret(path, "the admin password")?),
        None => None,
    };
    // Dynamic vendordata is fetched once, at build time, as Nova does.
    let vendor_data2 = if settings.dynamic_targets.is_empty() {
        None
    } else {
        eprintln!(
            "calling {} vendordata target(s)...",
            settings.dynamic_targets.len()
        );
        Some(
            VendorData::new(&settings)?
                .document(&instance, &settings)
                .await,
        )
    };
    let input = DriveInput {
        instance: &instance,
        render: &settings.render,
        vendor_data2,
        files,
        admin_pass,
        random_seed: if args.fresh_seed {
            RandomSeed::Fresh
        } else {
            RandomSeed::Derived
        },
    };
    let tree = drive_files(&input)?;
    let size = write_image(&tree, format, &args.output)?;
    eprintln!(
        "wrote {} ({format}, label config-2, {} files, {} KiB) for {} in {} ms",
        args.output.display(),
        tree.len(),
        size / 1024,
        instance.uuid,
        started.elapsed().as_millis()
    );
    Ok(())
}

/// A NoCloud `cidata` volume: the four files, no injected files.
fn write_nocloud(
    args: &ConfigDriveArgs,
    format: Format,
    instance: &Instance,
    render: &meta169_tree::RenderOptions,
    started: Instant,
) -> Result<()> {
    if !args.files.is_empty() || args.admin_pass_file.is_some() {
        bail!("--file and --admin-pass-file belong to config drives (OpenStack's layout); NoCloud has neither: use --format iso9660 or vfat, or write files from user data (write_files)");
    }
    let files = nocloud::files(instance, render, args.network_config_version)
        .with_context(|| format!("cannot write NoCloud network-config for {}", instance.uuid))?;
    let size = write_labelled_image(&files, format, nocloud::VOLUME_LABEL, &args.output)?;
    eprintln!(
        "wrote {} (NoCloud, {format}, label {}, {}, {} KiB) for {} in {} ms",
        args.output.display(),
        nocloud::VOLUME_LABEL,
        files
            .iter()
            .map(|(name, _)| name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        size / 1024,
        instance.uuid,
        started.elapsed().as_millis()
    );
    Ok(())
}
