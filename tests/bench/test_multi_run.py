"""bench/multi_run.py's ``lora_path``: each name sets the LoRA layers' forward it names, and 'default' leaves
lorainit's as a fresh process has it (a bench labelled 'default' measures what lorainit finetune runs). Each case
runs in a fresh interpreter: the switches are process-wide."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROBE = """
import json, sys
sys.path.insert(0, "bench")
from lorainit import fused, multi
def state():
    return {"merged": multi.MultiLoRALinear.merged, "fused_add": multi.MultiLoRALinear.fused_add,
            "enabled": fused.ENABLED, "siblings": multi.attach is multi._attach_default,
            "chain": [fused.CHAIN_FORWARD, fused.CHAIN_BACKWARD]}
multi._attach_default = multi.attach
fresh = state()
import multi_run
multi_run.lora_path(sys.argv[1])
print(json.dumps({"fresh": fresh, "set": state()}))
"""


def probe(name: str) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, name], cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "name,want",
    [
        ("merged", {"merged": True, "enabled": False}),
        ("fused", {"merged": True, "enabled": True}),
        ("siblings", {"merged": False, "enabled": False}),
        ("baddbmm", {"merged": False, "fused_add": False, "siblings": False}),
        ("unchained", {"merged": True, "enabled": None, "chain": [False, False]}),
        ("chain-backward", {"merged": True, "enabled": None, "chain": [False, True]}),
    ],
)
def test_each_path_sets_the_forward_it_names(name, want):
    got = probe(name)["set"]
    assert {k: got[k] for k in want} == want


def test_default_is_lorainits_own():
    got = probe("default")
    assert got["set"] == got["fresh"]
    assert got["fresh"] == {"merged": True, "fused_add": True, "enabled": None, "siblings": True, "chain": [True, True]}
