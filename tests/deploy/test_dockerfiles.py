"""Every operator Dockerfile has the short shape on the operator SDK base, with a default
``SDK`` that `make images` builds (so each builds alone by the command at its top), and
`make images` builds that base before any operator. No podman needed."""

from __future__ import annotations

import re

import pytest
from tests.deploy.images_built import ROOT, deploy_module

IMAGES = deploy_module("images")
OPERATORS = IMAGES.operator_names()


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined."""
    joined = re.sub(r"\\\n\s*", " ", re.sub(r"(?m)^\s*#.*\n", "", text))
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1].strip())
        for line in joined.splitlines()
        if line.strip()
    ]


@pytest.mark.parametrize("name", OPERATORS)
def test_operator_dockerfile_starts_from_the_sdk_base_and_ends_unprivileged(name: str) -> None:
    path = ROOT / "operators" / name / "Dockerfile"
    text = path.read_text()
    steps = instructions(text)
    assert steps[0] == ("ARG", f"SDK=localhost/jip/operator-sdk:{IMAGES.version()}")
    froms = [args for kind, args in steps if kind == "FROM"]
    assert froms[-1] == "${SDK}", f"{path}: the final stage is not the SDK base"
    assert all(f.startswith("${SDK}") for f in froms), froms  # no second base to drift
    assert steps[-2:] == [
        ("USER", "10001:10001"),
        ("ENTRYPOINT", '["/opt/venv/bin/python", "main.py"]'),
    ]
    last_from = max(i for i, (kind, _) in enumerate(steps) if kind == "FROM")
    copies = [args for kind, args in steps[last_from:] if kind == "COPY"]
    assert not [c for c in copies if "--from" in c], "the final stage copies no second venv"
    assert f"-f operators/{name}/Dockerfile -t jip/{name}:" in text  # the by-hand command


def test_the_sdk_base_is_built_first_and_joins_any_operator() -> None:
    names = [image.name for image in IMAGES.chosen_images(["organ-seg"])]
    assert names == ["operator-sdk", "organ-seg"]
    every = [image.name for image in IMAGES.chosen_images([])]
    assert every.index("operator-sdk") < min(every.index(n) for n in OPERATORS)
    assert [i.name for i in IMAGES.chosen_images(["jip"])] == ["jip"]


def test_operators_get_the_sdk_argument_and_the_others_the_base() -> None:
    version = IMAGES.version()
    by_name = {image.name: image for image in IMAGES.all_images()}
    sdk_arg = {"SDK": f"localhost/jip/operator-sdk:{version}"}
    assert by_name["radiomics"].build_args(base="b", version=version) == sdk_arg
    for name in ("jip", "airflow", "operator-sdk"):
        assert by_name[name].build_args(base="b", version=version) == {"BASE": "b"}
    assert "ARG BASE=" in (ROOT / "deploy" / "operator-sdk.Dockerfile").read_text()


def test_an_unknown_image_name_says_where_to_look() -> None:
    with pytest.raises(SystemExit, match="no image named nope; see --list"):
        IMAGES.chosen_images(["nope"])
