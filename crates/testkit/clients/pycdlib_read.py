"""Read an ISO 9660 image with pycdlib and print {path: hex sha256} of every
file, once through Rock Ridge names and once through Joliet names.

Usage: pycdlib_read.py IMAGE
"""
import hashlib
import io
import json
import sys

import pycdlib

iso = pycdlib.PyCdlib()
iso.open(sys.argv[1])
out = {"volume_id": iso.pvd.volume_identifier.decode().strip(), "rr": {}, "joliet": {}}
for kind, walk_arg in (("rr", "rr_path"), ("joliet", "joliet_path")):
    for dirpath, _dirs, files in iso.walk(**{walk_arg: "/"}):
        for name in files:
            path = (dirpath.rstrip("/") + "/" + name).lstrip("/")
            buf = io.BytesIO()
            iso.get_file_from_iso_fp(buf, **{walk_arg: "/" + path})
            out[kind][path] = hashlib.sha256(buf.getvalue()).hexdigest()
iso.close()
print(json.dumps(out))
