"""Fine-tuning tasks with fixed train / validation / test splits and the metric each paper uses.

| task        | source (package-shipped)                        | model kind | metric                      |
|-------------|-------------------------------------------------|------------|-----------------------------|
| `wiki`      | 106 Wikipedia articles (gensim test data)       | causal LM  | test perplexity             |
| `mathqa`    | MathQA, 5 options (BIG-bench elementary_math_qa)| causal LM  | accuracy, option likelihood |
| `nli`       | VitaminC evidence/claim, 3 classes (BIG-bench)  | encoder    | accuracy                    |
| `sentiment` | MultiEmo reviews, 4 classes (BIG-bench)         | encoder    | accuracy                    |
| a `.jsonl`  | {"text"} lines (LM) or {"text", "label"} lines  | either     | perplexity / accuracy       |

Splits are a fixed-seed permutation of the examples (articles, for ``wiki``), independent of the
run's seed; the learning rate is chosen on ``val`` and results are reported on ``test``. The index
lists are written beside the cached data (``splits/``) and a hash of them goes into every run card.
"""

from __future__ import annotations

import bz2
import hashlib
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import assets, io

BIGBENCH = "bigbench/benchmark_tasks/"
WIKI = "gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
SPLIT_SEED = 20241124
MAX_LINE = 1 << 20  # a data line longer than 1 MiB is refused rather than read


@dataclass
class Task:
    name: str
    kind: str  # "lm" (texts), "classify" (texts or text pairs + label), "choice" (question, options, answer)
    splits: dict[str, list[dict]]
    labels: list[str] = field(default_factory=list)
    model_kind: str = "causal"  # which model kind the task needs
    split_hash: str = ""
    source_sha256: str = ""  # of the data file the examples were read from (its extracted member's manifest)

    @property
    def metric(self) -> str:
        return metric_for(self.kind)


def metric_for(kind: str) -> str:
    """The metric of a task of ``kind``: validation perplexity for language modelling, accuracy otherwise."""
    return "perplexity" if kind == "lm" else "accuracy"


def split(n: int, val: int, test: int, seed: int = SPLIT_SEED) -> dict[str, list[int]]:
    """A fixed permutation of range(n): the first ``test`` indices are test, the next ``val`` validation."""
    if n < val + test + 1:
        raise ValueError(f"only {n} examples: cannot hold out {val} for validation and {test} for test")
    perm = np.random.default_rng(seed).permutation(n).tolist()
    return {"test": perm[:test], "val": perm[test : test + val], "train": perm[test + val :]}


def _finish(
    name: str,
    kind: str,
    examples: list[dict],
    val: int,
    test: int,
    source: Path | None = None,
    digest: str | None = None,
    **kw,
) -> Task:
    """The task with its fixed splits; ``digest``: the sha256 of ``source`` where the caller has it already."""
    idx = split(len(examples), val, test)
    h = hashlib.sha256(json.dumps(idx, sort_keys=True).encode()).hexdigest()[:16]
    path = assets.cache_dir() / "splits" / f"{name}.json"
    if not path.exists():
        io.write_json(path, {"seed": SPLIT_SEED, "hash": h, **idx})
    digest = digest or ("" if source is None else (assets.fingerprint(source) or assets.sha256(source)))
    return Task(
        name, kind, {s: [examples[i] for i in ix] for s, ix in idx.items()}, split_hash=h, source_sha256=digest, **kw
    )


def _bigbench(member: str) -> tuple[list[dict], Path]:
    path = assets.extract(assets.DISTS["bigbench"], BIGBENCH + member)
    return json.loads(path.read_text())["examples"], path


def _argmax(scores: dict) -> str:
    return max(scores, key=scores.get)


def nli() -> Task:
    labels = ["True", "False", "Neither"]
    ex = []
    raw, source = _bigbench("vitaminc_fact_verification/task.json")
    for e in raw:
        evidence, _, claim = e["input"].partition("\nClaim: ")
        ex.append({"text": evidence, "text_pair": claim, "label": labels.index(_argmax(e["target_scores"]))})
    return _finish("nli", "classify", ex, 1000, 2000, source, labels=labels, model_kind="encoder")


def sentiment() -> Task:
    raw, source = _bigbench("multiemo/all_text_en/task.json")
    labels = sorted(raw[0]["target_scores"])
    ex = [{"text": e["input"], "label": labels.index(_argmax(e["target_scores"]))} for e in raw]
    return _finish("sentiment", "classify", ex, 400, 800, source, labels=labels, model_kind="encoder")


def mathqa() -> Task:
    ex = []
    raw, source = _bigbench("elementary_math_qa/question_only/task.json")
    for e in raw:
        options = list(e["target_scores"])
        ex.append({"question": e["input"], "options": options, "answer": options.index(_argmax(e["target_scores"]))})
    return _finish("mathqa", "choice", ex, 400, 800, source)


