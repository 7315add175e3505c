"""Scrape a /metrics URL and print its samples as JSON, parsed by the
Prometheus project's own Python client (Debian's python3-prometheus-client):
[[name, {labels}, value], ...]. Fails loudly on text it cannot parse."""

import json
import sys
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

text = urllib.request.urlopen(sys.argv[1], timeout=10).read().decode()
samples = []
for family in text_string_to_metric_families(text):
    for sample in family.samples:
        samples.append([sample.name, dict(sample.labels), sample.value])
print(json.dumps(samples))
