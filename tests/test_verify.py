"""The plate verifier (redact/verify.py, redact/train/verify.py): close-up geometry, proposal
labelling, threshold calibration, training + ONNX export round trip, and the shipped verifier
in the engine on held-out dashcam frames."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
import pytest

from redact.config import DetectorSection, RedactConfig
from redact.detectors import (
    STREETVEIL_MODEL,
    int8_path,
    plate_verification,
    streetveil_plate_threshold,
)
from redact.errors import ModelError
from redact.train import data, evaluate
from redact.train import verify as tv
from redact.verify import CROP_SIZE, VERIFIER_MODEL, Calibration, PlateVerifier, crop_window, crops


def test_crop_puts_a_two_to_one_box_in_the_middle_half() -> None:
    img = np.zeros((400, 600, 3), np.uint8)
    img[180:220, 260:340] = 255  # an 80 x 40 "plate"
    c = crops(img, np.array([[260, 180, 340, 220]], np.float32))
    assert c.shape == (1, 3, *CROP_SIZE)
    white = c[0, 0] > 127
    ys, xs = np.nonzero(white)
    h, w = CROP_SIZE
    # The window is 2x the plate's width: the plate spans the middle half in both directions.
    assert abs(xs.min() - w / 4) <= 1 and abs(xs.max() + 1 - 3 * w / 4) <= 1
    assert abs(ys.min() - h / 4) <= 1 and abs(ys.max() + 1 - 3 * h / 4) <= 1


def test_crop_of_a_wide_plate_keeps_its_width_and_pads_outside_the_image() -> None:
    img = np.full((100, 100, 3), 200, np.uint8)
    box = np.array([[0, 0, 47, 10]], np.float32)  # EU-like 4.7:1 at the top-left corner
    x0, y0, x1, y1 = crop_window(box[0])
    assert (x0, y0, x1, y1) == pytest.approx((-23.5, -18.5, 70.5, 28.5))
    c = crops(img, box)[0]
    # 23.5 of 94 source px left of the image (20 of 80 columns), 18.5 of 47 above it (15.7 rows).
    assert c[:, :15, :].max() == 0 and c[:, :, :19].max() == 0
    assert c[:, 17:, 21:].min() == 200


def test_proposals_are_labelled_plate_clear_or_ignored() -> None:
    plates = np.array([[100, 100, 180, 140]], np.float32)
    dets = np.array([[102, 101, 178, 141],    # on the plate
                     [400, 400, 440, 420],    # clear
                     [100, 100, 130, 120],    # a piece of the plate: not used
                     [150, 110, 230, 150]],   # a near miss (IoU 0.16): not used
                    np.float32)
    assert tv.label_proposals(plates, dets).tolist() == [1, 0, -1, -1]
    assert tv.label_proposals(np.zeros((0, 4), np.float32), dets).tolist() == [0, 0, 0, 0]


def test_recoloured_surroundings_keep_the_candidate_and_spare_the_rest() -> None:
    rng = np.random.default_rng(0)
    n = 400
    x = rng.uniform(0, 255, (n, 3, *CROP_SIZE)).astype(np.float32)
    core = np.tile(np.array([[20, 15, 60, 25]], np.float32), (n, 1))  # a 4:1 candidate
    y = (np.arange(n) % 5 == 0).astype(np.int8)
    out = tv.recolour_surround(x, core, y, np.random.default_rng(1), p=0.5)
    inside = (slice(None), slice(None), slice(14, 26), slice(19, 61))  # the core and its 1 px margin
    np.testing.assert_array_equal(out[inside], x[inside])  # the candidate itself is never touched
    changed = (out != x).any(axis=(1, 2, 3))
    assert 0.4 < changed.mean() < 0.6
    assert (out[changed][:, :, :14] != x[changed][:, :, :14]).all(axis=(1, 2)).mean() > 0.9
    assert out.min() >= 0 and out.max() <= 255
    np.testing.assert_array_equal(tv.recolour_surround(x, core, y, rng, p=0.0), x)


def test_a_plates_core_is_the_plate_in_close_up_pixels() -> None:
    box = np.array([[100, 100, 180, 140]], np.float32)  # 2:1: fills the middle half
    np.testing.assert_allclose(tv.core_in_crop(box, box)[0], [20, 10, 60, 30])
    moved = box + np.array([10, 0, 10, 0], np.float32)
    assert tv.union(moved, box).tolist() == [[100, 100, 190, 140]]


def test_repaint_around_paints_the_body_and_keeps_the_plates() -> None:
    from redact.train.pipeline import repaint_around

    img = np.random.default_rng(0).integers(0, 255, (200, 300, 3), np.uint8)
    boxes = np.array([[100, 100, 140, 120], [130, 90, 150, 100]], np.float32)  # overlapping bodies
    out = repaint_around(img, boxes, (38, 120, 58), np.random.default_rng(1))
    for x1, y1, x2, y2 in boxes.astype(int):
        np.testing.assert_array_equal(out[y1:y2, x1:x2], img[y1:y2, x1:x2])
    body = out[70:100, 50:95].reshape(-1, 3).astype(float)  # left of the first plate, above it
    assert np.abs(body.mean(0) - (38, 120, 58)).max() < 3
    np.testing.assert_array_equal(out[:50], img[:50])  # far from every plate: untouched


def test_calibration_keeps_recall_and_drops_what_only_the_verifier_rejects() -> None:
    gt = np.array([[100, 100, 180, 140], [300, 100, 380, 140]], np.float32)
    z = np.zeros((0, 4), np.float32)
    dets = np.array([[100, 100, 180, 140], [300, 100, 380, 140], [500, 500, 580, 540], [600, 50, 640, 70]],
                    np.float32)
    det_scores = np.array([0.3, 0.11, 0.4, 0.13], np.float32)
    ver = np.array([0.9, 0.7, 0.2, 0.1], np.float32)  # plates score high, the two others low
    rows = [(gt, z, z, dets, det_scores, ver)] * 4
    cal, table = tv.calibrate(rows, target=1.0)
    # Both plates need a proposal threshold <= 0.11; the two false boxes go with verify > 0.2.
    assert cal.proposal <= 0.11 and 0.2 < cal.verify <= 0.7
    row = table[f"{cal.proposal:.2f}/{cal.verify:.2f}"]
    assert row["recall_ge16"] == 1.0 and row["false_per_image"] == 0.0


def test_calibration_round_trips_and_rejects_nonsense() -> None:
    assert Calibration.decode(Calibration(0.12, 0.35).encode()) == Calibration(0.12, 0.35)
    assert Calibration.decode(Calibration(0.12, 0.5, 0.45).encode()) == Calibration(0.12, 0.5, 0.45)
    assert Calibration.decode("0.120 0.500").bypass is None  # files written before the bypass
    with pytest.raises(ValueError):
        Calibration(0.0, 0.5)
    with pytest.raises(ValueError):
        Calibration.decode("0.1")
    with pytest.raises(ValueError):
        Calibration.decode("0.1 0.5 0.6 0.7")
    with pytest.raises(ValueError, match="bypass"):
        Calibration(0.2, 0.5, 0.15)  # below the proposal threshold: nothing would be verified


def test_a_bypass_keeps_what_the_detector_is_sure_of_and_verifies_the_rest() -> None:
    score = np.array([0.10, 0.15, 0.30, 0.60, 0.90], np.float32)
    verified = np.array([0.9, 0.1, 0.1, 0.1, 0.9], np.float32)
    assert Calibration(0.12, 0.5).keep(score, verified).tolist() == [False, False, False, False, True]
    assert Calibration(0.12, 0.5, 0.5).keep(score, verified).tolist() == [False, False, False, True, True]
    assert Calibration(0.12, 0.5, 1.0).keep(score, verified).tolist() == [False, False, False, False, True]


def test_proposing_from_another_threshold_keeps_a_bypass_only_above_it() -> None:
    # The engine (plate_threshold set) and the evaluation runners move the proposal threshold;
    # a bypass at or below it would let every candidate skip the verifier, so it goes.
    cal = Calibration(0.12, 0.45, 0.5)
    assert cal.at(0.3) == Calibration(0.3, 0.45, 0.5)
    assert cal.at(0.5) == Calibration(0.5, 0.45) and cal.at(0.6).bypass is None
    assert Calibration(0.12, 0.45).at(0.2) == Calibration(0.2, 0.45)


def test_the_bypass_is_the_lowest_that_adds_almost_no_false_boxes() -> None:
    """A plate the verifier vetoes scores 0.55 with the detector, a false box 0.32: a bypass of
    0.35 to 0.55 finds the plate again without the false box; 0.25 and 0.30 would keep the
    false box in every scene (1 per scene, over BYPASS_FALSE). Signs count too, and a bypass
    is never at or below the proposal threshold."""
    z = np.zeros((0, 4), np.float32)
    gt = np.array([[100, 100, 180, 140], [300, 100, 380, 140]], np.float32)
    dets = np.array([[100, 100, 180, 140], [300, 100, 380, 140], [500, 500, 580, 540]], np.float32)
    rows = [(gt, z, z, dets, np.array([0.4, 0.55, 0.32], np.float32), np.array([0.9, 0.1, 0.1], np.float32))] * 4
    cal, table = tv.choose_bypass(rows, Calibration(0.12, 0.5))
    assert cal == Calibration(0.12, 0.5, 0.35)
    assert table["none"]["recall_ge16"] == 0.5 and table["0.35"]["recall_ge16"] == 1.0
    assert table["0.30"]["false_per_image"] == 1.0 and table["0.35"]["false_per_image"] == 0.0
    # When every bypass adds false boxes, none is chosen.
    rows = [(gt, z, z, dets, np.array([0.9, 0.9, 0.9], np.float32), np.array([0.9, 0.9, 0.1], np.float32))] * 4
    assert tv.choose_bypass(rows, Calibration(0.12, 0.5))[0].bypass is None
    # A sign scoring 0.38 in each of 4 scenes: 4 more signs (over BYPASS_SIGNS) below 0.40. Its
    # false boxes alone (1 in 5 scenes: 0.2 per scene) would also be over BYPASS_FALSE, so the
    # scenes carry enough plain frames to keep that under the limit.
    sign = np.array([[500, 500, 580, 540]], np.float32)
    signs_rows = [(z, z, sign, sign, np.array([0.38], np.float32), np.array([0.1], np.float32))] * 4
    plain = [(z, z, z, z, np.zeros(0, np.float32), np.zeros(0, np.float32))] * 40
    cal, table = tv.choose_bypass(signs_rows + plain, Calibration(0.12, 0.5))
    assert cal.bypass == 0.4 and table["0.35"]["signs_detected"] == 4
    # A calibrated proposal threshold of 0.25 (on the grid): the bypass starts above it.
    _, table = tv.choose_bypass(rows, Calibration(0.25, 0.5))
    assert "0.25" not in table and "0.30" in table


def test_train_export_round_trip(shared: Path, tmp_path: Path) -> None:
    """A few real training scenes harvested with the packaged int8 detector, a short training
    run, and the exported ONNX computing what the torch classifier computes."""
    frames = data.load_dashcam(shared / "plates-dashcam-ro")
    train_f, _ = data.time_split(frames)
    tv._init_worker(str(int8_path(STREETVEIL_MODEL)), train_f, 7, None)
    h = tv._harvest_chunk([0, 1, 2, 3])
    assert len(h.y) > 10 and 0 < h.y.sum() < len(h.y)
    assert set(np.unique(h.kind)) == {0, 1}
    net = tv.train(h, tv.TrainConfig(epochs=1, batch=8, threads=1))
    out = tv.export(net, tmp_path / "v.onnx", {"ab" * 32: Calibration(0.15, 0.4)}, "test")
    v = PlateVerifier(out)
    assert v.calibration("ab" * 32) == Calibration(0.15, 0.4) and v.calibration("cd" * 32) is None
    img = data.read_rgb(train_f[0].path)
    boxes = np.concatenate([train_f[0].boxes, [[10, 10, 60, 30]]]).astype(np.float32)
    want = tv.predict(net, crops(img, boxes))
    np.testing.assert_allclose(v.scores(img, boxes), want, atol=1e-4)


def test_harvest_views_darken_and_streak_a_scene_without_moving_its_plates(shared: Path) -> None:
    """--night-views / --streaked-views: a scene drawn at night or streaked holds the plates,
    signs and real plates it holds without, at the same places, in other pixels; with none
    drawn it is the v2 harvest's scene, pixel for pixel, under the v2 cache key."""
    frames = data.load_dashcam(shared / "plates-dashcam-ro")
    train_f, _ = data.time_split(frames)
    kinds = set()
    for i in range(8):
        plain = tv.make_scene(i, train_f, 20261126)
        same = tv.make_scene(i, train_f, 20261126, tv.HardViews(0.0, 0.0))
        assert np.array_equal(plain.image, same.image)
        for views in (tv.HardViews(night=1.0), tv.HardViews(streaked=1.0)):
            hard = tv.make_scene(i, train_f, 20261126, views)
            for k in ("boxes", "extra", "signs"):
                np.testing.assert_array_equal(getattr(hard, k), getattr(plain, k))
            at_night = any(f.ride.startswith("night") for f in train_f if plain.name.split(":")[0] == f.key)
            if views.night and at_night:  # a night ride's frame is dark already: left as it is
                assert np.array_equal(hard.image, plain.image)
                continue
            assert hard.image.shape == plain.image.shape and not np.array_equal(hard.image, plain.image)
            if views.night:
                assert hard.image.mean() < plain.image.mean()
        kinds.add("signs" if len(plain.signs) else "plates" if len(plain.boxes) else "real")
    assert kinds == {"signs", "plates", "real"}  # every kind of harvest scene was drawn
    assert tv.NO_VIEWS.key == "" and tv.HardViews(0.25, 0.25).key != tv.HardViews(0.25, 0.5).key
    for bad in ({"night": 1.5}, {"streaked": -0.1}):
        with pytest.raises(ValueError, match="share in"):
            tv.HardViews(**bad)


