"""Hub ids resolve through a local Hugging Face cache, offline; an existing directory wins.

The cache is written by hand in the layout huggingface_hub writes: ``models--ORG--NAME`` with
``blobs/<sha256>``, ``refs/<branch>`` holding a commit hash (no newline) and
``snapshots/<commit>/<file>`` as relative links into ``blobs/``.
"""

from __future__ import annotations

import hashlib
import json
import socket
import warnings
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bertgeom.capture.loading import load_model
from bertgeom.capture.tests.tiny_models import save_tiny_classifier, save_tiny_model, sentences
from bertgeom.cli.main import app
from bertgeom.errors import ModelError
from bertgeom.model.change_check import NoChangeCheck
from bertgeom.model.resolve import ResolvedModel, hub_cache, resolve_model
from bertgeom.model.storage import load_classifier

MAIN = "a" * 40
V2 = "b" * 40


def cache_snapshot(cache: Path, repo_id: str, source: Path, commit: str, refs: list[str]) -> Path:
    """Put the files of ``source`` into ``cache`` as the snapshot ``commit`` of ``repo_id``."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    snapshot.mkdir(parents=True)
    for path in sorted(source.iterdir()):
        data = path.read_bytes()
        blob = hashlib.sha256(data).hexdigest()
        (repo / "blobs" / blob).write_bytes(data)
        (snapshot / path.name).symlink_to(Path("..", "..", "blobs", blob))
    for ref in refs:
        (repo / "refs" / ref).write_text(commit)
    return snapshot


@pytest.fixture()
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("bertgeom tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_network: None) -> Path:
    """A hub cache with org/tiny (main: seed 0; v2: seed 1) and org/classifier (main)."""
    root = tmp_path / "hub"
    cache_snapshot(
        root, "org/tiny", save_tiny_model("bert", tmp_path / "m0", seed=0), MAIN, ["main"]
    )
    cache_snapshot(root, "org/tiny", save_tiny_model("bert", tmp_path / "m1", seed=1), V2, ["v2"])
    classifier = save_tiny_classifier(tmp_path / "c", ("Alpha", "Beta"))
    cache_snapshot(root, "org/classifier", classifier, MAIN, ["main"])
    monkeypatch.setenv("HF_HUB_CACHE", str(root))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    return root


def test_ids_and_revisions_resolve_to_cached_snapshots(cache: Path) -> None:
    snapshots = cache / "models--org--tiny" / "snapshots"
    assert resolve_model("org/tiny") == ResolvedModel(snapshots / MAIN, "org/tiny", "main", MAIN)
    assert resolve_model("org/tiny@v2") == ResolvedModel(snapshots / V2, "org/tiny", "v2", V2)
    assert resolve_model(f"org/tiny@{V2}").directory == snapshots / V2
    assert resolve_model(f"org/tiny@{V2}").commit == V2


def test_an_uncached_id_or_revision_is_one_line_saying_how_to_fetch_it(cache: Path) -> None:
    with pytest.raises(ModelError) as refused:
        resolve_model("org/absent")
    message = str(refused.value)
    assert message.startswith("org/absent: model directory not found, and no org/absent")
    assert f"Hugging Face cache {cache}" in message and "'hf download org/absent'" in message
    with pytest.raises(ModelError, match=r"no org/tiny at revision v3 .*--revision v3"):
        resolve_model("org/tiny@v3")
    for name in ("/no/such/dir", "./absent", "a/b/c", "org/tiny@"):
        with pytest.raises(ModelError, match=rf"^{name}: model directory not found$"):
            resolve_model(name)
    # a bare NAME may be one of the hub's older canonical ids (bert-base-uncased)
    with pytest.raises(ModelError, match=r"^absent: model directory not found, and no absent "):
        resolve_model("absent")


def test_an_existing_directory_of_that_name_wins(cache: Path, tmp_path: Path) -> None:
    local = save_tiny_model("bert", tmp_path / "org" / "tiny", seed=2)
    resolved = resolve_model("org/tiny")
    assert resolved == ResolvedModel(Path("org/tiny")) and resolved.directory.resolve() == local


def test_the_cache_comes_from_the_environment_at_call_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    assert hub_cache() == tmp_path / "home" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "elsewhere"))
    assert hub_cache() == tmp_path / "elsewhere"


def test_models_load_by_id_and_the_manifest_names_the_commit(cache: Path) -> None:
    loaded = load_model("org/tiny@v2")
    summary = loaded.summary()
    assert (summary["repo_id"], summary["revision"], summary["commit"]) == ("org/tiny", "v2", V2)
    blob = (cache / "models--org--tiny" / "snapshots" / V2 / "model.safetensors").resolve()
    assert summary["weights_sha256"] == {"model.safetensors": blob.name}
    assert load_model("org/tiny").summary()["weights_sha256"] != summary["weights_sha256"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoChangeCheck)
        classifier = load_classifier("org/classifier")
    assert classifier.source is not None and classifier.source.commit == MAIN
    assert classifier.settings.classes == ("Alpha", "Beta")


def test_analyze_takes_a_hub_id(cache: Path, tmp_path: Path) -> None:
    text = tmp_path / "sentences.txt"
    text.write_text("\n".join(sentences(6)) + "\n")
    out = tmp_path / "results"
    result = CliRunner().invoke(
        app,
        [
            "analyze",
            "--model",
            "org/tiny@v2",
            "--text",
            str(text),
            "--out",
            str(out),
            "--no-global",
        ],
    )
    assert result.exit_code == 0, result.output
    model = json.loads((out / "manifest.json").read_text())["model"]
    assert (model["repo_id"], model["commit"]) == ("org/tiny", V2)
    refused = CliRunner().invoke(
        app, ["analyze", "--model", "org/absent", "--text", str(text), "--out", str(out)]
    )
    assert refused.exit_code == 1 and "hf download org/absent" in refused.output
