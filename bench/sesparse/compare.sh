#!/usr/bin/env bash
# SEsparse throughput on the issue's reference disk (4 GiB virtual, 1 GiB
# of scattered data, from bench/convert/gen), and the ratios that matter:
#
#   - vdisk writing seSparse vs vdisk writing monolithicSparse (raw -> VMDK)
#   - vdisk reading seSparse vs vdisk reading monolithicSparse (VMDK -> raw)
#   - qemu-img reading the same seSparse file vs vdisk reading it
#
#   bash bench/sesparse/compare.sh [WORKDIR]
#
# WORKDIR defaults to /dev/shm/vdisk-bench-se (page-cache write-back to a
# slow disk would drown the differences). SIZE and DATA (bytes) override
# the reference disk's size and data. Each case runs three times; the
# fastest counts. Ratios above 1 mean the second tool named is faster.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
work=${1:-/dev/shm/vdisk-bench-se}
size=${SIZE:-$((4 << 30))}
data=${DATA:-$((1 << 30))}
mkdir -p "$work"
command -v qemu-img >/dev/null || { echo "qemu-img is needed (apt-get install qemu-utils)"; exit 1; }

echo "building vdisk and the generator"
go build -o "$work/vdisk" "$root/cmd/vdisk"
go build -o "$work/gen" "$root/bench/convert/gen"
cd "$work"
ref=ref-$size-$data.raw
[ -f "$ref" ] || ./gen -o "$ref" -size "$size" -data "$data"

# best CMD...: the seconds of the fastest of three runs.
best() {
	local bt=""
	for _ in 1 2 3; do
		rm -f out.raw
		local s e
		s=$(date +%s.%N)
		"$@" >/dev/null
		e=$(date +%s.%N)
		local t
		t=$(awk "BEGIN{print $e - $s}")
		if [ -z "$bt" ] || awk "BEGIN{exit !($t < $bt)}"; then bt=$t; fi
	done
	echo "$bt"
}
ratio() { awk "BEGIN{printf \"%.2f\", $1 / ($2 > 0 ? $2 : 0.001)}"; }
mibs() { awk "BEGIN{printf \"%.0f\", $data / 1048576 / $1}"; }
row() { printf '%-58s %8.2fs %8.2fs %7sx\n' "$1" "$2" "$3" "$(ratio "$2" "$3")"; }

printf '%-58s %9s %9s %8s\n' case first second ratio
rm -f se.vmdk se-sesparse.vmdk sp.vmdk
a=$(best sh -c "rm -f sp.vmdk; ./vdisk convert -t unsafe -f raw -O vmdk -o subformat=monolithicSparse $ref sp.vmdk")
b=$(best sh -c "rm -f se.vmdk se-sesparse.vmdk; ./vdisk convert -t unsafe -f raw -O vmdk -o subformat=seSparse $ref se.vmdk")
row "write: vdisk monolithicSparse / vdisk seSparse" "$a" "$b"
echo "  seSparse write: $(mibs "$b") MiB/s of data; monolithicSparse: $(mibs "$a") MiB/s"
qemu-img check -q se.vmdk && qemu-img compare -q se.vmdk "$ref" && echo "  qemu-img: seSparse image checks clean and compares identical"
a=$(best ./vdisk convert -t unsafe -f vmdk -O raw sp.vmdk out.raw)
b=$(best ./vdisk convert -t unsafe -f vmdk -O raw se.vmdk out.raw)
row "read: vdisk monolithicSparse / vdisk seSparse" "$a" "$b"
echo "  seSparse read: $(mibs "$b") MiB/s of data; monolithicSparse: $(mibs "$a") MiB/s"
a=$(best qemu-img convert -f vmdk -O raw se.vmdk out.raw)
row "read seSparse: qemu-img / vdisk" "$a" "$b"
rm -f out.raw se.vmdk se-sesparse.vmdk sp.vmdk
