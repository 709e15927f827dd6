"""Minimal-pair suites: Zorro / BLiMP / custom files, and the pinned, checksummed download (served
offline by a file:// stand-in laid out like raw.githubusercontent.com, or by a mirror folder)."""

import json
import shutil
import urllib.error
import urllib.request
from hashlib import sha256
from pathlib import Path

import pytest
from conftest import shared_path

from minilm_jax.errors import UserError
from minilm_jax.evals import suites
from minilm_jax.evals.suites import (BLIMP_SHA256, SOURCES, SUITES, ZORRO_SHA256, MinimalPair,
                                     fetch_suite, load_pairs, open_suite)

BLIMP_DEV = ("adjunct_island", "anaphor_gender_agreement", "determiner_noun_agreement_1",
             "npi_present_1", "regular_plural_subject_verb_agreement_1")
ZORRO_FIRST = "agreement_determiner_noun-across_1_adjective"


def zorro_dir() -> Path:
    return shared_path("zorro", "sentences", "babyberta")


def blimp_dir() -> Path:
    return shared_path("blimp", "data")


@pytest.fixture(autouse=True)
def no_mirror(monkeypatch):
    monkeypatch.delenv(suites.MIRROR_ENV, raising=False)


# --- reading the real suites ---------------------------------------------------------------


def test_zorro_file():
    path = zorro_dir() / f"{ZORRO_FIRST}.txt"
    lines = path.read_text().splitlines()
    (paradigm,) = load_pairs(path, "zorro")
    assert (paradigm.suite, paradigm.name) == ("zorro", ZORRO_FIRST)
    assert paradigm.phenomenon == "agreement_determiner_noun"
    assert len(paradigm.pairs) == 2000
    assert paradigm.pairs[0] == MinimalPair(good=lines[1], bad=lines[0])
    assert paradigm.pairs[-1] == MinimalPair(good=lines[3999], bad=lines[3998])


def test_zorro_folder():
    paradigms = load_pairs(shared_path("zorro"), "zorro")  # LICENSE at the top is skipped
    assert len(paradigms) == 23 and sum(len(p.pairs) for p in paradigms) == 46_000
    assert [p.name for p in paradigms] == sorted(ZORRO_SHA256)
    by_name = {p.name: p.phenomenon for p in paradigms}
    assert by_name["filler-gap-wh_question_object"] == "filler-gap"  # hyphenated phenomena
    assert by_name["island-effects-adjunct_island"] == "island-effects"
    assert len(set(by_name.values())) == 13


def test_blimp_files():
    paradigms = load_pairs(blimp_dir(), "blimp")
    assert [p.name for p in paradigms] == list(BLIMP_DEV)
    for paradigm in paradigms:
        first = json.loads((blimp_dir() / f"{paradigm.name}.jsonl").open().readline())
        assert len(paradigm.pairs) == 1000 and paradigm.suite == "blimp"
        assert paradigm.phenomenon == first["linguistics_term"]
        assert paradigm.pairs[0] == MinimalPair(first["sentence_good"], first["sentence_bad"])
    assert paradigms[0].phenomenon == "island_effects"


def test_checksum_tables():
    assert len(ZORRO_SHA256) == 23 and len(BLIMP_SHA256) == 67
    for name in ZORRO_SHA256:
        assert sha256((zorro_dir() / f"{name}.txt").read_bytes()).hexdigest() == ZORRO_SHA256[name]
    for name in BLIMP_DEV:
        data = (blimp_dir() / f"{name}.jsonl").read_bytes()
        assert sha256(data).hexdigest() == BLIMP_SHA256[name]
    assert sha256(shared_path("zorro", "LICENSE").read_bytes()).hexdigest() == \
        suites.ZORRO_LICENSE_SHA256


# --- the user's own pairs ------------------------------------------------------------------