# --- the shipped verifier ----------------------------------------------------------------------


def test_shipped_verifier_is_calibrated_for_both_packaged_detectors() -> None:
    v = PlateVerifier(VERIFIER_MODEL)
    for path in (STREETVEIL_MODEL, int8_path(STREETVEIL_MODEL)):
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        cal = v.calibration(sha)
        assert cal is not None, path
        # It proposes at or below the detector's own threshold: verification exists to let
        # more candidates in and drop the false ones, never to cost recall.
        assert cal.proposal <= streetveil_plate_threshold(path) and cal.verify > 0


def test_recalibrating_keeps_the_weights_and_replaces_only_the_thresholds(tmp_path: Path) -> None:
    """A new detector file needs new thresholds, not a new verifier (train_plates.py --verifier
    --calibrate-only): the weights and the rest of the metadata stay as they were."""
    path = tmp_path / "v.onnx"
    path.write_bytes(VERIFIER_MODEL.read_bytes())
    before = onnx.load(str(path))
    tv.recalibrate(path, {"ab" * 32: Calibration(0.1, 0.4, 0.6)})
    after = onnx.load(str(path))
    assert [i.SerializeToString() for i in after.graph.initializer] == \
        [i.SerializeToString() for i in before.graph.initializer]
    meta_b, meta_a = ({p.key: p.value for p in m.metadata_props} for m in (before, after))
    calibrations = [k for k in meta_b if k.startswith("streetveil.verify.") and len(k) == len("streetveil.verify.") + 64]
    assert len(calibrations) == 2 and "streetveil.verify.crop" in meta_a
    kept = {k: v for k, v in meta_b.items() if k not in calibrations}
    assert meta_a == {**kept, "streetveil.verify." + "ab" * 32: "0.100 0.400 0.600"}
    v = PlateVerifier(path)
    assert v.calibration("ab" * 32) == Calibration(0.1, 0.4, 0.6)
    assert v.calibration(hashlib.sha256(STREETVEIL_MODEL.read_bytes()).hexdigest()) is None


