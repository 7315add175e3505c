"""Read a config drive's files with cloud-init's own ConfigDrive reader.

Usage: configdrive_read.py DIRECTORY  (the drive's files, extracted)
"""
import json
import sys

from plain import plain
from cloudinit.sources.helpers import openstack


print(json.dumps(plain(openstack.ConfigDriveReader(sys.argv[1]).read_v2())))