def test_custom_files(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "agr-mine.txt").write_text("the dogs barks .\nthe dogs bark .\na cats .\na cat .\n\n")
    rows = [{"sentence_good": "she ran .", "sentence_bad": "she runned .", "field": "morphology"},
            {"sentence_good": "he sat .", "sentence_bad": "he sitted ."}]
    (tmp_path / "sub" / "past.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "sub" / "bare.jsonl").write_text(json.dumps(rows[1]) + "\n")
    (tmp_path / "README.txt").write_text("not pairs\n")
    (tmp_path / "notes.md").write_text("ignored")
    paradigms = open_suite(str(tmp_path))
    assert [(p.suite, p.name, p.phenomenon, len(p.pairs)) for p in paradigms] == [
        ("custom", "agr-mine", "agr", 2), ("custom", "bare", "bare", 1),
        ("custom", "past", "morphology", 2)]
    assert paradigms[0].pairs[1] == MinimalPair(good="a cat .", bad="a cats .")
    assert [p.name for p in open_suite(str(tmp_path), paradigms=["past"])] == ["past"]
    with pytest.raises(UserError, match=r"unknown paradigm\(s\) nope .*available: agr-mine, bare"):
        open_suite(str(tmp_path), paradigms=["past", "nope"])


def test_custom_errors(tmp_path):
    odd = tmp_path / "odd.txt"
    odd.write_text("a .\nb .\nc .\n\n")
    with pytest.raises(UserError, match=r"odd\.txt: 3 lines"):
        load_pairs(odd)
    gap = tmp_path / "gap.txt"
    gap.write_text("a .\n\nb .\nc .\n")
    with pytest.raises(UserError, match=r"gap\.txt: line 2 is blank"):
        load_pairs(gap)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"sentence_good": "a", "sentence_bad": "b"}\n{not json}\n')
    with pytest.raises(UserError, match=r"bad\.jsonl: line 2 is not JSON"):
        load_pairs(bad)
    bad.write_text('{"sentence_good": "a", "sentence_bad": "b"}\n\n{"sentence_good": "a"}\n')
    with pytest.raises(UserError, match=r"bad\.jsonl: line 3 lacks .*sentence_bad"):
        load_pairs(bad)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "LICENSE").write_text("MIT")
    with pytest.raises(UserError, match="holds no pair files"):
        load_pairs(empty)
    with pytest.raises(UserError, match="not a pair file"):
        load_pairs(empty / "LICENSE")
    with pytest.raises(UserError, match=r"unknown pair suite 'blimpp': expected one of zorro, "
                                        r"blimp or a path to your own pairs"):
        open_suite("blimpp")
    assert SUITES == ("zorro", "blimp")


# --- download, cache, mirror ---------------------------------------------------------------


