#!/usr/bin/env bash
# Install the Label Studio server (for the Label Studio tests and for trying the backend locally)
# into its own virtual environment, not RefCut's: label-studio pins label-studio-sdk to one exact
# version and brings ~75 packages (Django, DRF, cloud-storage clients) that RefCut does not use.
# The RefCut backend itself runs in RefCut's environment (`pip install -e ".[label-studio]"`).
#   bash scripts/install_label_studio.sh   # -> $REFCUT_LABEL_STUDIO_VENV, default ${REFCUT_CACHE:-~/.cache/refcut}/label-studio-venv
set -euo pipefail
VERSION="1.23.2"
VENV="${REFCUT_LABEL_STUDIO_VENV:-${REFCUT_CACHE:-$HOME/.cache/refcut}/label-studio-venv}"
if [[ -x "$VENV/bin/label-studio" ]] \
   && "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('label-studio') != '$VERSION')" 2>/dev/null; then
  echo "Label Studio $VERSION is in $VENV"
  exit 0
fi
python -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "label-studio==$VERSION"
echo "Label Studio $VERSION installed in $VENV (start it with $VENV/bin/label-studio start)"
