//! Which files a config drive holds: Nova's layout, from the shared renderer.

use crate::{ConfigDriveError, MAX_CONTENT_BYTES, MAX_INJECTED_FILES};
use base64::Engine as _;
use bytes::Bytes;
use meta169_tree::versions::{self, OPENSTACK_VERSIONS};
use meta169_tree::{ec2, openstack, DriveExtras};
use meta169_tree::{to_python_json, Instance, RenderOptions};
use sha2::{Digest, Sha512};

/// EC2 versions written to a drive: Nova's default `config_drive_skip_versions`
/// leaves only 2009-04-04, plus `latest`.
pub const EC2_DRIVE_VERSIONS: &[&str] = &["2009-04-04", "latest"];

/// A file injected at boot (Nova's "personality").
#[derive(Clone, Debug)]
pub struct InjectedFile {
    pub guest_path: String,
    pub data: Bytes,
}

/// Where `random_seed` comes from.
#[derive(Clone, Debug, Default)]
pub enum RandomSeed {
    /// Derived from the record: the same input gives the same image. It
    /// carries no secret entropy; the guest's kernel has its own.
    #[default]
    Derived,
    /// 512 fresh random bytes, as Nova writes; the image differs each time.
    Fresh,
}

/// Everything a drive is made from.
pub struct DriveInput<'a> {
    pub instance: &'a Instance,
    pub render: &'a RenderOptions,
    /// `vendor_data2.json` as built by the caller (it may call dynamic
    /// targets); `None`: the static part only.
    pub vendor_data2: Option<Bytes>,
    pub files: Vec<InjectedFile>,
    pub admin_pass: Option<String>,
    pub random_seed: RandomSeed,
}

fn seed(input: &DriveInput<'_>) -> String {
    let bytes: Vec<u8> = match input.random_seed {
        RandomSeed::Derived => {
            let record = serde_json::to_vec(input.instance).unwrap_or_default();
            let mut out = Vec::with_capacity(512);
            let mut counter = 0u32;
            while out.len() < 512 {
                let mut h = Sha512::new();
                h.update(b"meta169 config drive seed");
                h.update(counter.to_be_bytes());
                h.update(&record);
                out.extend_from_slice(&h.finalize());
                counter += 1;
            }
            out.truncate(512);
            out
        }
        RandomSeed::Fresh => {
            let mut out = vec![0u8; 512];
            rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut out);
            out
        }
    };
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The drive's files, as (path inside the drive, bytes), in a stable order.
pub fn drive_files(input: &DriveInput<'_>) -> Result<Vec<(String, Bytes)>, ConfigDriveError> {
    input.instance.validate()?;
    let file_count = input.instance.files.len() + input.files.len();
    if file_count > MAX_INJECTED_FILES {
        return Err(ConfigDriveError::TooManyFiles(file_count));
    }
    for file in &input.files {
        if meta169_tree::model::check_file_path(&file.guest_path).is_err() {
            return Err(ConfigDriveError::BadGuestPath(file.guest_path.clone()));
        }
    }
    let instance = input.instance;
    let mut out: Vec<(String, Bytes)> = Vec::new();

    for version in EC2_DRIVE_VERSIONS {
        let index = versions::ec2_index(version).expect("drive versions are known");
        let node = ec2::ec2_tree(instance, input.render, index);
        let json = node.to_json(None);
        out.push((
            format!("ec2/{version}/meta-data.json"),
            Bytes::from(to_python_json(&json["meta-data"])),
        ));
        if let Some(data) = &instance.user_data {
            out.push((format!("ec2/{version}/user-data"), data.clone()));
        }
    }

    // One numbering: the record's files first, then the drive's own.
    let contents: Vec<(&str, &Bytes)> = instance
        .files
        .iter()
        .map(|f| (f.path.as_str(), &f.content))
        .chain(input.files.iter().map(|f| (f.guest_path.as_str(), &f.data)))
        .collect();
    let extras = DriveExtras {
        files: contents
            .iter()
            .enumerate()
            .map(|(i, (path, _))| (path.to_string(), openstack::content_path(i)))
            .collect(),
        admin_pass: input.admin_pass.clone(),
    };
    let seed = seed(input);
    let vendor_static = openstack::vendor_static_json(input.render);
    let vendor_data2 = input.vendor_data2.clone().unwrap_or_else(|| {
        let mut doc = serde_json::Map::new();
        if let Some(v) = &input.render.vendor_static {
            doc.insert("static".into(), (**v).clone());
        }
        Bytes::from(to_python_json(&serde_json::Value::Object(doc)))
    });
    let network_data = Bytes::from(to_python_json(&openstack::network_data(instance)));
    let mut all_versions: Vec<&str> = OPENSTACK_VERSIONS.to_vec();
    all_versions.push("latest");
    for version in all_versions {
        let index = versions::openstack_index(version).expect("known version");
        let dir = format!("openstack/{version}");
        let md = openstack::meta_data_document(instance, input.render, version, &seed, &extras)
            .expect("known version");
        out.push((format!("{dir}/meta_data.json"), Bytes::from(md)));
        if let Some(data) = &instance.user_data {
            out.push((format!("{dir}/user_data"), data.clone()));
        }
        if index >= versions::openstack_index(versions::HAVANA).unwrap_or(0) {
            // Without the static provider Nova's build fails; we leave the file out.
            if let Some(doc) = &vendor_static {
                out.push((format!("{dir}/vendor_data.json"), Bytes::from(doc.clone())));
            }
        }
        if index >= versions::openstack_index(versions::LIBERTY).unwrap_or(0) {
            out.push((format!("{dir}/network_data.json"), network_data.clone()));
        }
        if index >= versions::openstack_index(versions::NEWTON_TWO).unwrap_or(0) {
            out.push((format!("{dir}/vendor_data2.json"), vendor_data2.clone()));
        }
    }
    for (i, (_, data)) in contents.iter().enumerate() {
        out.push((
            format!("openstack{}", openstack::content_path(i)),
            (*data).clone(),
        ));
    }
    let total: u64 = out.iter().map(|(_, b)| b.len() as u64).sum();
    if total > MAX_CONTENT_BYTES {
        return Err(ConfigDriveError::TooLarge(total));
    }
    Ok(out)
}
