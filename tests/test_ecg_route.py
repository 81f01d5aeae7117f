"""The one route from a record file to a stored ECG (data.ecg_store), shared by the MIMIC-IV-ECG converter and
every downstream loader: one skip vocabulary, one int16 -> millivolt decode."""

import numpy as np
import pytest

from cmelt.data.downstream import RecordJob, process_job
from cmelt.data.ecg_store import (
    SKIP_FLAT,
    SKIP_MISSING,
    SKIP_NON_FINITE,
    SKIP_UNUSABLE,
    decode_ecg,
    ecg_batch_tensor,
    encode_ecg,
    read_record,
    stored_ecg,
)
from cmelt.data.mimic_iv_ecg import convert_record
from modeling_cmelt.feature_extraction_cmelt import CMELTFeatureExtractor
from modeling_cmelt.reading_cmelt import CANONICAL_LEADS


def sine_leads(seconds: float = 10.0, rate: int = 500) -> np.ndarray:
    time = np.arange(int(seconds * rate)) / rate
    return np.stack([np.sin(2 * np.pi * (1 + lead / 4) * time) for lead in range(12)]).astype(np.float32)


def test_stored_ecg_encodes_a_good_signal_and_names_why_a_bad_one_is_dropped():
    extractor = CMELTFeatureExtractor()
    stored, reason = stored_ecg(sine_leads(), 500, list(CANONICAL_LEADS), extractor)
    assert reason is None and stored["ecg"].dtype == np.int16 and stored["ecg"].shape == (12, 5000)
    assert stored["lead_mask"].all()
    np.testing.assert_allclose(decode_ecg(stored["ecg"]), sine_leads(), atol=1e-3)
    with_nan = sine_leads()
    with_nan[3, 100] = np.nan
    assert stored_ecg(with_nan, 500, list(CANONICAL_LEADS), extractor) == (None, SKIP_NON_FINITE)
    assert stored_ecg(np.zeros((12, 5000), np.float32), 500, list(CANONICAL_LEADS), extractor) == (None, SKIP_FLAT)
    assert stored_ecg(sine_leads()[:, :3], 500, list(CANONICAL_LEADS), extractor) == (None, SKIP_UNUSABLE)


def test_the_converter_and_the_loaders_report_the_same_reason(tmp_path):
    recording, reason, detail = read_record(tmp_path / "absent")
    assert recording is None and reason == SKIP_MISSING and "not found" in detail
    assert convert_record(tmp_path, "absent", "sinus rhythm", CMELTFeatureExtractor()) == (None, SKIP_MISSING)
    rows, reason, detail = process_job(RecordJob("absent", str(tmp_path / "absent")))
    assert rows == [] and reason == SKIP_MISSING and detail.startswith("absent: ")


@pytest.mark.parametrize("as_list", [False, True])
def test_one_decode_from_stored_rows_to_model_inputs(as_list):
    signal = np.stack([sine_leads(), -sine_leads()])
    stored = encode_ecg(signal)
    tensor = ecg_batch_tensor(list(stored) if as_list else stored)
    assert tuple(tensor.shape) == (2, 12, 5000) and str(tensor.dtype) == "torch.float32"
    np.testing.assert_allclose(tensor.numpy(), decode_ecg(stored))
    np.testing.assert_array_equal(ecg_batch_tensor(signal).numpy(), signal)  # float rows are millivolts already
