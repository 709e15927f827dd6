"""Minimal-pair suites for zero-shot grammaticality tests: Zorro, BLiMP or the user's own files.

Sources, pinned (each file's sha256 below was computed from the repository at that commit):

- Zorro (Huebner et al. 2021), MIT licence: ``phueb/Zorro`` at
  ``687ba433e91a3815e8204a8fc0cf0577303b1660``, ``sentences/babyberta/<paradigm>.txt``
  (23 paradigms x 2,000 pairs) and ``LICENSE``.
- BLiMP (Warstadt et al. 2020), CC BY 4.0: ``alexwarstadt/blimp`` at
  ``3e56b06fcabca9b30822fc66435fca6b1aa40bb1``, ``data/<paradigm>.jsonl`` (67 paradigms x 1,000).

:func:`fetch_suite` downloads ``https://raw.githubusercontent.com/<owner>/<repo>/<commit>/<path>``
(or copies from a mirror) into the cache ``<cache_dir>/<suite>/<commit>/<path>`` (``cache_dir``:
``$MINILM_CACHE``, else ``$MINILM_JAX_CACHE``, else ``~/.cache/minilm_jax``), each file written
atomically and only once its sha256 matches; a later call reads the cache (offline) after checking
it again, and a cached file that no longer matches is deleted and refused. A mirror for machines
without internet (``mirror=DIR`` or ``$MINILM_PAIRS_MIRROR``) is laid out like the repositories,
``DIR/phueb/Zorro/sentences/babyberta/*.txt`` (and ``LICENSE``) and
``DIR/alexwarstadt/blimp/data/*.jsonl``, and is checked by the same sha256s; it may hold a subset
when only those paradigms are asked for (``paradigms=``).

File formats (:func:`load_pairs`): ``*.txt`` Zorro (a sentence per line, the ungrammatical one
first: lines 1 and 2 are a pair, then 3 and 4, ...); ``*.jsonl`` BLiMP (an object per line with
``sentence_good`` and ``sentence_bad``).
"""

from __future__ import annotations

import http.client
import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path

from minilm_jax.errors import UserError
from minilm_jax.storage import atomic_write_bytes

SUITES = ("zorro", "blimp")
CUSTOM = "custom"
MIRROR_ENV = "MINILM_PAIRS_MIRROR"
CACHE_ENVS = ("MINILM_CACHE", "MINILM_JAX_CACHE")
BASE_URL = "https://raw.githubusercontent.com"  # tests point it at a file:// stand-in
FORMATS = {".txt": "Zorro", ".jsonl": "BLiMP"}
NOT_PAIRS = {"README", "LICENSE", "LICENCE", "NOTICE", "COPYING"}  # skipped in folders
_urlopen = urllib.request.urlopen  # tests replace it to take the network away


@dataclass(frozen=True)
class MinimalPair:
    good: str  # grammatical sentence
    bad: str  # ungrammatical sentence


@dataclass(frozen=True)
class Paradigm:
    suite: str  # "zorro", "blimp" or "custom"
    name: str  # file stem, e.g. "agreement_determiner_noun-across_1_adjective"
    phenomenon: str  # Zorro: the stem before its last "-"; BLiMP: linguistics_term (or field)
    pairs: tuple[MinimalPair, ...]


def _table(text: str) -> dict[str, str]:
    """``{paradigm: sha256}`` from lines ``<sha256> <paradigm>``."""
    return {name: digest for digest, name in (line.split() for line in text.strip().splitlines())}


