//! An instance record as the admin API, `instance add` and `configdrive
//! --from-json` read it: parsed, validated, and when valid rendered and
//! every well-known path looked up.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meta169_tree::{Instance, MetadataPath, RenderOptions, Tree};
use std::sync::Arc;

const PATHS: &[&str] = &[
    "/openstack/latest/meta_data.json",
    "/openstack/latest/network_data.json",
    "/openstack/latest/vendor_data.json",
    "/openstack/latest/user_data",
    "/openstack/2012-08-10/meta_data.json",
    "/latest/meta-data/",
    "/latest/meta-data/hostname",
    "/latest/meta-data/public-keys/",
    "/latest/meta-data/public-keys/0/openssh-key",
    "/latest/meta-data/block-device-mapping/",
    "/latest/meta-data/security-groups",
    "/latest/meta-data/placement/availability-zone",
    "/latest/user-data",
    "/2009-04-04/meta-data/local-ipv4",
];

fuzz_target!(|data: &[u8]| {
    let Ok(instance) = Instance::from_json(data) else {
        return;
    };
    if instance.validate().is_err() {
        return;
    }
    let tree = Tree::compact(instance, Arc::new(RenderOptions::default()));
    for path in PATHS {
        if let Ok(MetadataPath::Item(segments)) = MetadataPath::parse(path) {
            let _ = tree.lookup(&segments);
        }
    }
    let _ = tree.instance();
});
