#!/bin/sh
# How fast this machine fills memory it has not touched lately, against memory it just freed.
#
# Why: a cold read through any file system (local disk included) fills the page cache with
# pages that were free. On a VM whose balloon driver reports free pages to the hypervisor
# (virtio-balloon free page reporting), every such page costs a fault in the host the first
# time it is touched again, and that, not the file system, can bound a cold sequential read.
# Root only (drops the page cache). Writes 1 GiB into /dev/shm (tmpfs), three times.
set -eu
f=/dev/shm/artfs-fresh-memory.$$
trap 'rm -f "$f"' EXIT
features=$(cat /sys/bus/virtio/drivers/virtio_balloon/virtio*/features 2>/dev/null | head -1 || true)
case "$features" in
  ?????1*) echo "virtio-balloon free page reporting: on" ;;
  "") echo "virtio-balloon: none" ;;
  *) echo "virtio-balloon free page reporting: off" ;;
esac
fill() {
  dd if=/dev/zero of="$f" bs=1M count=1024 2>&1 | tail -1 | sed "s/^/$1: /"
  rm -f "$f"
}
sync
echo 3 > /proc/sys/vm/drop_caches
sleep 10  # long enough for freed memory to be reported to the host
fill "after 10 s idle (memory the host took back)"
fill "right after (memory just freed)"
sleep 10
fill "after 10 s idle again"
