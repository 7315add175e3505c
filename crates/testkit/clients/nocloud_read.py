"""Read a NoCloud seed with cloud-init's own NoCloud functions.

Usage: nocloud_read.py SEED
SEED is a directory (a mounted or extracted `cidata` volume) or an HTTP
seed URL ending in `/` (`ds=nocloud-net;s=...`). A directory is read as
DataSourceNoCloud reads a seed directory (pathprefix2dict), a URL with
util.read_seeded; `network-config` is then parsed with cloud-init's
network_state (broken configuration raises). Prints JSON: meta-data,
user-data, vendor-data, the network config and the interfaces cloud-init
derived from it.
"""
import json
import sys

from cloudinit import url_helper, util
from cloudinit.net import network_state
from plain import plain

seed = sys.argv[1]
if seed.startswith("http://") or seed.startswith("https://"):
    md, ud, vd = util.read_seeded(seed, timeout=5, retries=0)
    try:
        netcfg_text = url_helper.readurl(seed + "network-config", timeout=5).contents
    except url_helper.UrlError as e:
        if e.code != 404:
            raise
        netcfg_text = None
else:
    found = util.pathprefix2dict(
        seed, required=["user-data", "meta-data"], optional=["vendor-data", "network-config"]
    )
    md = util.load_yaml(found["meta-data"])
    ud = found["user-data"]
    vd = found.get("vendor-data")
    netcfg_text = found.get("network-config")

netcfg = util.load_yaml(netcfg_text) if netcfg_text else None
interfaces = {}
nameservers = []
if netcfg:
    state = network_state.parse_net_config_data(netcfg, skip_broken=False)
    for iface in state.iter_interfaces():
        interfaces[iface["name"]] = {
            "mac": iface.get("mac_address"),
            "type": iface.get("type"),
            "subnets": [
                {k: plain(v) for k, v in s.items() if k in ("type", "address", "netmask", "prefix", "gateway")}
                for s in iface.get("subnets", [])
            ],
        }
    nameservers = list(state.dns_nameservers)
print(json.dumps({
    "meta_data": plain(md),
    "user_data": plain(ud),
    "vendor_data": plain(vd),
    "network_config": netcfg,
    "interfaces": interfaces,
    "nameservers": nameservers,
}))