ZORRO_LICENSE_SHA256 = "20c3922eb7f1ea9fb0bf759921a205bc89d8989d144e75f8f9a3d6481094aee4"
ZORRO_SHA256 = _table("""
6b766cba666910897b4781ade45b1cc66761268a474e2332e0daa5b4ade4fe79 agreement_determiner_noun-across_1_adjective
3c714bab3455e9e4915c246b1c6d4861a650acb769fc3b4839c69ba894fec5b2 agreement_determiner_noun-between_neighbors
bef90373f26b76e8bb8aed99ac6f03ce46328120fc1a35c26cfde1fd47c150c1 agreement_subject_verb-across_prepositional_phrase
2933b97d6812011d993f438b3d75d5394f39043b552847a78b94e59165945d2c agreement_subject_verb-across_relative_clause
95e264cc02cab96b27e0bcfa40dcbe32d9ddc97d481dc638e45847a2f898662e agreement_subject_verb-in_question_with_aux
ddc8b0b3e417021cf560d871ad717b9b3bbd4f580ac07438737b7bda1b11cae4 agreement_subject_verb-in_simple_question
c5f21030475f37f847c090d56e26e2d32530e4ca7e55ba3c02f62a8d38c16d72 anaphor_agreement-pronoun_gender
77b79e08e9018f404a5319a6bdc788edf465ae324c380c1d42c0730b52b4d37f argument_structure-dropped_argument
0a7907d468a15cbfe0d30fa9d8ce3bb4c30ca9f63966f9cc9fd24f4cfeed09d9 argument_structure-swapped_arguments
c4e362226d927591573abc546326ca0e4053255e4b2aa0090e09a257c09fcaa3 argument_structure-transitive
6fcf1c1a7ba111ecf977e8d7d0331bb770dc06f02c583c3243ee161b8b9b23f8 binding-principle_a
742776364f52edc3d876fb9bc9bb4cde7614cab6f669bfc5369271094727f8a2 case-subjective_pronoun
9a6f08e310d9885361aefccb9c00d6a9bdec119ad1a132438ec2bfe6e023ef63 ellipsis-n_bar
d71d8dd2e59c278139118c174b88f6e9b31f425ed12ffe9184473c59bb90161c filler-gap-wh_question_object
2bc857ae020ef26b320f9e01f37ad7c43334faf4cb816503625227bb1f2b6dd7 filler-gap-wh_question_subject
bdd5c4a10ed981db4080004a07f998a60c55a5ebfaf0db2f834ca507c6674f40 irregular-verb
8eced9ad55772dd6f4a37c91912f420adbe8567fa03394bdd3e720e93b1984db island-effects-adjunct_island
138d2d374086e4ff2a3148e160b0bc1a30993289b1f0cdaf3c632fe6194b128d island-effects-coordinate_structure_constraint
bbe12dd4f83688718c88de71fde36c97cd17af764f35ed59f345713d68fc40be local_attractor-in_question_with_aux
6f55dd4f06977f6c9af16dabbfa922993d315a84eed2c6da78d023638069a5da npi_licensing-matrix_question
72e5893369ee5e7bad0e97e9f769bcc830e6ac652369807f83a11cc4b1361ea4 npi_licensing-only_npi_licensor
4251efa4448f82de3a59558dba4d76cb29868572cbafdf3caa10b8c433aa072c quantifiers-existential_there
3be3cc13ce50314a085b4ccbb7e92742cae797b0ec7423a28605388d6adea559 quantifiers-superlative
""")
BLIMP_SHA256 = _table("""
ecc71c452516de03deeb9262b4203e45220dc52727327a08eef07c79c01eac8b adjunct_island
fd7d6e47196fa1310a251d3aa88ae9a62bb64d3cec35fc02617229d5799767e1 anaphor_gender_agreement
05c16b8bfe4feb5b3552dc2c53d1742ce0c91d9a1c896684335bdddd4373cc9b anaphor_number_agreement
245e91961cf597150244c3945c6d0033e691b27ba6cf298c62920d355426e70c animate_subject_passive
a7bffeda200f648c33dd215d91d8f5756fcd1e3f410bab467f1ed9235f215850 animate_subject_trans
2e1006cc24094a3049586888105b22181d77e09e11dea65a326b49977bb366f1 causative
1c92472731dd9a21eb222d64bee756042a3763c3797b5283d5b84ab8e3cbb74c complex_NP_island
47e0e04efeb320449a8eb2ac722b895041a8609580fec2880dbc719f50fba194 coordinate_structure_constraint_complex_left_branch
d01c27a7a893f3ec071a7913efa504d297671d86a987f26ddb565de914db2fd7 coordinate_structure_constraint_object_extraction
f48065fd760d0fd1a895012860d38bdf3c2ac115cd221e521684cc430c0f1855 determiner_noun_agreement_1
8ae7eff7c7bd384ff5ef3113984834f4d78b34559203aa9d5cb14ea8394291a9 determiner_noun_agreement_2
4f350e88db9e29e53ae96f1f0b5991c7809fd4fd403190907330b721e1e6e264 determiner_noun_agreement_irregular_1
d688af0ccd0614d24a936e0929276784f37554f3ad3e247c3bade8dcaa9099df determiner_noun_agreement_irregular_2
8d2828d7dfbfc3f7191024514060fedb033ea2e232304f63448c33051a85d2b3 determiner_noun_agreement_with_adj_2
1f4c6e42a48f4220afec629679641479feac3883cd7fa346d9e9e129cd7e8f55 determiner_noun_agreement_with_adj_irregular_1
aa3f297a7ce0c03b5fc00458834f89e54eb855973be098497f766a390b4bc669 determiner_noun_agreement_with_adj_irregular_2
2c3de4e7b7aea499fb7cf1b23b9c3b63662289880f991b9ffabe5ceb94cf7430 determiner_noun_agreement_with_adjective_1
37c1553f4c6594b162256edce0f6b40bad1898b311c8aaa69605b526b6494a34 distractor_agreement_relational_noun
854728b6db8f23f12583f7332b654835351eaedb50783e6f2a3bf6c101b8c422 distractor_agreement_relative_clause
e262339a262a57a8f56dc41941ee1dc32c62eb97054b27d33cd8c356a6e62064 drop_argument
3cc0bcf91631a4476ce573ea9dbf9627d52efbe071c26019e2c2448b68769d09 ellipsis_n_bar_1
3dfc2b378ea4867186917ec9cce5ce927e4d3bb6addf018bc31b870dd2aa8474 ellipsis_n_bar_2
3781bfd54ec1208fc634f4d365189f948ec246526a7345b5148dd3ab6023ff4f existential_there_object_raising
4bd0f6dee3c1824b51b0dafb9fce2b00933e8053fcd4a7b99b6202e1b8b49f9e existential_there_quantifiers_1
b1a80f4ebebae90a90927259f95b680059020e6bb4e38e64a41eb8e53bc3f617 existential_there_quantifiers_2
7c6f5b13225f73a777755c1948beef5cfa31d135ae8a0e7ba8853d256fbece23 existential_there_subject_raising
15ed3a52c978ecfe5eda7f64b0304b5bd133439cccb2c97fde20834f39874c93 expletive_it_object_raising
d9389a7130ca84c6f920c9d892cc60c1b20f378d28e7041b1c53ae589fc84f1d inchoative
9af9f3f30c891cd21623922b62fd97685552b4ae94a6cfd5617a5f0cb0f731b3 intransitive
5e490be0723989499391ac14d11b3bb6677f4b470514486b2db3fbfe76d56b3c irregular_past_participle_adjectives
75a990117c1a403d3b479e0fbe170f6919c2408def738ffcea8c62b49b70a555 irregular_past_participle_verbs
0066174143671bffa54232d89254d14221afab666273edfefdfb625fbb75e226 irregular_plural_subject_verb_agreement_1
9b22db814e7b7251f4abafe8beb9616f2f46eaa58f7cdb701cbc737cc8f1a124 irregular_plural_subject_verb_agreement_2
7dadbe3c5a5ceadb78b9408807ac88230ddd748abfe8de8121f064e2bce94ad8 left_branch_island_echo_question
e2a64b8a1b7b8d94f931018cf9325836e9c79953a01379233da255eac5e8cd71 left_branch_island_simple_question
657c9d6e6d50a9cd651881fcbc57cef2fd998611f6f53158ed05e48822fcd2b5 matrix_question_npi_licensor_present
9aa85dc5c2b0d85ea51f21db50d6d327ab5b45d1669e386d54b1360d3ac954af npi_present_1
52fcfa230a40ae27998273cc08ecd062aad17025c92389df3404a85ed519909b npi_present_2
475c6595187a32e4dcfb868d3db90394e89669a94a9312ebd60f88dad1665f1c only_npi_licensor_present
ca1f0671643e37936515f02125036bc2904ab9b35c4689b0e7a3ea3914e571f6 only_npi_scope
e9374307bca5c24e9df18597a0859f7fb5ca4cfe5f136ec894d1ba69f4c90116 passive_1
4d49e438185bed4122a252dd9ee69bc8eccb2fe6c1b09ccc78198fd925fed8c5 passive_2
74c8111666542c797dee1c38c9e432b0b65751dfa0faa51874a990f2cbfc76fc principle_A_c_command
7efb5246fe315dc2cf56b80739783cffcddee9e52650716cf5aa0f6987f7644d principle_A_case_1
5de6db4c21a8433bc1f1030e81d5ee151efce02078460f7de7ca5e9566afd914 principle_A_case_2
2276dc35a51396c7d11a401e378e0f4b31cd10d7916c73e9a361703cb96eddc5 principle_A_domain_1
9d14e5ae911fb8ddf571484ef2d6a6e6a053765c1c6d34253aec2c11f7d7306a principle_A_domain_2
a0d66b9d8541ab1df08f629161c6c4e8bca3aa2693eaa342edd2097e6b579bdd principle_A_domain_3
65dc403c4d6e9a609f2c4cc2ec6c8baa05cf6fce89b920a816b0d9932204b2a3 principle_A_reconstruction
1a18d94062c8e792c0a200a3b00dff0e051a92bb084c05e9b5e5c73bee32a620 regular_plural_subject_verb_agreement_1
e5b4668811e63b00ac4c9569cb9553281a39c21df43256905ad78e59ae24942c regular_plural_subject_verb_agreement_2
c43405aca13ba4aa6ad87f9b051e4ba5fc458f24e683cfe0af23e6e09ec7268b sentential_negation_npi_licensor_present
6c341ccc39c94bea45c0412986751bf2f6eca48626728e30e23d2b6a22c8b949 sentential_negation_npi_scope
a286b67cc5912aafeb06750b38923abf3338786ffa4309e0a6a07b1dbe2444bd sentential_subject_island
bebc5c5ff28cf226cc35293c60cde1fcf7565a7b58cb219d01ac8908b952a497 superlative_quantifiers_1
4bef08f3e6bd3fbb46021dda34000f3c00222c5576babe4882a8541f6820a106 superlative_quantifiers_2
8eb3a1ecbdbd969c5b77e2f85b12a39d33723bdc58d673e5067bb456da91d0e5 tough_vs_raising_1
a6db2f24a8aee0c90a9be63e6bb6787fe04e990c518761115f69f27c7438b5ae tough_vs_raising_2
48de2025571897c7590659c793d2d1ce85c247808d4199bad60f66cf2eb179ef transitive
77824ca8c0008fb7a204e785ca2dcee1b2803f666bb545bd95cb8a51e04f1a4c wh_island
685c74eb8c199f30a24bba1bfabf9d9dff7962a64430e62b9b5f61d5369241ff wh_questions_object_gap
3c33e4efc7182824211ff3288694cf010f4ce84f85c8df67410d784139c722b3 wh_questions_subject_gap
985bae202dbc5566b9b5c51bd77dd9d1dbcd87e0f38e008c34a11d7aa07db788 wh_questions_subject_gap_long_distance
6a25d0d1499e9f522696a62ce9dba8c49f58c5446fddc6d852bf562d1016163c wh_vs_that_no_gap
968faf59602a67f9cfd7c2e91a314a3f7342fd5daf41c21cadd25288fc85fdcf wh_vs_that_no_gap_long_distance
56f1ca988a8ca368234f12359792c414fdfec2891154e3f8ce6404da1d3f3212 wh_vs_that_with_gap
3cb19100d6384264e512801e96c20e172a3c0c7778276b80ed60c65e97b86ab5 wh_vs_that_with_gap_long_distance
""")


