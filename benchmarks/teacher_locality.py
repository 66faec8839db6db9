"""How far does the teacher see? The force an atom owes to atoms beyond a radius r (issue 12, item 5).

If the DPA-4 teacher (message passing over several layers) reached further than the 6 Å student, part of its
forces would be a function of atoms the student cannot see, and no student of that cutoff could copy it in cells
wider than the cutoff (the 64-atom frames, where every student so far was 3.0-3.8x its teacher against DFT).
Locality test (as in the MACE and ACE papers' locality checks; here on the models, not on DFT): in a 216-atom
diamond cell (3x3x3 conventional, 16.3 Å, so spheres up to 8 Å hold no image of the centre), every atom is
displaced from its lattice site (Gaussian, ``--sigma`` Å per coordinate; about 0.07 Å at 600 K); then the atoms
farther than r from the centre atom (in the undisplaced lattice) are displaced anew, ``--draws`` times, the others
kept. The spread of the centre atom's force over those draws (per Cartesian component, RMS about the draws' mean,
pooled over ``--bases`` first displacements and ``--centres`` centre atoms; eV/Å) is the force the model owes to
atoms beyond r.

A model built from site energies of cutoff r_c (the students) gives an atom's force a reach of 2 r_c: the site
energies of its neighbours depend on their own neighbours. Its spread vanishes only beyond 2 r_c, outside this
cell, so the students (``--model``, r_c 6 and 6.5 Å) are the yardstick, not zero: a teacher that saw further than
they do would owe more of its force to atoms beyond each r than they do.

The same frames say how much of that far-field force a student copies: the spread of its force minus the teacher's
(``uncopied_spread``: zero for a student that answers every far draw as its teacher does), beside its whole copy
error on the centre atoms. A student whose copy error is mostly uncopied far-field force cannot be fixed near the
atom (more steps, wider nets); one whose uncopied part is small misses its teacher close by.

Usage: ``.venv/bin/python benchmarks/teacher_locality.py --teacher runs/teacher-k300-w100/teacher.pt
[--model NAME=PATH ...] [--radii 4 5 6 6.5 7 8] [--tag T]``; writes ``results/teacher_locality[_T].json`` and a
plot beside it. The zero-shot DPA-4 runs beside the teacher: is the reach the foundation model's or the fine-tune's?
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from _common import environment, pyplot, run_models, save, save_figure, set_threads

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def lattice(repeats: int = 3, a: float = 5.43):
    """Diamond Si, ``repeats``^3 conventional cells (8 * repeats^3 atoms) as ASE ``Atoms``, a in Å."""
    from ase.build import bulk

    return bulk("Si", "diamond", a=a, cubic=True).repeat((repeats,) * 3)


def draws(atoms, centres: list[int], radius: float, sigma: float, n_bases: int, n_draws: int, seed: int):
    """Frames for one radius: for each base (all atoms displaced, N(0, sigma) per coordinate, Å) and centre atom,
    ``n_draws`` copies in which the atoms farther than ``radius`` Å from the centre are displaced anew.

    Returns
    -------
    ``(Dataset, groups)``: the unlabelled frames, and per frame ``(group, centre)`` where a group is one base and
    one centre (the frames whose centre force is compared with each other).
    """
    from pfd_atomate.data import Dataset, Frame

    rng = np.random.default_rng(seed)
    sites = atoms.positions.copy()
    frames, groups = [], []
    far = {c: atoms.get_distances(c, range(len(atoms)), mic=True) > radius for c in centres}  # minimum image
    for b in range(n_bases):
        base = sites + rng.normal(0.0, sigma, sites.shape)
        for c in centres:
            for _ in range(n_draws):
                pos = base.copy()
                pos[far[c]] = sites[far[c]] + rng.normal(0.0, sigma, (int(far[c].sum()), 3))
                frame = atoms.copy()
                frame.positions = pos
                frames.append(Frame.from_atoms(frame, source=f"locality:r{radius:g}:b{b}:c{c}"))
                groups.append((b * len(centres) + centres.index(c), c))
    return Dataset(frames=frames, name=f"locality-r{radius:g}"), groups


def cp2k_labels(data, radius: float, args, n_atoms: int):
    """CP2K labels (PBE, ``_dft_labels``' Si settings, ``args.cp2k_kpoints``) of one radius's frames, in order; cached
    in ``data/`` under the settings that drew them, every finished label kept at once (``label_and_cache``).

    Raises
    ------
    RuntimeError: a frame CP2K could not label (a spread needs every draw).
    """
    from _dft_labels import DATA, cached_dataset, label_and_cache

    settings = {"system": f"diamond Si, {n_atoms} atoms, a 5.43 Å", "radius_angstrom": radius,
                "sigma_angstrom": args.sigma, "bases": args.bases, "centres": args.centres, "draws": args.draws,
                "seed": args.seed + int(100 * radius), "kpoints": list(args.cp2k_kpoints),
                "labeller": "CP2K PBE via pfd_atomate.label.cp2k.cp2k_static_maker"}
    k = "".join(map(str, args.cp2k_kpoints))
    path = DATA / f"si{n_atoms}_locality_cp2k_k{k}_r{radius:g}_s{settings['seed']}_n{len(data)}.json.gz"
    data = data.model_copy(update={"name": path.name.removesuffix(".json.gz")})
    cached = cached_dataset(path, settings)
    labelled, meta = cached if cached is not None else label_and_cache(
        data, path, settings, tuple(args.cp2k_kpoints), n_procs=args.cp2k_procs)
    if meta["n_labelled"] != len(data):
        raise RuntimeError(f"CP2K labelled {meta['n_labelled']} of {len(data)} frames at r {radius:g} Å")
    return labelled


def against(forces: list[np.ndarray], reference: list[np.ndarray],
            groups: list[tuple[int, int]]) -> tuple[float, float]:
    """``(uncopied, error)`` of a model's forces against a reference's on the same frames (eV/Å): the spread of their
    difference (the part of the reference's far-field force the model does not copy; :func:`spread`) and the RMS
    difference on the centre atoms. ``forces``, ``reference``: per frame, shape (n_atoms, 3)."""
    difference = [m - r for m, r in zip(forces, reference, strict=True)]
    centre_rms = float(np.sqrt(np.mean([d[c] ** 2 for d, (_, c) in zip(difference, groups, strict=True)])))
    return spread(difference, groups), centre_rms


def spread(forces: list[np.ndarray], groups: list[tuple[int, int]]) -> float:
    """Pooled RMS (eV/Å, per Cartesian component) of the centre atoms' forces about their group means.

    ``forces``: per frame, shape (n_atoms, 3), eV/Å; ``groups``: per frame ``(group, centre atom)``.
    """
    by_group: dict[int, list[np.ndarray]] = {}
    for f, (g, c) in zip(forces, groups, strict=True):
        by_group.setdefault(g, []).append(np.asarray(f)[c])
    sq, dof = 0.0, 0
    for vectors in by_group.values():
        v = np.array(vectors)  # (n_draws, 3)
        sq += float(np.sum((v - v.mean(axis=0)) ** 2))
        dof += 3 * (len(v) - 1)  # unbiased: the group mean is estimated from the same draws
    return float(np.sqrt(sq / dof))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", type=Path, required=True, help="the teacher's deepmd-kit model file")
    parser.add_argument("--model", action="append", default=[], help="another model, NAME=PATH (e.g. a student)")
    parser.add_argument("--no-zero-shot", action="store_true", help="skip the zero-shot DPA-4")
    parser.add_argument("--radii", type=float, nargs="+", default=[4.0, 5.0, 6.0, 6.5, 7.0, 8.0])
    parser.add_argument("--sigma", type=float, default=0.07, help="displacement per coordinate, Å")
    parser.add_argument("--bases", type=int, default=2)
    parser.add_argument("--centres", type=int, default=2, help="centre atoms per base (far apart)")
    parser.add_argument("--draws", type=int, default=6)
    parser.add_argument("--seed", type=int, default=31)
    parser.add_argument("--repeats", type=int, default=3,
                        help="conventional cells per side (3: 216 atoms; 2: 64 atoms, radii below 5.43 Å)")
    parser.add_argument("--cp2k-kpoints", type=int, nargs=3, default=None,
                        help="also label the frames with CP2K (PBE, the benchmarks' Si settings) on this k-mesh: "
                             "DFT's own far-field force, and what each model copies of it (cached in data/)")
    parser.add_argument("--cp2k-procs", type=int, default=1, help="CP2K processes at once, one thread each")
    parser.add_argument("--tag", default="")
    args = parser.parse_args()
    set_threads(1)

    backend, models = run_models(None, [f"PF (teacher)={args.teacher}", *args.model])  # DPA-4 zero-shot first
    if args.no_zero_shot:
        del models["DPA-4 zero-shot"]

    atoms = lattice(args.repeats)
    half = min(np.linalg.norm(v) for v in atoms.cell) / 2
    if max(args.radii) >= half:
        raise ValueError(f"--radii must stay below half the cell width ({half:.2f} Å), got {max(args.radii)}")
    # centres as far apart as the cell allows: atom 0 and the atom nearest the cell's centre
    centres = [0, int(np.argmin(np.linalg.norm(atoms.positions - atoms.cell.sum(axis=0) / 2, axis=1)))][: args.centres]
    table: dict = {name: {} for name in models}
    uncopied: dict = {name: {} for name in models if name != "PF (teacher)"}
    copy_error: dict = {name: {} for name in uncopied}
    vs_dft: dict = {}  # the same against CP2K's forces (--cp2k-kpoints)
    dft_error: dict = {}
    timing: dict = {}
    for r in args.radii:
        data, groups = draws(atoms, centres, r, args.sigma, args.bases, args.draws, seed=args.seed + int(100 * r))
        forces = {}
        for name, model in models.items():
            start = time.perf_counter()
            pred = backend.predict(model, data)
            timing[name] = timing.get(name, 0.0) + time.perf_counter() - start
            forces[name] = [np.asarray(f.forces) for f in pred.frames]
            table[name][f"{r:g}"] = spread(forces[name], groups)
            print(f"r {r:g} Å  {name}: {table[name][f'{r:g}']:.4f} eV/Å", flush=True)
        if args.cp2k_kpoints is not None:
            start = time.perf_counter()
            labelled = cp2k_labels(data, r, args, len(atoms))
            timing["CP2K"] = timing.get("CP2K", 0.0) + time.perf_counter() - start
            forces["CP2K"] = [np.asarray(f.forces) for f in labelled.frames]
            table.setdefault("CP2K", {})[f"{r:g}"] = spread(forces["CP2K"], groups)
            print(f"r {r:g} Å  CP2K: {table['CP2K'][f'{r:g}']:.4f} eV/Å", flush=True)
            for name in models:
                vs_dft.setdefault(name, {})[f"{r:g}"], dft_error.setdefault(name, {})[f"{r:g}"] = against(
                    forces[name], forces["CP2K"], groups)
                print(f"r {r:g} Å  {name}: uncopied from CP2K {vs_dft[name][f'{r:g}']:.4f}, error against CP2K "
                      f"{dft_error[name][f'{r:g}']:.4f} eV/Å", flush=True)
        # the part of the teacher's far-field force a model does not copy: the spread of its difference from the
        # teacher (zero for a model that answers every far draw as the teacher does), and its whole copy error on
        # the centre atoms of the same frames
        for name in uncopied:
            uncopied[name][f"{r:g}"], copy_error[name][f"{r:g}"] = against(forces[name], forces["PF (teacher)"], groups)
            print(f"r {r:g} Å  {name}: uncopied {uncopied[name][f'{r:g}']:.4f}, copy error "
                  f"{copy_error[name][f'{r:g}']:.4f} eV/Å", flush=True)

    n = args.repeats
    payload = {"system": f"diamond Si, {len(atoms)} atoms ({n}x{n}x{n} conventional, a 5.43 Å)",
               "sigma_angstrom": args.sigma,
               "bases": args.bases, "centres": centres, "draws": args.draws, "seed": args.seed,
               "models": {"PF (teacher)": args.teacher} | dict(m.split("=", 1) for m in args.model),
               "spread_ev_per_angstrom": table, "uncopied_spread_ev_per_angstrom": uncopied,
               "centre_copy_error_ev_per_angstrom": copy_error, "uncopied_from_cp2k_ev_per_angstrom": vs_dft,
               "centre_error_against_cp2k_ev_per_angstrom": dft_error, "cp2k_kpoints": args.cp2k_kpoints,
               "n_atoms": len(atoms), "predict_seconds": timing,
               "environment": environment(1)}
    out = save(f"teacher_locality{'_' + args.tag if args.tag else ''}", payload, RESULTS)

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name, row in table.items():
        ax.plot([float(r) for r in row], list(row.values()), "o-", label=name)
    ax.set_yscale("log")
    ax.set_xlabel("radius r kept (Å)")
    ax.set_ylabel("force owed to atoms beyond r (eV/Å)")
    ax.legend(fontsize=8)
    save_figure(fig, out.with_suffix(".png"))


if __name__ == "__main__":
    main()
