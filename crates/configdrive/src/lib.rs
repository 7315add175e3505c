//! Writes an instance's metadata as a config drive: the image with the
//! volume label `config-2` that cloud-init's ConfigDrive datasource reads
//! without any network. The files come from the same renderer the API
//! serves, so the drive and the API never disagree.
//!
//! ISO 9660 images are written with `hadris-iso` (Rock Ridge and Joliet
//! names, as genisoimage's `-J -r`), VFAT images with `hadris-fat` (FAT16,
//! long names). Both read no clock and take a fixed seed for serial
//! numbers, so the same input gives the same bytes; both are pure Rust, no
//! external program runs. (`fatfs` 0.3 was tried first: it writes long-name
//! entries before `.` and `..`, which `fsck.fat` rejects.)

mod image;
mod layout;

pub use image::{build_image, build_labelled_image, write_image, write_labelled_image, Format};
pub use layout::{drive_files, DriveInput, InjectedFile, RandomSeed, EC2_DRIVE_VERSIONS};

/// The volume label cloud-init looks for.
pub const VOLUME_LABEL: &str = "config-2";
/// Size of a VFAT drive, and the most content any drive holds (Nova's VFAT size).
pub const DRIVE_BYTES: u64 = 64 * 1024 * 1024;
/// Most content (files, before the file system's own structures) a drive
/// takes: the drive less room for the file system.
pub const MAX_CONTENT_BYTES: u64 = DRIVE_BYTES - FS_RESERVE_BYTES;
/// Room left for the file system's own structures.
const FS_RESERVE_BYTES: u64 = 4 * 1024 * 1024;
/// Most injected files on one drive.
pub const MAX_INJECTED_FILES: usize = 1000;

/// Why a drive could not be written. Each message says what to change.
#[derive(Debug, thiserror::Error)]
pub enum ConfigDriveError {
    /// Content larger than a drive holds.
    #[error("the drive's files total {0} bytes; a config drive holds at most {MAX_CONTENT_BYTES} bytes of files ({DRIVE_BYTES} less room for the file system): inject fewer or smaller files")]
    TooLarge(u64),
    /// Too many injected files.
    #[error("{0} injected files; at most {MAX_INJECTED_FILES} fit a config drive")]
    TooManyFiles(usize),
    /// A guest path that is not absolute or not text.
    #[error("injected file path {0:?} must be an absolute guest path such as /etc/motd, without control characters or '..' segments")]
    BadGuestPath(String),
    /// The instance record is invalid.
    #[error("invalid instance record: {0}")]
    Invalid(#[from] meta169_tree::InvalidInstance),
    /// The ISO writer refused the tree.
    #[error("cannot lay out the ISO 9660 image: {0}")]
    Iso(String),
    /// The VFAT writer failed.
    #[error("cannot write the VFAT image: {0}")]
    Vfat(std::io::Error),
    /// The output could not be written.
    #[error("cannot write {path}: {source}")]
    Output {
        path: String,
        source: std::io::Error,
    },
}