@dataclass(frozen=True)
class Source:
    """Where a suite's files live: a GitHub repository at a commit, one folder of pair files."""
    repo: str  # owner/name
    commit: str
    folder: str  # pair files' folder inside the repository
    suffix: str
    sha256: dict[str, str]  # paradigm -> sha256 of its file
    extras: dict[str, str]  # other files fetched along (path -> sha256): the licence

    def path(self, paradigm: str) -> str:
        return f"{self.folder}/{paradigm}{self.suffix}"


SOURCES = {
    "zorro": Source("phueb/Zorro", "687ba433e91a3815e8204a8fc0cf0577303b1660",
                    "sentences/babyberta", ".txt", ZORRO_SHA256, {"LICENSE": ZORRO_LICENSE_SHA256}),
    "blimp": Source("alexwarstadt/blimp", "3e56b06fcabca9b30822fc66435fca6b1aa40bb1",
                    "data", ".jsonl", BLIMP_SHA256, {}),
}


def default_cache_dir() -> Path:
    """``$MINILM_CACHE``, else ``$MINILM_JAX_CACHE``, else ``~/.cache/minilm_jax``."""
    for env in CACHE_ENVS:
        if os.environ.get(env):
            return Path(os.environ[env]).expanduser()
    return Path.home() / ".cache" / "minilm_jax"


