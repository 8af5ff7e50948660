"""Every CPU benchmark in turn (``make bench``); each prints its own ratios and targets."""
from benchmarks import bench_data, bench_memory, bench_step

if __name__ == "__main__":
    bench_step.main()
    bench_data.main()
    bench_memory.main()
