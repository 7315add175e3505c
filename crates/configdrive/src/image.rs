//! The two image formats, both written from one input tree. Each is built in a temporary file beside the
//! output and renamed into place at the end, so a failure never leaves a
//! half-written image under the requested name.

use crate::{ConfigDriveError, DRIVE_BYTES, VOLUME_LABEL};
use bytes::Bytes;
use hadris_fs::{Content, Node, Tree};
use hadris_iso::{IsoId, IsoOptions};
use hadris_storage::{BlockSize, MemDevice};
use std::io::Write;
use std::path::Path;
use std::str::FromStr;

/// Image format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Format {
    /// ISO 9660 with Rock Ridge and Joliet (Nova's default, attached as a CD-ROM).
    #[default]
    Iso9660,
    /// A 64 MiB FAT file system (Nova's `config_drive_format = vfat`).
    Vfat,
}

impl std::fmt::Display for Format {
    /// As `--format` takes it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Format::Iso9660 => "iso9660",
            Format::Vfat => "vfat",
        })
    }
}

impl FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "iso9660" | "iso" => Ok(Format::Iso9660),
            "vfat" | "fat" => Ok(Format::Vfat),
            other => Err(format!("unknown format {other:?}: use iso9660 or vfat")),
        }
    }
}

/// Build the image in memory, labelled `config-2`.
pub fn build_image(files: &[(String, Bytes)], format: Format) -> Result<Vec<u8>, ConfigDriveError> {
    build_labelled_image(files, format, VOLUME_LABEL)
}

/// Build the image in memory with volume label `label` (lower case, at
/// most 11 characters: `config-2`, NoCloud's `cidata`).
pub fn build_labelled_image(
    files: &[(String, Bytes)],
    format: Format,
    label: &str,
) -> Result<Vec<u8>, ConfigDriveError> {
    match format {
        Format::Iso9660 => build_iso(files, label),
        Format::Vfat => build_vfat(files, label),
    }
}

/// The drive's files as the writers' input tree.
fn tree_of(files: &[(String, Bytes)]) -> Result<Tree, String> {
    let mut tree = Tree::new();
    for (path, data) in files {
        tree.insert(path.as_str(), Node::file(Content::bytes(data.to_vec())))
            .map_err(|e| format!("{path}: {e}"))?;
    }
    Ok(tree)
}

fn build_iso(files: &[(String, Bytes)], label: &str) -> Result<Vec<u8>, ConfigDriveError> {
    let tree = tree_of(files).map_err(ConfigDriveError::Iso)?;
    let options = IsoOptions::new()
        .with_id(IsoId::Volume, label)
        .with_id(IsoId::Application, "meta169")
        .with_id(
            IsoId::Publisher,
            concat!("meta169 ", env!("CARGO_PKG_VERSION")),
        )
        .with_joliet()
        .with_rock_ridge();
    let report =
        hadris_iso::plan(&tree, &options).map_err(|e| ConfigDriveError::Iso(e.to_string()))?;
    let size =
        usize::try_from(report.size()).map_err(|_| ConfigDriveError::TooLarge(report.size()))?;
    let block = BlockSize::new(2048).expect("2048 is a valid block size");
    let mut device = MemDevice::new(vec![0u8; size], block);
    hadris_iso::sync::write(&mut device, &tree, &options)
        .map_err(|e| ConfigDriveError::Iso(e.to_string()))?;
    Ok(device.into_inner())
}

/// Nova's VFAT drives come from `mkfs.vfat -n config-2`, which keeps the
/// label in lower case; the FAT writer upper-cases labels as the FAT spec
/// says. cloud-init accepts both, but we match Nova: the label is patched
/// in the boot sector and in the root directory's volume-label entry.
struct Fat16Label<'a>(&'a str);

