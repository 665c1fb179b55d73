"""Exports of real tickets (Lenet-300-100 and Conv-2 from short runs on Fashion-MNIST slices)."""

import json
import os
import shutil
import subprocess
import sys

import tf_lottery  # noqa: F401  (before TensorFlow: tf-keras)
import numpy as np
import pytest
import tensorflow as tf

from tf_lottery import export as E
from tf_lottery.masking import pruning
from tf_lottery.export import saved_model

from export_helpers import cli, make_run, program
from fashion_slices import as_float, fashion_slice

BIN = os.path.dirname(sys.executable)


def _run(tmp_path_factory, model, rounds, rate, iterations):
    out = str(tmp_path_factory.mktemp(model) / "run")
    make_run(out, model, rounds=rounds, rate=rate, iterations=iterations, train=2000)
    return out


@pytest.fixture(scope="module")
def lenet_run(tmp_path_factory):
    # fc layers keep 30%, 9%, 2.7% of their weights at rounds 1-3.
    return _run(tmp_path_factory, "lenet_300_100", rounds=4, rate=0.7, iterations=30)


@pytest.fixture(scope="module")
def conv_run(tmp_path_factory):
    return _run(tmp_path_factory, "conv2", rounds=2, rate=0.6, iterations=10)


@pytest.fixture(scope="module")
def images():
    return as_float(fashion_slice(train=10, validation=0, test=300).test_images)


def _logits(path, x):
    return tf.saved_model.load(path).signatures[E.SIGNATURE](images=tf.constant(x))["logits"].numpy()


def _ticket_logits(run_dir, round, x):
    ticket = E.load_ticket(run_dir, round)
    return ticket, ticket.wrapped(x, training=False).numpy()


def test_dense_export_equals_the_ticket_and_keeps_pruned_weights_zero(lenet_run, images, tmp_path):
    result = E.export_ticket(lenet_run, str(tmp_path / "serving"), round=3, images=images)
    assert result.path == str(tmp_path / "serving" / "1") and result.version == 1
    ticket, expected = _ticket_logits(lenet_run, 3, images)
    np.testing.assert_allclose(_logits(result.path, images), expected, rtol=0, atol=1e-5)
    loaded = tf.saved_model.load(result.path)
    for name, mask in ticket.masks.items():
        kernel = loaded.layer_variables[name]["kernel"].numpy()
        assert np.all(kernel[mask == 0] == 0.0)
        assert np.count_nonzero(kernel[mask == 1]) > 0
    signature = loaded.signatures[E.SIGNATURE]
    assert list(signature.structured_input_signature[1]) == ["images"]
    assert signature.structured_input_signature[1]["images"].shape.as_list() == [None, 28, 28, 1]
    probabilities = signature(images=tf.constant(images[:5]))["probabilities"].numpy()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert os.stat(result.path).st_mode & 0o555 == 0o555  # a server running as another user can read it


def test_sparse_export_stores_survivors_only_and_equals_dense(lenet_run, images, tmp_path):
    base = str(tmp_path / "serving")
    dense = E.export_ticket(lenet_run, base, round=3, format="dense", images=images)
    sizes = {}
    for round_index in (1, 2, 3):
        sparse = E.export_ticket(lenet_run, base, round=round_index, format="sparse", images=images)
        ticket = E.load_ticket(lenet_run, round_index)
        loaded = tf.saved_model.load(sparse.path)
        held = [v for layer in loaded.layer_variables.values() for v in layer.values()]
        stored = sum(int(np.prod(v.shape)) for v in held)
        kept = sum(int(m.sum()) for m in ticket.masks.values())
        biases = 300 + 100 + 10
        assert stored == kept + biases  # no dense kernel anywhere among the variables
        assert all(layer["storage"] == "sparse" for layer in sparse.verification.layers.values())
        sizes[round_index] = sparse.verification.size_bytes
    np.testing.assert_allclose(_logits(sparse.path, images), _logits(dense.path, images), rtol=0, atol=1e-5)
    assert sizes[1] > sizes[2] > sizes[3]
    assert sizes[3] < 0.1 * dense.verification.size_bytes  # 97.3% of the fc weights pruned


def test_sparse_layer_computes_with_sparse_ops(lenet_run, images, tmp_path):
    result = E.export_ticket(lenet_run, str(tmp_path / "s"), round=3, format="sparse", images=images)
    graph = tf.saved_model.load(result.path).signatures[E.SIGNATURE].graph
    ops = set()
    for function in graph.as_graph_def().library.function:
        ops.update(node.op for node in function.node_def)
    assert {"SparseTensorDenseMatMul", "SparseMatrixMatMul"} <= ops
    assert "MatMul" not in ops
    # batches on both sides of the COO / CSR switch agree with the ticket
    _, expected = _ticket_logits(lenet_run, 3, images)
    for batch in (1, E.CSR_MIN_BATCH - 1, E.CSR_MIN_BATCH, 300):
        np.testing.assert_allclose(_logits(result.path, images[:batch]), expected[:batch], rtol=0, atol=1e-5)


