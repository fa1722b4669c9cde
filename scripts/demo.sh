#!/usr/bin/env bash
# Sets up artfs (scripts/setup.sh), publishes a small sample dataset into a local
# store and mounts it. Usage: scripts/demo.sh [MOUNTPOINT]   (default: ./demo/mnt)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
top=$PWD
export ARTFS_STORE="${ARTFS_STORE:-$top/demo/store}"
export ARTFS_CACHE="${ARTFS_CACHE:-$top/demo/cache}"
mnt="${1:-$top/demo/mnt}"
artfs=".venv/bin/artfs"

if [ -z "$($artfs ls demo 2>/dev/null)" ]; then
  sample="$top/demo/sample"
  rm -rf "$sample" && mkdir -p "$sample/images" "$sample/v2"
  for i in $(seq 1 50); do
    head -c $((2048 + i * 13)) /dev/urandom > "$sample/images/bike_$(printf %03d "$i").png"
  done
  printf 'file,label\n' > "$sample/labels.csv"
  for i in $(seq 1 50); do printf 'bike_%03d.png,%d\n' "$i" $((i % 3)) >> "$sample/labels.csv"; done
  head -c $((3 << 20)) /dev/urandom > "$sample/weights.bin"
  $artfs put "$sample/images" "$sample/labels.csv" --name demo/bike-dataset --type dataset \
    --alias best --description "bikes, first cut" --metadata '{"classes": 3}'
  printf 'bike_051.png,1\n' >> "$sample/labels.csv"
  $artfs put "$sample/images" "$sample/labels.csv" --name demo/bike-dataset --type dataset \
    --description "bikes, one more label"
  $artfs put "$sample/weights.bin" --name demo/bike-model --type model --alias prod
fi

mkdir -p "$mnt"
if grep -q " $mnt fuse" /proc/mounts; then
  echo "already mounted at $mnt"
else
  $artfs mount "$mnt"
fi
cat <<TXT

artfs demo mounted at $mnt  (store: $ARTFS_STORE)
  ls -l $mnt/demo/bike-dataset/           versions, aliases (symlinks) and drafts/
  cat $mnt/demo/bike-dataset/latest/labels.csv
  getfattr -d -m user.artfs $mnt/demo/bike-dataset/v0
  mkdir $mnt/demo/bike-dataset/drafts/mine && cp some-file $mnt/demo/bike-dataset/drafts/mine/
  ARTFS_STORE=$ARTFS_STORE ARTFS_CACHE=$ARTFS_CACHE $artfs commit $mnt/demo/bike-dataset/drafts/mine
Unmount with: $artfs umount $mnt
TXT