def stand_in(root: Path, suite: str, names) -> Path:
    """A folder laid out like raw.githubusercontent.com (owner/repo/commit/path) holding copies of
    the shared files of ``names`` (and the licence)."""
    source = SOURCES[suite]
    top = root / source.repo / source.commit
    origin = shared_path("zorro") if suite == "zorro" else shared_path("blimp")
    for rel in [*source.extras, *(source.path(n) for n in names)]:
        (top / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(origin / rel, top / rel)
    return root


@pytest.fixture
def served(tmp_path, monkeypatch):
    """Serve the stand-in at ``tmp_path/web`` through file:// URLs."""
    web = tmp_path / "web"
    stand_in(web, "zorro", ZORRO_SHA256)
    stand_in(web, "blimp", BLIMP_DEV)
    monkeypatch.setattr(suites, "BASE_URL", web.as_uri())
    return web


def offline(monkeypatch):
    def refuse(url, timeout=None):
        raise urllib.error.URLError("network is unreachable")
    monkeypatch.setattr(suites, "_urlopen", refuse)


def test_download_then_cache(served, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    folder = fetch_suite("zorro", cache_dir=cache)
    commit = SOURCES["zorro"].commit
    assert folder == cache / "zorro" / commit / "sentences" / "babyberta"
    assert sorted(p.stem for p in folder.glob("*.txt")) == sorted(ZORRO_SHA256)
    assert (cache / "zorro" / commit / "LICENSE").is_file()
    assert not [p for p in cache.rglob(".*")]  # no temporary left
    offline(monkeypatch)  # a second call reads the cache
    paradigms = open_suite("zorro", cache_dir=cache)
    assert len(paradigms) == 23 and {p.suite for p in paradigms} == {"zorro"}
    monkeypatch.setenv("MINILM_CACHE", str(cache))  # the default cache folder
    assert open_suite("zorro", paradigms=[ZORRO_FIRST])[0].name == ZORRO_FIRST
    with pytest.raises(UserError, match="unknown paradigm"):
        fetch_suite("zorro", paradigms=["nope"])


def test_corrupt_cache_is_refused_and_removed(served, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    folder = fetch_suite("blimp", cache_dir=cache, paradigms=BLIMP_DEV[:2])
    assert sorted(p.stem for p in folder.iterdir()) == list(BLIMP_DEV[:2])
    target = folder / f"{BLIMP_DEV[1]}.jsonl"
    target.write_bytes(target.read_bytes()[:-10])
    got = sha256(target.read_bytes()).hexdigest()
    offline(monkeypatch)
    with pytest.raises(UserError, match=rf"{target.name} is corrupt: sha256 {got}, expected "
                                        rf"{BLIMP_SHA256[BLIMP_DEV[1]]}") as err:
        open_suite("blimp", cache_dir=cache, paradigms=BLIMP_DEV[:2])
    assert "\n" not in str(err.value)
    assert not target.exists()
    monkeypatch.setattr(suites, "_urlopen", urllib.request.urlopen)
    open_suite("blimp", cache_dir=cache, paradigms=BLIMP_DEV[:2])  # fetched afresh
    assert sha256(target.read_bytes()).hexdigest() == BLIMP_SHA256[BLIMP_DEV[1]]


def test_served_file_with_wrong_checksum(served, tmp_path):
    rel = SOURCES["zorro"].path(ZORRO_FIRST)
    bad = served / SOURCES["zorro"].repo / SOURCES["zorro"].commit / rel
    bad.write_text(bad.read_text().replace("purple", "green"))
    with pytest.raises(UserError, match=rf"has sha256 [0-9a-f]{{64}}, expected "
                                        rf"{ZORRO_SHA256[ZORRO_FIRST]}.*refused"):
        fetch_suite("zorro", cache_dir=tmp_path / "cache")
    assert not list((tmp_path / "cache").rglob(f"{ZORRO_FIRST}*"))


def test_mirror(tmp_path, monkeypatch):
    offline(monkeypatch)
    mirror = tmp_path / "mirror"
    for suite, names in (("zorro", ZORRO_SHA256), ("blimp", BLIMP_DEV)):
        source = SOURCES[suite]
        origin = shared_path("zorro") if suite == "zorro" else shared_path("blimp")
        for rel in [*source.extras, *(source.path(n) for n in names)]:
            (mirror / source.repo / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(origin / rel, mirror / source.repo / rel)
    monkeypatch.setenv(suites.MIRROR_ENV, str(mirror))
    cache = tmp_path / "cache"
    assert len(open_suite("zorro", cache_dir=cache)) == 23
    blimp = open_suite("blimp", cache_dir=cache, paradigms=list(BLIMP_DEV))  # a partial mirror
    assert [p.name for p in blimp] == list(BLIMP_DEV)
    assert all(len(p.pairs) == 1000 for p in blimp)
    with pytest.raises(UserError, match=r"mirror .* lacks alexwarstadt/blimp/data/"
                                        r"anaphor_number_agreement\.jsonl"):
        fetch_suite("blimp", cache_dir=tmp_path / "other")  # the whole suite is not there
    bad = mirror / "alexwarstadt/blimp/data/npi_present_1.jsonl"
    bad.write_bytes(bad.read_bytes() + b"\n")
    with pytest.raises(UserError, match=r"npi_present_1\.jsonl has sha256 .*refused"):
        fetch_suite("blimp", cache_dir=tmp_path / "other", paradigms=["npi_present_1"])


def test_network_error_names_the_mirror_variable(tmp_path, monkeypatch):
    offline(monkeypatch)
    with pytest.raises(UserError, match=r"could not download https://raw\.githubusercontent\.com/"
                                        r"phueb/Zorro/687ba433e91a3815e8204a8fc0cf0577303b1660/"
                                        r"LICENSE \(.*unreachable.*\).*set MINILM_PAIRS_MIRROR"):
        open_suite("zorro", cache_dir=tmp_path / "cache")
    monkeypatch.setattr(suites, "_urlopen", urllib.request.urlopen)
    monkeypatch.setattr(suites, "BASE_URL", (tmp_path / "nothing").as_uri())  # 'not found'
    with pytest.raises(UserError, match="could not download file:.*MINILM_PAIRS_MIRROR"):
        fetch_suite("blimp", cache_dir=tmp_path / "cache", paradigms=["wh_island"])
