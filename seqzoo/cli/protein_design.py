"""``seqzoo protein-design train | predict | design``: the GPT-GNN protein model (Buehler 2023, arXiv 2305.04934)
from the command line.

    seqzoo protein-design train --out DIR [--steps 500] [--gnn-layers 3] [--d-model 64] [--n-layers 4]
                                [--n-heads 4] [--batch-size 32] [--lr 2e-3] [--device cpu|cuda|auto]
                                [--no-real] [--seed 0] [--progress]
    seqzoo protein-design predict DIR (--fasta FILE | --seq SEQ [--seq SEQ ...] | --prompt 'SS MKV…|')
                                [--task ss|ss_real|content|solubility|all] [--plot PNG] [--json FILE]
    seqzoo protein-design design DIR --helix 0.4 --sheet 0.2 --length 40 [--n 4] [--temperature 0.8]
                                [--seed 0] [--json FILE]

``train`` trains on the multi-task prompts (synthetic physics plus the real emboss-test secondary structure when it
is installed and ``--no-real`` is not given) and writes atomic safetensors checkpoints to DIR (resumable: running
the same command again continues from the latest one). ``predict`` answers forward tasks for every sequence; with
``--plot`` the per-residue strings of task ``ss`` are drawn to a PNG beside the physics labels. ``design``
generates sequences for a requested content and scores them in closed loop with the physics. Bad input (malformed
FASTA, unknown amino acids, a prompt without the task delimiter, a missing run directory) is a one-line error.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from ..core.errors import SeqzooError

KIND = "protein-gpt-gnn"
FORWARD_TASKS = ("ss", "ss_real", "content", "solubility")


def _load(run_dir: str):
    from ..core.config import from_dict
    from ..models.config import ModelConfig
    from ..models.protein.gpt_gnn import build_gpt_gnn
    from ..train.checkpoint import checkpoint_info, load_model_state

    info = checkpoint_info(run_dir)
    cfg = info["config"]
    if cfg.get("kind") != KIND:
        raise SeqzooError(f"{run_dir!r} is not a protein-design run (train one with seqzoo protein-design train)")
    model = build_gpt_gnn(from_dict(ModelConfig, cfg["model"], "model"))
    load_model_state(run_dir, model)
    return model.eval()


def _cmd_train(args) -> int:
    from ..models.protein.gpt_gnn import build_gpt_gnn, gpt_gnn_config, train_gpt_gnn
    from ..tasks.protein.prompts import ProteinPromptTask
    from ..tasks.protein.structure import emboss_test_dir, load_real_secondary_structure, split_by_family

    if args.steps < 1 or args.batch_size < 1 or args.lr <= 0:
        raise SeqzooError("--steps and --batch-size must be >= 1 and --lr positive")
    real_train = real_test = []
    if not args.no_real:
        if emboss_test_dir() is None:
            print("protein-design: emboss-test not found; training on the synthetic physics only")
        else:
            real_train, real_test = split_by_family(load_real_secondary_structure())
    cfg = gpt_gnn_config(d_model=args.d_model, n_layers=args.n_layers, n_heads=args.n_heads,
                         gnn_layers=args.gnn_layers)
    model = build_gpt_gnn(cfg)
    task = ProteinPromptTask(seed=args.seed, real_train=real_train, real_val=real_test)
    run_config = {"kind": KIND, "model": asdict(cfg), "train": {"steps": args.steps, "lr": args.lr,
                                                                 "batch_size": args.batch_size, "seed": args.seed,
                                                                 "real": bool(real_train)}}
    metrics = train_gpt_gnn(model, task, steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                            out_dir=args.out, device=args.device, progress=args.progress, run_config=run_config)
    print(f"protein-design: trained {model.num_parameters()} parameters for {args.steps} steps "
          f"(loss {metrics.get('loss', float('nan')):.4f}, {metrics['train_seconds']:.1f} s); run: {args.out}")
    return 0


def _sequences(args) -> list[tuple[str, str]]:
    from ..tasks.protein.sequences import read_fasta, validate_protein

    given = [args.fasta is not None, bool(args.seq), args.prompt is not None]
    if sum(given) != 1:
        raise SeqzooError("give exactly one of --fasta FILE, --seq SEQ or --prompt 'TAG input|'")
    if args.fasta is not None:
        return read_fasta(args.fasta)
    return [(f"seq{i + 1}", validate_protein(s, f"--seq {i + 1}")) for i, s in enumerate(args.seq)]


def _cmd_predict(args) -> int:
    from ..models.protein.gpt_gnn import complete, plot_ss_strings, predict
    from ..tasks.protein.physics import secondary_structure
    from ..tasks.protein.prompts import parse_answer, parse_prompt

    if args.prompt is not None:
        task, prompt = parse_prompt(args.prompt)  # checked before loading the model
        model = _load(args.run)
        text = complete(model, [prompt], 128 if task in ("ss", "ss_real", "design") else 16)[0]
        print(json.dumps({"prompt": prompt, "answer": text, "parsed": parse_answer(task, text)}))
        return 0
    records = _sequences(args)
    tasks = FORWARD_TASKS if args.task == "all" else (args.task,)
    model = _load(args.run)
    results = {name: {"sequence": seq} for name, seq in records}
    for task in tasks:
        for (name, _), answer in zip(records, predict(model, task, [s for _, s in records])):
            results[name][task] = answer
    for name, row in results.items():
        print(json.dumps({"name": name, **row}))
    if args.plot:
        if "ss" not in tasks:
            raise SeqzooError("--plot draws the model's per-residue strings beside the physics; use --task ss or all")
        rows = [(name, row["ss"], secondary_structure(row["sequence"])) for name, row in results.items()]
        print(f"plot: {plot_ss_strings(rows, args.plot, title='task ss (upper: physics, lower: model)')}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


def _cmd_design(args) -> int:
    from ..models.protein.gpt_gnn import closed_loop, design
    from ..tasks.protein.physics import sequence_content
    from ..tasks.protein.prompts import make_prompt

    make_prompt("design", helix=args.helix, sheet=args.sheet, length=args.length)  # validate before loading
    if args.n < 1:
        raise SeqzooError(f"--n must be >= 1, got {args.n}")
    model = _load(args.run)
    requests = [(args.helix, args.sheet, args.length)] * args.n
    seqs = design(model, requests, temperature=args.temperature, seed=args.seed)
    rows = []
    for seq in seqs:
        achieved = sequence_content(seq) if seq else None
        rows.append({"sequence": seq, "achieved_content": achieved})
        print(json.dumps(rows[-1]))
    summary = closed_loop(requests, seqs)
    print(json.dumps({"requested": {"helix": args.helix, "sheet": args.sheet, "length": args.length}, **summary}))
    if args.json:
        Path(args.json).write_text(json.dumps({"designs": rows, "summary": summary}, indent=2))
    return 0


def add_protein_design_parser(sub) -> None:
    """Add ``protein-design`` with its ``train``, ``predict`` and ``design`` sub-commands to ``sub``."""
    p = sub.add_parser("protein-design", help="GPT-GNN protein model: train, predict structure, design sequences")
    actions = p.add_subparsers(dest="protein_action", required=True)

    train = actions.add_parser("train", help="train on the multi-task protein prompts")
    train.add_argument("--out", required=True, help="run directory (checkpoints; resumes if present)")
    train.add_argument("--steps", type=int, default=500)
    train.add_argument("--gnn-layers", type=int, default=3, help="GCN layers per head (0 = plain attention)")
    train.add_argument("--d-model", type=int, default=64)
    train.add_argument("--n-layers", type=int, default=4)
    train.add_argument("--n-heads", type=int, default=4)
    train.add_argument("--batch-size", type=int, default=32)
    train.add_argument("--lr", type=float, default=2e-3)
    train.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu")
    train.add_argument("--no-real", action="store_true", help="synthetic physics only (no emboss-test data)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--progress", action="store_true", help="show a progress bar")
    train.set_defaults(fn=_cmd_train)

    pred = actions.add_parser("predict", help="forward tasks: secondary structure, content, solubility")
    pred.add_argument("run", help="run directory written by protein-design train")
    pred.add_argument("--fasta", help="FASTA file of proteins")
    pred.add_argument("--seq", action="append", default=[], help="a protein sequence (repeatable)")
    pred.add_argument("--prompt", help="a raw prompt ending with the task delimiter, e.g. 'SS MKVLA|'")
    pred.add_argument("--task", choices=FORWARD_TASKS + ("all",), default="all")
    pred.add_argument("--plot", help="PNG of the per-residue strings")
    pred.add_argument("--json", help="also write the answers to this JSON file")
    pred.set_defaults(fn=_cmd_predict)

    des = actions.add_parser("design", help="inverse design for a requested secondary-structure content")
    des.add_argument("run", help="run directory written by protein-design train")
    des.add_argument("--helix", type=float, required=True, help="requested helix fraction")
    des.add_argument("--sheet", type=float, required=True, help="requested sheet fraction")
    des.add_argument("--length", type=int, required=True, help="requested length (residues)")
    des.add_argument("--n", type=int, default=4, help="number of designs")
    des.add_argument("--temperature", type=float, default=0.8, help="sampling temperature (0 = greedy)")
    des.add_argument("--seed", type=int, default=0)
    des.add_argument("--json", help="also write the designs to this JSON file")
    des.set_defaults(fn=_cmd_design)


__all__ = ["add_protein_design_parser"]
