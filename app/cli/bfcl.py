"""``llmqp bfcl fetch|requests|score``: BFCL function calling as the engine's workload.

llmqp bfcl fetch                                   # the pinned bfcl-eval wheel, sha256-checked
llmqp bfcl requests --out bfcl.jsonl [--categories simple_python,multiple] [--limit 100]
llmqp decode --requests bfcl.jsonl --plan dense --json > decoded.jsonl
llmqp bfcl score --results decoded.jsonl           # accuracy against possible_answer
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

from ..engine.bfcl import BFCL_CATEGORIES, DEFAULT_BFCL_MAX_TOKENS

__all__ = ["add_bfcl_commands", "make_requests", "check_schemas", "write_requests", "score_results"]


def _bfcl_folder() -> Path:
    from ..engine.fetch import BFCL_HINT, ModelMissingError, bfcl_dir

    folder = bfcl_dir()
    if not (folder / "wheel.sha256").is_file():
        raise ModelMissingError(f"the BFCL data is not in {folder}: {BFCL_HINT}")
    return folder


def _categories(text: str | None) -> tuple[str, ...]:
    if not text:
        return BFCL_CATEGORIES
    cats = tuple(c.strip() for c in text.split(",") if c.strip())
    bad = [c for c in cats if c not in BFCL_CATEGORIES]
    if bad or not cats:
        raise ValueError(
            f"--categories: {','.join(bad) or text!r} not in {', '.join(BFCL_CATEGORIES)}"
        )
    return cats


def check_schemas(requests: list[dict]) -> dict:
    """``{id: reason}`` for each request whose schema llguidance does not compile."""
    from ..engine.grammar import GrammarError, compile_grammar

    bad = {}
    for r in requests:
        try:
            compile_grammar("schema", r["schema"])
        except GrammarError as exc:
            bad[r["id"]] = str(exc)
    return bad


def make_requests(entries, limit: int | None, max_tokens: int) -> tuple[list, dict]:
    """(requests, notes by id): the first ``limit`` entries of each category, converted."""
    from ..engine.bfcl import to_request

    taken: Counter = Counter()
    requests, notes = [], {}
    for e in entries:
        if limit is not None and taken[e.category] >= limit:
            continue
        taken[e.category] += 1
        requests.append(to_request(e, max_tokens))
        if e.notes:
            notes[e.id] = e.notes
    return requests, notes


def _cmd_fetch(args) -> int:
    from ..engine.fetch import fetch_bfcl

    print(fetch_bfcl(progress=lambda line: print(line, file=sys.stderr), wheel=args.wheel))
    return 0


def _summary(count: int, notes, bad) -> list[str]:
    kinds = Counter(n.split(": ", 1)[1] for ns in notes.values() for n in ns)
    lines = [f"{count} requests; {len(notes)} with a dropped or changed feature"]
    lines += [f"  {count:4d} x {what}" for what, count in kinds.most_common()]
    lines.append(f"{len(bad)} schemas llguidance does not compile (left out)")
    lines += [f"  {rid}: {why}" for rid, why in list(bad.items())[:10]]
    return lines


def write_requests(path, categories=None, limit=None, max_tokens=DEFAULT_BFCL_MAX_TOKENS):
    """Convert the fetched data and write the requests whose schema compiles to ``path``
    (JSONL); returns (requests written, notes by id, ``{id: reason}`` of those left out)."""
    from ..engine.bfcl import load_entries

    if limit is not None and limit < 1:
        raise ValueError(f"--limit must be >= 1, got {limit}")
    if not 1 <= max_tokens <= 4096:
        raise ValueError(f"--max-tokens must be in [1, 4096], got {max_tokens}")
    entries = load_entries(_bfcl_folder(), categories or BFCL_CATEGORIES)
    requests, notes = make_requests(entries, limit, max_tokens)
    bad = check_schemas(requests)
    kept = [r for r in requests if r["id"] not in bad]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for r in kept:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    return kept, notes, bad


def _cmd_requests(args) -> int:
    cats = _categories(args.categories)
    kept, notes, bad = write_requests(args.out, cats, args.limit, args.max_tokens)
    if args.notes:
        Path(args.notes).write_text(json.dumps({"notes": notes, "not_compiled": bad}, indent=1))
    for line in _summary(len(kept) + len(bad), notes, bad):
        print(line, file=sys.stderr)
    print(f"wrote {len(kept)} requests to {args.out}")
    return 0


def score_results(results: list[dict], entries) -> dict:
    """Accuracy per category and overall, and the count of each failure reason."""
    from ..engine.bfcl_score import score_call

    by_id = {e.id: e for e in entries}
    per_cat: dict = {}
    reasons: Counter = Counter()
    for r in results:
        e = by_id.get(r.get("id"))
        if e is None:
            raise ValueError(f"--results: id {r.get('id')!r} is not a BFCL entry")
        s = score_call(r.get("text", ""), e.functions, e.answer)
        row = per_cat.setdefault(e.category, [0, 0])
        row[0] += s["correct"]
        row[1] += 1
        reasons[s["reason"]] += 1
    total = sum(n for _, n in per_cat.values())
    return {
        "requests": total,
        "accuracy": sum(c for c, _ in per_cat.values()) / max(total, 1),
        "per_category": {k: {"correct": c, "requests": n} for k, (c, n) in per_cat.items()},
        "reasons": dict(reasons),
    }


def _cmd_score(args) -> int:
    from ..engine.bfcl import load_entries

    path = Path(args.results)
    if not path.is_file():
        raise ValueError(f"--results {path}: no such file")
    lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    try:
        results = [json.loads(ln) for ln in lines]
    except json.JSONDecodeError as exc:
        raise ValueError(f"--results {path}: not JSON lines ({exc.msg})") from None
    report = score_results(results, load_entries(_bfcl_folder()))
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    for cat, row in report["per_category"].items():
        print(f"{cat:>14}: {row['correct']}/{row['requests']}")
    print(
        f"accuracy {report['accuracy']:.3f} on {report['requests']} requests; {report['reasons']}"
    )
    return 0


def add_bfcl_commands(sub) -> None:
    """Register ``bfcl fetch|requests|score`` on the ``llmqp`` subparsers."""
    b = sub.add_parser("bfcl", help="BFCL function calling: data, requests, accuracy")
    bsub = b.add_subparsers(dest="bfcl_command", required=True, parser_class=type(b))
    f = bsub.add_parser("fetch", help="download and check the BFCL data (idempotent)")
    f.add_argument("--wheel", default=None, help="a local bfcl-eval wheel (still sha256-checked)")
    f.set_defaults(func=_cmd_fetch)
    r = bsub.add_parser("requests", help="BFCL questions as decode requests (JSONL)")
    r.add_argument("--out", required=True, help="the JSONL file to write")
    r.add_argument(
        "--categories", default=None, help=f"comma-separated: {','.join(BFCL_CATEGORIES)}"
    )
    r.add_argument("--limit", type=int, default=None, help="the first N of each category")
    r.add_argument("--max-tokens", type=int, default=DEFAULT_BFCL_MAX_TOKENS)
    r.add_argument("--notes", default=None, help="write what each conversion dropped (JSON)")
    r.set_defaults(func=_cmd_requests)
    s = bsub.add_parser("score", help="accuracy of `llmqp decode --json` output")
    s.add_argument("--results", required=True, help="JSON lines with id and text")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=_cmd_score)
