"""Run layer_bench.py (no torch) under several XLA_FLAGS settings, one process each.

Usage: python experiments/cpu_study/flag_sweep.py [layer_bench args...]
  e.g. python experiments/cpu_study/flag_sweep.py conv --forms grouped,split --iters 3
"""
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
FLAGS = [
    "",
    "--xla_cpu_use_xnnpack=false",
    "--xla_cpu_use_onednn=true",
    "--xla_cpu_experimental_onednn_custom_call=true",
    "--xla_cpu_experimental_xnn_graph_fusion_mode=XNN_GRAPH_FUSION_MODE_GREEDY",
    "--xla_cpu_experimental_xnn_graph_fusion_mode=XNN_GRAPH_FUSION_MODE_GREEDY_SLINKY",
    "--xla_cpu_experimental_ynn_fusion_type=dot",
    "--xla_cpu_enable_fast_math=true",
    "--xla_cpu_multi_thread_eigen=false",
    "--xla_cpu_prefer_vector_width=512",
]
if os.environ.get("SWEEP_FLAGS"):
    FLAGS = os.environ["SWEEP_FLAGS"].split(";")

args = sys.argv[1:] or ["conv", "--forms", "grouped,split", "--iters", "3"]
for fl in FLAGS:
    env = dict(os.environ, XLA_FLAGS=fl)
    r = subprocess.run([sys.executable, os.path.join(HERE, "layer_bench.py"), *args, "--no-torch"],
                       env=env, capture_output=True, text=True, timeout=1200)
    print(f"==== XLA_FLAGS='{fl}' load={os.getloadavg()[0]:.2f}", flush=True)
    out = [l for l in r.stdout.splitlines() if not l.startswith("XLA_FLAGS")]
    print("\n".join(out) if r.returncode == 0 else "FAILED: " + r.stderr[-800:], flush=True)
