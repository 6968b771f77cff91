"""A pool serving Prometheus metrics, scraped as Prometheus would scrape it.

Needs the metrics extra: pip install 'poolx[metrics]'.
"""

import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

import poolx
from poolx.exceptions import TimeLimitExceeded


def resize(size):
    return size * 2


def broken(size):
    raise ValueError(f"cannot resize {size}")


def stuck(size):
    time.sleep(60)  # a task that hangs: its time limit stops it


if __name__ == "__main__":
    # metrics_port=0 picks a free port; a real deployment names one, e.g. 9100.
    with poolx.Pool(2, metrics_port=0) as pool:
        pool.map(resize, range(8), chunksize=1)
        try:
            pool.apply(broken, (3,))
        except ValueError:
            pass
        try:
            pool.apply(stuck, (4,), timeout=0.5)
        except TimeLimitExceeded:
            pass
        with urllib.request.urlopen(pool.metrics_server.url) as response:
            scraped = response.read().decode()

    for family in text_string_to_metric_families(scraped):
        for sample in family.samples:
            if sample.name.startswith(("poolx_tasks_succeeded", "poolx_tasks_failed")) \
                    and sample.value:
                labels = ", ".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                print(f"{sample.name}{{{labels}}} {sample.value:g}")