def test_tflite_keeps_sparsity_and_equals_the_ticket(lenet_run, images, tmp_path):
    result = E.export_ticket(lenet_run, str(tmp_path / "s"), round=3, format="sparse", tflite=True, images=images)
    path = os.path.join(result.path, E.TFLITE_FILE)
    _, expected = _ticket_logits(lenet_run, 3, images)
    np.testing.assert_allclose(E.tflite_logits(path, images), expected, rtol=0, atol=1e-5)
    dense_float_bytes = 4 * (784 * 300 + 300 * 100 + 100 * 10)
    assert os.path.getsize(path) < 0.2 * dense_float_bytes
    assert result.verification.tflite_max_abs_diff <= 1e-5


def test_warmup_requests_are_prediction_logs_that_replay(lenet_run, images, tmp_path):
    result = E.export_ticket(lenet_run, str(tmp_path / "base"), round="best", model_name="lenet", warmup=4, images=images)
    logs = E.read_warmup(os.path.join(result.path, "assets.extra", E.WARMUP_FILE))
    assert len(logs) == 4
    signature = tf.saved_model.load(result.path).signatures[E.SIGNATURE]
    for i, log in enumerate(logs):
        request = log.predict_log.request
        assert request.model_spec.name == "lenet" and request.model_spec.signature_name == E.SIGNATURE
        x = tf.make_ndarray(request.inputs["images"])
        np.testing.assert_array_equal(x, images[i : i + 1])
        signature(images=tf.constant(x))
    assert result.verification.warmup_records == 4


def test_saved_model_cli_runs_the_export(lenet_run, images, tmp_path):
    # `saved_model_cli run` loads through the SavedModel bundle loader TF Serving uses; the signature
    # it needs (names, shapes) is checked in-process above, so `show` is not run too.
    result = E.export_ticket(lenet_run, str(tmp_path / "s"), round=3, format="sparse", images=images)
    np.save(tmp_path / "x.npy", images[:8])
    out = tmp_path / "out"
    subprocess.run(
        [os.path.join(BIN, "saved_model_cli"), "run", "--dir", result.path, "--tag_set", "serve",
         "--signature_def", "serving_default", "--inputs", f"images={tmp_path / 'x.npy'}", "--outdir", str(out)],
        capture_output=True, text=True, check=True,
    )
    _, expected = _ticket_logits(lenet_run, 3, images[:8])
    np.testing.assert_allclose(np.load(out / "logits.npy"), expected, rtol=0, atol=1e-5)


def test_conv2_exports_dense_and_sparse_with_equal_outputs(conv_run, images, tmp_path):
    base = str(tmp_path / "conv")
    dense = E.export_ticket(conv_run, base, round="last", format="dense", images=images)
    sparse = E.export_ticket(conv_run, base, round="last", format="sparse", images=images)
    assert (dense.version, sparse.version) == (1, 2)
    ticket, expected = _ticket_logits(conv_run, 1, images)
    np.testing.assert_allclose(_logits(dense.path, images), expected, rtol=0, atol=1e-5)
    np.testing.assert_allclose(_logits(sparse.path, images), _logits(dense.path, images), rtol=0, atol=1e-5)
    layers = sparse.verification.layers
    assert layers["conv2"]["storage"] == "sparse" and layers["fc1"]["storage"] == "sparse"
    for name, mask in ticket.masks.items():
        assert layers[name]["pruned_nonzero"] == 0
        assert layers[name]["weights_remaining"] == pytest.approx(mask.mean(), abs=1e-3)
    assert sparse.verification.size_bytes < 0.6 * dense.verification.size_bytes


def test_verify_reports_signature_sparsity_size_and_agreement(lenet_run, images, tmp_path):
    result = E.export_ticket(lenet_run, str(tmp_path / "s"), round=2, format="sparse", images=images)
    check = E.verify(result.path)  # reference rebuilt from the run recorded in the export
    assert check.ok and check.max_abs_diff <= 1e-5 and check.examples > 0
    assert check.signature["inputs"] == {"images": ("float32", [None, 28, 28, 1])}
    assert set(check.signature["outputs"]) == {"logits", "probabilities"}
    ticket = E.load_ticket(lenet_run, 2)
    for name, mask in ticket.masks.items():
        assert check.layers[name]["weights_remaining"] == pytest.approx(mask.mean(), abs=1e-3)
    assert check.size_bytes == E.directory_bytes(result.path)
    report = check.report()
    assert "fc1: sparse kernel (784, 300)" in report and "OK" in report


