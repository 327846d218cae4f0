#!/usr/bin/env bash
# Make Fashion-MNIST available offline where Debian's package can provide it; elsewhere aevb
# downloads it with torchvision on first use. Never fails: the data step is best-effort.
set -u
dir=/usr/share/datasets/fashion-mnist
if [ -f "$dir/train-images-idx3-ubyte.gz" ]; then exit 0; fi
if [ -n "${AEVB_DATA_DIR:-}" ]; then exit 0; fi
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "installing Debian's dataset-fashion-mnist (Fashion-MNIST, offline copy)" >&2
  (apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 ||
   (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1)) && exit 0
fi
echo "note: no system copy of Fashion-MNIST; aevb will download it with torchvision" >&2
exit 0