def _names(paradigms: str | Iterable[str]) -> list[str]:
    """The requested paradigm names, in order, once each (a single string is one name)."""
    return list(dict.fromkeys([paradigms] if isinstance(paradigms, str) else paradigms))


def _check_known(wanted: Sequence[str], available: Iterable[str], where: str) -> None:
    available = sorted(available)
    unknown = [n for n in wanted if n not in available]
    if unknown:
        raise UserError(f"unknown paradigm(s) {', '.join(unknown)} in {where}; available: "
                        f"{', '.join(available)}")


def fetch_suite(name: str, cache_dir: str | Path | None = None, mirror: str | Path | None = None,
                paradigms: Sequence[str] = ()) -> Path:
    """The local folder of suite ``name``'s pair files (every paradigm, or only ``paradigms``),
    downloaded or copied from ``mirror`` / ``$MINILM_PAIRS_MIRROR`` into the cache if absent.
    Every file is checked against its pinned sha256 on each call; a mismatch is refused."""
    if name not in SOURCES:
        raise UserError(f"unknown pair suite {name!r}: known suites are {', '.join(SUITES)}")
    source = SOURCES[name]
    wanted = _names(paradigms) or list(source.sha256)
    _check_known(wanted, source.sha256, f"suite {name}")
    files = {**source.extras, **{source.path(p): source.sha256[p] for p in wanted}}
    root = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    root = root / name / source.commit
    mirror = mirror or os.environ.get(MIRROR_ENV) or None
    for rel, digest in files.items():
        _obtain(source, rel, digest, root / rel, Path(mirror).expanduser() if mirror else None)
    return root / source.folder


