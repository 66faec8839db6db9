"""Test-set errors, convergence criteria and trust window of the fine-tuning loop (PFD step 5)."""

from __future__ import annotations

import numpy as np
import pytest

from pfd_atomate.data import Dataset, Frame
from pfd_atomate.evaluate.metrics import FrameErrors, frame_errors
from pfd_atomate.evaluate.schemas import ConvergenceCriteria, TestMetrics, TrustWindow

CELL = np.eye(3) * 6.0


def labelled(species, positions, energy, forces) -> Frame:
    return Frame(species=species, positions=positions, cell=CELL.tolist(), energy=energy, forces=forces)


@pytest.fixture
def tiny_pair():
    """Two frames with hand-made errors: a 2-atom and a 1-atom frame."""
    ref = Dataset(frames=[
        labelled(["Si", "O"], [[0, 0, 0], [1.5, 0, 0]], -10.0, [[0, 0, 0], [0, 0, 0]]),
        labelled(["Si"], [[0, 0, 0]], -5.0, [[1, 1, 1]]),
    ])
    pred = Dataset(frames=[
        labelled(["Si", "O"], [[0, 0, 0], [1.5, 0, 0]], -9.99, [[0.3, 0, 0], [0, -0.4, 0]]),
        labelled(["Si"], [[0, 0, 0]], -5.002, [[1, 1, 1.3]]),
    ])
    return ref, pred


def test_frame_errors_hand_computed(tiny_pair):
    err = frame_errors(*tiny_pair)
    assert err.n_frames == 2
    np.testing.assert_allclose(err.frame_energy_error, [0.01 / 2, -0.002 / 1], atol=1e-12)
    np.testing.assert_allclose(err.frame_force_rmse, [np.sqrt((0.3**2 + 0.4**2) / 6), np.sqrt(0.3**2 / 3)])
    np.testing.assert_allclose(err.frame_force_mae, [0.7 / 6, 0.3 / 3])
    np.testing.assert_allclose(err.frame_force_max, [0.4, 0.3])
    # pooled: energy over frames, forces over all 9 components (not a mean of per-frame RMSEs)
    assert err.energy_rmse == pytest.approx(np.sqrt((0.005**2 + 0.002**2) / 2))
    assert err.energy_mae == pytest.approx((0.005 + 0.002) / 2)
    assert err.force_rmse == pytest.approx(np.sqrt((0.3**2 + 0.4**2 + 0.3**2) / 9))
    assert err.force_mae == pytest.approx((0.3 + 0.4 + 0.3) / 9)
    # errors 0.005 and -0.002 around their mean 0.0015: what is left once a constant reference shift is removed
    assert err.energy_rmse_offset_removed == pytest.approx(0.0035)

    m = err.to_metrics(frame_energy=0.003, frame_force=0.18)
    # frame 0: |e| = 0.005 > 0.003; frame 1: |e| = 0.002, force RMSE 0.173 <= 0.18
    assert m.accurate_ratio == pytest.approx(0.5)
    assert m.force_rmse == pytest.approx(err.force_rmse)
    assert TestMetrics.model_validate_json(m.model_dump_json()) == m
    # thresholds that are None are not checked
    assert err.to_metrics(frame_energy=None, frame_force=0.25).accurate_ratio == pytest.approx(1.0)
    assert err.to_metrics(frame_energy=0.003, frame_force=None).accurate_ratio == pytest.approx(0.5)


def test_frame_errors_mismatches(tiny_pair):
    ref, pred = tiny_pair
    with pytest.raises(ValueError, match="2 reference frames but 1"):
        frame_errors(ref, pred.subset([0]))
    with pytest.raises(ValueError, match="different species"):
        frame_errors(ref, pred.subset([1, 0]))
    moved = pred.model_copy(deep=True)
    moved.frames[0].positions[1][0] += 0.01
    with pytest.raises(ValueError, match="positions differ"):
        frame_errors(ref, moved)
    with pytest.raises(ValueError, match="no energy/forces"):
        frame_errors(ref, Dataset(frames=[f.without_labels() for f in pred]))
    with pytest.raises(ValueError, match="empty"):
        frame_errors(Dataset(), Dataset())


