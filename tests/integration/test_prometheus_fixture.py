"""The Prometheus fixture scrapes real exporters over HTTP, and answers PromQL over its HTTP API."""

import math

from prometheus_client import Counter, Gauge

from flows.common.prom import quote_label_value


def test_exporter_is_scraped_with_its_labels(prometheus, exporter):
    e = exporter(labels={"track": "canary", "namespace": "inference"})
    g = Gauge("inferops_fixture_probe", "probe", ["gpu"], registry=e.registry)
    g.labels(gpu="0").set(42)
    q = f'inferops_fixture_probe{{track={quote_label_value("canary")}}}'
    samples = prometheus.wait_for(q)
    assert len(samples) == 1
    s = samples[0]
    assert s.value == 42
    assert s.labels["namespace"] == "inference" and s.labels["gpu"] == "0"
    assert s.labels["instance"] == e.instance


def test_rate_over_counter_and_empty_result(prometheus, exporter):
    e = exporter(labels={"track": "baseline"})
    c = Counter("inferops_fixture_requests", "reqs", registry=e.registry)
    c.inc(5)
    prometheus.wait_for("inferops_fixture_requests_total")
    for _ in range(3):
        c.inc(10)
        import time

        time.sleep(1.1)
    rate = prometheus.wait_for("rate(inferops_fixture_requests_total[5s])",
                               predicate=lambda s: bool(s) and s[0].value > 0)
    assert rate[0].value > 0
    with prometheus.client() as cl:
        assert cl.query('inferops_fixture_requests_total{track="nope"}') == []
        nan = cl.query("0/0")
        assert len(nan) == 1 and math.isnan(nan[0].value)