def test_calibrating_a_missing_verifier_is_a_clear_error(shared: Path, tmp_path: Path) -> None:
    from redact.train.pipeline import VerifierRunConfig, run_verifier

    with pytest.raises(ValueError, match="no verifier to calibrate"):
        run_verifier(VerifierRunConfig(shared=shared, out=tmp_path / "none.onnx", cache_dir=tmp_path,
                                       calibrate_only=True))


@pytest.mark.parametrize("args", [["--calibrate-only"], ["--harvest-detector", "x.onnx"],
                                  ["--verifier", "--calibrate-only", "--harvest-detector", "x.onnx"],
                                  ["--verifier", "--separable-fuse", "1"], ["--verifier", "--head-blocks", "1"],
                                  ["--verifier", "--streaked-signs", "2"], ["--night-views", "0.2"],
                                  ["--verifier", "--calibrate-only", "--streaked-views", "0.2"],
                                  ["--verifier", "--int8"],
                                  ["--verifier", "--train-seed", "1"]])
def test_train_plates_refuses_options_that_would_do_nothing(args: list[str],
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("train_plates", Path(__file__).parents[1] / "scripts" / "train_plates.py")
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    with pytest.raises(SystemExit) as e:
        script.main(args)
    assert e.value.code == 2 and "error:" in capsys.readouterr().err


def test_config_resolves_verification(tmp_path: Path) -> None:
    assert plate_verification(DetectorSection()) is None  # opt-in
    own = plate_verification(DetectorSection(plate_verify="on"))
    assert own is not None
    assert plate_verification(DetectorSection(plate_verify="on", backend="centerface")) is None
    assert own.bypass == 0.5  # the shipped file states a bypass (MODEL_CARD.md, "The bypass")
    assert plate_verification(DetectorSection(plate_verify="on", plate_threshold=0.3)) == Calibration(0.3, own.verify, 0.5)
    # A proposal threshold at or above the calibrated bypass: every proposal verified, as before the bypass.
    assert plate_verification(DetectorSection(plate_verify="on", plate_threshold=0.5)) == Calibration(0.5, own.verify)
    asked_bypass = plate_verification(DetectorSection(plate_verify="on", plate_verify_bypass=0.9))
    assert asked_bypass is not None and asked_bypass.bypass == 0.9
    with pytest.raises(ModelError, match=r"plate_verify_bypass = 0.1 is not above the plate proposal threshold 0.15"):
        plate_verification(DetectorSection(plate_verify="on", plate_verify_bypass=0.1))
    # Unset, the bypass stays out of the config key (the verifier file's hash covers it): the
    # key of a verified config is the one it had before the setting existed (computed at 3d4952b).
    from pipeline.plan import redact_key

    def key(**det: object) -> str:
        return redact_key(RedactConfig.model_validate({"detector": {"plate_verify": "on", **det}}))

    assert key() == "c23025a630770190013a5ee4c0154aec6174e7f26f522fe8a34f031d673d6d91"
    assert key() != key(plate_verify_bypass=0.9)
    assert key(plate_verify="off") == key(plate_verify="off", plate_verify_bypass=0.9)  # no verifier, no effect
    # Weights the verifier was never calibrated with: refused unless a threshold is given.
    m = onnx.load(str(STREETVEIL_MODEL))
    m.metadata_props.add(key="test.note", value="another file")
    other = tmp_path / "other.onnx"
    onnx.save(m, str(other))
    with pytest.raises(ModelError, match=r"not calibrated for .*other\.onnx"):
        plate_verification(DetectorSection(plate_verify="on", weights=other))
    asked = plate_verification(DetectorSection(plate_verify="on", weights=other, plate_verify_threshold=0.5))
    assert asked == Calibration(streetveil_plate_threshold(other), 0.5)


# As loaded (1280x720 frames fit the network input), and as 1080p frames (the whole-frame pass
# sees them at 2/3, as scripts/eval_redact.py --as-large-frame 1.5), with the plates that
# verification may lose against the detector alone: one (scoring noise) as loaded; in 1080p
# frames v4 loses 1 of 110 (0.982 vs 0.991), where v2 lost 3 with its bypass and 4 without (it
# vetoed the looser boxes the 2/3 pass puts on 16-26 px dusk plates; MODEL_CARD.md), so the
# bound there lets a rebuilt verifier do no worse than v2.
REGIMES = {"as-loaded": ({}, 1), "as-1080p": ({"input_scale": 2 / 3, "upscale": 1.0, "tile_above": 10**9}, 3)}


@pytest.mark.parametrize("regime", sorted(REGIMES))
def test_engine_verification_keeps_held_out_plates_and_drops_false_boxes(shared: Path, regime: str) -> None:
    """On every held-out dashcam frame with plates (never trained or calibrated on), through
    the engine's detector: with verification every labelled plate found without it is still
    found (within the regime's allowance), with fewer boxes that match no label."""
    from redact.engine import Redactor

    frames = data.load_dashcam(shared / "plates-dashcam-ro")
    _, val = data.time_split(frames)
    settings, allowed = REGIMES[regime]
    on = Redactor(RedactConfig(detector=DetectorSection(plate_verify="on", **settings)), threads=1)
    off = Redactor(RedactConfig(detector=DetectorSection(**settings)), threads=1)
    cal = plate_verification(DetectorSection(plate_verify="on"))
    assert cal is not None
    info = on.info["detectors"][0]
    assert info["verify"] == {"plate": cal.verify} and "+verify-" in info["version"]
    assert "verify" not in off.info["detectors"][0] and on.model_hash != off.model_hash
    z = np.zeros((0, 4), np.float32)
    tallies = {"on": evaluate.Tally(), "off": evaluate.Tally()}
    for f in (f for f in val if len(f.boxes)):
        img = data.read_rgb(f.path)
        for name, r in (("on", on), ("off", off)):
            d = r.detectors[0](img).of("plate")
            tallies[name].add(f.boxes, z, z, np.array(d.xyxy), np.array(d.score))
    t_on, t_off = tallies["on"], tallies["off"]
    assert t_on.images >= 20 and sum(t_on.total.values()) >= 25
    found_on, found_off = sum(t_on.found.values()), sum(t_off.found.values())
    assert found_on >= found_off - allowed, (t_on.as_dict(), t_off.as_dict())
    assert t_on.false < t_off.false, (t_on.as_dict(), t_off.as_dict())


@pytest.mark.parametrize("plate_threshold", [None, 0.15])
def test_vetoed_plates_are_what_verification_took_from_the_detector_alone(shared: Path,
                                                                          plate_threshold: float | None) -> None:
    """``detect_with_vetoes`` reports exactly the candidates the verifier vetoed that the
    detector alone (same config, verification off) would have redacted: its plate boxes are
    the vetoed ones plus the kept ones at or above its threshold (greedy NMS keeps the same
    survivors above a threshold whatever the lower proposal threshold). Also with the config's
    own ``plate_threshold``, which both setups then use. No verifier, no vetoes."""
    from redact.boxes import iou_matrix
    from redact.engine import Redactor

    _, val = data.time_split(data.load_dashcam(shared / "plates-dashcam-ro"))
    on = Redactor(RedactConfig(detector=DetectorSection(plate_verify="on", plate_threshold=plate_threshold)),
                  threads=1)
    off = Redactor(RedactConfig(detector=DetectorSection(plate_threshold=plate_threshold)), threads=1)
    alone_at = plate_threshold or streetveil_plate_threshold(int8_path(STREETVEIL_MODEL))
    assert on.info["detectors"][0]["unverified"] == {"plate": alone_at}  # in the run record
    assert "unverified" not in off.info["detectors"][0]
    vetoed = 0
    for f in val[::10]:
        img = on.decode(f.path.read_bytes(), name=f.path.name)
        kept, veto = on.detect_with_vetoes(img)
        kept = kept.of("plate")
        alone = off.detect(img).of("plate")
        assert set(veto.cls.tolist()) <= {1} and (veto.score >= alone_at).all()
        both = np.concatenate([veto.xyxy, kept.xyxy[kept.score >= alone_at]])
        assert len(both) == len(alone), (len(veto), len(kept), len(alone))
        if len(alone):
            assert (iou_matrix(alone.xyxy, both).max(1) > 0.99).all()
        if len(veto) and len(kept):
            assert iou_matrix(veto.xyxy, kept.xyxy).max() < 0.99
        vetoed += len(veto)
        assert len(off.detect_with_vetoes(img)[1]) == 0
    assert vetoed >= 5  # the detector alone keeps 4-5 false boxes per held-out frame


def test_the_engine_keeps_candidates_scoring_the_bypass_unverified(shared: Path) -> None:
    """With ``plate_verify_bypass`` every plate box the detector alone finds at that score or
    more stays, whatever the verifier says; at 1 (verify everything) some of those are vetoed
    on held-out frames, so the bypass is what keeps them. It reaches the run record and the
    recall key."""
    from redact.boxes import iou_matrix
    from redact.engine import Redactor, info_line
    from redact.recall import detection_key

    _, val = data.time_split(data.load_dashcam(shared / "plates-dashcam-ro"))
    b = 0.3
    bypass, every, alone = (Redactor(RedactConfig(detector=DetectorSection(**kw)), threads=1) for kw in
                            ({"plate_verify": "on", "plate_verify_bypass": b},
                             {"plate_verify": "on", "plate_verify_bypass": 1.0}, {}))
    assert bypass.info["detectors"][0]["verify_bypass"] == {"plate": b}
    assert "verify_bypass" not in every.info["detectors"][0] and "unless scoring 0.3" in info_line(bypass.info)
    assert detection_key(bypass.info, "plate") != detection_key(every.info, "plate")
    # Verifying every candidate is a recorded setup (eval_redact.py's verified_all); 0.3 is not.
    assert every.info["measured_recall"]["plate"] and bypass.info["measured_recall"]["plate"] is None
    sure, vetoed_when_verified = 0, 0
    for f in val[::5]:
        img = data.read_rgb(f.path)
        a = alone.detectors[0](img).of("plate")
        sure_boxes = np.array(a.xyxy)[np.array(a.score) >= b]
        if not len(sure_boxes):
            continue
        sure += len(sure_boxes)
        for r, name in ((bypass, "bypass"), (every, "every")):
            kept = np.array(r.detectors[0](img).of("plate").xyxy).reshape(-1, 4)
            hit = iou_matrix(sure_boxes, kept).max(1) > 0.99 if len(kept) else np.zeros(len(sure_boxes), bool)
            if name == "bypass":
                assert hit.all(), (f.key, sure_boxes[~hit])
            else:
                vetoed_when_verified += int((~hit).sum())
    assert sure >= 20 and vetoed_when_verified >= 1, (sure, vetoed_when_verified)


def test_a_missing_verifier_file_is_a_clear_model_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Verification asked for without its file does not quietly run unverified; it stops,
    naming the file. The default (no verification) does not need the file."""
    import redact.verify
    from redact.detectors import build_detectors

    missing = tmp_path / "streetveil-plate-verify-v4.onnx"
    monkeypatch.setattr(redact.verify, "VERIFIER_MODEL", missing)
    with pytest.raises(ModelError, match=r"plate verifier not found: .*streetveil-plate-verify-v4\.onnx"):
        build_detectors(DetectorSection(plate_verify="on"), threads=1)
    (det,) = build_detectors(DetectorSection(), threads=1)
    assert "verify" not in det.version


def _verified_and_alone(scenes: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, evaluate.Tally]:
    """Plate tallies of the engine's detector with and without verification over (image, plates)."""
    from redact.engine import Redactor

    z = np.zeros((0, 4), np.float32)
    out = {}
    for name, cfg in (("off", DetectorSection()), ("on", DetectorSection(plate_verify="on"))):
        r, t = Redactor(RedactConfig(detector=cfg), threads=1), evaluate.Tally()
        for img, plates in scenes:
            d = r.detectors[0](img).of("plate")
            t.add(plates, z, z, np.array(d.xyxy), np.array(d.score))
        out[name] = t
    return out


def test_the_verifier_keeps_real_plates_on_cars_of_any_paint(shared: Path) -> None:
    """Held-out real plates with the car around them repainted (green, blue, white): v1 of the
    verifier, which learned that green or blue surroundings mean foliage or sky, kept none of
    the green ones (0.00, 0.11 blue, 0.64 white; MODEL_CARD.md); since v2 the verifier is
    trained with recoloured surroundings. Fails if a rebuilt verifier judges a plate by its
    car's colour again."""
    from redact.train.pipeline import CAR_PAINTS, repaint_around

    frames = [f for f in data.time_split(data.load_dashcam(shared / "plates-dashcam-ro"))[1] if len(f.boxes)][::4]
    rng = np.random.default_rng(0)
    for paint in ("green", "blue", "white"):
        scenes = [(repaint_around(data.read_rgb(f.path), f.boxes, CAR_PAINTS[paint], rng), f.boxes) for f in frames]
        t = _verified_and_alone(scenes)
        assert sum(t["on"].total.values()) >= 20
        on, off = t["on"].recall() or 0.0, t["off"].recall() or 0.0
        assert on >= 0.85 and on >= off - 0.1, (paint, t["on"].as_dict(), t["off"].as_dict())


def test_the_verifier_vetoes_plates_unlike_its_training_data() -> None:
    """Why verification stays opt-in: the demo sample's plates (its own renderer: Latin text
    in Pillow's font on flat cartoon cars, never used in training) are all found by the model
    alone, and some are vetoed by the verifier (v1: 0.60, v2: 0.90 of 48 with its bypass, v4:
    0.96; MODEL_CARD.md). The rule for making verification the default allows one lost plate
    per held-out set. This test pins the measured weakness: if a better verifier loses at most
    one of them, it fails, and the default can be revisited (on the other sets too)."""
    from pipeline.sample import draw_frame

    scenes = []
    for i in range(24):
        img, truth = draw_frame(i)
        scenes.append((img, np.array(truth.plates, np.float32).reshape(-1, 4)))
    t = _verified_and_alone(scenes)
    found_on, found_off = sum(t["on"].found.values()), sum(t["off"].found.values())
    assert found_off >= 0.95 * sum(t["off"].total.values()), t["off"].as_dict()
    assert found_on <= found_off - 2, (t["on"].as_dict(), t["off"].as_dict())