def _obtain(source: Source, rel: str, digest: str, dest: Path, mirror: Path | None) -> None:
    """Make ``dest`` a verified copy of ``rel``: check the cached copy, else copy or download."""
    if dest.is_file():
        got = sha256(dest.read_bytes()).hexdigest()
        if got == digest:
            return
        dest.unlink()
        raise UserError(f"cached {dest} is corrupt: sha256 {got}, expected {digest}; deleted it "
                        f"(run again to fetch it afresh)")
    if mirror is not None:
        origin = mirror / source.repo / rel
        if not origin.is_file():
            raise UserError(f"the pair-suite mirror {mirror} lacks {source.repo}/{rel} (expected "
                            f"at {origin}; layout: <mirror>/<owner>/<repo>/<path>)")
        data = origin.read_bytes()
    else:
        origin = f"{BASE_URL}/{source.repo}/{source.commit}/{rel}"
        data = _download(origin)
    got = sha256(data).hexdigest()
    if got != digest:
        raise UserError(f"{origin} has sha256 {got}, expected {digest} ({source.repo}@"
                        f"{source.commit[:12]}:{rel}); refused, not cached")
    atomic_write_bytes(dest, data)


def _download(url: str, timeout: float = 60.0) -> bytes:
    """The bytes at ``url``; a network failure is one :class:`UserError` naming the way out."""
    try:
        with _urlopen(url, timeout=timeout) as response:
            return response.read()
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as err:
        raise UserError(f"could not download {url} ({err}); without internet, set {MIRROR_ENV} "
                        f"to a local copy laid out <owner>/<repo>/<path>") from None


def load_pairs(path: str | Path, suite: str = CUSTOM) -> list[Paradigm]:
    """The paradigms in a pair file, or in every ``.txt`` / ``.jsonl`` file below a folder (sorted
    by path; hidden files and README / LICENSE files skipped), each named by its file stem."""
    if suite not in (*SUITES, CUSTOM):
        raise UserError(f"unknown suite label {suite!r}: one of {', '.join(SUITES)}, {CUSTOM}")
    path = Path(path).expanduser()
    if path.is_dir():
        files = sorted((f for f in path.rglob("*") if f.is_file() and _is_pair_file(f, path)),
                       key=lambda f: f.relative_to(path).as_posix())
        if not files:
            raise UserError(f"{path} holds no pair files (Zorro-format .txt or BLiMP-format "
                            f".jsonl)")
    elif path.is_file():
        if path.suffix not in FORMATS:
            raise UserError(f"{path} is not a pair file: expected a Zorro-format .txt or a "
                            f"BLiMP-format .jsonl")
        files = [path]
    else:
        raise UserError(f"pair file or folder {path} does not exist")
    seen: dict[str, Path] = {}
    out = []
    for file in files:
        if file.stem in seen:
            raise UserError(f"two pair files name paradigm {file.stem!r}: {seen[file.stem]} "
                            f"and {file}")
        seen[file.stem] = file
        out.append(_read_txt(file, suite) if file.suffix == ".txt" else _read_jsonl(file, suite))
    return out


