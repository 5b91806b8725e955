#!/usr/bin/env bash
# Compares vdisk with qemu-img on the issue's reference case and prints the
# ratios: a 4 GiB monolithicSparse VMDK holding 1 GiB of scattered data
# (written by qemu-img from a generated raw file, so neither tool made its
# own input).
#
#   bash bench/convert/compare.sh [WORKDIR]
#
# WORKDIR defaults to a directory in /dev/shm, so that the page cache's
# write-back to a slow disk does not drown the difference between the
# tools; pass a directory on a real disk to include it. Each case runs
# three times and the fastest run counts. Peak memory (max RSS) comes from
# /usr/bin/time.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
work=${1:-/dev/shm/vdisk-bench}
mkdir -p "$work"
command -v qemu-img >/dev/null || { echo "qemu-img is needed (apt-get install qemu-utils)"; exit 1; }
[ -x /usr/bin/time ] || { echo "/usr/bin/time is needed (apt-get install time)"; exit 1; }

echo "building vdisk and the generator"
go build -o "$work/vdisk" "$root/cmd/vdisk"
go build -o "$work/gen" "$root/bench/convert/gen"
cd "$work"
[ -f ref.raw ] || ./gen -o ref.raw -size $((4<<30)) -data $((1<<30))
[ -f ref.vmdk ] || qemu-img convert -f raw -O vmdk -o subformat=monolithicSparse ref.raw ref.vmdk

# best CMD...: prints "seconds maxrss_kb" of the fastest of three runs.
best() {
	local bt="" bm=""
	for _ in 1 2 3; do
		rm -f out.*
		/usr/bin/time -f "%e %M" -o t.txt "$@" >/dev/null
		read -r t m <t.txt
		if [ -z "$bt" ] || awk "BEGIN{exit !($t < $bt)}"; then bt=$t; bm=$m; fi
	done
	echo "$bt $bm"
}
ratio() { awk "BEGIN{printf \"%.2f\", $1 / ($2 > 0 ? $2 : 0.001)}"; }

printf '%-44s %10s %10s %8s %12s\n' case qemu-img vdisk ratio "vdisk RSS"
row() {
	local name=$1 q=$2 v=$3
	read -r qt _ <<<"$q"
	read -r vt vm <<<"$v"
	printf '%-44s %9ss %9ss %7sx %10s MiB\n' "$name" "$qt" "$vt" "$(ratio "$qt" "$vt")" $((vm / 1024))
}

q=$(best qemu-img convert -f vmdk -O raw ref.vmdk out.raw)
v=$(best ./vdisk convert -f vmdk -O raw ref.vmdk out.raw)
row "sparse VMDK -> raw (vdisk syncs, qemu not)" "$q" "$v"
v=$(best ./vdisk convert -t unsafe -f vmdk -O raw ref.vmdk out.raw)
row "sparse VMDK -> raw (neither syncs)" "$q" "$v"
q=$(best qemu-img convert -f raw -O vmdk -o subformat=streamOptimized ref.raw out.vmdk)
v=$(best ./vdisk convert -f raw -O vmdk -o subformat=streamOptimized ref.raw out.vmdk)
row "raw -> streamOptimized" "$q" "$v"
qemu-img convert -f raw -O vmdk -o subformat=streamOptimized ref.raw q-stream.vmdk
./vdisk convert -f raw -O vmdk -o subformat=streamOptimized ref.raw v-stream.vmdk
echo "stream sizes: qemu-img $(stat -c %s q-stream.vmdk) bytes, vdisk $(stat -c %s v-stream.vmdk) bytes"
qemu-img compare -q v-stream.vmdk ref.raw && echo "vdisk's stream: qemu-img compare says identical"
q=$(best qemu-img convert -f vmdk -O raw q-stream.vmdk out.raw)
v=$(best ./vdisk convert -f vmdk -O raw q-stream.vmdk out.raw)
row "streamOptimized -> raw" "$q" "$v"

rm -f thin.vmdk thin-flat.vmdk split*.vmdk
./vdisk create -f vmdk -o subformat=vmfsThin thin.vmdk 2T >/dev/null
./vdisk create -f vmdk -o subformat=twoGbMaxExtentSparse split.vmdk 2T >/dev/null
for img in thin.vmdk split.vmdk; do
	r=$(best ./vdisk map "$img")
	read -r t m <<<"$r"
	echo "vdisk map of a 2 TiB thin $img (whole process): ${t}s, $((m / 1024)) MiB RSS"
done
rm -f out.* t.txt thin*.vmdk split*.vmdk q-stream.vmdk v-stream.vmdk
