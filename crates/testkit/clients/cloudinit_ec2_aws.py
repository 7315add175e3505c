"""cloud-init's EC2 datasource in its AWS mode against a metadata server.

Usage: cloudinit_ec2_aws.py BASE_URL
The datasource is told the platform is AWS (what ds-identify's DMI check
finds on EC2); from there it is cloud-init's own code: it takes an IMDSv2
session token (PUT /latest/api/token) and crawls meta-data, user-data and
the instance identity document with it. Prints JSON: whether a token was
taken, what the crawl found, and get_instance_id(). Needs Debian's
cloud-init.
"""
import json
import sys
import tempfile

from cloudinit import helpers
from cloudinit.sources import DataSourceEc2 as ec2ds
from plain import plain

base = sys.argv[1].rstrip("/")
tmp = tempfile.mkdtemp()
paths = helpers.Paths({"cloud_dir": tmp, "run_dir": tmp})
sys_cfg = {"datasource": {"Ec2": {"metadata_urls": [base], "max_wait": 10, "timeout": 5}}}
ds = ec2ds.DataSourceEc2(sys_cfg, distro=None, paths=paths)
ds._cloud_name = ec2ds.CloudNames.AWS
found = ds._get_data()
print(json.dumps({
    "found": bool(found),
    "token": ds._api_token is not None,
    "metadata_address": ds.metadata_address,
    "instance_id": ds.get_instance_id() if found else None,
    "hostname": (ds.metadata or {}).get("hostname"),
    "public_keys": ds.get_public_ssh_keys() if found else [],
    "user_data": plain(ds.userdata_raw),
    "identity": plain(getattr(ds, "identity", None)),
}))