def metrics_from(energy_errors, force_rmses, frame_energy=0.001, frame_force=0.05) -> TestMetrics:
    """TestMetrics of 1-atom frames with the given per-frame errors (force RMSE = |error| of one component x sqrt(1/3))."""
    e = np.asarray(energy_errors, dtype=float)
    f = np.asarray(force_rmses, dtype=float)
    errors = FrameErrors(
        n_atoms=np.ones(len(e), dtype=int),
        frame_energy_error=e,
        frame_force_rmse=f,
        frame_force_mae=f / np.sqrt(3),
        frame_force_max=f * np.sqrt(3),
    )
    return errors.to_metrics(frame_energy=frame_energy, frame_force=frame_force)


def test_convergence_by_accurate_ratio_at_the_boundary():
    crit = ConvergenceCriteria(energy_rmse=1e-4, force_rmse=1e-3, accurate_ratio=0.8)
    good_e, good_f = [0.0009, -0.001] + [0.0005] * 6, [0.05, 0.01] + [0.02] * 6  # thresholds met inclusively
    # 8 of 10 within 1 meV/atom and 50 meV/Å: converged although both RMSE thresholds fail
    converged, reason = crit.check(metrics_from(good_e + [0.01, 0.0], good_f + [0.01, 0.3]))
    assert converged and "80.0%" in reason
    # 7 of 10 (one frame just outside on force): not converged
    converged, reason = crit.check(metrics_from(good_e[:-1] + [0.0005, 0.01, 0.0], good_f[:-1] + [0.0501, 0.01, 0.3]))
    assert not converged and reason.startswith("not converged")


def test_convergence_by_rmse_branch():
    crit = ConvergenceCriteria(energy_rmse=0.002, force_rmse=0.1, accurate_ratio=0.8)
    # every frame slightly outside the per-frame thresholds, but the RMSEs are met
    e, f = [0.0015, -0.0015, 0.0015], [0.06, 0.06, 0.06]
    m = metrics_from(e, f)
    assert m.accurate_ratio == 0.0
    assert crit.check(m)[0]
    # energy RMSE met, force RMSE not: both set thresholds are required
    assert not crit.check(metrics_from(e, [0.2, 0.2, 0.2]))[0]
    # only the force threshold set: energy no longer matters
    assert ConvergenceCriteria(force_rmse=0.1, accurate_ratio=None).check(metrics_from([0.5] * 3, f))[0]
    # no RMSE threshold set: that branch never converges on its own
    assert not ConvergenceCriteria(accurate_ratio=0.9).check(metrics_from(e, f))[0]


def test_convergence_uses_its_own_frame_thresholds():
    m = metrics_from([0.002] * 5, [0.01] * 5, frame_energy=0.001)  # metrics built with 1 meV/atom: ratio 0
    assert m.accurate_ratio == 0.0
    assert ConvergenceCriteria(frame_energy=0.003, accurate_ratio=1.0).check(m)[0]
    assert ConvergenceCriteria(frame_energy=None, frame_force=0.05, accurate_ratio=1.0).check(m)[0]


def test_convergence_criteria_validation():
    with pytest.raises(ValueError, match="no criterion"):
        ConvergenceCriteria(accurate_ratio=None)
    with pytest.raises(ValueError, match="both None"):
        ConvergenceCriteria(frame_energy=None, frame_force=None)
    with pytest.raises(ValueError):
        ConvergenceCriteria(accurate_ratio=1.5)


def test_trust_window_membership():
    #          0: learnt  1: force to learn  2: energy to learn  3: force too bad  4: energy too bad  5: edge
    e = [0.0005, 0.0005, 0.005, 0.005, -0.2, 0.05]
    f = [0.02, 0.2, 0.02, 0.9, 0.1, 0.5]
    m = metrics_from(e, f)
    window = TrustWindow(energy_low=0.001, energy_high=0.05, force_low=0.05, force_high=0.5)
    # frame 5 sits exactly on both high bounds: inclusive, so it is added
    assert window.select(m) == [1, 2, 5]
    # the same rule on FrameErrors as on TestMetrics
    errors = FrameErrors(np.ones(6, dtype=int), np.array(e), np.array(f), np.array(f), np.array(f))
    assert window.select(errors) == [1, 2, 5]
    # force-only window: energy errors are ignored
    assert TrustWindow(force_low=0.05, force_high=0.5).select(m) == [1, 4, 5]
    # with the largest atomic error as force measure (sqrt(3) x RMSE here) frame 5 becomes too wrong
    assert TrustWindow(force_low=0.05, force_high=0.5, force_measure="max").select(m) == [1, 4]
    # no bounds: everything is added
    assert TrustWindow().select(m) == list(range(6))
    with pytest.raises(ValueError, match="below"):
        TrustWindow(force_low=0.5, force_high=0.1)
