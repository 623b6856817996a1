"""CPU seconds of `python -m minisd3 COMMAND --help` (target: under 1 s each, issue 11).

    python benchmarks/cli_startup.py [--repeat 3]

Prints the median user+system CPU time of each command's --help, measured on this machine in a
fresh subprocess (resource.getrusage of the children), and whether each is under the 1 s bound.
"""
import argparse
import resource
import statistics
import subprocess
import sys

COMMANDS = [[], ["execute"], ["exercises"], ["grade"], ["train"], ["sample"], ["eval"], ["export"], ["bench"],
            ["autoencoder"], ["encode-latents"]]


def cpu_seconds(argv: list[str]) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, "-m", "minisd3", *argv, "--help"], capture_output=True, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"{'command':<28} {'CPU s (median)':>14}  under 1 s")
    for argv in COMMANDS:
        median = statistics.median(cpu_seconds(argv) for _ in range(args.repeat))
        print(f"{' '.join(['minisd3', *argv, '--help']):<28} {median:>14.2f}  {'yes' if median < 1 else 'NO'}")


if __name__ == "__main__":
    main()
