#!/usr/bin/env bash
# Install torch-sim-atomistic 0.6.2 (import name torch_sim) into a Python 3.11
# environment, for side-by-side benchmarks only. 0.6.2 declares Python >= 3.12 but
# needs 3.12 only for PEP 695 generic syntax (`def f[T: X](...)`); this script
# rewrites that syntax to plain TypeVars (no logic change) and installs its
# runtime dependencies. torch must already be installed.
# Usage: bench/install_torchsim_py311.sh [PYTHON]   (default: python3); bench/relax_throughput.py
# runs it with the Python of bench/.venv-torchsim, which it makes on first use.
set -euo pipefail
PY=${1:-python3}
work=$(mktemp -d)
"$PY" -m pip download -q --no-deps --python-version 3.12 --only-binary=:all: \
  torch-sim-atomistic==0.6.2 -d "$work"
"$PY" -m pip install -q --ignore-requires-python --no-deps "$work"/torch_sim_atomistic-0.6.2-*.whl
"$PY" -m pip install -q "nvalchemi-toolkit-ops[torch]>=0.4.0" h5py tables tqdm vesin ase
site=$("$PY" -c "import importlib.util, os; print(os.path.dirname(importlib.util.find_spec('torch_sim').origin))")
"$PY" - "$site" <<'PYEOF'
import pathlib, re, sys
root = pathlib.Path(sys.argv[1])
func = re.compile(r"^(\s*(?:async\s+)?def\s+\w+)\[[^\]]*\]", re.M)
cls = re.compile(r"^(\s*class\s+\w+)\[[^\]]*\](?:\(([^)]*)\))?:", re.M)
def as_generic(m):
    bases = (m.group(2) + ", " if m.group(2) else "") + "_Generic[T]"
    return f"{m.group(1)}({bases}):"
for path in root.rglob("*.py"):
    text = path.read_text()
    if not (func.search(text) or cls.search(text)):
        continue
    text = cls.sub(as_generic, func.sub(r"\1", text))
    # T and friends become module-level TypeVars; annotations stay readable.
    lines = text.splitlines(keepends=True)
    at = 0
    for i, line in enumerate(lines):
        if line.startswith(("import ", "from ")) and "__future__" not in line:
            at = i
            break
    lines.insert(at, "from typing import Generic as _Generic, TypeVar as _TypeVar\nT = _TypeVar('T')\n")
    path.write_text("".join(lines))
    print("patched", path.relative_to(root))
PYEOF
"$PY" -c "import torch_sim, torch_sim.autobatching, torch_sim.optimizers; print('torch_sim', torch_sim.__version__, 'imports on', __import__('sys').version.split()[0])"
rm -rf "$work"
