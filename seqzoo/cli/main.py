"""The ``seqzoo`` command line: ``list``, ``train``, ``generate``, ``info``, ``repro``, ``arena``, ``report``,
``forecast``, ``webs`` (spider-web graph generation), ``fitness`` (Tranception protein fitness) and
``protein-design`` (the protein GPT-GNN).

Bad input (unknown config key or mixer, wrong type, missing file, non-UTF-8 text, a corrupt checkpoint) prints
one line ``seqzoo: error: ...`` on stderr and exits with code 2.
"""

from __future__ import annotations

import argparse
import json
import sys

from ..core.errors import SeqzooError


def _cmd_list(args) -> int:
    from ..core.registry import list_mixers, mixer_entry

    for name in list_mixers():
        entry = mixer_entry(name)
        arxiv = f" (arXiv {entry.arxiv})" if entry.arxiv else ""
        print(f"{name:22s} {entry.paper}{arxiv}")
    return 0


def _build_from_run_config(run: dict):
    from ..core.config import from_dict
    from ..models import CausalLM
    from .config import RunConfig

    cfg = from_dict(RunConfig, run)
    return cfg, CausalLM(cfg.model)


def _decode(tokens: list[int]) -> str:
    return bytes(tokens).decode("utf-8", errors="replace")


def _sample_text(model, prompt: str, sample, max_new_tokens: int | None = None) -> str:
    from ..generation import generate

    if not prompt:
        raise SeqzooError("the prompt is empty; give at least one character")
    tokens = list(prompt.encode("utf-8"))
    new = generate(model, [tokens], max_new_tokens if max_new_tokens is not None else sample.max_new_tokens,
                   temperature=sample.temperature, top_k=sample.top_k, top_p=sample.top_p, seed=sample.seed)[0]
    return prompt + _decode(new)


def _cmd_train(args) -> int:
    import torch

    from ..core.config import load_config, to_dict
    from ..models import CausalLM
    from ..tasks.text import ByteCorpus
    from ..train import Trainer
    from .config import RunConfig

    cfg = load_config(RunConfig, args.config, args.set)
    if cfg.model.input_dim is not None or cfg.model.vocab_size != 256:
        raise SeqzooError("seqzoo train works on byte-level text: model.vocab_size must be 256 and input_dim unset")
    torch.manual_seed(cfg.train.seed)
    data = ByteCorpus.from_source(cfg.data.source, cfg.data.seq_len, val_fraction=cfg.data.val_fraction,
                                  seed=cfg.data.seed)
    model = CausalLM(cfg.model)
    trainer = Trainer(model, data, cfg.train, cfg.run_dir(), run_config=to_dict(cfg))
    if trainer.is_main:
        unigram = data.unigram_entropy("val")
        print(f"model: {model.num_parameters():,} parameters, mixers {cfg.model.layer_mixers()}; "
              f"data: {cfg.data.source} ({len(data.splits['train']):,} train bytes)")
        print(f"unigram baseline on validation: {unigram:.3f} nats/byte")
    metrics = trainer.fit()
    if trainer.is_main:
        val = metrics.get("val_loss")
        if val is not None:
            print(f"final validation loss {val:.3f} nats/byte ({val / 0.6931:.3f} bits/byte) vs unigram "
                  f"{unigram:.3f}: {'below' if val < unigram else 'NOT below'} the unigram baseline")
        if cfg.sample.max_new_tokens > 0:
            model.eval()
            print("--- sample ---")
            print(_sample_text(model, cfg.sample.prompt, cfg.sample))
        print(f"checkpoint: {trainer.out_dir}")
    return 0


def _cmd_generate(args) -> int:
    from ..core.config import from_dict
    from ..train.checkpoint import checkpoint_info, load_model_state
    from .config import SampleConfig

    info = checkpoint_info(args.checkpoint)
    cfg, model = _build_from_run_config(info["config"])
    load_model_state(args.checkpoint, model)
    model.eval()
    sample = from_dict(SampleConfig, {**vars(cfg.sample), **{k: v for k, v in (
        ("temperature", args.temperature), ("top_k", args.top_k), ("top_p", args.top_p), ("seed", args.seed),
        ("max_new_tokens", args.max_new_tokens)) if v is not None}}, "generate")
    print(_sample_text(model, args.prompt, sample))
    return 0


def _cmd_info(args) -> int:
    from ..train.checkpoint import checkpoint_info

    info = checkpoint_info(args.checkpoint)
    cfg, model = _build_from_run_config(info["config"])
    summary = {"path": str(info.get("path", args.checkpoint)), "step": info.get("step"),
               "parameters": model.num_parameters(), "mixers": cfg.model.layer_mixers(),
               "metrics": info.get("metrics", {}), "config": info["config"]}
    print(json.dumps(summary, indent=2, default=str))
    return 0


