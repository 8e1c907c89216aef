#!/usr/bin/env bash
# One-step setup: Python dependencies (hexray + dev tools) and the default dataset (Fashion-MNIST).
# Fashion-MNIST comes from Debian's `dataset-fashion-mnist` where apt-get is available; elsewhere hexray
# downloads it through torchvision on first use.
set -euo pipefail
cd "$(dirname "$0")"

if command -v apt-get >/dev/null 2>&1 && [ ! -d /usr/share/datasets/fashion-mnist ]; then
    SUDO=""
    if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
    if $SUDO apt-get update -qq && $SUDO apt-get install -y -qq dataset-fashion-mnist; then
        echo "setup: installed Fashion-MNIST from dataset-fashion-mnist"
    else
        echo "setup: apt-get could not install dataset-fashion-mnist; hexray will download it on first use"
    fi
fi

python3 -m pip install --upgrade pip >/dev/null
python3 -m pip install -e ".[dev]"
echo "setup: done. Try: hexray train"
