"""``seqzoo webs procedural | train | generate | eval | assemble``: spider-web graph generation from the shell.

After "Modeling and design of heterogeneous hierarchical bioinspired spider web structures using generative deep
learning and additive manufacturing", Lu, Lee and Buehler, PNAS 2023, arXiv 2304.05137.

    seqzoo webs procedural --out DIR [--n 8] [--kind mixed|orb|sheet] [--seed 0]     # procedural webs + PNG
    seqzoo webs train --generator transformer|diffusion-sparse|diffusion-full --out RUN [--n-train 3000]
                      [--steps 1500] [--batch-size 64] [--lr X] [--d-model 64] [--n-layers 3] [--n-heads 4]
    seqzoo webs generate RUN --out DIR (--targets CSV | --from-graph FILE.graphml ... | --like N) [--cond-scale W]
    seqzoo webs eval RUN [--n 200] [--json F] [--plot F.png]                      # R² per feature, ± condition
    seqzoo webs assemble FILE.graphml ... --out STEM [--curve helix|circle|line|parametric] [--tiles 12]

Each generated or assembled web is written as GraphML, OBJ and PLY (lines, or tubes with ``--tube-radius``) and
rendered to PNG; design targets and realised features go to ``features.csv``. A targets CSV has one column per
design feature (``seqzoo.tasks.webs.FEATURE_NAMES``; every one of the 14 is required).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..core.errors import SeqzooError

TARGETS_SEED = 10_000   # webs drawn with --like come from this seed + --seed (never the training seed)


def _write_json(path: Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n")
    tmp.replace(path)


def read_targets(path) -> np.ndarray:
    """Design targets ``[B, 14]`` from a CSV with the 14 feature columns (one-line errors otherwise)."""
    import pandas as pd

    from ..tasks.webs.features import FEATURE_NAMES, check_conditions

    p = Path(path)
    if not p.is_file():
        raise SeqzooError(f"targets file {str(p)!r} does not exist")
    try:
        frame = pd.read_csv(p)
    except Exception as e:  # noqa: BLE001 (pandas raises many kinds)
        raise SeqzooError(f"cannot read targets CSV {str(p)!r}: {str(e).splitlines()[0]}") from None
    missing = [n for n in FEATURE_NAMES if n not in frame.columns]
    if missing:
        raise SeqzooError(f"targets CSV {str(p)!r} lacks column(s) {', '.join(missing)}; it needs all "
                          f"{len(FEATURE_NAMES)}: {', '.join(FEATURE_NAMES)}")
    try:
        values = frame[list(FEATURE_NAMES)].to_numpy(dtype=np.float64)
    except ValueError:
        raise SeqzooError(f"targets CSV {str(p)!r} has a non-numeric value; every target must be a number") from None
    return check_conditions(values, f"targets in {str(p)!r}")


def _features_csv(path: Path, targets: np.ndarray | None, realised: np.ndarray) -> None:
    import pandas as pd

    from ..tasks.webs.features import FEATURE_NAMES

    table = pd.DataFrame(realised, columns=list(FEATURE_NAMES))
    if targets is not None:
        for k, name in enumerate(FEATURE_NAMES):
            table.insert(2 * k, f"target_{name}", targets[:, k])
    table.to_csv(path, index_label="web")


def _write_webs(graphs, out: Path, prefix: str, formats, tube_radius: float, titles=None) -> None:
    from ..tasks.webs.export import export_web
    from ..tasks.webs.plots import render_webs

    for k, g in enumerate(graphs):
        export_web(g, out / f"{prefix}_{k:03d}", formats, tube_radius)
    shown = graphs[:16]
    render_webs(shown, out / f"{prefix}s.png", titles=(titles or [f"{prefix} {k}: {g.n_nodes} nodes, {g.n_edges} "
                                                                   f"edges" for k, g in enumerate(shown)])[:16])


def _formats(text: str) -> list[str]:
    from ..tasks.webs.export import FORMATS

    items = [f.strip() for f in text.split(",") if f.strip()]
    bad = [f for f in items if f not in FORMATS]
    if bad or not items:
        raise SeqzooError(f"unknown export format {bad[0] if bad else text!r}; valid: {', '.join(FORMATS)}")
    return items


def _cmd_procedural(args) -> int:
    from ..tasks.webs.features import feature_matrix
    from ..tasks.webs.procedural import web_dataset

    graphs = web_dataset(args.n, seed=args.seed, kind=args.kind, max_nodes=args.max_nodes)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    _write_webs(graphs, out, "web", _formats(args.formats), args.tube_radius)
    _features_csv(out / "features.csv", None, feature_matrix(graphs))
    print(f"{len(graphs)} procedural webs ({args.kind}) in {out}; picture {out / 'webs.png'}")
    return 0


def _cmd_train(args) -> int:
    import torch

    from ..models.webs.training import build_generator, save_generator, train_generator
    from ..tasks.webs.features import FeatureScaler, feature_matrix
    from ..tasks.webs.procedural import web_dataset

    torch.manual_seed(args.seed)
    graphs = web_dataset(args.n_train, seed=args.seed, kind=args.kind, max_nodes=args.max_nodes)
    scaler = FeatureScaler.fit(feature_matrix(graphs))
    gen = build_generator(args.generator, scaler, max_nodes=args.max_nodes, d_model=args.d_model,
                          n_layers=args.n_layers, n_heads=args.n_heads)
    if args.device != "cpu":
        if args.device.startswith("cuda") and not torch.cuda.is_available():
            raise SeqzooError(f"--device {args.device} asked for, but CUDA is not available; use --device cpu")
        gen.model.to(args.device)
    print(f"{args.generator}: {sum(p.numel() for p in gen.model.parameters()):,} parameters; {len(graphs)} "
          f"procedural webs (seed {args.seed}, kind {args.kind}, <= {args.max_nodes} nodes)")
    info = train_generator(gen, graphs, steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                           log=None if args.quiet else print)
    gen.model.to("cpu")
    out = Path(args.out)
    save_generator(gen, out / "checkpoint", step=args.steps,
                   metrics={"final_loss": info["history"][-1]["loss"], "train_seconds": info["train_seconds"]})
    _write_json(out / "train.json", {**info, "generator": args.generator, "seed": args.seed, "kind": args.kind})
    print(f"final loss {info['history'][-1]['loss']:.4f} after {args.steps} steps ({info['train_seconds']:.0f}s)")
    print(f"run: {out}")
    return 0


def _cmd_generate(args) -> int:
    from ..models.webs.training import load_generator
    from ..tasks.webs.export import read_graphml
    from ..tasks.webs.features import feature_matrix
    from ..tasks.webs.procedural import web_dataset

    gen = load_generator(args.run)
    if args.targets:
        targets = read_targets(args.targets)
    elif args.from_graph:
        targets = feature_matrix([read_graphml(p) for p in args.from_graph])
    else:
        targets = feature_matrix(web_dataset(args.like, seed=TARGETS_SEED + args.seed,
                                             max_nodes=gen.tokenizer.max_nodes))
    graphs = gen.generate(targets, cond_scale=args.cond_scale, seed=args.seed, steps=args.steps)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    _write_webs(graphs, out, "generated", _formats(args.formats), args.tube_radius)
    realised = feature_matrix(graphs)
    _features_csv(out / "features.csv", targets, realised)
    print(f"{len(graphs)} webs from {gen.name} in {out}; targets vs realised features in {out / 'features.csv'}")
    for k in range(min(len(graphs), 5)):
        print(f"  web {k}: target {targets[k, 0]:.0f} nodes, mean degree {targets[k, 2]:.2f}, edge length "
              f"{targets[k, 4]:.3f} -> got {realised[k, 0]:.0f}, {realised[k, 2]:.2f}, {realised[k, 4]:.3f}")
    return 0


def _cmd_eval(args) -> int:
    from ..models.webs.training import evaluate_control, load_generator
    from ..tasks.webs.features import FEATURE_NAMES, feature_matrix
    from ..tasks.webs.plots import plot_targets
    from ..tasks.webs.procedural import web_dataset

    gen = load_generator(args.run)
    targets = feature_matrix(web_dataset(args.n, seed=TARGETS_SEED + args.seed, max_nodes=gen.tokenizer.max_nodes))
    res = evaluate_control(gen, targets, seed=args.seed, steps=args.steps, cond_scale=args.cond_scale)
    print(f"{'feature':20s} {'R² conditional':>15s} {'R² no condition':>16s}")
    for name in FEATURE_NAMES:
        c, u = res["conditional"]["r2"][name], res["unconditional"]["r2"][name]
        print(f"{name:20s} {c if c is not None else float('nan'):15.3f} {u if u is not None else float('nan'):16.3f}")
    run = Path(args.run)
    summary = {"generator": gen.name, "n_targets": args.n, "cond_scale": args.cond_scale,
               **{k: {"r2": v["r2"], "empty_fraction": v["empty_fraction"]} for k, v in res.items()}}
    _write_json(Path(args.json) if args.json else run / "eval.json", summary)
    plot = Path(args.plot) if args.plot else run / "eval_targets.png"
    plot_targets(targets, {"conditional": res["conditional"]["realised"],
                           "no condition": res["unconditional"]["realised"]}, FEATURE_NAMES, plot)
    print(f"eval: {Path(args.json) if args.json else run / 'eval.json'}; plot {plot}")
    return 0


def _cmd_assemble(args) -> int:
    from ..tasks.webs.assembly import assemble, build_curve
    from ..tasks.webs.export import export_web, read_graphml
    from ..tasks.webs.plots import render_webs

    samples = [read_graphml(p) for p in args.inputs]
    options = {"helix": {"radius": args.radius, "pitch": args.pitch, "turns": args.turns},
               "circle": {"radius": args.radius}, "line": {"length": args.length},
               "parametric": {"x": args.x, "y": args.y, "z": args.z}}[args.curve]
    web, records = assemble(samples, build_curve(args.curve, **options), args.tiles, links=args.links,
                            fill=args.fill)
    stem = Path(args.out)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = export_web(web, stem, _formats(args.formats), args.tube_radius)
    render_webs([web], stem.with_suffix(".png"), titles=[f"{args.curve}: {len(records)} tiles, {web.n_nodes} nodes"],
                size=6.0)
    _write_json(stem.with_name(stem.name + "_tiles.json"), records)
    print(f"assembled {len(records)} tiles ({web.n_nodes} nodes, {web.n_edges} edges, {web.n_components()} "
          f"component(s)): {', '.join(map(str, paths))}, {stem.with_suffix('.png')}")
    return 0


def add_webs_parser(sub) -> None:
    from ..models.webs.training import GENERATORS
    from ..tasks.webs.assembly import CURVES
    from ..tasks.webs.procedural import KINDS

    webs = sub.add_parser("webs", help="spider-web graph generation: procedural webs, train, generate, eval, assemble")
    wsub = webs.add_subparsers(dest="webs_command", required=True)

    def export_args(p):
        p.add_argument("--formats", default="graphml,obj,ply", help="comma list of graphml, obj, ply")
        p.add_argument("--tube-radius", type=float, default=0.0, help="> 0: OBJ/PLY as tube meshes, not lines")

    pr = wsub.add_parser("procedural", help="write procedural 3D webs (orb, sheet/cobweb) as files and a PNG")
    pr.add_argument("--out", required=True)
    pr.add_argument("--n", type=int, default=8)
    pr.add_argument("--kind", default="mixed", choices=KINDS)
    pr.add_argument("--seed", type=int, default=0)
    pr.add_argument("--max-nodes", type=int, default=32)
    export_args(pr)
    pr.set_defaults(fn=_cmd_procedural)

    tr = wsub.add_parser("train", help="train a conditional web generator on procedural webs")
    tr.add_argument("--generator", default="transformer", choices=sorted(GENERATORS))
    tr.add_argument("--out", required=True, help="run directory (holds checkpoint/ and train.json)")
    tr.add_argument("--n-train", type=int, default=3000)
    tr.add_argument("--kind", default="mixed", choices=KINDS)
    tr.add_argument("--max-nodes", type=int, default=32)
    tr.add_argument("--steps", type=int, default=1500)
    tr.add_argument("--batch-size", type=int, default=64)
    tr.add_argument("--lr", type=float)
    tr.add_argument("--d-model", type=int, default=64)
    tr.add_argument("--n-layers", type=int, default=3)
    tr.add_argument("--n-heads", type=int, default=4)
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--device", default="cpu", help="cpu or cuda")
    tr.add_argument("--quiet", action="store_true")
    tr.set_defaults(fn=_cmd_train)

    ge = wsub.add_parser("generate", help="generate webs for design targets with a trained run")
    ge.add_argument("run", help="run directory written by seqzoo webs train")
    ge.add_argument("--out", required=True)
    src = ge.add_mutually_exclusive_group()
    src.add_argument("--targets", help="CSV with the 14 design-feature columns, one row per web")
    src.add_argument("--from-graph", nargs="+", help="GraphML webs whose features are the targets")
    src.add_argument("--like", type=int, default=8, help="targets of N fresh procedural webs (default 8)")
    ge.add_argument("--cond-scale", type=float, default=1.0, help="classifier-free guidance scale (1 = plain)")
    ge.add_argument("--steps", type=int, default=50, help="DDIM steps (diffusion generators)")
    ge.add_argument("--seed", type=int, default=0)
    export_args(ge)
    ge.set_defaults(fn=_cmd_generate)

    ev = wsub.add_parser("eval", help="R² between design targets and generated webs, with and without condition")
    ev.add_argument("run")
    ev.add_argument("--n", type=int, default=200, help="held-out procedural target webs")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--steps", type=int, default=50)
    ev.add_argument("--cond-scale", type=float, default=1.0)
    ev.add_argument("--json")
    ev.add_argument("--plot", help="PNG of target vs realised per feature (default RUN/eval_targets.png)")
    ev.set_defaults(fn=_cmd_eval)

    asm = wsub.add_parser("assemble", help="tile web samples along a helix or parametric curve")
    asm.add_argument("inputs", nargs="+", help="GraphML webs (e.g. written by seqzoo webs generate)")
    asm.add_argument("--out", required=True, help="output stem: writes STEM.graphml/.obj/.ply/.png")
    asm.add_argument("--curve", default="helix", choices=CURVES)
    asm.add_argument("--tiles", type=int, default=12)
    asm.add_argument("--radius", type=float, default=3.0)
    asm.add_argument("--pitch", type=float, default=2.0)
    asm.add_argument("--turns", type=float, default=2.0)
    asm.add_argument("--length", type=float, default=10.0)
    asm.add_argument("--x", default="3*cos(2*pi*u)", help="parametric x(u), u in [0, 1]")
    asm.add_argument("--y", default="3*sin(4*pi*u)")
    asm.add_argument("--z", default="2*u")
    asm.add_argument("--links", type=int, default=2, help="fibres joining consecutive tiles")
    asm.add_argument("--fill", type=float, default=0.9)
    export_args(asm)
    asm.set_defaults(fn=_cmd_assemble)


__all__ = ["add_webs_parser", "read_targets"]
