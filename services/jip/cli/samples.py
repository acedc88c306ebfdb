"""`jip samples …`: synthetic data with known values, to try JIP (and federation) out.

    jip --data-dir site-a samples harmonisation site-a-dicom --field-strength 3 --ingest

writes the ADC harmonisation study's data of one site (use case 1 of the JIP paper):
per patient a multi-b DWI series (b = 0, 500, 1000) of a prostate phantom with known
ADC per region, an ADC map of it (the truth plus noise whose level is the protocol's:
``dwi_v1`` before the protocol change, ``dwi_v2`` after, with half the noise) and a SEG
with one segment per region over the map. ``--ingest`` also stores and indexes them in
the site of ``--data-dir`` (copies; it may be running: its catalog takes concurrent
writers).
"""

from __future__ import annotations

import random
from pathlib import Path

import click

from jip.cli.site import settings_from

PROTOCOLS = ("dwi_v1", "dwi_v2")


@click.group()
def samples() -> None:
    """Synthetic data with known values (to try JIP and federation out)."""


@samples.command("harmonisation")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--field-strength", type=click.Choice(["1.5", "3"]), default="3", show_default=True)
@click.option(
    "--patients", type=click.IntRange(1, 200), default=2, show_default=True,
    help="Patients per protocol (each: a DWI series, its ADC map and a SEG).",
)  # fmt: skip
@click.option("--seed", type=int, default=1, show_default=True, help="Seeds names and noise.")
@click.option(
    "--description", default="ADC (JIP adc-map)", show_default=True,
    help="The ADC maps' SeriesDescription (a site's own wording; map it with "
    "`jip fed mapping set SeriesDescription TEXT adc`).",
)  # fmt: skip
@click.option("--ingest", is_flag=True, help="Also store and index them in this site.")
@click.pass_context
def harmonisation(
    ctx: click.Context,
    out: Path,
    field_strength: str,
    patients: int,
    seed: int,
    description: str,
    ingest: bool,
) -> None:
    """Write one site's data for the ADC harmonisation study to OUT."""
    from jip.samples import random_patient, write_datasets
    from jip.samples_dwi import adc_map_series, dwi_series, region_segmentation

    strength = float(field_strength)
    rng = random.Random(seed)
    files: list[Path] = []
    with click.progressbar(
        list(enumerate(PROTOCOLS * patients)), label="Writing series", file=None
    ) as bar:
        for p, protocol in bar:
            patient = random_patient(rng, seed * 1000 + p)
            noise_seed = seed * 1000 + p
            dwi = dwi_series(
                patient=patient, field_strength=strength, protocol=protocol, seed=noise_seed
            )
            study = str(dwi[0].StudyInstanceUID)
            maps = adc_map_series(
                patient=patient, field_strength=strength, protocol=protocol, seed=noise_seed,
                study_instance_uid=study,
            )  # fmt: skip
            for ds in maps:
                ds.SeriesDescription = description
            seg = region_segmentation(maps)
            files += write_datasets(dwi, out / "dwi" / str(dwi[0].SeriesInstanceUID))
            files += write_datasets(maps, out / "adc" / str(maps[0].SeriesInstanceUID))
            files += write_datasets([seg], out / "seg")
    click.echo(f"Wrote {len(files)} files ({2 * patients} patients) to {out}.")
    if ingest:
        _ingest(ctx, files)


def _ingest(ctx: click.Context, files: list[Path]) -> None:
    """Store copies (ingest consumes the file it is given; OUT keeps the originals)."""
    import shutil
    import tempfile

    from jip.meta import Indexer
    from jip.runtime import build_runtime

    settings = settings_from(ctx)
    runtime = build_runtime(settings)
    try:
        with (
            tempfile.TemporaryDirectory(dir=settings.data_dir) as spool,
            click.progressbar(files, label="Storing", file=None) as bar,
        ):
            for path in bar:
                copy = Path(spool) / path.name
                shutil.copyfile(path, copy)
                runtime.ingestor.ingest_file(copy)
        Indexer(catalog=runtime.catalog, storage=runtime.storage, index=runtime.index).drain()
    finally:
        runtime.close()
    click.echo(f"Stored and indexed them in {settings.data_dir}.")