def _verification(diff, scale, tflite=None):
    return E.Verification(path="export", format="sparse", signature={"inputs": {}, "outputs": {}}, layers={}, size_bytes=0, tflite_bytes=None,
                          examples=512, max_abs_diff=diff, tflite_max_abs_diff=tflite, warmup_records=0,
                          reference="the model given", output_scale=scale)


def test_the_difference_allowed_is_a_fraction_of_the_outputs_scale():
    # A Conv-2 ticket's sparse export differed by 1.38e-5 on logits up to 13.5: the order of float32 sums.
    assert _verification(1.38e-5, 13.5).ok and _verification(1.38e-5, 13.5).tolerance == pytest.approx(1.35e-4)
    assert not _verification(1.38e-5, 0.9).ok  # outputs under 1 (probabilities): the plain 1e-5
    assert _verification(1e-5, 0.9).ok and _verification(1e-6, None).tolerance == 1e-5
    bad = _verification(2e-4, 13.5)
    assert not bad.ok
    assert bad.problem() == "logits differ from the model given by 2.00e-04 (tolerance 1.35e-04: 1e-05 of the largest |output|, 13.5)"
    assert not _verification(1e-5, 13.5, tflite=3e-4).ok  # the TFLite file is held to the same bound
    assert bad.report().endswith("FAILED (tolerance 1.35e-04: 1e-05 of the largest |output|, 13.5; pruned weights must be 0)")


def test_a_weight_off_by_a_little_fails_the_check(lenet_run, images, tmp_path):
    result = E.export_ticket(lenet_run, str(tmp_path / "s"), round=2, format="sparse", images=images)
    ticket = E.load_ticket(lenet_run, 2)
    check = E.verify(result.path, images=images, reference=ticket.wrapped)
    logits = ticket.wrapped(images, training=False).numpy()
    assert check.ok and check.output_scale == pytest.approx(float(np.max(np.abs(logits))))
    # One surviving weight of fc2 moved by 0.01: the outputs move by far more than the tolerance.
    layer = next(l for l in ticket.wrapped.layers if l.name.endswith("fc2"))
    kernel = layer.layer.kernel
    i, j = np.argwhere(ticket.masks["fc2"] == 1)[0]
    kernel.assign(tf.tensor_scatter_nd_add(kernel, [[i, j]], [0.01]))
    moved = E.verify(result.path, images=images, reference=ticket.wrapped)
    assert not moved.ok and moved.max_abs_diff > moved.tolerance
    assert moved.problem().startswith("logits differ from the model given by ")


def test_without_its_run_the_tflite_file_is_held_against_the_saved_model(lenet_run, images, tmp_path):
    run = str(tmp_path / "run")
    shutil.copytree(lenet_run, run)
    result = E.export_ticket(run, str(tmp_path / "s"), round=2, format="sparse", tflite=True, images=images)
    shutil.rmtree(run)
    check = E.verify(result.path, images=images)
    assert check.reference.startswith("no reference: run directory") and check.max_abs_diff is None
    assert check.ok and check.tflite_max_abs_diff <= check.tolerance and check.output_scale > 0
    served = _logits(result.path, images)
    assert check.output_scale == pytest.approx(float(np.max(np.abs(served))))


@pytest.mark.slow
def test_cli_exports_then_verifies(lenet_run, tmp_path, capfd):
    base = str(tmp_path / "serving")
    code, out, err = cli(capfd, f"--run_dir={lenet_run}", "--round=3", f"--export_base={base}", "--format=sparse", "--warmup=2")
    assert code == 0, err
    assert "exported version 1" in out and "OK" in out
    code, out, err = cli(capfd, f"--verify={base}/1")
    assert code == 0 and "warmup: 2 PredictionLog records" in out and err == []
    before = os.listdir(base)
    refused = program(f"--run_dir={lenet_run}", "--round=3", f"--export_base={base}", "--version=1")
    assert refused.returncode == 1
    assert refused.stderr.splitlines() == [  # exactly one line: no TensorFlow start-up lines, no traceback
        f"lottery-export: error: version directory {base}/1 already exists; pass overwrite (--overwrite) "
        "to replace it or choose another version"
    ]
    assert os.listdir(base) == before


def test_run_from_before_the_model_record_rebuilds_the_zoo_model(lenet_run, images, tmp_path):
    old = tmp_path / "run"
    shutil.copytree(lenet_run, old)
    record = json.loads((old / "config.json").read_text())
    del record["model"], record["architecture"]  # what runs written before 0.2 hold
    (old / "config.json").write_text(json.dumps(record))
    result = E.export_ticket(str(old), str(tmp_path / "s"), round=2, images=images)
    assert result.verification.ok and E.read_metadata(result.path)["model"] == "lenet_300_100"
    np.testing.assert_allclose(_logits(result.path, images), _ticket_logits(lenet_run, 2, images)[1], rtol=0, atol=1e-5)


