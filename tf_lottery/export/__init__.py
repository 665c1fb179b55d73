"""Export a ticket as a TF Serving SavedModel (dense or sparse kernels), optionally as TFLite, and verify it.

Layout written: <export_base>[/<model_name>]/<version>/ with saved_model.pb, variables/ and
assets.extra/ (tf_lottery_export.json, and tf_serving_warmup_requests when warmup is asked),
plus model.tflite when asked (what TF Serving's --prefer_tflite_model loads). A version is
filled in a hidden temporary directory, checked against the model it is made from, and renamed
into place only if every check passes, so TF Serving never sees a half-written or wrong version.

Signature `serving_default`: input `images` float32 [None, H, W, C] scaled to [0, 1]; outputs
`logits` and `probabilities` float32 [None, classes]. A model that outputs logits gets their
softmax as `probabilities`; a model ending in a softmax gets its output as `probabilities` and
their log as `logits` (the metadata's `model_output` says which the model gave).

Modules, one concern each:
  layout.py         file and signature names, the metadata file and its checks
  loading.py        rebuild a run's round (`load_ticket`): zoo, recorded user model, or model=
  sparse_layers.py  SparseDense, SparseConv2D and the position encoding of surviving weights
  saved_model.py    the serving module, SavedModel, TFLite and warmup files
  versions.py       version directories, model names, overwrite, stale temporaries
  verification.py   `verify` and `Verification`
  exporting.py      `export_model` and `export_ticket`: check, write, verify, publish
"""

from tf_lottery.export.exporting import ExportResult, VerificationFailed, export_model, export_ticket
from tf_lottery.export.layout import (
    CHECK_EXAMPLES, FORMATS, INPUT_NAME, MAX_WARMUP, METADATA_FILE, MODEL_OUTPUTS, OUTPUT_NAMES, SIGNATURE,
    TFLITE_FILE, TOLERANCE, WARMUP_FILE, read_metadata,
)
from tf_lottery.export.loading import LoadedTicket, load_ticket, test_images
from tf_lottery.export.saved_model import read_warmup, tflite_logits
from tf_lottery.export.sparse_layers import (
    CSR_MIN_BATCH, SparseConv2D, SparseDense, decode_positions, encode_positions, sparse_model,
)
from tf_lottery.export.verification import Verification, verify
from tf_lottery.export.versions import MAX_VERSION, directory_bytes, model_directory
from tf_lottery.search.run_checks import select_round

__all__ = [
    "CHECK_EXAMPLES", "CSR_MIN_BATCH", "ExportResult", "FORMATS", "INPUT_NAME", "LoadedTicket", "MAX_VERSION",
    "MAX_WARMUP", "METADATA_FILE", "MODEL_OUTPUTS", "OUTPUT_NAMES", "SIGNATURE", "SparseConv2D", "SparseDense",
    "TFLITE_FILE", "TOLERANCE", "Verification", "VerificationFailed", "WARMUP_FILE", "decode_positions",
    "directory_bytes", "encode_positions", "export_model", "export_ticket", "load_ticket", "model_directory",
    "read_metadata", "read_warmup", "select_round", "sparse_model", "test_images", "tflite_logits", "verify",
]
