#!/usr/bin/env bash
# Builds a pure-Python detectron2 wheel from PyPI's sal-detectron2 0.7.2 (a 2024 snapshot of upstream
# detectron2 whose only wheel is cp310 with a `_C` extension that does not load on other Pythons).
# The compiled `_C` is dropped: Mask R-CNN needs only ROIAlign/NMS (from torchvision) and COCO
# evaluation (from pycocotools, with `use_fast_impl=False`).
#
# usage: build_detectron2_wheel.sh PYTHON OUT_DIR   -> prints the path of the built wheel
set -euo pipefail
py=$1
out=$2
version=0.7.2
sha256=491af0c7f79bdb2d178e46f6cb16a97c4ac968d45c41ea3f6b6435d59bbee561
built="$out/sal_detectron2-$version-py3-none-any.whl"
if [ -f "$built" ]; then echo "$built"; exit 0; fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.10 \
    -d "$work" "sal-detectron2==$version" >&2
src="$work/sal_detectron2-$version-cp310-none-any.whl"
echo "$sha256  $src" | sha256sum -c --quiet - >&2 || {
    echo "error: $src does not have the pinned sha256 $sha256; the upload changed, refusing to build" >&2
    exit 1
}
"$py" -m wheel unpack -d "$work/unpacked" "$src" >&2
tree="$work/unpacked/sal_detectron2-$version"
info="$tree/sal_detectron2-$version.dist-info"
rm -f "$tree"/detectron2/_C*.so
rm -rf "$tree/tools"
sed -i '/^tools$/d' "$info/top_level.txt"
sed -i -e 's/^Tag: .*/Tag: py3-none-any/' -e 's/^Root-Is-Purelib: .*/Root-Is-Purelib: true/' "$info/WHEEL"
sed -i -e 's/^Requires-Dist: numpy<2$/Requires-Dist: numpy/' "$info/METADATA"
sed -i -e '/^Requires-Dist: packaging$/a Requires-Dist: fvcore\nRequires-Dist: iopath' "$info/METADATA"
grep -v -e '^sal_detectron2-.*\.dist-info/RECORD' -e '^detectron2/_C' -e '^tools/' "$info/RECORD" > "$info/RECORD.new" || true
mv "$info/RECORD.new" "$info/RECORD"
mkdir -p "$out"
mkdir -p "$work/packed"
"$py" -m wheel pack -d "$work/packed" "$tree" >&2
mv "$work/packed/"*.whl "$built"
echo "$built"