def _cmd_repro(args) -> int:
    from ..repro import get_repro, list_repros

    if args.list or not args.paper_id:
        for entry in list_repros():
            print(f"{entry.paper_id:14s} {entry.title} — {entry.claim}")
        return 0
    entry = get_repro(args.paper_id)
    print(f"{entry.paper_id}: {entry.title}" + (f" (arXiv {entry.arxiv})" if entry.arxiv else ""))
    print(f"claim: {entry.claim}")
    result = entry.run(args.quick, **_repro_options(entry, args.set))
    print(result.render())
    if args.json:
        from pathlib import Path

        Path(args.json).write_text(result.to_json())
    return 0 if result.held or args.quick else 1


def _repro_options(entry, pairs: list[str]) -> dict:
    """``--set key=value`` pairs for a reproduction that takes keyword options (values stay strings)."""
    import inspect

    if not pairs:
        return {}
    valid = [p for p in inspect.signature(entry.run).parameters if p != "quick"]
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key.strip() not in valid:
            raise SeqzooError(f"bad option {pair!r} for reproduction {entry.paper_id}; valid keys: "
                              f"{', '.join(valid) or '(none)'} (as --set key=value)")
        options[key.strip()] = value
    return options


def _cmd_arena(args) -> int:
    from ..arena import ArenaConfig, RunDB, best_over_lr, format_leaderboard, run_arena

    cfg = ArenaConfig.load(args.config)
    db_path = args.db or cfg.db
    with RunDB(db_path) as db:
        counts = run_arena(cfg, db)
        print(f"arena: {counts['ran']} ran, {counts['skipped']} already done, {counts['failed']} failed, "
              f"{counts['total']} in the grid" + (" (stopped by max_seconds)" if counts["stopped"] else ""))
        print(format_leaderboard(best_over_lr(db.runs())))
    print(f"database: {db_path}")
    if args.report:
        from ..arena.report import write_report

        print(f"report: {write_report(db_path, args.report)}")
    return 0


def _cmd_report(args) -> int:
    from ..arena.report import write_report

    print(f"report: {write_report(args.db, args.out)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seqzoo", description="Sequence models behind shared, tested contracts.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="registered mixers with their papers").set_defaults(fn=_cmd_list)

    train = sub.add_parser("train", help="train a byte-level causal LM from a TOML config")
    train.add_argument("config", help="TOML config (see configs/)")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config value, e.g. --set model.d_model=256 (repeatable)")
    train.set_defaults(fn=_cmd_train)

    gen = sub.add_parser("generate", help="continue a prompt with a trained checkpoint")
    gen.add_argument("checkpoint", help="a checkpoint directory or a run directory (its latest checkpoint)")
    gen.add_argument("--prompt", required=True)
    gen.add_argument("--max-new-tokens", type=int)
    gen.add_argument("--temperature", type=float)
    gen.add_argument("--top-k", type=int)
    gen.add_argument("--top-p", type=float)
    gen.add_argument("--seed", type=int)
    gen.set_defaults(fn=_cmd_generate)

    repro = sub.add_parser("repro", help="run a paper's small-scale reproduction (exit 1 if it does not hold)")
    repro.add_argument("paper_id", nargs="?", help="see seqzoo repro --list")
    repro.add_argument("--list", action="store_true", help="list the reproductions")
    repro.add_argument("--quick", action="store_true", help="a tiny smoke run (its checks are not expected to hold)")
    repro.add_argument("--json", help="also write the result as JSON to this path")
    repro.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="an option of the reproduction, e.g. --set models=dlinear,rlinear (repeatable)")
    repro.set_defaults(fn=_cmd_repro)

    arena = sub.add_parser("arena", help="train a grid of mixers x tasks x sizes x learning rates (resumable)")
    arena.add_argument("config", help="arena TOML config (see configs/arena_quick.toml)")
    arena.add_argument("--db", help="SQLite database of runs (default: the config's arena.db)")
    arena.add_argument("--report", metavar="HTML", help="also write the HTML report of the database to this file")
    arena.set_defaults(fn=_cmd_arena)

    report = sub.add_parser("report", help="render an arena database as a static HTML page")
    report.add_argument("db", help="SQLite database written by seqzoo arena")
    report.add_argument("--out", default="arena_report.html", help="HTML file to write (default: %(default)s)")
    report.set_defaults(fn=_cmd_report)

    from .fitness import add_fitness_parser
    from .forecast import add_forecast_parser
    from .protein_design import add_protein_design_parser
    from .webs import add_webs_parser

    add_forecast_parser(sub)
    add_webs_parser(sub)
    add_fitness_parser(sub)
    add_protein_design_parser(sub)

    info = sub.add_parser("info", help="describe a checkpoint")
    info.add_argument("checkpoint")
    info.set_defaults(fn=_cmd_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.fn(args)
    except SeqzooError as e:
        print(f"seqzoo: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("seqzoo: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
