#!/usr/bin/env bash
# Creates .venv-template: a current HF transformers (no torch: chat templates need none) with the
# exact dependency set pinned and installed with --no-deps, for the differential tests against
# tokenizer.apply_chat_template (tests/data/test_jinja_hf.cpp, tests/data/test_template_ids.cpp
# via tests/data/hf_apply_chat_template.py). The test venv's transformers 4.40.2 predates `tools`,
# return_assistant_tokens_mask and strftime_now. Idempotent: does nothing when the pins are there.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv="$root/.venv-template"
# transformers 5.24.0 and what its import of PreTrainedTokenizerFast + apply_chat_template needs
# (pip freeze of `pip install transformers==5.24.0 jinja2==3.1.6` on Python 3.11).
pins="transformers==5.24.0 tokenizers==0.23.3 huggingface_hub==2.4.0 jinja2==3.1.6 markupsafe==3.0.4
numpy==2.4.6 packaging==26.4 pyyaml==6.0.4 regex==2026.12.2 safetensors==0.8.0 tqdm==4.70.1
filelock==4.3.2 fsspec==2026.9.0 hf-xet==1.8.0 typer==0.29.2 click==8.5.1 rich==15.0.0
markdown-it-py==4.3.0 mdurl==0.1.2 pygments==2.21.0 shellingham==1.5.4 typing_extensions==4.16.0
annotated-doc==0.0.7 annotated-types==0.8.0 anyio==4.16.0 h11==0.16.0 httpcore2==2.17.0
httpx2==2.17.0 idna==3.21 pydantic==2.14.4 pydantic_core==2.50.5 typing-inspection==0.4.5
truststore==0.10.5"
stamp="$venv/.pins"
want=$(echo "$pins" | sha256sum | cut -d' ' -f1)
if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then exit 0; fi
rm -rf "$venv"
/usr/bin/python3 -m venv "$venv"
# shellcheck disable=SC2086
"$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps $pins
"$venv/bin/python" -c "import transformers, jinja2; from transformers import PreTrainedTokenizerFast"
echo "$want" > "$stamp"
