"""``m3vit pack`` and ``m3vit run``: outputs written atomically, non-finite weights and outputs refused."""

from __future__ import annotations

import pytest
from safetensors.torch import save_file

from m3vit.cli import main
from m3vit.codegen.config import load_config
from tests.conftest import reference


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny checkpoint, and a writer for edited copies of it."""
    sd = {k: v.detach().clone().contiguous() for k, v in reference(load_config("tiny")).state_dict().items()}
    folder = tmp_path_factory.mktemp("ckpt")
    path = folder / "tiny.safetensors"
    save_file(sd, str(path))

    def edited(name: str, key: str, value: float):
        changed = dict(sd)
        changed[key] = sd[key].clone().fill_(value)
        out = folder / name
        save_file(changed, str(out))
        return out

    return path, edited


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("m3vit: error:") and "\n" not in err and "Traceback" not in err, err
    return err


def test_pack_to_a_directory_is_one_line_and_leaves_nothing(capsys, tmp_path, checkpoint) -> None:
    out = tmp_path / "out"
    out.mkdir()
    assert main(["pack", str(checkpoint[0]), "tiny", "-o", str(out)]) == 2
    assert "is a directory" in _one_line_error(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] and not list(out.iterdir())


def test_pack_over_its_own_input_is_refused(capsys, tmp_path, checkpoint) -> None:
    src = tmp_path / "model.safetensors"
    src.write_bytes(checkpoint[0].read_bytes())
    before = src.read_bytes()
    assert main(["pack", str(src), "tiny", "-o", str(tmp_path / "." / "model.safetensors")]) == 2
    assert "is the input checkpoint" in _one_line_error(capsys)
    assert src.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("key", ["heads.semseg.proj.weight", "heads.depth.norm.bias", "blocks.1.mlp.gate.0.w_gate"])
def test_pack_refuses_non_finite_tensors(capsys, tmp_path, checkpoint, key: str, value: float) -> None:
    bad = checkpoint[1](f"bad_{key}_{value}.safetensors", key, value)
    out = tmp_path / "x.m3w"
    assert main(["pack", str(bad), "tiny", "-o", str(out)]) == 2
    err = _one_line_error(capsys)
    assert "non-finite" in err
    assert not out.exists() and not list(tmp_path.iterdir())


def test_run_with_a_non_finite_head_output_fails(capsys, tmp_path, checkpoint) -> None:
    """Finite head weights so large that the float32 head overflows: an error, not NaN printed with status 0."""
    huge = checkpoint[1]("huge.safetensors", "heads.depth.proj.weight", 3e38)
    weights = tmp_path / "huge.m3w"
    assert main(["pack", str(huge), "tiny", "-o", str(weights)]) == 0
    capsys.readouterr()
    assert main(["run", "tiny", str(weights), "--count", "1", "--task", "depth"]) == 2
    assert "the depth head produced" in _one_line_error(capsys)


def test_run_takes_a_task_index(capsys, tmp_path, checkpoint) -> None:
    weights = tmp_path / "tiny.m3w"
    assert main(["pack", str(checkpoint[0]), "tiny", "-o", str(weights)]) == 0
    capsys.readouterr()
    assert main(["run", "tiny", str(weights), "--count", "1", "--task", "1"]) == 0
    assert "task depth: output [1, 1, 32, 32]" in capsys.readouterr().out
    assert main(["run", "tiny", str(weights), "--count", "1", "--task", "2"]) == 2
    assert "indices 0..1" in _one_line_error(capsys)