impl Fat16Label<'_> {
    fn padded(text: &str) -> [u8; 11] {
        let mut out = [b' '; 11];
        out[..text.len()].copy_from_slice(text.as_bytes());
        out
    }

    fn corrupt() -> ConfigDriveError {
        ConfigDriveError::Vfat(std::io::Error::other(
            "unexpected FAT16 layout after formatting",
        ))
    }

    /// Where the root directory lies: (byte offset, length).
    fn root_dir(boot: &[u8]) -> (u64, usize) {
        let u16_at = |at: usize| u64::from(u16::from_le_bytes([boot[at], boot[at + 1]]));
        let bytes_per_sector = u16_at(11);
        let reserved = u16_at(14);
        let fats = u64::from(boot[16]);
        let root_entries = u16_at(17) as usize;
        let sectors_per_fat = u16_at(22);
        (
            (reserved + fats * sectors_per_fat) * bytes_per_sector,
            root_entries * 32,
        )
    }

    fn patch_boot(&self, boot: &mut [u8]) -> Result<(), ConfigDriveError> {
        let label = boot.get_mut(0x2B..0x36).ok_or_else(Self::corrupt)?;
        if *label != Self::padded(&self.0.to_ascii_uppercase()) {
            return Err(Self::corrupt());
        }
        label.copy_from_slice(&Self::padded(self.0));
        Ok(())
    }

    fn patch_root(&self, root: &mut [u8]) -> Result<(), ConfigDriveError> {
        let upper = Self::padded(&self.0.to_ascii_uppercase());
        for record in root.chunks_exact_mut(32) {
            if record[0] == 0 {
                break;
            }
            if record[11] == 0x08 && record[..11] == upper {
                record[..11].copy_from_slice(&Self::padded(self.0));
                return Ok(());
            }
        }
        Err(Self::corrupt())
    }

    fn patch_image(&self, image: &mut [u8]) -> Result<(), ConfigDriveError> {
        self.patch_boot(image.get_mut(..512).ok_or_else(Self::corrupt)?)?;
        let (at, len) = Self::root_dir(image);
        let root = image
            .get_mut(at as usize..at as usize + len)
            .ok_or_else(Self::corrupt)?;
        self.patch_root(root)
    }

    fn patch_file(&self, file: &mut std::fs::File) -> Result<(), ConfigDriveError> {
        use std::io::{Read, Seek, SeekFrom};
        let io = ConfigDriveError::Vfat;
        let mut boot = [0u8; 512];
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        file.read_exact(&mut boot).map_err(io)?;
        self.patch_boot(&mut boot)?;
        let (at, len) = Self::root_dir(&boot);
        let mut root = vec![0u8; len];
        file.seek(SeekFrom::Start(at)).map_err(io)?;
        file.read_exact(&mut root).map_err(io)?;
        self.patch_root(&mut root)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        file.write_all(&boot).map_err(io)?;
        file.seek(SeekFrom::Start(at)).map_err(io)?;
        file.write_all(&root).map_err(io)
    }
}

fn fat_error(e: &dyn std::fmt::Display) -> ConfigDriveError {
    ConfigDriveError::Vfat(std::io::Error::other(e.to_string()))
}

fn vfat_options(label: &str) -> Result<hadris_fat::FatOptions, ConfigDriveError> {
    let label = hadris_fat::VolumeLabel::new(label).map_err(|e| fat_error(&format!("{e:?}")))?;
    // FAT16 at 64 MiB, as mkfs.vfat picks for Nova's image size; a fixed
    // seed for the serial number keeps the output reproducible.
    Ok(hadris_fat::FatOptions::new()
        .with_kind(hadris_fat::FatKind::Fat16)
        .with_size(DRIVE_BYTES)
        .with_label(label)
        .with_seed(0x6d65_7461_3136_3921))
}

fn build_vfat(files: &[(String, Bytes)], label: &str) -> Result<Vec<u8>, ConfigDriveError> {
    let tree = tree_of(files).map_err(|e| fat_error(&e))?;
    let mut image = Vec::new();
    hadris_fat::sync::write(&mut image, &tree, &vfat_options(label)?).map_err(|e| fat_error(&e))?;
    Fat16Label(label).patch_image(&mut image)?;
    Ok(image)
}

/// Write the VFAT image straight into a sparse file: only the blocks the
/// file system uses are written, so a 64 MiB drive costs kilobytes of I/O
/// and no 64 MiB buffer.
fn write_vfat_file(
    files: &[(String, Bytes)],
    label: &str,
    file: &std::fs::File,
) -> Result<(), ConfigDriveError> {
    let tree = tree_of(files).map_err(|e| fat_error(&e))?;
    let io = ConfigDriveError::Vfat;
    file.set_len(DRIVE_BYTES).map_err(io)?;
    let device = hadris_storage::host::FileDevice::with_block_size(
        file.try_clone().map_err(io)?,
        BlockSize::new(512).expect("512 is a valid block size"),
    )
    .map_err(io)?;
    hadris_fat::sync::write(device, &tree, &vfat_options(label)?).map_err(|e| fat_error(&e))?;
    Fat16Label(label).patch_file(&mut file.try_clone().map_err(io)?)
}

/// Write the image, labelled `config-2`, to `out` through a temporary
/// file renamed at the end. Returns the image size.
pub fn write_image(
    files: &[(String, Bytes)],
    format: Format,
    out: &Path,
) -> Result<u64, ConfigDriveError> {
    write_labelled_image(files, format, VOLUME_LABEL, out)
}

/// [`write_image`] with volume label `label` (NoCloud's `cidata`).
pub fn write_labelled_image(
    files: &[(String, Bytes)],
    format: Format,
    label: &str,
    out: &Path,
) -> Result<u64, ConfigDriveError> {
    let output_error = |source: std::io::Error| ConfigDriveError::Output {
        path: out.display().to_string(),
        source,
    };
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut temp = tempfile::Builder::new()
        .prefix(".meta169-configdrive-")
        .tempfile_in(dir)
        .map_err(output_error)?;
    match format {
        Format::Iso9660 => {
            let image = build_iso(files, label)?;
            temp.write_all(&image).map_err(output_error)?;
        }
        Format::Vfat => write_vfat_file(files, label, temp.as_file())?,
    }
    // Readable by the hypervisor's user (qemu), as genisoimage's output is.
    {
        use std::os::unix::fs::PermissionsExt;
        temp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))
            .map_err(output_error)?;
    }
    temp.as_file().sync_all().map_err(output_error)?;
    let size = temp.as_file().metadata().map_err(output_error)?.len();
    temp.persist(out).map_err(|e| output_error(e.error))?;
    Ok(size)
}
