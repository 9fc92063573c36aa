"""``seqzoo fitness train | score | eval``: protein fitness prediction with Tranception (arXiv 2205.13760).

    seqzoo fitness train --fasta FAMILY.fa --out DIR [--mixer tranception|attention] [--steps N] [--d-model D]
                         [--layers N] [--heads H] [--batch-size B] [--lr X] [--seed S] [--device cpu|cuda]
    seqzoo fitness train --assay CSV|mavenn:NAME [--split training] [--min-score X] [--max-sequences N] --out DIR
                         # train on the assay's sequences (one split, DMS_score ≥ X): a *supervised* setting
    seqzoo fitness score DIR --wt SEQ|FASTA (--mutants A12G,A12G:C30F | --csv ASSAY.csv) [--msa ALN.fa]
                         [--alpha 0.6] [--theta 0.2] [--one-direction] [--out scores.csv]
    seqzoo fitness eval DIR --assay CSV|mavenn:NAME [--wt SEQ|FASTA] [--split test] [--msa ALN.fa] [--alpha 0.6]
                        [--plot scatter.png] [--json out.json]

``train`` writes a safetensors checkpoint (:mod:`seqzoo.train.checkpoint`) whose config holds the model shape, and
``DIR/family.fasta``, the sequences it was trained on (usable as ``--msa`` when they are aligned to the wild
type). ``score`` prints or writes one score per mutant (bidirectional log-likelihood ratio, fused with the MSA
prior when ``--msa`` is given). ``eval`` prints Spearman's ρ against ``DMS_score`` overall, on single and on
multiple mutants (and, with ``--msa``, for the AR model alone, the fusion and the site-independent prior).
A ``DIR`` of ``none`` scores with the MSA prior alone. Bad input is one line ``seqzoo: error: ...`` (exit 2).
"""

from __future__ import annotations

import json
from pathlib import Path

from ..core.errors import SeqzooError


def _read_wild_type(text: str) -> str:
    from ..tasks.protein.sequences import read_fasta, validate_protein

    if Path(text).is_file():
        records = read_fasta(text)
        return records[0][1]
    if "/" in text or text.endswith((".fa", ".fasta", ".faa")):
        raise SeqzooError(f"wild-type FASTA {text!r} does not exist")
    return validate_protein(text, "--wt")


def _load_assay(spec: str, wild_type: str | None, split: str | None):
    """``(DataFrame, wild type)`` from a ProteinGym CSV path or ``mavenn:NAME``, restricted to ``split``."""
    from ..tasks.protein.proteingym import check_assay, load_assay, load_mavenn

    if spec.startswith("mavenn:"):
        df, wt = load_mavenn(spec.split(":", 1)[1], split=split)
        if wild_type is not None and wild_type != wt:
            raise SeqzooError(f"--wt differs from the wild type of {spec} ({wt})")
        df = check_assay(df, wt, source=spec) if len(df) < 5000 else df
    else:
        df = load_assay(spec, wild_type)
        wt = wild_type
    if split is not None:
        if "set" not in df.columns:
            raise SeqzooError(f"--split {split!r} needs a 'set' column in the assay; {spec} has none")
        valid = sorted(set(df["set"].astype(str)))
        if split not in valid:
            raise SeqzooError(f"unknown split {split!r} in {spec}; valid: {', '.join(valid)}")
        df = df[df["set"] == split].reset_index(drop=True)
    return df, wt


def _load_model(run_dir: str, device: str):
    if run_dir == "none":
        return None
    from ..core.config import from_dict
    from ..models.protein.tranception import ProteinLM, ProteinLMConfig
    from ..train.checkpoint import checkpoint_info, load_model_state

    info = checkpoint_info(run_dir)
    if "protein_lm" not in info["config"]:
        raise SeqzooError(f"{run_dir} is not a checkpoint of seqzoo fitness train (no protein_lm config)")
    model = ProteinLM(from_dict(ProteinLMConfig, info["config"]["protein_lm"], "protein_lm"))
    load_model_state(run_dir, model)
    return model.to(device).eval()


def _scorer(args, wild_type: str):
    import torch

    from ..models.protein.tranception import FitnessScorer
    from ..tasks.protein.msa_prior import encode_alignment, msa_log_prior
    from ..tasks.protein.sequences import read_fasta

    model = _load_model(args.run_dir, args.device)
    log_prior = None
    if args.msa:
        records = read_fasta(args.msa, allow_gaps=True)
        msa = encode_alignment([s for _, s in records])
        if msa.shape[1] != len(wild_type):
            raise SeqzooError(f"the MSA {args.msa} has {msa.shape[1]} columns but the wild type "
                              f"{len(wild_type)} residues; align it to the wild type (wild type first)")
        log_prior = msa_log_prior(msa, theta=args.theta, pseudocount=args.pseudocount)
    torch.set_num_threads(max(1, args.threads))
    alpha = 1.0 if model is None else args.alpha
    return FitnessScorer(model, wild_type, log_prior=log_prior, alpha=alpha,
                         bidirectional=not args.one_direction), model, log_prior


