"""botocore's own IMDS client against a metadata server.

Usage: botocore_imds.py BASE_URL
Prints JSON: the region botocore derives (a token PUT, then a GET of
placement/availability-zone with the token), the instance id read with
botocore's token, and the status of the same GET without a token.
"""
import json
import sys

from botocore.utils import IMDSFetcher, InstanceMetadataRegionFetcher

base = sys.argv[1]
fetcher = IMDSFetcher(timeout=5, num_attempts=1, base_url=base)
token = fetcher._fetch_metadata_token()
with_token = fetcher._get_request("latest/meta-data/instance-id", lambda r: False, token)
without = fetcher._get_request("latest/meta-data/instance-id", lambda r: False, None)
region = InstanceMetadataRegionFetcher(timeout=5, num_attempts=1, base_url=base).retrieve_region()
print(json.dumps({
    "token": token is not None,
    "region": region,
    "instance_id": with_token.text if with_token.status_code == 200 else None,
    "without_token": without.status_code,
}))
