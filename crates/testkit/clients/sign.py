"""Sign an instance id the way Neutron's agent does, independently of meta169.

Usage: sign.py SECRET INSTANCE_ID  -> prints the hex signature.
"""
import hashlib
import hmac
import sys

print(hmac.new(sys.argv[1].encode("utf-8"), sys.argv[2].encode("utf-8"), hashlib.sha256).hexdigest())