def _cmd_train(args) -> int:
    import dataclasses

    import torch

    from ..models.protein.tranception import ProteinFamilyData, ProteinLM, ProteinLMConfig
    from ..tasks.protein.sequences import read_fasta
    from ..train import Trainer
    from ..train.config import TrainConfig

    if bool(args.fasta) == bool(args.assay):
        raise SeqzooError("give exactly one of --fasta FAMILY.fa or --assay CSV|mavenn:NAME")
    if args.fasta:
        seqs = [s for _, s in read_fasta(args.fasta)]
        source = args.fasta
    else:
        df, _ = _load_assay(args.assay, None, args.split)
        if args.min_score is not None:
            df = df[df["DMS_score"] >= args.min_score]
        if args.max_sequences is not None and len(df) > args.max_sequences:
            df = df.sample(n=args.max_sequences, random_state=args.seed)
        seqs = df["mutated_sequence"].tolist()
        source = (f"{args.assay} (split {args.split}, DMS_score ≥ {args.min_score}, at most {args.max_sequences} "
                  f"rows)")
        if not seqs:
            raise SeqzooError(f"no sequences of {args.assay} pass --split {args.split} --min-score {args.min_score}")
    cfg = ProteinLMConfig(mixer=args.mixer, d_model=args.d_model, n_layers=args.layers, n_heads=args.heads)
    cfg.model_config().validate()
    train = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                        warmup_steps=max(1, args.steps // 20), eval_every=max(1, args.steps // 5), eval_batches=4,
                        checkpoint_every=args.steps, keep_checkpoints=1, log_every=max(1, args.steps // 20),
                        device=args.device, num_threads=args.threads, progress=not args.quiet)
    torch.manual_seed(args.seed)
    model = ProteinLM(cfg)
    data = ProteinFamilyData(seqs, seed=args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "family.fasta").write_text("".join(f">seq{k + 1}\n{s}\n" for k, s in enumerate(seqs)))
    print(f"model: {model.num_parameters():,} parameters ({args.mixer}); family: {len(seqs):,} sequences from "
          f"{source}")
    metrics = Trainer(model, data, train, out, run_config={"protein_lm": dataclasses.asdict(cfg),
                                                          "train": dataclasses.asdict(train),
                                                          "source": source}).fit()
    print(f"final validation loss {metrics.get('val_loss', float('nan')):.4f} nats/token "
          f"(uniform over 21 tokens: 3.0445); checkpoint: {out}")
    return 0


def _cmd_score(args) -> int:
    import pandas as pd

    from ..tasks.protein.proteingym import load_assay

    wild_type = _read_wild_type(args.wt)
    if bool(args.mutants) == bool(args.csv):
        raise SeqzooError("give exactly one of --mutants A12G,A12G:C30F or --csv ASSAY.csv")
    if args.mutants:
        df = pd.DataFrame({"mutant": [m.strip() for m in args.mutants.split(",") if m.strip()]})
        from ..tasks.protein.mutations import apply_mutant

        df["mutated_sequence"] = [apply_mutant(wild_type, m)[0] for m in df["mutant"]]
    else:
        df = load_assay(args.csv, wild_type)
    scorer, _, _ = _scorer(args, wild_type)
    df["score"] = scorer.score_sequences(df["mutated_sequence"].tolist(), _columns(df, wild_type))
    if args.out:
        df.to_csv(args.out, index=False)
        print(f"wrote {len(df)} scores to {args.out}")
    else:
        for m, s in zip(df["mutant"], df["score"]):
            print(f"{m}\t{s:.6f}")
    return 0


def _columns(df, wild_type: str):
    """Column maps from the mutant strings when present (exact for indels), else by alignment."""
    from ..tasks.protein.mutations import align_to_wild_type, apply_mutant

    out = []
    for mutant, seq in zip(df["mutant"] if "mutant" in df.columns else [None] * len(df), df["mutated_sequence"]):
        out.append(apply_mutant(wild_type, mutant)[1] if isinstance(mutant, str) else
                   align_to_wild_type(seq, wild_type))
    return out


def _cmd_eval(args) -> int:
    import numpy as np

    from ..tasks.protein.proteingym import scatter_plot, spearman

    wt_arg = _read_wild_type(args.wt) if args.wt else None
    df, wild_type = _load_assay(args.assay, wt_arg, args.split)
    if wild_type is None:
        raise SeqzooError("--wt is needed for a CSV assay (the wild-type sequence or a FASTA file)")
    if args.limit is not None and len(df) > args.limit:
        df = df.sample(n=args.limit, random_state=0).reset_index(drop=True)
    scorer, model, log_prior = _scorer(args, wild_type)
    seqs, columns = df["mutated_sequence"].tolist(), _columns(df, wild_type)
    truth = df["DMS_score"].to_numpy(dtype=float)
    variants = {"model": scorer.score_sequences(seqs, columns)}
    if log_prior is not None and model is not None:
        from ..models.protein.tranception import FitnessScorer

        bidir = not args.one_direction
        plain = FitnessScorer(model, wild_type, bidirectional=bidir)
        plain.ar_cache = scorer.ar_cache  # the same AR log-probabilities, computed once
        variants["model, no retrieval"] = plain.score_sequences(seqs, columns)
        variants["site-independent prior"] = FitnessScorer(None, wild_type, log_prior=log_prior,
                                                           alpha=1.0).score_sequences(seqs, columns)
    n_mut = df["n_mutations"].to_numpy()
    report = {"assay": args.assay, "split": args.split, "rows": len(df), "alpha": scorer.alpha, "spearman": {}}
    print(f"{args.assay}{' (' + args.split + ')' if args.split else ''}: {len(df)} variants, "
          f"{int((n_mut == 1).sum())} single, {int((n_mut > 1).sum())} multiple")
    for name, values in variants.items():
        values = np.asarray(values)
        row = {"all": spearman(values, truth)}
        for label, sel in (("singles", n_mut == 1), ("multiples", n_mut > 1)):
            if sel.sum() >= 2:
                row[label] = spearman(values[sel], truth[sel])
        report["spearman"][name] = row
        print(f"  {name:26s} " + "  ".join(f"{k} ρ = {v:.4f}" for k, v in row.items()))
    if args.plot:
        groups = np.where(n_mut > 1, "multiple", "single")
        print(f"scatter plot: {scatter_plot(variants['model'], truth, args.plot, title=args.assay, groups=groups)}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


def _common_scoring(p) -> None:
    p.add_argument("run_dir", help="a checkpoint of seqzoo fitness train (or 'none': the MSA prior alone)")
    p.add_argument("--msa", help="aligned FASTA of homologs, wild type first (or rows of its length)")
    p.add_argument("--alpha", type=float, default=0.6, help="retrieval weight α (default %(default)s)")
    p.add_argument("--theta", type=float, default=0.2, help="identity threshold of sequence weights (default "
                                                             "%(default)s)")
    p.add_argument("--pseudocount", type=float, default=1.0, help="MSA pseudo-count per amino acid")
    p.add_argument("--one-direction", action="store_true", help="left-to-right only (default: both directions)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--threads", type=int, default=1)


def add_fitness_parser(sub) -> None:
    """Add ``seqzoo fitness train|score|eval`` to the top-level subparsers ``sub``."""
    fitness = sub.add_parser("fitness", help="protein fitness prediction (Tranception): train, score, eval")
    fsub = fitness.add_subparsers(dest="fitness_command", required=True)

    train = fsub.add_parser("train", help="train a protein LM on a family (FASTA) or on an assay's sequences")
    train.add_argument("--fasta", help="unaligned or aligned-without-gaps protein FASTA")
    train.add_argument("--assay", help="ProteinGym CSV or mavenn:gb1|tdp43|amyloid (supervised setting)")
    train.add_argument("--split", default=None, help="only rows of this 'set' (e.g. training)")
    train.add_argument("--min-score", type=float, default=None, help="only rows with DMS_score ≥ this")
    train.add_argument("--max-sequences", type=int, default=None, help="a random subset of this many assay rows")
    train.add_argument("--out", required=True, help="run directory")
    train.add_argument("--mixer", default="tranception", help="tranception (default) or attention (vanilla GPT)")
    train.add_argument("--d-model", type=int, default=64)
    train.add_argument("--layers", type=int, default=2)
    train.add_argument("--heads", type=int, default=8)
    train.add_argument("--steps", type=int, default=1000)
    train.add_argument("--batch-size", type=int, default=32)
    train.add_argument("--lr", type=float, default=1e-3)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    train.add_argument("--threads", type=int, default=1)
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(fn=_cmd_train)

    score = fsub.add_parser("score", help="score mutants of a wild type")
    _common_scoring(score)
    score.add_argument("--wt", required=True, help="wild-type sequence or FASTA file (first record)")
    score.add_argument("--mutants", help="comma-separated mutants, e.g. A12G,A12G:C30F,K5del,K5insGS")
    score.add_argument("--csv", help="ProteinGym CSV of mutants")
    score.add_argument("--out", help="write a CSV with a score column (default: print)")
    score.set_defaults(fn=_cmd_score)

    ev = fsub.add_parser("eval", help="Spearman of scores against an assay's DMS_score")
    _common_scoring(ev)
    ev.add_argument("--assay", required=True, help="ProteinGym CSV or mavenn:gb1|tdp43|amyloid")
    ev.add_argument("--wt", help="wild type (sequence or FASTA); inferred for mavenn assays")
    ev.add_argument("--split", default=None, help="only rows of this 'set' (mavenn: training/validation/test)")
    ev.add_argument("--limit", type=int, default=None, help="score a random subset of this many rows (seed 0)")
    ev.add_argument("--plot", help="write a predicted-vs-true scatter PNG")
    ev.add_argument("--json", help="write the Spearman table as JSON")
    ev.set_defaults(fn=_cmd_eval)


def main(argv: list[str] | None = None) -> int:
    """``python -m seqzoo.cli.fitness train|score|eval ...`` (the same commands as ``seqzoo fitness``)."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="seqzoo")
    add_fitness_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["fitness", *(sys.argv[1:] if argv is None else argv)])
    try:
        return args.fn(args)
    except SeqzooError as e:
        print(f"seqzoo: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["add_fitness_parser", "main"]
