#!/usr/bin/env bash
# How the own-data pre-training recipe does on corpora nobody tuned it on: five real corpora of the
# development data (1,000 to 100,000 documents), each through launch/own_data.sh (pre-training
# only, its defaults), then one table: documents, tokens, validation perplexity of the best
# checkpoint against the shards' unigram and bigram perplexities, and the ratio to unigram.
#
#   bash launch/own_data_survey.sh [OUT]      (default runs/own_survey; needs ../shared/data)
#   SURVEY_CORPORA="bbc wikitext2 ag_news dbpedia aochildes"  SURVEY_RECIPE=own_data (OWN_RECIPE)
#   other OWN_* variables pass through to launch/own_data.sh (e.g. OWN_STEPS=2000)
# Finished corpora are skipped on a re-run (own_data.sh reuses what it made).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/own_survey}
DATA=${MINILM_SHARED_DATA:-../shared/data}
[ -d "$DATA" ] || { echo "error: development data not found: $DATA (set MINILM_SHARED_DATA)" >&2; exit 2; }
export OWN_RECIPE=${SURVEY_RECIPE:-${OWN_RECIPE:-own_data}}
source launch/venv.sh
install_project bbc >/dev/null
mkdir -p "$OUT/texts"
.venv/bin/python - "$DATA" "$OUT/texts" <<'EOF'
"""One document per line for each corpus (written once)."""
import csv, subprocess, sys
from pathlib import Path

data, out = Path(sys.argv[1]), Path(sys.argv[2])

def write(name, docs):
    path = out / f"{name}.txt"
    if not path.exists():
        docs = [" ".join(d.split()) for d in docs]
        path.write_text("\n".join(d for d in docs if d) + "\n", encoding="utf-8")

wiki = []
for split in ("valid", "test"):
    for line in (data / "wikitext2" / "tokenized" / f"wiki.{split}.tokens").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.strip().startswith("="):
            wiki.append(line)
write("wikitext2", wiki)
rows = [r for f in ("train.csv", "test.csv") for r in csv.reader(open(data / "ag_news" / f, encoding="utf-8"))]
write("ag_news", [f"{r[1]}. {r[2]}".replace("\\", " ") for r in rows])
rows = [r for f in ("train_content_only.csv", "test_content_only.csv")
        for r in csv.reader(open(data / "dbpedia14" / f, encoding="utf-8"))]
write("dbpedia", [r[1] for r in rows])
utterances = []
for f in sorted((data / "aochildes" / "original_transcripts").glob("*.csv")):
    utterances += [r["gloss"] for r in csv.DictReader(open(f, encoding="utf-8")) if r.get("gloss")]
write("aochildes", utterances[:100_000])
if not (out / "bbc.txt").exists():
    subprocess.run([sys.executable, "-m", "minilm_jax.tasks.bbc", "pretraining-text", "--out",
                    str(out / "bbc.txt")], check=True, stdout=subprocess.DEVNULL)
EOF
for corpus in ${SURVEY_CORPORA:-bbc wikitext2 ag_news dbpedia aochildes}; do
  echo "=== $corpus"
  if [ -f "$OUT/$corpus/pretrain/summary.json" ]; then echo "   finished earlier: skipped"; continue; fi
  start=$(date +%s)
  bash launch/own_data.sh "$OUT/texts/$corpus.txt" - "$OUT/$corpus" > "$OUT/$corpus.log" 2>&1 \
    || { echo "failed: see $OUT/$corpus.log"; tail -3 "$OUT/$corpus.log"; continue; }
  echo "$(( $(date +%s) - start )) s" > "$OUT/$corpus.seconds"  # the whole script: install to model
done
.venv/bin/python - "$OUT" ${SURVEY_CORPORA:-bbc wikitext2 ag_news dbpedia aochildes} <<'EOF'
import json, math, sys
from pathlib import Path

out = Path(sys.argv[1])
print(f"recipe: {open(out / sys.argv[2] / 'source.txt').read().split()[3] if (out / sys.argv[2] / 'source.txt').exists() else '?'}")
print(f"| corpus | documents | train tokens | validation perplexity (best) | unigram | bigram | ratio to unigram | wall |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for name in sys.argv[2:]:
    run = out / name
    try:
        summary = json.loads((run / "pretrain" / "summary.json").read_text())
        base = json.loads((run / "shards" / "baselines.json").read_text())
    except OSError:
        print(f"| {name} | (not finished) | | | | | | |")
        continue
    docs = sum(1 for _ in open(out / "texts" / f"{name}.txt", encoding="utf-8"))
    val = base["splits"]["validation"]
    uni, bi = math.exp(val["unigram"]), math.exp(val["bigram"])
    ppl = summary["best"]["validation_perplexity"]
    wall = (run.parent / f"{name}.seconds").read_text().strip() if (run.parent / f"{name}.seconds").exists() else "?"
    print(f"| {name} | {docs:,} | {base['train_tokens']:,} | {ppl:.1f} | {uni:.1f} | {bi:.1f} | "
          f"{ppl / uni:.2f} | {wall} |")
EOF
