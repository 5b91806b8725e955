#!/usr/bin/env bash
# Compares `vdisk export` with qemu-nbd serving the same image: nbdcopy
# reads the reference VMDK (4 GiB holding 1 GiB of scattered data) from
# each over a Unix socket and over TCP, and the ratio is printed.
#
#   bash bench/nbd/compare.sh [WORKDIR]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
work=${1:-/dev/shm/vdisk-bench}
mkdir -p "$work"
for tool in qemu-img qemu-nbd nbdcopy; do
	command -v $tool >/dev/null || { echo "$tool is needed (apt-get install qemu-utils libnbd-bin)"; exit 1; }
done
go build -o "$work/vdisk" "$root/cmd/vdisk"
go build -o "$work/gen" "$root/bench/convert/gen"
cd "$work"
[ -f ref.raw ] || ./gen -o ref.raw -size $((4<<30)) -data $((1<<30))
[ -f ref.vmdk ] || qemu-img convert -f raw -O vmdk ref.raw ref.vmdk

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; rm -f v.sock q.sock; }
trap cleanup EXIT
./vdisk export --read-only --socket v.sock ref.vmdk 2>/dev/null & pids+=($!)
./vdisk export --read-only --bind 127.0.0.1:10911 ref.vmdk 2>/dev/null & pids+=($!)
qemu-nbd -t -r -f vmdk -e 16 -k "$work/q.sock" ref.vmdk & pids+=($!)
qemu-nbd -t -r -f vmdk -e 16 -b 127.0.0.1 -p 10912 ref.vmdk & pids+=($!)
sleep 1

best() {
	local b=""
	for _ in 1 2 3; do
		/usr/bin/time -f "%e" -o t.txt nbdcopy "$1" null:
		t=$(cat t.txt)
		if [ -z "$b" ] || awk "BEGIN{exit !($t < $b)}"; then b=$t; fi
	done
	echo "$b"
}
printf '%-34s %10s %10s %8s\n' "nbdcopy reading ref.vmdk via" qemu-nbd vdisk ratio
for kind in unix tcp; do
	if [ $kind = unix ]; then
		q=$(best "nbd+unix:///?socket=$work/q.sock"); v=$(best "nbd+unix:///?socket=$work/v.sock")
	else
		q=$(best "nbd://127.0.0.1:10912"); v=$(best "nbd://127.0.0.1:10911")
	fi
	printf '%-34s %9ss %9ss %7sx\n' "$kind" "$q" "$v" "$(awk "BEGIN{printf \"%.2f\", $q/$v}")"
done
rm -f t.txt