# -- bad input ---------------------------------------------------------------------------------
def test_missing_or_unfinished_run_directory(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        E.load_ticket(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no lottery-find run \\(no config.json\\)"):
        E.load_ticket(str(tmp_path / "empty"))


def test_round_selection():
    rounds = [
        {"round": 0, "early_stop_test_accuracy": 0.8, "weights_remaining": 1.0},
        {"round": 1, "early_stop_test_accuracy": 0.9, "weights_remaining": 0.5},
        {"round": 2, "early_stop_test_accuracy": 0.9, "weights_remaining": 0.25},
        {"round": 3, "early_stop_test_accuracy": 0.7, "weights_remaining": 0.1},
    ]
    assert E.select_round(rounds, "best") == 2  # ties go to the sparser round
    assert E.select_round(rounds, "last") == 3
    assert E.select_round(rounds, "1") == 1
    with pytest.raises(ValueError, match="round 4 is out of range; allowed: best, last or 0..3"):
        E.select_round(rounds, 4)
    with pytest.raises(ValueError, match="round 'first' is not a round"):
        E.select_round(rounds, "first")
    with pytest.raises(ValueError, match="no finished round"):
        E.select_round([], "best")


def test_existing_version_is_refused_unless_overwrite(lenet_run, images, tmp_path):
    base = str(tmp_path / "s")
    first = E.export_ticket(lenet_run, base, round=1, images=images)
    with pytest.raises(ValueError, match="already exists; pass overwrite"):
        E.export_ticket(lenet_run, base, round=3, version=1, images=images)
    assert E.load_ticket(lenet_run, 1).masks["fc1"].mean() == pytest.approx(
        first.verification.layers["fc1"]["weights_remaining"], abs=1e-3
    )
    again = E.export_ticket(lenet_run, base, round=3, format="sparse", version=1, overwrite=True, images=images)
    assert again.path == first.path and E.read_metadata(again.path)["round"] == 3
    assert sorted(os.listdir(base)) == ["1"]


def test_failed_export_leaves_no_version_directory(lenet_run, images, tmp_path, monkeypatch):
    base = tmp_path / "s"

    def broken(path, *args):
        with open(path, "wb") as f:
            f.write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(saved_model, "write_warmup", broken)
    with pytest.raises(OSError, match="disk full"):
        E.export_ticket(lenet_run, str(base), round=3, warmup=3, images=images)
    assert not base.exists()  # the export made export_base, so it removed it again
    base.mkdir()
    with pytest.raises(OSError, match="disk full"):
        E.export_ticket(lenet_run, str(base), round=3, warmup=3, images=images)
    assert os.listdir(base) == []


@pytest.mark.parametrize("name", ["../escape", "a/b", "..", "/abs", ".hidden", "x y"])
def test_model_name_cannot_escape_the_export_base(name, lenet_run, tmp_path):
    with pytest.raises(ValueError, match="model_name"):
        E.export_ticket(lenet_run, str(tmp_path / "base"), model_name=name)
    assert not (tmp_path / "escape").exists()


def test_model_name_through_a_symlink_is_refused(tmp_path):
    base = tmp_path / "base"
    base.mkdir()
    (base / "link").symlink_to(tmp_path)
    with pytest.raises(ValueError, match="resolves outside export_base"):
        E.model_directory(str(base), "link")
    assert E.model_directory(str(base), "lenet") == str(base / "lenet")


def test_bad_format_warmup_and_version(lenet_run, tmp_path):
    ticket = E.load_ticket(lenet_run, 1)
    for kwargs, message in (
        ({"format": "csr"}, "unknown format 'csr'; allowed: dense, sparse, compact"),
        ({"warmup": 1001}, "warmup=1001 must be an integer in 0..1000"),
        ({"version": 0}, r"version=0 must be an integer in 1..9223372036854775807"),
    ):
        with pytest.raises(ValueError, match=message):
            E.export_model(ticket.wrapped, str(tmp_path / "b"), **kwargs)
    assert not (tmp_path / "b").exists() or os.listdir(tmp_path / "b") == []


def test_stripped_in_memory_model_exports_too(lenet_run, images, tmp_path):
    ticket = E.load_ticket(lenet_run, 3)
    stripped = pruning.strip(ticket.wrapped)
    result = E.export_model(stripped, str(tmp_path / "m"), format="sparse", images=images)
    np.testing.assert_allclose(_logits(result.path, images), stripped(images).numpy(), rtol=0, atol=1e-5)
    assert result.verification.layers["fc1"]["weights_remaining"] == pytest.approx(ticket.masks["fc1"].mean(), abs=1e-6)