def _is_pair_file(file: Path, root: Path) -> bool:
    parts = file.relative_to(root).parts
    return (file.suffix in FORMATS and not any(p.startswith(".") for p in parts)
            and file.stem.upper() not in NOT_PAIRS)


def _text(file: Path) -> str:
    try:
        return file.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise UserError(f"{file} is not UTF-8 text ({err})") from None


def zorro_phenomenon(name: str) -> str:
    """A Zorro paradigm's phenomenon: its name before the last ``-`` (``filler-gap`` of
    ``filler-gap-wh_question_object``), or the whole name when it has none."""
    return name.rsplit("-", 1)[0]


def _read_txt(file: Path, suite: str) -> Paradigm:
    """Zorro format: odd lines ungrammatical, the even line after each its grammatical twin."""
    lines = [line.rstrip("\r").strip() for line in _text(file).split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    if "" in lines:
        raise UserError(f"{file}: line {lines.index('') + 1} is blank (Zorro format: a sentence "
                        f"per line, no blank lines but at the end)")
    if not lines or len(lines) % 2:
        raise UserError(f"{file}: {len(lines)} lines; Zorro format needs an even, non-zero number "
                        f"(an ungrammatical line, then its grammatical twin)")
    pairs = tuple(MinimalPair(good=lines[i + 1], bad=lines[i]) for i in range(0, len(lines), 2))
    return Paradigm(suite, file.stem, zorro_phenomenon(file.stem), pairs)


def _read_jsonl(file: Path, suite: str) -> Paradigm:
    """BLiMP format: an object per line with ``sentence_good`` and ``sentence_bad``."""
    pairs, phenomenon = [], ""
    for number, line in enumerate(_text(file).split("\n"), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise UserError(f"{file}: line {number} is not JSON ({err.msg})") from None
        if not (isinstance(record, dict) and isinstance(record.get("sentence_good"), str)
                and isinstance(record.get("sentence_bad"), str)):
            raise UserError(f"{file}: line {number} lacks string fields sentence_good and "
                            f"sentence_bad (BLiMP format)")
        pairs.append(MinimalPair(good=record["sentence_good"], bad=record["sentence_bad"]))
        phenomenon = phenomenon or str(record.get("linguistics_term") or record.get("field") or "")
    if not pairs:
        raise UserError(f"{file} holds no pairs")
    return Paradigm(suite, file.stem, phenomenon or file.stem, tuple(pairs))


def open_suite(spec: str, cache_dir: str | Path | None = None, mirror: str | Path | None = None,
               paradigms: Sequence[str] = ()) -> list[Paradigm]:
    """The paradigms of suite ``spec`` (``zorro`` or ``blimp``, fetched at its pinned commit) or
    of the user's own pair file or folder at path ``spec``; only ``paradigms`` if given."""
    wanted = _names(paradigms)
    if spec in SUITES:
        source = SOURCES[spec]
        folder = fetch_suite(spec, cache_dir, mirror, wanted)
        files = [folder / f"{p}{source.suffix}" for p in (wanted or source.sha256)]
        return [p for f in sorted(files) for p in load_pairs(f, spec)]
    path = Path(spec).expanduser()
    if not path.exists():
        raise UserError(f"unknown pair suite {spec!r}: expected one of {', '.join(SUITES)} or a "
                        f"path to your own pairs (a Zorro-format .txt or BLiMP-format .jsonl file, "
                        f"or a folder of them); no file or folder {path} exists")
    found = load_pairs(path, CUSTOM)
    if not wanted:
        return found
    _check_known(wanted, [p.name for p in found], str(path))
    return [p for p in found if p.name in set(wanted)]
