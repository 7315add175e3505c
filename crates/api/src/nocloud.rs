//! NoCloud's HTTP seed: with `ds=nocloud-net;s=http://169.254.169.254/nocloud/`
//! (kernel command line or SMBIOS serial), cloud-init fetches `meta-data`,
//! `user-data`, `vendor-data` and `network-config` under that prefix; each
//! caller gets its own, identified as on every other path. The files are
//! the NoCloud renderer's (meta169-tree), the same a `cidata` drive holds.

use crate::answer::plain;
use crate::cache::LoadedInstance;
use crate::error::ApiError;
use crate::metadata::MetadataService;
use meta169_http::Answer;
use meta169_tree::nocloud::{self, FILES};
use meta169_tree::ContentType;

/// The first path segment of the seed.
pub const ROOT: &str = "nocloud";

/// The answer for `segments` (`["nocloud", ...]`), or `None` for another
/// tree.
pub(crate) fn answer(
    service: &MetadataService,
    loaded: &LoadedInstance,
    segments: &[&str],
) -> Option<Result<Answer, ApiError>> {
    let rest = match segments {
        [root, rest @ ..] if *root == ROOT => rest,
        _ => return None,
    };
    let file = match rest {
        [] => return Some(Ok(plain(ContentType::Text, FILES.join("\n")))),
        [file] => *file,
        _ => return Some(Err(ApiError::not_found())),
    };
    if !FILES.contains(&file) {
        return Some(Err(ApiError::not_found()));
    }
    let Some(instance) = loaded.tree.instance() else {
        tracing::error!(instance = %loaded.uuid, "cached record unreadable; no NoCloud {file}");
        return Some(Err(ApiError::Internal));
    };
    let render = &service.settings.render;
    let body = match file {
        "meta-data" => nocloud::meta_data(&instance, render),
        "user-data" => nocloud::user_data(&instance),
        "vendor-data" => nocloud::vendor_data(&instance, render),
        _ => match nocloud::network_config(&instance, service.settings.nocloud_network_config) {
            Ok(Some(config)) => config,
            // No network: cloud-init configures DHCP on the first interface.
            Ok(None) => return Some(Err(ApiError::not_found())),
            Err(e) => {
                tracing::warn!(instance = %loaded.uuid, "no NoCloud network-config: {e}");
                return Some(Err(ApiError::not_found()));
            }
        },
    };
    Some(Ok(plain(ContentType::Text, body)))
}
