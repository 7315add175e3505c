"""Scrape a /metrics URL and print its samples as JSON, parsed by the
Prometheus project's own Python client (Debian's python3-prometheus-client):
[[name, {labels}, value], ...], with +Inf, -Inf and NaN (valid sample
values, not JSON numbers) as strings. Fails loudly on text it cannot parse."""

import json
import sys
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

text = urllib.request.urlopen(sys.argv[1], timeout=10).read().decode()
samples = []
for family in text_string_to_metric_families(text):
    for sample in family.samples:
        value = sample.value
        if value != value or value in (float("inf"), float("-inf")):
            value = {float("inf"): "+Inf", float("-inf"): "-Inf"}.get(value, "NaN")
        samples.append([sample.name, dict(sample.labels), value])
print(json.dumps(samples))
