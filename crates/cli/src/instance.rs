//! `meta169 instance`: the admin operations on the store, from the command
//! line. Works on the same store as `serve`; running servers see a change
//! within about a second (the store announces it to every replica).

use crate::config::{self, files};
use anyhow::{bail, Context, Result};
use clap::Subcommand;
use meta169_store::Store;
use meta169_tree::{Instance, EXAMPLE_INSTANCE_JSON};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Subcommand)]
pub enum InstanceCommand {
    /// Create or replace an instance from a JSON record (FILE, or - for stdin).
    Add {
        file: PathBuf,
        /// User data from this file, as it is (no base64 by hand);
        /// replaces the record's `user_data`.
        #[arg(long, value_name = "FILE")]
        user_data: Option<PathBuf>,
    },
    /// List instances: uuid, name, project, addresses.
    List,
    /// Print a record as the JSON `instance add` takes.
    Show { uuid: String },
    /// Delete an instance and its ports.
    Rm { uuid: String },
    /// Set (replacing any) or clear the password a guest would post.
    SetPassword {
        uuid: String,
        /// The password text; omit with --clear.
        password: Option<String>,
        /// Clear the password so the guest may post a new one.
        #[arg(long, conflicts_with = "password")]
        clear: bool,
    },
    /// Print the complete example record (the demo instance).
    Example,
}

fn read_record(file: &Path) -> Result<Instance> {
    let mut text = String::new();
    if file.as_os_str() == "-" {
        std::io::stdin()
            .take(files::MAX_RECORD_BYTES)
            .read_to_string(&mut text)
            .context("cannot read the record from stdin")?;
    } else {
        text = files::read_text(file, files::MAX_RECORD_BYTES)
            .with_context(|| format!("cannot read {}", file.display()))?;
    }
    let instance = Instance::from_json(text.as_bytes()).with_context(|| {
        format!(
            "{} is not a valid instance record (see `meta169 instance example`)",
            file.display()
        )
    })?;
    instance
        .validate()
        .with_context(|| format!("{} is not a valid instance record", file.display()))?;
    Ok(instance)
}

pub async fn run(
    command: InstanceCommand,
    config_path: Option<PathBuf>,
    store_url: Option<String>,
) -> Result<()> {
    if let InstanceCommand::Example = command {
        print!("{EXAMPLE_INSTANCE_JSON}");
        return Ok(());
    }
    let file = config::load(config_path.as_deref())?;
    let url = store_url.unwrap_or(file.serve.store);
    let store: Arc<dyn Store> = config::open_store(&url).await?;
    match command {
        InstanceCommand::Add { file, user_data } => {
            let mut instance = read_record(&file)?;
            if let Some(path) = user_data {
                let limit = meta169_tree::model::MAX_USER_DATA_BYTES as u64;
                let data = files::read_bytes(&path, limit)
                    .with_context(|| format!("cannot read user data from {}", path.display()))?;
                instance.user_data = Some(data.into());
                instance
                    .validate()
                    .with_context(|| format!("user data from {}", path.display()))?;
            }
            let revision = store.put_instance(&instance).await?;
            println!("{} stored (revision {revision})", instance.uuid);
        }
        InstanceCommand::List => {
            let list = store.list_instances().await?;
            if list.is_empty() {
                eprintln!("no instances in {url}");
            }
            for i in list {
                println!(
                    "{}\t{}\t{}\t{}",
                    i.uuid,
                    i.name,
                    i.project_id,
                    i.addresses.join(",")
                );
            }
        }
        InstanceCommand::Show { uuid } => match store.get_instance(&uuid).await? {
            Some(stored) => println!("{}", serde_json::to_string_pretty(&stored.instance)?),
            None => bail!("no instance with uuid {uuid} in {url}"),
        },
        InstanceCommand::Rm { uuid } => {
            if !store.delete_instance(&uuid).await? {
                bail!("no instance with uuid {uuid} in {url}");
            }
            println!("{uuid} removed");
        }
        InstanceCommand::SetPassword {
            uuid,
            password,
            clear,
        } => {
            if !clear && password.is_none() {
                bail!("give the password, or --clear to clear it");
            }
            if !store.clear_password(&uuid).await? {
                bail!("no instance with uuid {uuid} in {url}");
            }
            match password {
                Some(p) => {
                    store.set_password_once(&uuid, &p).await?;
                    println!("password of {uuid} set");
                }
                None => println!("password of {uuid} cleared"),
            }
        }
        InstanceCommand::Example => unreachable!("handled above"),
    }
    Ok(())
}
