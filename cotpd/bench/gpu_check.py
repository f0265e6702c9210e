"""`make gpu-check`: what only a GPU can show, in one short script, for the day a GPU is lent.

    python -m cotpd.bench.gpu_check                  # on a CUDA machine: writes results/gpu/README.md
    python -m cotpd.bench.gpu_check --device cpu --smoke --out /tmp/gpu   # the same steps on CPU (tests)

Steps (each a process of its own with a time limit, so one failure never hides the others):
1. the sample pipeline (`cotpd run`) on the device, bf16 autocast on;
2. `torchrun --nproc_per_node 1 -m cotpd.training` (NCCL on CUDA, gloo on CPU);
3. the BLIP-2 captioner on a tiny random checkpoint (cotpd_testing.tiny_blip2) on the device;
4. training throughput of our loop against a bare loop on the device (cotpd.bench.student);
5. one epoch of the real Twitter-2015 baseline and CoTPD, with their time (skipped, and said so,
   where the data is not there).
Where torch sees no CUDA device and --device is not given, it exits at once (status 0), says so and
writes nothing: a CPU machine has nothing to check here.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from ..args import root_of
from ..io import atomic_write, write_yaml
from ..model.encoder import build_tiny_encoder
from ..params import absolute_roots, read_params
from ..training.tracking import git_commit

LIMIT_S = 300  # per step: the whole check must stay under 8 minutes on one GPU


def scratch_project(root: Path, work: Path, data: Path | None, device: str, tiny: Path | None) -> Path:
    """A project root in `work`: params.yaml with dataset roots absolute (real ones under `data`),
    the device and bf16 set, the committed sample ledgers copied (the LLM stages replay them)."""
    params = read_params(root)
    absolute_roots(params, root, data)
    params["train"].update(device=device, bf16=True)
    if tiny is not None:
        params["train"].update(encoder=str(tiny), epochs=1, max_length=32, knowledge_max_length=48)
    work.mkdir(parents=True, exist_ok=True)
    write_yaml(work / "params.yaml", params)
    for ds in ("sample", "sample_mnre", "twitter2015"):
        if (root / "ledger" / ds).is_dir():
            shutil.copytree(root / "ledger" / ds, work / "ledger" / ds, dirs_exist_ok=True)
    return work


def run_step(name: str, cmd: list[str], cwd: Path, log_dir: Path, limit: float = LIMIT_S) -> dict:
    """Run one step as a process; its output goes to <log_dir>/<name>.log, its last lines to the report."""
    log = log_dir / f"{name.replace(' ', '_')}.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    t0 = time.perf_counter()
    with open(log, "wb") as fh:
        try:
            rc = subprocess.run(cmd, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT, env=env, timeout=limit).returncode
        except subprocess.TimeoutExpired:
            rc = None
    out = log.read_text(encoding="utf-8", errors="replace")
    return {"step": name, "ok": rc == 0, "rc": rc, "seconds": round(time.perf_counter() - t0, 1),
            "command": " ".join(cmd), "tail": out[-1500:], "log": str(log)}


def last_json(text: str) -> dict | None:
    """The last JSON object a command printed (cotpd.bench.student and cotpd bench print one)."""
    start = text.rfind("\n{")
    try:
        return json.loads(text[start + 1:] if start >= 0 else text)
    except json.JSONDecodeError:
        return None


def steps(py: str, proj: Path, device: str, real: bool, smoke: bool) -> list[tuple[str, list[str]]]:
    root = ["--root", str(proj)]
    cotpd = [py, "-m", "cotpd"]
    out = [
        ("sample pipeline", cotpd + ["run", *root, "--dataset", "sample"]),
        ("torchrun", [py, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1", "-m", "cotpd.training",
                      *root, "--dataset", "sample", "--variant", "cotpd", "--set", "train.epochs=1", "--no-test"]),
        ("blip2 captioner", [py, "-m", "cotpd.bench.gpu_blip2", device]),
        ("throughput", [py, "-m", "cotpd.bench.student", *root, "--dataset", "sample", "--variant", "cotpd",
                        "--throughput", "32" if smoke else "64"]),
    ]
    if real:
        out.append(("twitter2015 one epoch", cotpd + ["bench", "--full", *root, "--out", str(proj / "bench"),
                                                     "--datasets", "twitter2015", "--groups", "main", "--seeds", "1",
                                                     "--variants", "baseline", "cotpd", "--no-speed",
                                                     "--set", "train.epochs=1", "--set", f"train.device={device}"]))
    return out


def report(results: list[dict], device: str, commit: str, command: str) -> str:
    name = torch.cuda.get_device_name(0) if device.startswith("cuda") else "CPU (a dry run of the GPU check)"
    L = ["# GPU check (`make gpu-check`)", "", f"- device: {name}; torch {torch.__version__}, CUDA {torch.version.cuda}",
         f"- git commit: `{commit}`", f"- command: `{command}`", "",
         "| Step | Result | Seconds | What it showed |", "|---|---|---|---|"]
    for r in results:
        L.append(f"| {r['step']} | {'ok' if r['ok'] else 'FAILED' if r['rc'] is not None else 'TIMED OUT'} "
                 f"| {r['seconds']} | {r.get('summary', '')} |")
    for r in (r for r in results if not r["ok"]):
        L += ["", f"## {r['step']}: last output", "", "```", r["tail"].strip(), "```"]
    return "\n".join(L) + "\n"


def summarize(r: dict) -> str:
    """One line of what a step's own output says (throughput ratio, trainings' time and F1)."""
    data = last_json(r["tail"]) if r["ok"] else None
    if r["step"] == "blip2 captioner" and data:
        return f"{data['captions']} captions on {data['device']} in {data['dtype']}, {data['seconds']} s"
    if r["step"] == "torchrun" and r["ok"]:
        return "1 process, backend " + ("nccl" if "nccl" in r["command"] or r.get("device", "").startswith("cuda") else "gloo")
    if r["step"] == "throughput" and data:
        return f"ours {data['ours_tokens_per_s']} tok/s, bare {data['bare_tokens_per_s']} tok/s, ratio {data['ratio']}"
    if r["step"].startswith("twitter2015") and r["ok"]:
        recs = json.loads(Path(r["results"]).read_text(encoding="utf-8"))["runs"] if r.get("results") else []
        return "; ".join(f"{x['variant']}: {x['seconds']} s, test F1 {100 * x['test_f1']:.2f}" for x in recs)
    return "" if r["ok"] else f"see {r['log']}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cotpd.bench.gpu_check", description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, default=None)
    p.add_argument("--device", default=None, help="default: cuda where torch sees one, else exit at once")
    p.add_argument("--out", type=Path, default=Path("results/gpu"))
    p.add_argument("--data", type=Path, default=None, help="folder with twitter2015/ (default: params.yaml's)")
    p.add_argument("--smoke", action="store_true", help="a tiny random encoder, 1 epoch, no real data (tests)")
    args = p.parse_args(argv)
    device = args.device or ("cuda" if torch.cuda.is_available() else None)
    if device is None:
        print("gpu-check: torch sees no CUDA device (torch.cuda.is_available() is False): nothing to check "
              "here, nothing written. Run it where a GPU is visible.")
        return 0
    root = root_of(argparse.Namespace(root=args.root))
    data = args.data or (root / read_params(root)["datasets"]["twitter2015"]["root"]).parent
    real = not args.smoke and (data / "twitter2015").is_dir()
    out = args.out if args.out.is_absolute() else root / args.out
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        tiny = build_tiny_encoder(Path(tmp) / "tiny") if args.smoke else None
        proj = scratch_project(root, Path(tmp) / "project", data if real else None, device, tiny)
        logs = Path(tmp) / "logs"
        logs.mkdir()
        results = []
        for name, cmd in steps(sys.executable, proj, device, real, args.smoke):
            r = run_step(name, cmd, root, logs)
            r["device"] = device
            if name.startswith("twitter2015"):
                r["results"] = str(proj / "bench" / "results.json")
            r["summary"] = summarize(r)
            results.append(r)
            print(f"gpu-check: {name}: {'ok' if r['ok'] else 'FAILED'} in {r['seconds']} s", flush=True)
        if not real:
            results.append({"step": "twitter2015 one epoch", "ok": True, "rc": 0, "seconds": 0,
                            "summary": "skipped: " + ("--smoke" if args.smoke else f"no data at {data / 'twitter2015'}")})
        text = report(results, device, git_commit(root), "python -m cotpd.bench.gpu_check " + " ".join(argv or sys.argv[1:]))
    out.mkdir(parents=True, exist_ok=True)
    with atomic_write(out / "README.md") as fh:
        fh.write(text)
    print(text)
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
