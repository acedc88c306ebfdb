"""deidentify: PS3.15 Annex E Basic Application Level Confidentiality Profile.

Every input series becomes a new series (new Study, Series, SOP Instance and Frame of
Reference UIDs) under ``JIP_OUTPUT_DIR/<new SeriesInstanceUID>/``. The output folder is
named after the new UID, not the input's, because the original UID is itself a key back
to the patient. UIDs are derived from a secret salt and the original UID, so all series of
one run (a CT and its SEG, say) keep their references to each other, and runs with the
same salt map identically. Its own log lines name no patient, original UID or salt
(an SDK error about an unreadable input may name the input folder).

Not handled: burned-in text in pixel data (series that declare BurnedInAnnotation=YES are
refused unless allowed by a parameter), structured report content, and the profile's
other options. See confidentiality.py for the attribute actions.
"""

from __future__ import annotations

import logging
import secrets
from pathlib import Path

# A sibling module: `python main.py` puts this folder first on sys.path.
from confidentiality import Policy, deidentify
from jip_sdk import (
    OperatorContext,
    SeriesError,
    iter_datasets,
    iter_series,
    report_progress,
    run_operator,
)
from pydicom.uid import PYDICOM_ROOT_UID

logger = logging.getLogger("deidentify")

MODIFIED_DATES = "retain_longitudinal_temporal_information_modified_dates"
PATIENT_CHARACTERISTICS = "retain_patient_characteristics"


def policy_from(context: OperatorContext) -> Policy:
    """The run's policy; a random salt when none is given (UIDs then differ per run)."""
    salt = context.params.get("salt")
    if not salt:
        logger.warning("no salt given: a random one is used, so UIDs will not match other runs")
        salt = secrets.token_hex(32)
    options = set(context.params["options"])
    return Policy(
        salt=str(salt),
        retain_modified_dates=MODIFIED_DATES in options,
        retain_patient_characteristics=PATIENT_CHARACTERISTICS in options,
        date_shift_max_days=int(context.params["date_shift_max_days"]),
        uid_prefix=str(context.params.get("uid_prefix") or PYDICOM_ROOT_UID),
    )


def process(context: OperatorContext) -> None:
    """De-identify every instance of every input series into a new series folder."""
    policy = policy_from(context)
    allow_burned_in = bool(context.params["allow_burned_in_annotation"])
    all_series = iter_series(context.input_dir)
    for index, series in enumerate(all_series):
        # The series' position in the input stands in for its UID in logs and progress.
        label = f"series {index + 1}/{len(all_series)}"
        new_series_uid = ""
        count = 0
        for source in iter_datasets(series):
            if str(source.get("BurnedInAnnotation", "")).upper() == "YES" and not allow_burned_in:
                raise SeriesError(
                    f"{label} declares BurnedInAnnotation=YES; pixel data is not cleaned, "
                    "so it is refused (set allow_burned_in_annotation to override)"
                )
            clean = deidentify(source, policy)
            new_series_uid = str(clean.SeriesInstanceUID)
            out = context.output_dir_for(new_series_uid)
            clean.save_as(out / f"{clean.SOPInstanceUID}.dcm", enforce_file_format=True)
            count += 1
        logger.info("%s: %d instances de-identified into series %s", label, count, new_series_uid)
        report_progress((index + 1) / len(all_series), series=new_series_uid, message="written")


if __name__ == "__main__":
    run_operator(process, schema_path=Path(__file__).with_name("params.schema.json"))
