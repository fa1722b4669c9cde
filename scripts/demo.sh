#!/usr/bin/env bash
# Sets up artfs (scripts/setup.sh), publishes a small sample dataset and a model trained
# on it into a local store, and mounts it. Usage: scripts/demo.sh [MOUNTPOINT]   (default: ./demo/mnt)
#   scripts/demo.sh --publish-only    only publishes the sample into $ARTFS_STORE (the README's
#                                     examples run against it as tests)
set -euo pipefail
cd "$(dirname "$0")/.."
publish_only=0
if [ "${1:-}" = "--publish-only" ]; then publish_only=1; shift; fi
[ "$publish_only" = 1 ] || scripts/setup.sh
top=$PWD
export ARTFS_STORE="${ARTFS_STORE:-$top/demo/store}"
export ARTFS_CACHE="${ARTFS_CACHE:-$top/demo/cache}"
mnt="${1:-$top/demo/mnt}"
artfs="$top/.venv/bin/artfs"  # the same program as `artfs` on PATH, whatever PATH says

if [ -z "$($artfs ls demo 2>/dev/null)" ]; then
  echo "demo: publishing a sample into $ARTFS_STORE"
  sample=$(mktemp -d)  # the files are in the store once published
  trap 'rm -rf "$sample"' EXIT
  mkdir -p "$sample/images"
  for i in $(seq 1 50); do
    head -c $((2048 + i * 13)) /dev/urandom > "$sample/images/bike_$(printf %03d "$i").png"
  done
  printf 'file,label\n' > "$sample/labels.csv"
  for i in $(seq 1 50); do printf 'bike_%03d.png,%d\n' "$i" $((i % 3)) >> "$sample/labels.csv"; done
  head -c $((3 << 20)) /dev/urandom > "$sample/weights.bin"
  # Runs (ARTFS_RUN_ID) make the lineage that `artfs lineage` and `artfs ui` show.
  ARTFS_RUN_ID=collect-1 $artfs put "$sample/images" "$sample/labels.csv" --name demo/bike-dataset \
    --type dataset --alias best --description "bikes, first cut" --metadata '{"classes": 3}' >/dev/null
  printf 'bike_051.png,1\n' >> "$sample/labels.csv"
  ARTFS_RUN_ID=collect-2 $artfs put "$sample/images" "$sample/labels.csv" --name demo/bike-dataset \
    --type dataset --description "bikes, one more label" >/dev/null
  ARTFS_RUN_ID=train-1 $artfs get demo/bike-dataset:best --root "$sample/train-input" >/dev/null 2>&1
  ARTFS_RUN_ID=train-1 $artfs put "$sample/weights.bin" --name demo/bike-model --type model --alias prod \
    --metadata '{"accuracy": 0.91}' >/dev/null
fi
[ "$publish_only" = 0 ] || exit 0

mkdir -p "$mnt"
if grep -q " $mnt fuse" /proc/mounts; then
  echo "demo: already mounted at $mnt"
else
  $artfs mount "$mnt" >/dev/null
fi
env_line="ARTFS_STORE=$ARTFS_STORE ARTFS_CACHE=$ARTFS_CACHE"
cat <<TXT

artfs demo mounted at $mnt  (store: $ARTFS_STORE)
Try (in this shell, first: export $env_line):
  ls -l $mnt/demo/bike-dataset/           versions, aliases (symlinks) and drafts/
  cat $mnt/demo/bike-dataset/latest/labels.csv
  getfattr -d -m user.artfs $mnt/demo/bike-dataset/v0
  mkdir $mnt/demo/bike-dataset/drafts/mine && cp some-file $mnt/demo/bike-dataset/drafts/mine/
  artfs commit $mnt/demo/bike-dataset/drafts/mine
  artfs lineage demo/bike-model:prod
  artfs ui                                 a web page of the store at http://127.0.0.1:8765/
  $top/.venv/bin/python -c 'import pandas; print(pandas.read_csv("artfs://demo/bike-dataset/latest/labels.csv"))'
                                           artfs:// in pandas (pyarrow, datasets…), no mount needed
Unmount with: artfs umount $mnt
TXT
