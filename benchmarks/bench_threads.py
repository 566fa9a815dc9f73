"""CPU training speed against thread count and OpenMP wait policy, on a machine other work shares.

A 2-core machine running other jobs slowed the default run (all cores) to a tenth of a one-thread
run, its threads spinning in OpenMP's barrier. This times the trainer's step (MobileFaceNet width
0.5 at 64 px, NPT head, SGD, batch 64: the synthetic-quick recipe) in a fresh process per setting,
because the wait policy is read once when OpenMP starts. Run it with and without a competing load
to choose ``device.cpu_threads``'s default and see what to set on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time


def _child(threads: int, seconds: float) -> None:
    import torch

    from nptface.core.heads import NPTHead
    from nptface.core.mobilefacenet import MobileFaceNet

    torch.manual_seed(0)
    torch.set_num_threads(threads)
    model = MobileFaceNet(width=0.5, input_size=64, embedding_dim=256)
    head = NPTHead(300, 256)
    optimiser = torch.optim.SGD([*model.parameters(), *head.parameters()], lr=0.01, momentum=0.9)
    images, labels = torch.randn(64, 3, 64, 64), torch.randint(0, 300, (64,))

    def step() -> None:
        optimiser.zero_grad(set_to_none=True)
        head(model(images), labels).loss.backward()
        optimiser.step()

    step()  # warm-up: allocations, OpenMP team start
    start, steps = time.perf_counter(), 0
    while steps == 0 or time.perf_counter() - start < seconds:
        step()
        steps += 1
    elapsed = time.perf_counter() - start
    print(json.dumps({"threads": torch.get_num_threads(), "img_s": 64 * steps / elapsed, "steps": steps}))


def _burn(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--policies", nargs="+", default=["default", "PASSIVE"])
    parser.add_argument("--seconds", type=float, default=30.0, help="timed steps per setting (at least one)")
    parser.add_argument("--burners", type=int, default=0, help="busy processes competing for the cores")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        _child(args.child, args.seconds)
        return
    burners = [
        subprocess.Popen([sys.executable, "-c", "import benchmarks.bench_threads as b; b._burn(3600)"])
        for _ in range(args.burners)
    ]
    try:
        for policy in args.policies:
            for threads in args.threads:
                env = dict(os.environ)
                env.pop("OMP_WAIT_POLICY", None)
                if policy != "default":
                    env["OMP_WAIT_POLICY"] = policy
                with open("/proc/loadavg") as file:
                    load = file.read().split()[0]
                out = subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "benchmarks.bench_threads",
                        "--child",
                        str(threads),
                        "--seconds",
                        str(args.seconds),
                    ],
                    env=env,
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
                result = json.loads(out.strip().splitlines()[-1])
                print(
                    f"| {threads} | {policy} | {args.burners} | {load} | {result['img_s']:.1f} | {result['steps']} |",
                    flush=True,
                )
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()


if __name__ == "__main__":
    main()