def clean_wikitext(text: str) -> str:
    """Strip the commonest MediaWiki markup: templates, tables, refs, tags, links, headings' '='."""
    for _ in range(3):  # nested templates
        text = re.sub(r"\{\{[^{}]*\}\}", "", text)
    text = re.sub(r"\{\|.*?\|\}", "", text, flags=re.S)
    text = re.sub(r"<ref[^>]*/>|<ref.*?</ref>", "", text, flags=re.S)
    text = re.sub(r"<[^>]+>", "", text)
    text = re.sub(r"\[\[(?:File|Image|Category):[^\]]*\]\]", "", text)
    text = re.sub(r"\[\[(?:[^|\]]*\|)?([^\]]*)\]\]", r"\1", text)
    text = re.sub(r"\[https?://\S+ ([^\]]*)\]", r"\1", text)
    text = re.sub(r"'{2,}", "", text)
    text = re.sub(r"^=+\s*(.*?)\s*=+$", r"\1", text, flags=re.M)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def wiki() -> Task:
    source = assets.extract(assets.DISTS["gensim"], WIKI)
    xml = bz2.open(source).read().decode("utf-8")
    import html

    articles = [clean_wikitext(html.unescape(t)) for t in re.findall(r"<text[^>]*>(.*?)</text>", xml, flags=re.S)]
    articles = [{"text": a} for a in articles if len(a) > 200 and not a.lower().startswith("#redirect")]
    return _finish("wiki", "lm", articles, 8, 10, source)


def jsonl(path: str) -> Task:
    """A user's JSON-lines file: every line {"text": ...} (LM) or {"text": ..., "label": ...} (classification)."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"data file {path} does not exist")
    rows = []
    with open(p, "rb") as f:
        for n in itertools.count(1):
            line = f.readline(MAX_LINE + 1)  # bounded: a huge line is refused without being held
            if not line:
                break
            if len(line) > MAX_LINE:
                raise ValueError(f"{path}:{n}: line longer than {MAX_LINE} bytes; split the record")
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise ValueError(
                    f"{path}:{n}: not valid JSON ({e.msg if hasattr(e, 'msg') else e}); one JSON object per line"
                ) from None
            if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                raise ValueError(
                    f'{path}:{n}: missing field \'text\' (a string); lines look like {{"text": ..., "label": ...}}'
                )
            try:
                row["text"].encode("utf-8")
            except UnicodeEncodeError as e:  # JSON can carry a lone surrogate (\ud800) that no tokenizer takes
                raise ValueError(
                    f"{path}:{n}: the text holds an unpaired surrogate ({row['text'][e.start]!r}); "
                    "write it as valid UTF-8"
                ) from None
            rows.append(row)
    if not rows:
        raise ValueError(f"{path} holds no records")
    if all("label" in r for r in rows):
        kinds = {type(r["label"]).__name__ for r in rows}
        if len(kinds) > 1 or not kinds <= {"str", "int"}:  # 1, "1" and True would otherwise merge into one class
            raise ValueError(f"{path}: labels must all be strings or all integers; found {', '.join(sorted(kinds))}")
        labels = sorted({r["label"] for r in rows})
        if len(labels) < 2:
            raise ValueError(
                f"{path}: every record has the label {labels[0]!r}; a classification task needs two labels or more"
            )
        ex = [{"text": r["text"], "label": labels.index(r["label"])} for r in rows]
        labels = [str(v) for v in labels]
        kind, model_kind = "classify", "encoder"
    elif any("label" in r for r in rows):
        first = next(n for n, r in enumerate(rows, 1) if "label" not in r)
        raise ValueError(f"{path}: record {first} has no 'label' while others do; label every record or none")
    else:
        ex, kind, model_kind, labels = [{"text": r["text"]} for r in rows], "lm", "causal", []
    held = max(1, len(ex) // 10)
    digest = assets.sha256(p)  # (read once: it names the task and goes into the run cards)
    return _finish(f"jsonl-{digest[:12]}", kind, ex, held, held, p, digest, labels=labels, model_kind=model_kind)


TASKS = {"wiki": wiki, "mathqa": mathqa, "nli": nli, "sentiment": sentiment}
KINDS = {"wiki": "lm", "mathqa": "choice", "nli": "classify", "sentiment": "classify"}  # (tests: = load(name).kind)


def metric_of(name: str) -> str:
    """Task ``name``'s metric without reading a built-in task's examples (a sweep's grid needs it before its
    workers start, and wiki's load is a second of XML parsing); a .jsonl file is read (its labels decide its kind)."""
    return metric_for(KINDS[name]) if name in TASKS else load(name).metric


def load(name: str) -> Task:
    if name in TASKS:
        return TASKS[name]()
    if name.endswith(".jsonl") or Path(name).is_file():
        return jsonl(name)
    raise ValueError(
        f"unknown task {name!r}{io.did_you_mean(name, TASKS)} (tasks: {', '.join(TASKS)}, or a .jsonl file)"
    )
