"""Read a config drive's files with cloud-init's own ConfigDrive reader.

Usage: configdrive_read.py DIRECTORY  (the drive's files, extracted)
"""
import json
import sys

from cloudinit.sources.helpers import openstack


def plain(value):
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


print(json.dumps(plain(openstack.ConfigDriveReader(sys.argv[1]).read_v2())))
