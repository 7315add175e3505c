"""Read a metadata server with cloud-init's own code and print what it got.

Usage: cloudinit_read.py BASE_URL
Runs cloud-init's OpenStack reader (MetadataReader.read_v2, which also
crawls EC2 metadata from the fixed http://169.254.169.254) and its EC2
helpers, then prints one JSON document. Needs Debian's cloud-init.
"""
import json
import sys

from plain import plain
from cloudinit.sources.helpers import ec2, openstack


base = sys.argv[1]
result = openstack.MetadataReader(base, retries=0).read_v2()
out = {
    "openstack": plain(result),
    "ec2_metadata": plain(dict(ec2.get_instance_metadata(api_version="2009-04-04", metadata_address=base, retries=0))),
    "ec2_userdata": plain(ec2.get_instance_userdata(api_version="2009-04-04", metadata_address=base, retries=0)),
}
print(json.dumps(out))
