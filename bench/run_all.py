"""``make bench``: the CPU benchmarks in turn (the GPU one runs only where CUDA is present)."""

from __future__ import annotations

from bench import data_path, deployment, federation_overhead, gpu, site_scaling, unlearning_cost


def main() -> None:
    data_path.main([])
    federation_overhead.main([])
    unlearning_cost.main([])
    deployment.main([])
    site_scaling.main([])
    gpu.main([])


if __name__ == "__main__":
    main()
