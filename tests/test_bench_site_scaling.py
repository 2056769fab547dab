"""bench.site_scaling's measuring parts: the site lists it generates, its growth exponent, its memory sampler."""

from __future__ import annotations

import subprocess
import sys

from bench.site_scaling import TreeMemory, growth, site_list
from fedforget.configs.compose import load_experiment


def test_each_size_is_a_generated_list_of_that_many_sites_with_a_knee_to_remove() -> None:
    for sites in (4, 16, 64, 128):
        cfg = load_experiment("smoke", site_list(sites))
        assert len(cfg.sites) == sites and "knee-0" in cfg.sites
        assert sum(site.anatomy == "knee" for site in cfg.sites.values()) == max(1, sites // 4)


def test_the_growth_exponent_is_one_for_linear_and_two_for_quadratic_growth() -> None:
    linear = [{"sites": 4, "t": 2.0}, {"sites": 128, "t": 64.0}]
    quadratic = [{"sites": 4, "t": 1.0}, {"sites": 128, "t": 1024.0}]
    assert growth(linear, "t") == 1.0 and growth(quadratic, "t") == 2.0


def test_the_memory_sampler_sees_a_child_processs_allocation() -> None:
    """A parent that holds little and a child that holds 300 MB: the tree's peak counts the child."""
    code = ("import subprocess, sys; subprocess.run([sys.executable, '-c', "
            "'import time; block = bytearray(300 * 2 ** 20); time.sleep(3)'])")
    process = subprocess.Popen([sys.executable, "-c", code])
    with TreeMemory(process.pid, period=0.2) as memory:
        process.wait(timeout=60)
    assert memory.peak_mb > 300 and memory.peak_processes >= 2
